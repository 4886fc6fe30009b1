//! Side-by-side consensus benchmarks: a generic driver for leader failover and write
//! throughput over any [`Cluster`] / [`Writer`], and the etcd side of the comparison
//! ([`EtcdCluster`], [`EtcdWriter`]): three `etcd` processes on loopback, driven through
//! etcd's HTTP/JSON gRPC gateway with a tiny keep-alive HTTP/1.1 client.
//!
//! Used by `benches/consensus.rs`; etcd comes from `benches/peers/install.sh`.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use super::percentile;

// ---------------------------------------------------------------------------------------
// The generic side
// ---------------------------------------------------------------------------------------

/// A replicated key-value cluster that the failover driver can kill members of.
///
/// Members are numbered `0..members()`. Nothing here may panic because a member is dead:
/// the queries answer `None` / `false` instead.
pub trait Cluster {
    fn members(&self) -> usize;

    /// The index of the current leader, or `None` if no live member knows one.
    async fn leader(&mut self) -> Option<usize>;

    /// SIGKILLs the member's process and reaps it.
    fn kill(&mut self, member: usize);

    /// Starts a killed member again, on its old data.
    async fn restart(&mut self, member: usize);

    /// Waits until every member is up and agrees on one leader; false on `timeout`.
    async fn wait_healthy(&mut self, timeout: Duration) -> bool;

    /// Writes `key = value` through `member`; true only once the write is acknowledged as
    /// committed, false on any error, refusal or `timeout`.
    async fn put(&mut self, member: usize, key: &str, value: &[u8], timeout: Duration) -> bool;
}

/// How long one attempt of the failover probe waits for its write.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// The pause between two failed attempts of the failover probe.
const ATTEMPT_PAUSE: Duration = Duration::from_millis(2);
/// How long a cluster may take to be healthy again before the benchmark gives up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Leader failover, client-observed: for each round, kill the leader and time from the kill
/// until a write through one of the surviving members is acknowledged as committed.
///
/// The probe writes through the survivors in turn, each attempt bounded by
/// [`ATTEMPT_TIMEOUT`], with only [`ATTEMPT_PAUSE`] between attempts. Panics if the
/// cluster does not get healthy within 30 s.
pub async fn failover<C: Cluster>(cluster: &mut C, rounds: usize) -> Vec<Duration> {
    failover_with(cluster, rounds, ATTEMPT_TIMEOUT).await
}

/// [`failover`] with another per-attempt timeout.
///
/// An attempt that went to a member which still believes in the dead leader may hang until
/// its timeout even after a new leader is elected, so the result carries up to one
/// `attempt_timeout` of probe granularity on systems that hang rather than refuse.
pub async fn failover_with<C: Cluster>(cluster: &mut C, rounds: usize, attempt_timeout: Duration) -> Vec<Duration> {
    let value = [b'f'; 64];
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        assert!(
            cluster.wait_healthy(RECOVERY_TIMEOUT).await,
            "failover round {round}: the cluster did not become healthy within {RECOVERY_TIMEOUT:?}"
        );
        let leader = cluster.leader().await.unwrap_or_else(|| {
            panic!("failover round {round}: the cluster was healthy but no member names the leader")
        });
        let survivors: Vec<usize> = (0..cluster.members()).filter(|&m| m != leader).collect();

        cluster.kill(leader);
        let killed = Instant::now();
        let mut attempt = 0usize;
        loop {
            let member = survivors[attempt % survivors.len()];
            let key = format!("failover/{round}/{attempt}");
            if cluster.put(member, &key, &value, attempt_timeout).await {
                break;
            }
            attempt += 1;
            assert!(
                killed.elapsed() < RECOVERY_TIMEOUT,
                "failover round {round}: no write committed within {RECOVERY_TIMEOUT:?} of killing member {leader}"
            );
            sleep(ATTEMPT_PAUSE).await;
        }
        samples.push(killed.elapsed());

        cluster.restart(leader).await;
        assert!(
            cluster.wait_healthy(RECOVERY_TIMEOUT).await,
            "failover round {round}: the cluster did not recover within {RECOVERY_TIMEOUT:?} of restarting member {leader}"
        );
    }
    samples
}

/// One writer of the throughput driver: an independent client with its own connection(s).
///
/// The future must be `Send`: every writer runs as its own task on the runtime. An `impl`
/// may still write `async fn put(...)`.
pub trait Writer: Send + 'static {
    /// Writes `key = value`; true only once the write is acknowledged as committed.
    fn put(&mut self, key: &str, value: &[u8]) -> impl Future<Output = bool> + Send;
}

/// What [`throughput`] measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub writers: usize,
    /// Writes acknowledged within the measured window.
    pub writes: u64,
    /// Writes that failed (error, refusal or the writer's own timeout).
    pub failed: u64,
    pub per_sec: f64,
    /// Latency of acknowledged writes.
    pub p50: Duration,
    pub p99: Duration,
}

/// Bytes in every value that [`throughput`] writes.
pub const VALUE_LEN: usize = 64;
/// Untimed writes each writer makes before the clock starts (connects, finds the leader).
const WARMUP_WRITES: usize = 3;

/// Write throughput: `writers` independent tasks, each from `make_client(index)`, each
/// writing sequential puts of [`VALUE_LEN`]-byte values to keys of its own, for
/// `duration`.
///
/// Every writer makes [`WARMUP_WRITES`] untimed writes, then all start together. A writer
/// starts no write after `duration`; the rate is over the time until the last one ended.
pub async fn throughput<W: Writer>(make_client: impl Fn(usize) -> W, writers: usize, duration: Duration) -> Throughput {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let start = Arc::new(Barrier::new(writers + 1));
    let mut tasks = JoinSet::new();
    for index in 0..writers {
        let mut writer = make_client(index);
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            let value = [b'v'; VALUE_LEN];
            let prefix = format!("bench/{}/{run}/{index}", std::process::id());
            for seq in 0..WARMUP_WRITES {
                writer.put(&format!("{prefix}/warm{seq}"), &value).await;
            }
            start.wait().await;
            let deadline = Instant::now() + duration;
            let mut latencies = Vec::with_capacity(4096);
            let mut failed = 0u64;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let key = format!("{prefix}/{seq}");
                seq += 1;
                let sent = Instant::now();
                if writer.put(&key, &value).await {
                    latencies.push(sent.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        let (mut mine, my_failed) = result.expect("a throughput writer panicked");
        latencies.append(&mut mine);
        failed += my_failed;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let (p50, p99) = if latencies.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&latencies, 0.50), percentile(&latencies, 0.99))
    };
    Throughput {
        writers,
        writes: latencies.len() as u64,
        failed,
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50,
        p99,
    }
}

// ---------------------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------------------

/// etcd's Raft timing flags, in milliseconds.
///
/// etcd randomizes each election timeout over `[election, 2 * election)` and refuses to start
/// unless `election >= 5 * heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdTiming {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

impl EtcdTiming {
    /// etcd's defaults: 100 ms heartbeats, 1000 ms election timeout (1–2 s randomized).
    pub const DEFAULT: EtcdTiming = EtcdTiming { heartbeat_ms: 100, election_ms: 1000 };

    /// As close to Flotilla's Raft (50 ms heartbeats, 150–300 ms elections) as etcd
    /// accepts: 50/150 breaks etcd's 5x rule, so 30 ms heartbeats with a 150 ms election
    /// timeout, which etcd randomizes to exactly 150–300 ms.
    pub const MATCHED: EtcdTiming = EtcdTiming { heartbeat_ms: 30, election_ms: 150 };
}

impl fmt::Display for EtcdTiming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--heartbeat-interval {} --election-timeout {}", self.heartbeat_ms, self.election_ms)
    }
}

struct EtcdMember {
    name: String,
    data_dir: PathBuf,
    log: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
    /// etcd's member id, learned from the member's own status reply.
    id: Option<u64>,
    /// For status queries.
    control: HttpConn,
    /// For the failover probe's writes.
    kv: HttpConn,
}

/// A cluster of `etcd` processes on 127.0.0.1, statically bootstrapped, each with a data
/// directory under the directory given to [`EtcdCluster::start`]. Every process is killed
/// when the cluster is dropped.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    initial_cluster: String,
    timing: EtcdTiming,
}

/// How long a status query may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(250);

impl EtcdCluster {
    /// Starts `size` members with data under `dir` (created if missing). Does not wait for
    /// them: call [`Cluster::wait_healthy`].
    pub fn start(dir: &Path, size: usize, timing: EtcdTiming) -> io::Result<Self> {
        assert!(
            timing.election_ms >= 5 * timing.heartbeat_ms,
            "etcd refuses --election-timeout {} < 5 x --heartbeat-interval {}",
            timing.election_ms,
            timing.heartbeat_ms
        );
        std::fs::create_dir_all(dir)?;
        // Hold every listener until all ports are chosen so that no two coincide.
        let listeners = (0..2 * size).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<io::Result<Vec<_>>>()?;
        let ports = listeners.iter().map(|l| l.local_addr()).collect::<io::Result<Vec<_>>>()?;
        drop(listeners);
        let members: Vec<EtcdMember> = (0..size)
            .map(|i| {
                let (client, peer) = (ports[2 * i], ports[2 * i + 1]);
                EtcdMember {
                    name: format!("m{i}"),
                    data_dir: dir.join(format!("m{i}.etcd")),
                    log: dir.join(format!("m{i}.log")),
                    client,
                    peer,
                    child: None,
                    id: None,
                    control: HttpConn::new(client),
                    kv: HttpConn::new(client),
                }
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}=http://{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, timing };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn timing(&self) -> EtcdTiming {
        self.timing
    }

    /// The client URL address of `member`, for [`EtcdWriter::new`].
    pub fn client_addr(&self, member: usize) -> SocketAddr {
        self.members[member].client
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let m = &mut self.members[i];
        let log = File::options().create(true).append(true).open(&m.log)?;
        let client_url = format!("http://{}", m.client);
        let peer_url = format!("http://{}", m.peer);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            // Ignored on a restart: the data directory then says which cluster it is.
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "flotilla-bench"])
            .args(["--heartbeat-interval", &self.timing.heartbeat_ms.to_string()])
            .args(["--election-timeout", &self.timing.election_ms.to_string()])
            .args(["--logger", "zap", "--log-level", "error", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run etcd ({e}); run benches/peers/install.sh")))?;
        m.child = Some(child);
        m.control.close();
        m.kv.close();
        Ok(())
    }

    /// Panics with the member's log if its process has exited by itself.
    fn check_alive(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(child) = m.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            panic!("etcd member {} exited by itself ({status}); its log {}:\n{log}", m.name, m.log.display());
        }
    }

    /// `(own member id, leader's member id)` from `member`'s status, if it answers.
    async fn status(&mut self, member: usize) -> Option<(u64, u64)> {
        let m = &mut self.members[member];
        m.child.as_ref()?;
        let (code, body) = m.control.post("/v3/maintenance/status", b"{}", STATUS_TIMEOUT).await?;
        if code != 200 {
            return None;
        }
        let body = std::str::from_utf8(&body).ok()?;
        let own: u64 = json_string(body, "member_id")?.parse().ok()?;
        let leader: u64 = json_string(body, "leader")?.parse().ok()?;
        m.id = Some(own);
        Some((own, leader))
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == Some(id))
    }
}

impl Cluster for EtcdCluster {
    fn members(&self) -> usize {
        self.members.len()
    }

    async fn leader(&mut self) -> Option<usize> {
        for i in 0..self.members.len() {
            if let Some((_, leader)) = self.status(i).await
                && leader != 0
                && let Some(index) = self.index_of(leader)
            {
                return Some(index);
            }
        }
        None
    }

    fn kill(&mut self, member: usize) {
        let m = &mut self.members[member];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        m.control.close();
        m.kv.close();
    }

    async fn restart(&mut self, member: usize) {
        self.kill(member);
        self.spawn(member).unwrap_or_else(|e| panic!("cannot restart etcd member {member}: {e}"));
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut agreed = None;
            let mut healthy = true;
            for i in 0..self.members.len() {
                self.check_alive(i);
                match self.status(i).await {
                    Some((_, leader)) if leader != 0 && agreed.is_none_or(|l| l == leader) => agreed = Some(leader),
                    _ => healthy = false,
                }
            }
            if healthy
                && let Some(leader) = agreed
                && self.index_of(leader).is_some()
            {
                return true;
            }
            sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn put(&mut self, member: usize, key: &str, value: &[u8], timeout: Duration) -> bool {
        let m = &mut self.members[member];
        if m.child.is_none() {
            return false;
        }
        put_json(&mut m.kv, key, value, timeout).await
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A throughput [`Writer`] for etcd: one keep-alive connection to one member (give it the
/// leader's [`EtcdCluster::client_addr`], or followers forward every write).
pub struct EtcdWriter {
    conn: HttpConn,
    timeout: Duration,
}

impl EtcdWriter {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        EtcdWriter { conn: HttpConn::new(addr), timeout }
    }
}

impl Writer for EtcdWriter {
    async fn put(&mut self, key: &str, value: &[u8]) -> bool {
        put_json(&mut self.conn, key, value, self.timeout).await
    }
}

/// `POST /v3/kv/put` through the gateway: key and value in base64 (the gateway maps proto
/// `bytes` fields to base64 JSON strings and rejects anything else with 400). etcd answers
/// only once the write is committed and applied.
async fn put_json(conn: &mut HttpConn, key: &str, value: &[u8], timeout: Duration) -> bool {
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key.as_bytes()), base64(value));
    match conn.post("/v3/kv/put", body.as_bytes(), timeout).await {
        // An error can come back as 200 only in a gRPC trailer; a success carries a header.
        Some((200, reply)) => reply.windows(10).any(|w| w == b"\"header\":{"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection, opened on demand. Any error or timeout closes it, so
/// that a late reply to an abandoned request is never taken for the next one's.
struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(addr: SocketAddr) -> Self {
        HttpConn { addr, stream: None, buf: Vec::with_capacity(1024) }
    }

    fn close(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// POSTs a JSON body; the status code and body, or `None` on any failure or timeout.
    async fn post(&mut self, path: &str, body: &[u8], limit: Duration) -> Option<(u16, Vec<u8>)> {
        match timeout(limit, self.exchange(path, body)).await {
            Ok(Ok((code, reply, keep_alive))) => {
                if !keep_alive {
                    self.close();
                }
                Some((code, reply))
            }
            _ => {
                self.close();
                None
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let addr = self.addr;
        let stream = self.stream.as_mut().expect("connected above");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await?;

        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let code: u16 = lines
            .next()
            .and_then(|status| status.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut keep_alive) = (None, false, true);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        self.buf.drain(..head_end + 4);

        let reply = if chunked {
            let mut reply = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = find(&self.buf, b"\r\n") {
                        break at;
                    }
                    read_more(stream, &mut self.buf).await?;
                };
                let size = std::str::from_utf8(&self.buf[..line_end])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                    .ok_or_else(|| bad("bad chunk size"))?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    read_more(stream, &mut self.buf).await?;
                }
                reply.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break reply; // No trailers from the gateway.
                }
            }
        } else {
            let length = length.ok_or_else(|| bad("neither Content-Length nor chunked"))?;
            while self.buf.len() < length {
                read_more(stream, &mut self.buf).await?;
            }
            self.buf.drain(..length).collect()
        };
        Ok((code, reply, keep_alive))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The string value of the first `"name":"..."` in a JSON text (etcd's gateway prints
/// 64-bit integers as strings, without spaces).
fn json_string<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let pattern = format!("\"{name}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() { ALPHABET[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

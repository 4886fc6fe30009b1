//! Consensus side by side: leader failover and write throughput of a 3-member cluster on
//! loopback, against etcd.
//!
//! - Failover: kill -9 the leader, then time until a write through a survivor is
//!   acknowledged as committed (`support::consensus::failover`: 100 ms per attempt, 2 ms
//!   between attempts), restart the killed member, wait until healthy; p50/p99 over the
//!   rounds.
//! - Throughput: 1, 64 and 256 independent writers, each with its own connection to the
//!   leader, writing sequential 64-byte values to keys of their own
//!   (`support::consensus::throughput`); writes/s and p50/p99 latency.
//!
//! etcd runs twice: with Raft timing as close to Flotilla's as etcd accepts (30 ms heartbeats,
//! 150 ms election timeout, randomized by etcd to 150–300 ms) and with etcd's defaults (100 ms,
//! 1000 ms). Data directories live under the system temp dir (on disk: both systems fsync),
//! or under `FLOTILLA_CONSENSUS_DIR`.
//!
//! Run: `cargo bench --bench consensus [ROUNDS]` (peers: `benches/peers/install.sh` first).
//! `FLOTILLA_FAILOVER_ROUNDS` (default 100) and `FLOTILLA_THROUGHPUT_SECS` (default 3) set
//! the sizes; `FLOTILLA_BENCH_QUICK` makes them 5 rounds and 1 s.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flotilla::client::ClusterClient;
use flotilla::local_cluster::LocalCluster;
use flotilla_actors::registry::client::RegistryClient;
use support::consensus::{Cluster, EtcdCluster, EtcdTiming, EtcdWriter, Throughput, Writer, failover, throughput};
use support::{percentile, quick};

const MEMBERS: usize = 3;
const WRITER_COUNTS: [usize; 3] = [1, 64, 256];
/// How long one throughput write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything measured on one system, for the side-by-side table.
struct Report {
    name: String,
    config: String,
    /// Sorted.
    failover: Vec<Duration>,
    throughput: Vec<Throughput>,
}

fn main() {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .or_else(|| std::env::var("FLOTILLA_FAILOVER_ROUNDS").ok()?.parse().ok())
        .unwrap_or(if quick() { 5 } else { 100 });
    let secs: f64 = std::env::var("FLOTILLA_THROUGHPUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick() {
        1.0
    } else {
        3.0
    });
    let duration = Duration::from_secs_f64(secs);
    let root = std::env::var_os("FLOTILLA_CONSENSUS_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = root.join(format!("flotilla-consensus-{}", std::process::id()));
    // Two workers: this machine's two cores, shared with the cluster's processes.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let mut reports = Vec::new();

    // Flotilla first: the ratio columns are Flotilla / each etcd.
    flotilla_transport::tls::install_default_provider();
    match rt.block_on(FlotillaCluster::start(&dir.join("flotilla"))) {
        Ok(mut cluster) => reports.push(rt.block_on(measure(
            "flotilla",
            "50 ms heartbeats, 150–300 ms elections, fsync per batch".into(),
            &mut cluster,
            rounds,
            duration,
            |cluster, leader, _| cluster.writer(leader),
        ))),
        Err(e) => eprintln!("skipping flotilla: {e:#}"),
    }

    for (name, timing) in [("etcd", EtcdTiming::MATCHED), ("etcd-default", EtcdTiming::DEFAULT)] {
        match EtcdCluster::start(&dir.join(name), MEMBERS, timing) {
            Ok(mut cluster) => {
                let config = format!("{} {timing}", etcd_version());
                reports.push(rt.block_on(measure(
                    name,
                    config,
                    &mut cluster,
                    rounds,
                    duration,
                    |cluster, leader, _| EtcdWriter::new(cluster.client_addr(leader), WRITE_TIMEOUT),
                )));
            }
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }

    print_table(&reports, rounds, duration);
    remove_dir(&dir);
}

/// Failover over `rounds`, then throughput at every writer count, on one cluster.
/// `writer(cluster, leader, index)` makes the writer `index`, given the leader's index.
async fn measure<C: Cluster, W: Writer>(
    name: &str,
    config: String,
    cluster: &mut C,
    rounds: usize,
    duration: Duration,
    writer: impl Fn(&C, usize, usize) -> W,
) -> Report {
    eprintln!("{name}: failover, {rounds} rounds ...");
    let mut failover = failover(cluster, rounds).await;
    failover.sort();
    let mut results = Vec::new();
    for writers in WRITER_COUNTS {
        assert!(cluster.wait_healthy(Duration::from_secs(30)).await, "{name}: not healthy before throughput");
        let leader = cluster.leader().await.unwrap_or_else(|| panic!("{name}: no leader before throughput"));
        eprintln!("{name}: throughput, {writers} writers for {duration:?} ...");
        let cluster = &*cluster;
        results.push(throughput(|index| writer(cluster, leader, index), writers, duration).await);
    }
    Report { name: name.to_owned(), config, failover, throughput: results }
}

/// Three `flotilla master` processes (the release binary next to this benchmark) and one
/// operator client whose QUIC connection to each master all writers share (Flotilla's
/// transport multiplexes one connection per node pair); each writer has its own registry
/// client id.
struct FlotillaCluster {
    masters: LocalCluster,
    client: ClusterClient,
}

impl FlotillaCluster {
    async fn start(dir: &Path) -> anyhow::Result<FlotillaCluster> {
        let binary = flotilla_binary()?;
        let mut masters = LocalCluster::prepare(&binary, dir, MEMBERS, "")?;
        masters.start_all(Duration::from_secs(30))?;
        let client = masters.client().await?;
        Ok(FlotillaCluster { masters, client })
    }

    fn id(&self, member: usize) -> String {
        self.masters.masters()[member].0.clone()
    }

    /// A registry client bound to `member` alone.
    fn via(&self, member: usize, timeout: Duration) -> RegistryClient {
        let mut client =
            RegistryClient::new(self.client.transport.clone(), vec![self.id(member)], self.client.node.random_u64());
        client.attempt_timeout = timeout;
        client
    }

    fn writer(&self, leader: usize) -> FlotillaWriter {
        FlotillaWriter(self.via(leader, WRITE_TIMEOUT))
    }
}

/// The `flotilla` binary of this build (cargo builds a package's binaries for its benches).
fn flotilla_binary() -> anyhow::Result<PathBuf> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_flotilla"));
    anyhow::ensure!(binary.exists(), "{} is missing", binary.display());
    Ok(binary)
}

impl Cluster for FlotillaCluster {
    fn members(&self) -> usize {
        MEMBERS
    }

    async fn leader(&mut self) -> Option<usize> {
        for member in 0..MEMBERS {
            if !self.masters.is_running(member) {
                continue;
            }
            if let Ok(status) = self.client.registry.status_of(&self.id(member)).await
                && let Some(leader) = status.leader
            {
                return self.masters.index_of(&leader);
            }
        }
        None
    }

    fn kill(&mut self, member: usize) {
        self.masters.kill(member);
    }

    async fn restart(&mut self, member: usize) {
        if let Err(e) = self.masters.start(member, Duration::from_secs(30)) {
            eprintln!("flotilla: restarting {}: {e:#}", self.id(member));
        }
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let mut leaders = Vec::new();
            for member in 0..MEMBERS {
                let status = self.client.registry.status_of(&self.id(member)).await;
                leaders.push(status.ok().and_then(|status| status.leader));
            }
            if leaders[0].is_some() && leaders.iter().all(|leader| *leader == leaders[0]) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn put(&mut self, member: usize, key: &str, value: &[u8], timeout: Duration) -> bool {
        self.via(member, timeout).put(key, value, timeout).await.is_ok()
    }
}

struct FlotillaWriter(RegistryClient);

impl Writer for FlotillaWriter {
    async fn put(&mut self, key: &str, value: &[u8]) -> bool {
        self.0.put(key, value, WRITE_TIMEOUT).await.is_ok()
    }
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned))
        .map(|line| line.replace("etcd Version: ", "etcd "))
        .unwrap_or_else(|| "etcd (unknown version)".into())
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One row per figure, one column per system, then `first / other` for every other system.
fn print_table(reports: &[Report], rounds: usize, duration: Duration) {
    if reports.is_empty() {
        println!("consensus: no system ran");
        return;
    }
    println!(
        "\nconsensus: {MEMBERS} members on 127.0.0.1; failover = kill -9 the leader until a write through a \
         survivor commits ({rounds} rounds); throughput = {duration:?} per writer count, 64-byte values"
    );
    for r in reports {
        println!("  {:<14} {}", r.name, r.config);
    }

    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let quantile = |r: &Report, q: f64| if r.failover.is_empty() { f64::NAN } else { ms(percentile(&r.failover, q)) };
    rows.push(("failover p50 (ms)".into(), reports.iter().map(|r| quantile(r, 0.50)).collect()));
    rows.push(("failover p99 (ms)".into(), reports.iter().map(|r| quantile(r, 0.99)).collect()));
    for (i, writers) in WRITER_COUNTS.into_iter().enumerate() {
        let t = |r: &Report| r.throughput.get(i).cloned();
        rows.push((
            format!("{writers:>3} writers: writes/s"),
            reports.iter().map(|r| t(r).map_or(f64::NAN, |t| t.per_sec)).collect(),
        ));
        rows.push((
            format!("{writers:>3} writers: p50 (ms)"),
            reports.iter().map(|r| t(r).map_or(f64::NAN, |t| ms(t.p50))).collect(),
        ));
        rows.push((
            format!("{writers:>3} writers: p99 (ms)"),
            reports.iter().map(|r| t(r).map_or(f64::NAN, |t| ms(t.p99))).collect(),
        ));
    }

    let ratios: Vec<String> = reports[1..].iter().map(|r| format!("{}/{}", reports[0].name, r.name)).collect();
    print!("\n{:<24}", "");
    for r in reports {
        print!(" {:>14}", r.name);
    }
    for ratio in &ratios {
        print!(" {ratio:>24}");
    }
    println!();
    for (label, values) in rows {
        print!("{label:<24}");
        for v in &values {
            print!(" {v:>14.2}");
        }
        for v in &values[1..] {
            print!(" {:>24.2}", values[0] / v);
        }
        println!();
    }
    for r in reports {
        for t in &r.throughput {
            if t.failed > 0 {
                println!("  note: {} at {} writers: {} writes failed or timed out", r.name, t.writers, t.failed);
            }
        }
    }
}

//! Service discovery as a user meets it: `flotilla dev` prints its DNS address; a Marathon
//! app's tasks resolve there (A, SRV, the `thisdcos.directory` names and its named VIP) over
//! UDP and TCP and through Mesos-DNS's HTTP API, the records follow scaling and removal, and — as root, where the VIP's
//! address can be put on `lo` — an HTTP request through the VIP reaches a task.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla::local_cluster::http_request;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const BOUND: Duration = Duration::from_secs(60);

struct Dev {
    child: Child,
    data_dir: std::path::PathBuf,
}

impl Drop for Dev {
    /// SIGTERM first, so the node stops in order and takes its VIP addresses off `lo`;
    /// SIGKILL only if it has not exited within the bound.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `flotilla dev` with its DNS on a free port; returns it with the DNS, Marathon and
/// Mesos-DNS HTTP addresses.
fn start_dev() -> (Dev, SocketAddr, SocketAddr, SocketAddr) {
    let data_dir = std::env::temp_dir().join(format!("flotilla-discovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["dev", "--dns-listen", "127.0.0.1:0"])
        .env("FLOTILLA_DATA_DIR", &data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flotilla runs");
    let lines = support::stdout_lines(&mut child);
    let seen = support::lines_until_ready(&lines, BOUND);
    let dev = Dev { child, data_dir };
    let (mut dns, mut marathon, mut mesos_dns) = (None, None, None);
    for line in &seen {
        if let Some(rest) = line.strip_prefix("dns: ") {
            dns = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if let Some(rest) = line.strip_prefix("marathon: http://") {
            marathon = rest.parse().ok();
        }
        if let Some(rest) = line.strip_prefix("mesos-dns: http://") {
            mesos_dns = rest.split('/').next().and_then(|a| a.parse().ok());
        }
    }
    let dns = dns.expect("dev prints its DNS address");
    let mesos_dns = mesos_dns.expect("dev prints Mesos-DNS's HTTP address");
    (dev, dns, marathon.expect("dev prints Marathon's address"), mesos_dns)
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

/// Asks over UDP, or over TCP (two-byte length prefix).
fn ask(dns: SocketAddr, name: &str, kind: RecordType, tcp: bool) -> Message {
    let request = query(name, kind);
    let bytes = if tcp {
        let mut stream = TcpStream::connect_timeout(&dns, Duration::from_secs(2)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(&(request.len() as u16).to_be_bytes()).unwrap();
        stream.write_all(&request).unwrap();
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut body).unwrap();
        body
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.send_to(&request, dns).unwrap();
        let mut buffer = vec![0u8; 4096];
        let (n, _) = socket.recv_from(&mut buffer).unwrap();
        buffer.truncate(n);
        buffer
    };
    Message::from_vec(&bytes).unwrap()
}

fn srv_ports(answer: &Message) -> Vec<u16> {
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect()
}

fn addresses(answer: &Message) -> Vec<String> {
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// Polls `check` every 50 ms until it gives a value or the bound passes.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn marathon(address: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_request(address, method, path, body).expect("Marathon answers")
}

#[test]
fn an_apps_names_and_vip_follow_it_in_dev_mode() {
    let (_dev, dns, api, mesos_dns) = start_dev();
    let app = r#"{"id": "/shop/web", "cmd": "python3 -m http.server $PORT0 --bind 127.0.0.1", "cpus": 0.05,
        "mem": 32, "instances": 2, "portDefinitions": [{"port": 0, "name": "http", "labels": {"VIP_0": "/shop/web:80"}}]}"#;
    let (status, body) = wait_for("the scheduler to answer", || {
        let (status, body) = marathon(api, "POST", "/v2/apps", app);
        (status != 503).then_some((status, body))
    });
    assert_eq!(status, 201, "{body}");

    let srv = wait_for("both tasks in SRV", || {
        let answer = ask(dns, "_web-shop._tcp.marathon.mesos.", RecordType::SRV, false);
        let ports = srv_ports(&answer);
        (ports.len() == 2).then_some(ports)
    });
    assert!(srv.iter().all(|p| *p >= 31000), "{srv:?}");
    let a = ask(dns, "web-shop.marathon.mesos.", RecordType::A, true);
    assert_eq!(addresses(&a), ["127.0.0.1"], "the agent's address, over TCP");
    let auto = ask(dns, "web-shop.marathon.autoip.dcos.thisdcos.directory.", RecordType::A, false);
    assert_eq!(addresses(&auto), ["127.0.0.1"]);
    let leader = ask(dns, "leader.mesos.", RecordType::A, false);
    assert_eq!(addresses(&leader), ["127.0.0.1"]);
    let soa = ask(dns, "mesos.", RecordType::SOA, false);
    assert!(soa.answers.iter().any(|r| matches!(r.data, RData::SOA(_))), "{soa:?}");
    let missing = ask(dns, "nothing.marathon.mesos.", RecordType::A, false);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let (status, hosts) = http_request(mesos_dns, "GET", "/v1/hosts/web-shop.marathon.mesos", "").unwrap();
    assert_eq!(status, 200);
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts[0]["ip"], "127.0.0.1", "{hosts}");
    let (status, services) =
        http_request(mesos_dns, "GET", "/mesos_dns/v1/services/_web-shop._tcp.marathon.mesos", "").unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&services).unwrap().as_array().map(Vec::len), Some(2));
    let vip = ask(dns, "shopweb.marathon.l4lb.thisdcos.directory.", RecordType::A, false);
    let vip: String = addresses(&vip).into_iter().next().expect("the named VIP has an address");
    assert!(vip.starts_with("11."), "{vip}");

    if nix::unistd::geteuid().is_root() {
        let reply = wait_for("an HTTP answer through the VIP", || {
            let mut stream =
                TcpStream::connect_timeout(&format!("{vip}:80").parse().ok()?, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: shopweb\r\n\r\n").ok()?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).ok()?;
            reply.starts_with("HTTP/1.0 200").then_some(reply)
        });
        assert!(reply.contains("Directory listing"), "{reply}");
    } else {
        println!("skipped the connection through the VIP: adding its address to lo needs root");
    }

    let (status, body) = marathon(api, "PUT", "/v2/apps/shop/web", r#"{"instances": 1}"#);
    assert_eq!(status, 200, "{body}");
    wait_for("one task left in SRV", || {
        (srv_ports(&ask(dns, "_web-shop._tcp.marathon.mesos.", RecordType::SRV, false)).len() == 1).then_some(())
    });
    wait_for("the app deleted", || {
        let (status, _) = marathon(api, "DELETE", "/v2/apps/shop/web", "");
        (status == 200).then_some(())
    });
    wait_for("the names gone", || {
        let answer = ask(dns, "web-shop.marathon.mesos.", RecordType::A, false);
        (answer.metadata.response_code == ResponseCode::NXDomain).then_some(())
    });
}

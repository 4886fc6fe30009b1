//! The load balancer over real sockets: echo servers on 127.0.0.1 stand for tasks, the actor is
//! fed a cluster view that declares VIPs on their ports, and clients go through the VIP.
//!
//! IP VIPs in `127.0.0.0/8` need no address added, so these tests run without root; the
//! named-VIP test (an `11.x` address put on `lo`) runs only as root and says so otherwise, and
//! the nftables test only as root with `nft` installed (`scripts/install-test-deps.sh`).
//! Waits are bounded polls of a condition, never sleeps standing in for one.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use flotilla_actors::discovery::{ClusterView, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate};
use flotilla_actors::l4lb::{
    DataPlane, L4LB_ACTOR, L4lbConfig, L4lbMsg, L4lbStatus, VipState, VipStatus, l4lb_child, named_vip_address,
};
use flotilla_supervisors::{Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec};
use ractor::ActorRef;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const BOUND: Duration = Duration::from_secs(10);

struct Harness {
    node: Node,
    root: SupervisorRef,
    lb: ActorRef<L4lbMsg>,
    view: ClusterView,
}

impl Harness {
    async fn start(config: L4lbConfig) -> Harness {
        let node = Node::builder(NodeId::new("l4lb-test").unwrap()).seed(11).start().await.unwrap();
        let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne)).child(l4lb_child(config));
        let root = Supervisor::spawn(node.clone(), spec, None).await.unwrap();
        let lb = node.whereis_ref::<L4lbMsg>(L4LB_ACTOR).expect("the load balancer registers its name");
        Harness { node, root, lb, view: ClusterView::default() }
    }

    fn reset(&mut self, tasks: Vec<TaskEntry>) {
        for task in tasks {
            self.view.apply(&ViewChange::TaskUp(task));
        }
        self.lb.send_message(L4lbMsg::View(ViewUpdate::Reset(Arc::new(self.view.clone())))).unwrap();
    }

    fn change(&mut self, change: ViewChange) {
        self.view.apply(&change);
        let update = ViewUpdate::Changes { revision: 1, changes: Arc::new(vec![change]) };
        self.lb.send_message(L4lbMsg::View(update)).unwrap();
    }

    async fn status(&self) -> L4lbStatus {
        flotilla_supervisors::call(&self.lb, L4lbMsg::Status, Duration::from_secs(5)).await.unwrap()
    }

    /// Waits until the status satisfies `check` and returns the VIP it names.
    async fn wait_vip(&self, what: &str, addr: SocketAddr, check: impl Fn(&VipStatus) -> bool) -> VipStatus {
        wait_until(what, BOUND, || async {
            let status = self.status().await;
            status.vips.into_iter().find(|vip| SocketAddr::new(vip.key.ip, vip.key.port) == addr && check(vip))
        })
        .await
    }

    async fn stop(self) {
        self.root.shutdown(Duration::from_secs(5)).await.unwrap();
        self.node.shutdown();
    }
}

fn config() -> L4lbConfig {
    L4lbConfig { drain_timeout: Duration::from_secs(60), ..L4lbConfig::default() }
}

fn task(id: &str, port: u16, protocol: PortProtocol, vip: &str) -> TaskEntry {
    TaskEntry {
        id: id.to_owned(),
        name: "echo".to_owned(),
        framework_id: "fw".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: "agent".to_owned(),
        agent_ip: "127.0.0.1".parse().unwrap(),
        container_ips: Vec::new(),
        healthy: Some(true),
        ports: vec![PortEntry {
            number: port,
            protocol,
            name: None,
            labels: BTreeMap::from([("VIP_0".to_owned(), vip.to_owned())]),
        }],
        labels: BTreeMap::new(),
    }
}

/// A TCP server that answers each line with `<name>:<line>`, for as long as the test runs.
async fn tcp_echo(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write.write_all(format!("{name}:{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A UDP server that answers each datagram with `<name>:<datagram>`.
async fn udp_echo(name: &'static str) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let reply = [name.as_bytes(), b":", &buffer[..len]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    port
}

/// A client connection through the VIP.
struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(BOUND, TcpStream::connect(addr)).await.unwrap().unwrap();
        let (read, write) = stream.into_split();
        Client { lines: BufReader::new(read).lines(), write }
    }

    /// Sends a line and returns the name of the backend that answered.
    async fn ask(&mut self, line: &str) -> Option<String> {
        self.write.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        let answer = tokio::time::timeout(BOUND, self.lines.next_line()).await.ok()?.ok()??;
        let (name, echoed) = answer.split_once(':')?;
        assert_eq!(echoed, line);
        Some(name.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_balanced_and_a_removed_backend_drains() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let vip: SocketAddr = "127.77.0.1:18080".parse().unwrap();
    let mut h = Harness::start(config()).await;
    h.reset(vec![
        task("ta", a, PortProtocol::Tcp, "127.77.0.1:18080"),
        task("tb", b, PortProtocol::Tcp, "127.77.0.1:18080"),
    ]);
    h.wait_vip("the VIP serves two backends", vip, |v| v.state == VipState::Serving && v.backends.len() == 2).await;

    // Connections held open: power of two choices on two backends always takes the idler one.
    let mut clients = Vec::new();
    let mut counts = BTreeMap::<String, usize>::new();
    for i in 0..10 {
        let mut client = Client::connect(vip).await;
        let name = client.ask(&format!("hello {i}")).await.expect("an answer through the VIP");
        *counts.entry(name.clone()).or_default() += 1;
        clients.push((name, client));
    }
    assert_eq!(counts, BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 5)]));
    let status = h.status().await;
    let active: u32 = status.vips[0].backends.iter().map(|b| b.active).sum();
    assert_eq!(active, 10, "{status:?}");

    // Task a goes away: it takes no new connection, and its open ones keep working.
    h.change(ViewChange::TaskGone { id: "ta".to_owned() });
    let vip_status = h.wait_vip("backend a draining", vip, |v| v.backends.iter().any(|b| b.draining)).await;
    assert_eq!(vip_status.backends.iter().filter(|b| !b.draining).count(), 1);
    for i in 0..10 {
        let mut client = Client::connect(vip).await;
        assert_eq!(client.ask(&format!("after {i}")).await.as_deref(), Some("b"));
    }
    for (name, client) in clients.iter_mut().filter(|(name, _)| name == "a") {
        assert_eq!(client.ask("still there?").await.as_deref(), Some(name.as_str()), "a draining connection works");
    }

    // Once its connections end, the drained backend leaves the status.
    clients.clear();
    h.wait_vip("backend a fully drained", vip, |v| v.backends.iter().all(|b| !b.draining)).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_backend_is_left_and_its_connections_close_at_the_drain_timeout() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let vip: SocketAddr = "127.77.0.2:18080".parse().unwrap();
    let mut h = Harness::start(L4lbConfig { drain_timeout: Duration::from_millis(200), ..config() }).await;
    h.reset(vec![
        task("ta", a, PortProtocol::Tcp, "127.77.0.2:18080"),
        task("tb", b, PortProtocol::Tcp, "127.77.0.2:18080"),
    ]);
    h.wait_vip("two backends", vip, |v| v.backends.len() == 2).await;
    let mut first = Client::connect(vip).await;
    let name = first.ask("one").await.unwrap();
    let (id, other) = if name == "a" { ("ta", "b") } else { ("tb", "a") };

    let mut sick = task(id, if name == "a" { a } else { b }, PortProtocol::Tcp, "127.77.0.2:18080");
    sick.healthy = Some(false);
    h.change(ViewChange::TaskUp(sick));
    h.wait_vip("one live backend", vip, |v| v.backends.iter().filter(|b| !b.draining).count() == 1).await;
    for _ in 0..5 {
        assert_eq!(Client::connect(vip).await.ask("two").await.as_deref(), Some(other));
    }
    // The drain timeout closes the connection to the unhealthy task.
    let closed = tokio::time::timeout(BOUND, first.lines.next_line()).await.expect("closed within the bound");
    assert!(matches!(closed, Ok(None) | Err(_)), "{closed:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_refuses_is_skipped() {
    let live = tcp_echo("live").await;
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let vip: SocketAddr = "127.77.0.3:18080".parse().unwrap();
    let mut h = Harness::start(config()).await;
    h.reset(vec![
        task("live", live, PortProtocol::Tcp, "127.77.0.3:18080"),
        task("dead", dead, PortProtocol::Tcp, "127.77.0.3:18080"),
    ]);
    h.wait_vip("two backends", vip, |v| v.backends.len() == 2).await;
    for i in 0..8 {
        assert_eq!(Client::connect(vip).await.ask(&format!("{i}")).await.as_deref(), Some("live"));
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_round_trips_through_the_vip() {
    let port = udp_echo("u").await;
    let vip: SocketAddr = "127.77.0.4:5353".parse().unwrap();
    let mut h = Harness::start(L4lbConfig { udp_idle_timeout: Duration::from_millis(300), ..config() }).await;
    h.reset(vec![task("u1", port, PortProtocol::Udp, "127.77.0.4:5353")]);
    h.wait_vip("the UDP VIP serves", vip, |v| v.state == VipState::Serving && v.backends.len() == 1).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(vip).await.unwrap();
    let mut buffer = [0u8; 64];
    for i in 0..3 {
        client.send(format!("ping {i}").as_bytes()).await.unwrap();
        let len = tokio::time::timeout(BOUND, client.recv(&mut buffer)).await.expect("a reply").unwrap();
        assert_eq!(&buffer[..len], format!("u:ping {i}").as_bytes());
    }
    let session = h.wait_vip("one session", vip, |v| v.backends[0].active == 1).await;
    assert_eq!(session.backends[0].active, 1);
    h.wait_vip("the idle session expired", vip, |v| v.backends[0].active == 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_vip_is_put_on_lo_and_removed_with_its_last_task() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: adding a named VIP's 11.x address to lo needs root");
        return;
    }
    let port = tcp_echo("n").await;
    let ip = named_vip_address("l4lbtestnamed", "marathon");
    let vip = SocketAddr::new(IpAddr::V4(ip), 18082);
    let mut h = Harness::start(config()).await;
    h.reset(vec![task("n1", port, PortProtocol::Tcp, "/l4lb/test/named:18082")]);
    let serving = h.wait_vip("the named VIP serves", vip, |v| v.state == VipState::Serving).await;
    assert_eq!(serving.names, vec!["l4lbtestnamed.marathon".to_owned()]);
    assert!(lo_has(ip).await, "{ip} is on lo");
    assert_eq!(Client::connect(vip).await.ask("named").await.as_deref(), Some("n"));

    h.change(ViewChange::TaskGone { id: "n1".to_owned() });
    wait_until("the address leaves lo", BOUND, || async { (!lo_has(ip).await).then_some(()) }).await;
    assert!(h.status().await.vips.is_empty());
    h.stop().await;
}

async fn lo_has(ip: std::net::Ipv4Addr) -> bool {
    let output = tokio::process::Command::new("ip").args(["-o", "addr", "show", "dev", "lo"]).output().await.unwrap();
    String::from_utf8_lossy(&output.stdout).contains(&format!(" {ip}/32 "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nft_the_nftables_plane_falls_back_to_the_proxy_and_says_why() {
    let port = tcp_echo("p").await;
    let vip: SocketAddr = "127.77.0.5:18080".parse().unwrap();
    let config = L4lbConfig {
        data_plane: DataPlane::Nftables,
        nft_command: "/nonexistent/flotilla-test/nft".to_owned(),
        ..config()
    };
    let mut h = Harness::start(config).await;
    let status = h.status().await;
    assert_eq!(status.data_plane, DataPlane::Proxy);
    let why = status.data_plane_error.expect("the status says why nftables is not in use");
    assert!(why.contains("apt-get install nftables"), "{why}");
    h.reset(vec![task("p1", port, PortProtocol::Tcp, "127.77.0.5:18080")]);
    h.wait_vip("the proxy serves", vip, |v| v.state == VipState::Serving).await;
    assert_eq!(Client::connect(vip).await.ask("fallback").await.as_deref(), Some("p"));
    h.stop().await;
}

/// The kernel's copy of Flotilla's table (`nft list table`), `None` when there is none.
async fn nft_table() -> Option<String> {
    let output = tokio::process::Command::new("nft").args(["list", "table", "ip", "flotilla_l4lb"]).output().await;
    let output = output.expect("nft runs");
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn nft_usable() -> Result<(), &'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Err("changing nftables needs root");
    }
    match std::process::Command::new("nft").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("`nft` is not installed (scripts/install-test-deps.sh installs it)"),
    }
}

/// Takes Flotilla's table and a test address off the host even when the test fails half-way
/// (a panicking test drops the actor without its `post_stop`).
struct KernelCleanup(std::net::Ipv4Addr);

impl Drop for KernelCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", "flotilla_l4lb"]).output();
        let _ = std::process::Command::new("ip").args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"]).output();
    }
}

/// Sends one datagram from a fresh socket and returns the name of the backend that answered.
async fn udp_ask(vip: SocketAddr, text: &str) -> String {
    let client = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    client.connect(vip).await.unwrap();
    client.send(text.as_bytes()).await.unwrap();
    let mut buffer = [0u8; 64];
    let len = tokio::time::timeout(BOUND, client.recv(&mut buffer)).await.expect("a UDP reply").unwrap();
    let reply = std::str::from_utf8(&buffer[..len]).unwrap();
    let (name, echoed) = reply.split_once(':').unwrap();
    assert_eq!(echoed, text);
    name.to_owned()
}

/// The whole nftables path in one test, since the table is one per host: a stale table is
/// replaced at start, TCP and UDP go through a named VIP round robin, a removed backend takes
/// no new connection while its open one keeps working, a removed VIP leaves the ruleset, and
/// the table leaves the kernel with the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nftables_plane_dnats_through_vips_and_cleans_up() {
    if let Err(why) = nft_usable() {
        eprintln!("skipped: {why}");
        return;
    }
    let ip = named_vip_address("l4lbtestnft", "marathon");
    let _cleanup = KernelCleanup(ip);
    let stale = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"table ip flotilla_l4lb {\n chain stale_from_a_crash {\n }\n}\n")?;
            child.wait()
        })
        .unwrap();
    assert!(stale.success());

    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let (ua, ub) = (udp_echo("ua").await, udp_echo("ub").await);
    let (tcp_vip, udp_vip) = (SocketAddr::new(IpAddr::V4(ip), 18083), SocketAddr::new(IpAddr::V4(ip), 18084));
    // Long enough to see a draining VIP refuse, short enough for the test.
    let config = L4lbConfig { data_plane: DataPlane::Nftables, drain_timeout: Duration::from_secs(2), ..config() };
    let mut h = Harness::start(config).await;
    let status = h.status().await;
    assert_eq!((status.data_plane, status.data_plane_error), (DataPlane::Nftables, None));
    assert!(!nft_table().await.unwrap().contains("stale_from_a_crash"), "the old table is replaced");

    h.reset(vec![
        task("ta", a, PortProtocol::Tcp, "/l4lbtestnft:18083"),
        task("tb", b, PortProtocol::Tcp, "/l4lbtestnft:18083"),
        task("ua", ua, PortProtocol::Udp, "/l4lbtestnft:18084"),
        task("ub", ub, PortProtocol::Udp, "/l4lbtestnft:18084"),
    ]);
    for vip in [tcp_vip, udp_vip] {
        h.wait_vip("the VIP is in the kernel", vip, |v| v.state == VipState::Serving && v.backends.len() == 2).await;
    }
    assert!(lo_has(ip).await, "{ip} is on lo");

    // Round robin: four connections, two on each backend, all held open.
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut client = Client::connect(tcp_vip).await;
        let name = client.ask(&format!("hello {i}")).await.expect("an answer through the VIP");
        clients.push((name, client));
    }
    let seen: Vec<&str> = clients.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(seen.iter().filter(|name| **name == "a").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|name| **name == "b").count(), 2, "{seen:?}");
    let udp_seen: BTreeMap<String, usize> = count_names([udp_ask(udp_vip, "u0").await, udp_ask(udp_vip, "u1").await]);
    assert_eq!(udp_seen, BTreeMap::from([("ua".to_owned(), 1), ("ub".to_owned(), 1)]));

    // Backend a goes away: new connections all go to b, a's open ones keep their mapping.
    h.change(ViewChange::TaskGone { id: "ta".to_owned() });
    h.wait_vip("one backend left", tcp_vip, |v| v.state == VipState::Serving && v.backends.len() == 1).await;
    let rules = nft_table().await.unwrap();
    assert!(!rules.contains(&format!("127.0.0.1 . {a}")) && !rules.contains(&format!("127.0.0.1:{a}")), "{rules}");
    for i in 0..6 {
        assert_eq!(Client::connect(tcp_vip).await.ask(&format!("after {i}")).await.as_deref(), Some("b"));
    }
    for (name, client) in clients.iter_mut().filter(|(name, _)| name == "a") {
        assert_eq!(client.ask("still there?").await.as_deref(), Some(name.as_str()), "a's open connection works");
    }

    // The VIPs go away: refused while they drain, then out of the ruleset and off lo.
    for id in ["tb", "ua", "ub"] {
        h.change(ViewChange::TaskGone { id: id.to_owned() });
    }
    h.wait_vip("the TCP VIP drains", tcp_vip, |v| v.state == VipState::Draining).await;
    let refused = tokio::time::timeout(BOUND, TcpStream::connect(tcp_vip)).await.expect("refused, not hanging");
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    let ip_text = ip.to_string();
    wait_until("the VIPs leave the ruleset", BOUND, || async {
        nft_table().await.filter(|rules| !rules.contains(&ip_text)).map(|_| ())
    })
    .await;
    wait_until("the address leaves lo", BOUND, || async { (!lo_has(ip).await).then_some(()) }).await;
    assert!(h.status().await.vips.is_empty());

    h.stop().await;
    assert_eq!(nft_table().await, None, "the table leaves with the actor");
}

fn count_names(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts
}

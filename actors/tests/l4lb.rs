//! The load balancer over real sockets: echo servers on 127.0.0.1 stand for tasks, the actor is
//! fed a cluster view that declares VIPs on their ports, and clients go through the VIP.
//!
//! IP VIPs in `127.0.0.0/8` need no address added, so these tests run without root; the
//! named-VIP test (an `11.x` address put on `lo`) runs only as root and says so otherwise.
//! Waits are bounded polls of a condition, never sleeps standing in for one.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use flotilla_actors::discovery::{ClusterView, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate};
use flotilla_actors::l4lb::{
    L4LB_ACTOR, L4lbConfig, L4lbMsg, L4lbStatus, VipState, VipStatus, l4lb_child, named_vip_address,
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

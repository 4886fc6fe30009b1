//! The DNS server over real sockets: the actor on 127.0.0.1:0 fed with view updates and asked
//! over UDP and TCP, including truncation, forwarding to a fake upstream past a dead one,
//! and malformed packets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::discovery::{
    AgentEntry, ClusterView, FrameworkEntry, MasterEntry, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate,
};
use flotilla_actors::dns::{DNS_ACTOR, Dns, DnsArgs, DnsConfig, DnsMsg, DnsStatus};
use flotilla_supervisors::{Node, NodeId};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ractor::{Actor, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The bound on any one exchange with the server.
const EXCHANGE: Duration = Duration::from_secs(5);

fn task(id: &str, name: &str, ip: &str) -> TaskEntry {
    TaskEntry {
        id: id.to_owned(),
        name: name.to_owned(),
        framework_id: "fw".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: "S1".to_owned(),
        agent_ip: ip.parse().unwrap(),
        container_ips: Vec::new(),
        healthy: None,
        ports: vec![PortEntry {
            number: 31000,
            protocol: PortProtocol::Tcp,
            name: Some("http".to_owned()),
            labels: BTreeMap::from([("VIP_0".to_owned(), "/web:80".to_owned())]),
        }],
        labels: BTreeMap::new(),
    }
}

fn view() -> ClusterView {
    let mut tasks = BTreeMap::new();
    tasks.insert("web.1".to_owned(), task("web.1", "web.shop", "10.0.1.1"));
    tasks.insert("web.2".to_owned(), task("web.2", "web.shop", "10.0.1.2"));
    for i in 0..100 {
        let id = format!("many.{i}");
        tasks.insert(id.clone(), task(&id, "many", &format!("10.1.{}.{}", i / 250, i % 250 + 1)));
    }
    ClusterView {
        revision: 3,
        leader: Some("m1".to_owned()),
        masters: vec![MasterEntry { id: "m1".to_owned(), ip: "10.0.0.1".parse().unwrap() }],
        agents: BTreeMap::from([(
            "S1".to_owned(),
            AgentEntry { id: "S1".to_owned(), hostname: "a1".to_owned(), ip: "10.0.1.1".parse().unwrap() },
        )]),
        frameworks: BTreeMap::from([(
            "fw".to_owned(),
            FrameworkEntry { id: "fw".to_owned(), name: "marathon".to_owned() },
        )]),
        tasks,
    }
}

async fn start(upstreams: Vec<SocketAddr>, timeout_ms: u64) -> (Node, ActorRef<DnsMsg>, DnsStatus) {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: Some(upstreams),
        forward_timeout_ms: timeout_ms,
        ..DnsConfig::default()
    };
    start_with(config).await
}

async fn start_with(config: DnsConfig) -> (Node, ActorRef<DnsMsg>, DnsStatus) {
    let node = Node::builder(NodeId::new("dns-test").unwrap()).seed(7).start().await.unwrap();
    let (actor, _) = Actor::spawn(None, Dns, DnsArgs { node: node.clone(), config }).await.unwrap();
    assert!(node.whereis(DNS_ACTOR).is_some(), "registered under its name");
    actor.send_message(DnsMsg::View(ViewUpdate::Reset(Arc::new(view())))).unwrap();
    // Messages are handled in order: the status follows the view.
    let status = ractor::call_t!(actor, DnsMsg::Status, 5_000).unwrap();
    assert_eq!(status.revision, 3);
    (node, actor, status)
}

fn query(name: &str, record_type: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::new(rand_id(name), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message
}

fn rand_id(name: &str) -> u16 {
    name.bytes().fold(7u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)))
}

async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(EXCHANGE, socket.recv(&mut buf)).await.ok()?.unwrap();
    Some(buf[..n].to_vec())
}

async fn udp(server: SocketAddr, message: &Message) -> Message {
    let reply = udp_raw(server, &message.to_vec().unwrap()).await.expect("a UDP reply");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, message.metadata.id);
    reply
}

async fn tcp(server: SocketAddr, message: &Message) -> Message {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let bytes = message.to_vec().unwrap();
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.unwrap();
        Message::from_vec(&reply).unwrap()
    };
    tokio::time::timeout(EXCHANGE, exchange).await.expect("a TCP reply")
}

fn a_records(message: &Message) -> Vec<String> {
    let mut out: Vec<String> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn serves_cluster_names_over_udp_and_tcp() {
    let (node, actor, status) = start(Vec::new(), 500).await;
    let server = status.bound.udp;
    assert_eq!(status.bound.udp.port(), status.bound.tcp.port());

    let reply = udp(server, &query("web-shop.marathon.mesos.", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(a_records(&reply), ["10.0.1.1", "10.0.1.2"]);
    assert_eq!(reply.answers[0].ttl, 60);
    let reply = tcp(status.bound.tcp, &query("web-shop.marathon.mesos.", RecordType::A, None)).await;
    assert_eq!(a_records(&reply), ["10.0.1.1", "10.0.1.2"]);

    let srv = udp(server, &query("_web-shop._tcp.marathon.mesos.", RecordType::SRV, None)).await;
    assert_eq!(srv.answers.len(), 2);
    assert!(srv.answers.iter().all(|r| matches!(&r.data, RData::SRV(s) if s.port == 31000 && s.weight == 1)));
    assert_eq!(srv.additionals.len(), 2, "the targets' addresses");

    let soa = udp(server, &query("mesos.", RecordType::SOA, None)).await;
    assert!(matches!(&soa.answers[0].data, RData::SOA(s) if s.serial == 3));
    let ns = tcp(status.bound.tcp, &query("mesos.", RecordType::NS, None)).await;
    assert!(matches!(&ns.answers[0].data, RData::NS(n) if n.0.to_string() == "ns1.mesos."));

    let missing = udp(server, &query("nothing.marathon.mesos.", RecordType::A, None)).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(&missing.authorities[0].data, RData::SOA(_)));
    let nodata = udp(server, &query("leader.mesos.", RecordType::AAAA, None)).await;
    assert_eq!((nodata.metadata.response_code, nodata.answers.len()), (ResponseCode::NoError, 0));

    let vip = udp(server, &query("web.marathon.l4lb.thisdcos.directory.", RecordType::A, None)).await;
    let expected = flotilla_actors::dns::named_vip_address("/web", "marathon").to_string();
    assert_eq!(a_records(&vip), [expected]);
    assert_eq!(vip.answers[0].ttl, 5);

    // Forwarding is off without upstreams.
    let outside = udp(server, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(!outside.metadata.recursion_available);

    // Changes are served by the next query after the actor handled them.
    let changes =
        vec![ViewChange::TaskUp(task("new.1", "fresh", "10.0.9.9")), ViewChange::TaskGone { id: "web.1".into() }];
    actor.send_message(DnsMsg::View(ViewUpdate::Changes { revision: 4, changes: Arc::new(changes) })).unwrap();
    let status = ractor::call_t!(actor, DnsMsg::Status, 5_000).unwrap();
    assert_eq!(status.revision, 4);
    assert_eq!(a_records(&udp(server, &query("fresh.marathon.mesos.", RecordType::A, None)).await), ["10.0.9.9"]);
    assert_eq!(a_records(&udp(server, &query("web-shop.marathon.mesos.", RecordType::A, None)).await), ["10.0.1.2"]);

    let (code, hosts) =
        ractor::call_t!(actor, |reply| DnsMsg::Http { path: "/v1/hosts/fresh.marathon.mesos".into(), reply }, 5_000)
            .unwrap();
    assert_eq!((code, hosts[0]["ip"].as_str()), (200, Some("10.0.9.9")));

    actor.stop(None);
    node.shutdown();
}

#[tokio::test]
async fn truncates_udp_and_serves_tcp_in_full() {
    let (node, actor, status) = start(Vec::new(), 500).await;
    let big = query("many.marathon.mesos.", RecordType::A, None);
    let reply = udp(status.bound.udp, &big).await;
    assert!(reply.metadata.truncation, "100 A records do not fit in 512 bytes");
    assert!(reply.answers.len() < 100);
    let reply = udp(status.bound.udp, &query("many.marathon.mesos.", RecordType::A, Some(4096))).await;
    assert!(reply.metadata.truncation, "nor in the server's EDNS limit of 1232 bytes");
    let full = tcp(status.bound.tcp, &big).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 100);
    actor.stop(None);
    node.shutdown();
}

#[tokio::test]
async fn malformed_packets_are_refused_without_harm() {
    let (node, actor, status) = start(Vec::new(), 500).await;
    // Too short for a header: dropped.
    assert!(udp_raw(status.bound.udp, &[1, 2, 3]).await.is_none());
    // A header that promises a question that is not there: FORMERR.
    let header = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff];
    if let Some(reply) = udp_raw(status.bound.udp, &header).await {
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
    let reply = udp(status.bound.udp, &query("leader.mesos.", RecordType::A, None)).await;
    assert_eq!(a_records(&reply), ["10.0.0.1"]);
    actor.stop(None);
    node.shutdown();
}

/// A UDP responder that answers every A question with 192.0.2.7.
async fn fake_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
            let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
            reply.metadata.recursion_available = true;
            reply.metadata.recursion_desired = request.metadata.recursion_desired;
            for q in &request.queries {
                reply.add_query(q.clone());
                let record = Record::from_rdata(q.name().clone(), 30, RData::A(A::new(192, 0, 2, 7)));
                reply.answers.push(record);
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn forwards_past_a_dead_upstream_and_fails_when_none_answers() {
    // A socket that never answers.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let (upstream, responder) = fake_upstream().await;
    let (node, actor, status) = start(vec![dead_addr, upstream], 300).await;
    let started = Instant::now();
    let reply = udp(status.bound.udp, &query("example.com.", RecordType::A, None)).await;
    let took = started.elapsed();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply), ["192.0.2.7"]);
    assert!(reply.metadata.recursion_available && !reply.metadata.authoritative);
    assert!(took >= Duration::from_millis(300), "the dead upstream was asked first ({took:?})");
    assert!(took < EXCHANGE, "failover within the timeout ({took:?})");
    let reply = tcp(status.bound.tcp, &query("example.org.", RecordType::A, None)).await;
    assert_eq!(a_records(&reply), ["192.0.2.7"]);
    let stats = ractor::call_t!(actor, DnsMsg::Status, 5_000).unwrap().stats;
    assert_eq!(stats.forwarded, 2);
    actor.stop(None);
    node.shutdown();

    let (node, actor, status) = start(vec![dead_addr], 200).await;
    let reply = udp(status.bound.udp, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    actor.stop(None);
    node.shutdown();
    responder.abort();
    drop(dead);
}

async fn apply(actor: &ActorRef<DnsMsg>, revision: u64, changes: Vec<ViewChange>) {
    actor.send_message(DnsMsg::View(ViewUpdate::Changes { revision, changes: Arc::new(changes) })).unwrap();
    // Messages are handled in order: once the status answers, the changes are applied.
    let status = ractor::call_t!(actor, DnsMsg::Status, 5_000).unwrap();
    assert_eq!(status.revision, revision);
}

#[tokio::test]
async fn a_changed_name_is_answered_fresh_right_after_the_change() {
    let (node, actor, status) = start(Vec::new(), 500).await;
    let server = status.bound.udp;
    let name = "web-shop.marathon.mesos.";
    // Asked repeatedly (and in another case), so the fast path has it prepared.
    for asked in [name, "WEB-shop.Marathon.mesos.", name] {
        assert_eq!(a_records(&udp(server, &query(asked, RecordType::A, Some(1232))).await), ["10.0.1.1", "10.0.1.2"]);
    }
    let missing = "later.marathon.mesos.";
    for _ in 0..2 {
        let reply = udp(server, &query(missing, RecordType::A, None)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }

    let changes = vec![
        ViewChange::TaskGone { id: "web.1".into() },
        ViewChange::TaskUp(task("web.3", "web.shop", "10.0.1.3")),
        ViewChange::TaskUp(task("later.1", "later", "10.0.7.7")),
    ];
    apply(&actor, 4, changes).await;
    for asked in [name, "WEB-shop.Marathon.mesos."] {
        assert_eq!(a_records(&udp(server, &query(asked, RecordType::A, Some(1232))).await), ["10.0.1.2", "10.0.1.3"]);
    }
    assert_eq!(a_records(&udp(server, &query(missing, RecordType::A, None)).await), ["10.0.7.7"]);
    let soa = udp(server, &query("mesos.", RecordType::SOA, None)).await;
    assert!(matches!(&soa.answers[0].data, RData::SOA(s) if s.serial == 4), "the serial follows the revision");

    apply(&actor, 5, vec![ViewChange::TaskGone { id: "later.1".into() }]).await;
    let reply = udp(server, &query(missing, RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    actor.stop(None);
    node.shutdown();
}

#[tokio::test]
async fn two_threads_serve_every_client_and_release_the_port_when_stopped() {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: Some(Vec::new()),
        threads: 2,
        ..DnsConfig::default()
    };
    let (node, actor, status) = start_with(config.clone()).await;
    let server = status.bound.udp;
    // Each client has its own source port; SO_REUSEPORT spreads them over both sockets.
    let clients = 16;
    for _ in 0..clients {
        assert_eq!(a_records(&udp(server, &query("web-shop.marathon.mesos.", RecordType::A, None)).await).len(), 2);
    }
    apply(&actor, 4, vec![ViewChange::TaskGone { id: "web.1".into() }]).await;
    for _ in 0..clients {
        let reply = udp(server, &query("web-shop.marathon.mesos.", RecordType::A, None)).await;
        assert_eq!(a_records(&reply), ["10.0.1.2"], "no thread answers from before the change");
    }
    let full = tcp(status.bound.tcp, &query("many.marathon.mesos.", RecordType::A, None)).await;
    assert_eq!(full.answers.len(), 100);
    let stats = ractor::call_t!(actor, DnsMsg::Status, 5_000).unwrap().stats;
    assert_eq!((stats.queries, stats.answered), (2 * clients + 1, 2 * clients + 1));

    actor.stop_and_wait(None, Some(EXCHANGE)).await.unwrap();
    // Sockets without SO_REUSEPORT bind only when no socket of the stopped server is left.
    drop(std::net::UdpSocket::bind(server).expect("the UDP port is free again"));
    drop(std::net::TcpListener::bind(status.bound.tcp).expect("the TCP port is free again"));
    node.shutdown();

    let (node, actor, again) = start_with(DnsConfig { listen: server, ..config }).await;
    assert_eq!(again.bound.udp, server);
    assert_eq!(a_records(&udp(server, &query("leader.mesos.", RecordType::A, None)).await), ["10.0.0.1"]);
    actor.stop(None);
    node.shutdown();
}

//! The UDP threads over real sockets: a burst larger than a batch is answered in full, each
//! reply carrying its query's id and address, while what the fast path leaves reaches the
//! full path's channel unchanged; a reply the kernel refuses does not cost the rest of its
//! batch; idle threads stop promptly and release the port.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use nix::sys::socket::SockaddrStorage;
use tokio::sync::mpsc;

use super::core::{DnsConfig, Index};
use super::server::SharedIndex;
use super::udp::{BATCH, Batch, DeferredQuery, UdpLoops, bind_udp};
use crate::discovery::{AgentEntry, ClusterView, FrameworkEntry, MasterEntry, TaskEntry};

const NAMES: u32 = 50;

fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 7, (i >> 8) as u8, i as u8)
}

fn view() -> ClusterView {
    let tasks = (0..NAMES)
        .map(|i| {
            let task = TaskEntry {
                id: format!("app{i}.{i}"),
                name: format!("app{i}"),
                framework_id: "marathon".to_owned(),
                framework: "marathon".to_owned(),
                agent_id: "S0".to_owned(),
                agent_ip: IpAddr::V4(address(i)),
                container_ips: Vec::new(),
                healthy: None,
                ports: Vec::new(),
                labels: BTreeMap::new(),
            };
            (task.id.clone(), task)
        })
        .collect();
    ClusterView {
        revision: 1,
        leader: Some("m1".to_owned()),
        masters: vec![MasterEntry { id: "m1".to_owned(), ip: IpAddr::V4(Ipv4Addr::LOCALHOST) }],
        agents: BTreeMap::from([(
            "S0".to_owned(),
            AgentEntry { id: "S0".to_owned(), hostname: "agent".to_owned(), ip: IpAddr::V4(address(0)) },
        )]),
        frameworks: BTreeMap::from([(
            "marathon".to_owned(),
            FrameworkEntry { id: "marathon".to_owned(), name: "marathon".to_owned() },
        )]),
        tasks,
    }
}

struct Server {
    loops: UdpLoops,
    address: SocketAddr,
    deferred: mpsc::Receiver<DeferredQuery>,
}

/// `threads` UDP threads on a free port of 127.0.0.1; `before_start` runs between binding
/// and starting them (to queue datagrams they will find at once).
fn serve(threads: usize, before_start: impl FnOnce(SocketAddr)) -> Server {
    let config = Arc::new(DnsConfig::default());
    let index = Arc::new(SharedIndex::new(Index::from_view(&config, &view())));
    let sockets = bind_udp("127.0.0.1:0".parse().unwrap(), threads).unwrap();
    let address = sockets[0].local_addr().unwrap();
    before_start(address);
    let (defer, deferred) = mpsc::channel(1024);
    let loops = UdpLoops::start(sockets, &index, &config, false, defer, 7).unwrap();
    Server { loops, address, deferred }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

fn client() -> UdpSocket {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client
}

#[test]
fn a_burst_larger_than_a_batch_is_answered_in_full_with_matching_ids() {
    let queries = 3 * BATCH + 7;
    let client = client();
    // Queued before the threads start, so the first receive finds the whole burst; every
    // tenth query is for a name out of the zones, which the full path gets.
    let mut expected = HashMap::new();
    let mut forwarded = Vec::new();
    let server = serve(1, |server| {
        for n in 0..queries {
            let id = 0x1000 + n as u16;
            if n % 10 == 9 {
                let packet = query(id, &format!("host{n}.example.com."));
                client.send_to(&packet, server).unwrap();
                forwarded.push(packet);
            } else {
                let i = (n as u32 * 7) % NAMES;
                client.send_to(&query(id, &format!("app{i}.marathon.mesos.")), server).unwrap();
                expected.insert(id, (format!("app{i}.marathon.mesos."), address(i)));
            }
        }
    });
    let mut buffer = [0u8; 4096];
    for _ in 0..expected.len() {
        let (len, from) = client.recv_from(&mut buffer).expect("every answered query gets a reply");
        assert_eq!(from, server.address);
        let reply = Message::from_vec(&buffer[..len]).unwrap();
        let (name, ip) = expected.remove(&reply.metadata.id).expect("a reply to a query asked once");
        assert_eq!(reply.queries[0].name().to_string(), name);
        let answers: Vec<RData> = reply.answers.iter().map(|r| r.data.clone()).collect();
        assert_eq!(answers, [RData::A(ip.into())], "{name}");
    }
    assert!(expected.is_empty());
    let mut server = server;
    for packet in forwarded {
        let deferred = server.deferred.try_recv().expect("a query out of the zones goes to the full path");
        assert_eq!(deferred.packet, packet);
        assert_eq!(deferred.client, client.local_addr().unwrap());
    }
    assert!(server.deferred.try_recv().is_err());
    let stats = server.loops.stats();
    assert_eq!((stats.queries, stats.answered), (queries as u64 - queries as u64 / 10, stats.queries));
}

#[test]
fn a_reply_the_kernel_refuses_does_not_cost_the_rest_of_its_batch() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = client();
    let to = SockaddrStorage::from(client.local_addr().unwrap());
    // An IPv6 destination on an IPv4 socket: sendmmsg sends the first reply, stops at this
    // one (EAFNOSUPPORT), and the rest must still go.
    let refused = SockaddrStorage::from("[::1]:53".parse::<SocketAddr>().unwrap());
    let mut batch = Batch::new();
    batch.push_reply(0, b"zero", to);
    batch.push_reply(1, b"refused", refused);
    batch.push_reply(2, b"two", to);
    batch.push_reply(3, b"refused", refused);
    batch.push_reply(4, b"refused", refused);
    batch.push_reply(5, b"five", to);
    batch.send(sender.as_raw_fd(), 6);
    let mut buffer = [0u8; 64];
    for expected in [&b"zero"[..], b"two", b"five"] {
        let len = client.recv(&mut buffer).expect("the replies around the refused ones are sent");
        assert_eq!(&buffer[..len], expected);
    }
}

#[test]
fn idle_threads_stop_promptly_and_release_the_port() {
    let Server { mut loops, address, mut deferred } = serve(2, |_| {});
    // A query answered (within the client's bound) shows the threads serving; they are back
    // in their blocking receive when they are stopped.
    let client = client();
    client.send_to(&query(0x2000, "app1.marathon.mesos."), address).unwrap();
    let mut buffer = [0u8; 512];
    client.recv(&mut buffer).expect("the threads answer before they are stopped");
    let (done, stopped) = std::sync::mpsc::channel();
    let stopper = std::thread::spawn(move || {
        loops.stop();
        done.send(()).unwrap();
        loops
    });
    stopped.recv_timeout(Duration::from_secs(10)).expect("idle UDP threads stop within 10 s");
    drop(stopper.join().unwrap());
    // The threads held the full path's only senders.
    assert!(matches!(deferred.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    UdpSocket::bind(address).expect("the port is free again");
}

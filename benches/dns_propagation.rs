//! Time from a `ViewChange::TaskUp` delivered to the DNS actor until its name resolves over
//! real UDP: 1,000 new tasks, one at a time, on top of a view of 10,000 tasks; each is asked
//! for in a loop (one query in flight) until it answers. Prints p50, p99 and max.
//!
//! `cargo bench --bench dns_propagation`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::discovery::{ClusterView, TaskEntry, ViewChange, ViewUpdate};
use flotilla_actors::dns::{Dns, DnsArgs, DnsConfig, DnsMsg};
use flotilla_supervisors::{Node, NodeId};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use ractor::Actor;
use tokio::net::UdpSocket;

const BASE_TASKS: u32 = 10_000;
const NEW_TASKS: u32 = 1_000;
/// A bound on one name's wait, so a lost update fails the run instead of hanging it.
const GIVE_UP: Duration = Duration::from_secs(5);

fn task(i: u32) -> TaskEntry {
    TaskEntry {
        id: format!("t{i}"),
        name: format!("app{i}"),
        framework_id: "marathon".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: "S1".to_owned(),
        agent_ip: IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        container_ips: Vec::new(),
        healthy: None,
        ports: Vec::new(),
        labels: BTreeMap::new(),
    }
}

async fn resolves(socket: &UdpSocket, server: SocketAddr, name: &Name, id: u16, buf: &mut [u8]) -> bool {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name.clone(), RecordType::A));
    socket.send_to(&message.to_vec().unwrap(), server).await.unwrap();
    loop {
        let n = socket.recv(buf).await.unwrap();
        let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
        if reply.metadata.id == id {
            return reply.metadata.response_code == ResponseCode::NoError && !reply.answers.is_empty();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let node = Node::builder(NodeId::new("dns-bench").unwrap()).seed(1).start().await.unwrap();
        let config =
            DnsConfig { listen: "127.0.0.1:0".parse().unwrap(), upstreams: Some(Vec::new()), ..DnsConfig::default() };
        let (actor, _) = Actor::spawn(None, Dns, DnsArgs { node: node.clone(), config }).await.unwrap();
        let view = ClusterView { tasks: (0..BASE_TASKS).map(|i| (format!("t{i}"), task(i))).collect(), ..Default::default() };
        actor.send_message(DnsMsg::View(ViewUpdate::Reset(Arc::new(view)))).unwrap();
        let server = ractor::call_t!(actor, DnsMsg::Status, 60_000).unwrap().bound.udp;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut samples = Vec::with_capacity(NEW_TASKS as usize);
        let mut queries = 0u64;
        for k in 0..NEW_TASKS {
            let i = BASE_TASKS + k;
            let name = Name::from_ascii(format!("app{i}.marathon.mesos.")).unwrap();
            let change = ViewChange::TaskUp(task(i));
            let started = Instant::now();
            let update = ViewUpdate::Changes { revision: u64::from(i), changes: Arc::new(vec![change]) };
            actor.send_message(DnsMsg::View(update)).unwrap();
            loop {
                queries += 1;
                if resolves(&socket, server, &name, (queries & 0xffff) as u16, &mut buf).await {
                    break;
                }
                assert!(started.elapsed() < GIVE_UP, "app{i} never resolved");
            }
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "dns TaskUp -> resolvable over UDP ({NEW_TASKS} tasks on {BASE_TASKS}): p50 {:?} p99 {:?} max {:?} ({} queries)",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            queries
        );
        actor.stop(None);
        node.shutdown();
    });
}

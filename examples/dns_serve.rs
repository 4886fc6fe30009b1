//! Serves N synthetic task names from Flotilla's DNS server, for side-by-side benchmarks
//! (`benches/dns/run.sh`): task `i` is `app<i>.marathon.mesos` on agent address
//! `10.<i/65536>.<i/256%256>.<i%256>`. Serves UDP on `<threads>` threads (default 1; the
//! actor, the full path and TCP share one more) until interrupted.
//!
//! `cargo run --release --example dns_serve -- <names> [<port> [<threads>]]` prints
//! `listening <addr>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use flotilla_actors::discovery::{AgentEntry, ClusterView, FrameworkEntry, MasterEntry, TaskEntry, ViewUpdate};
use flotilla_actors::dns::{Dns, DnsArgs, DnsConfig, DnsMsg};
use flotilla_supervisors::{Node, NodeId};
use ractor::Actor;

/// The address of synthetic task `i` (the run script writes the same into dnsmasq's hosts file).
pub fn task_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

pub fn synthetic_view(names: u32) -> ClusterView {
    let tasks = (0..names)
        .map(|i| {
            let task = TaskEntry {
                id: format!("app{i}.{i}"),
                name: format!("app{i}"),
                framework_id: "marathon".to_owned(),
                framework: "marathon".to_owned(),
                agent_id: format!("S{}", i % 100),
                agent_ip: task_ip(i),
                container_ips: Vec::new(),
                healthy: None,
                ports: Vec::new(),
                labels: BTreeMap::new(),
            };
            (task.id.clone(), task)
        })
        .collect();
    let agent = AgentEntry { id: "S0".to_owned(), hostname: "agent".to_owned(), ip: task_ip(0) };
    ClusterView {
        revision: 1,
        leader: Some("m1".to_owned()),
        masters: vec![MasterEntry { id: "m1".to_owned(), ip: IpAddr::V4(Ipv4Addr::LOCALHOST) }],
        agents: BTreeMap::from([("S0".to_owned(), agent)]),
        frameworks: BTreeMap::from([(
            "marathon".to_owned(),
            FrameworkEntry { id: "marathon".to_owned(), name: "marathon".to_owned() },
        )]),
        tasks,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let names: u32 = args.next().as_deref().unwrap_or("1000").parse()?;
    let port: u16 = args.next().as_deref().unwrap_or("0").parse()?;
    let threads: usize = args.next().as_deref().unwrap_or("1").parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let node = Node::builder(NodeId::new("dns-serve")?).seed(1).start().await?;
        let config = DnsConfig {
            listen: format!("127.0.0.1:{port}").parse()?,
            upstreams: Some(Vec::new()),
            threads,
            ..DnsConfig::default()
        };
        let (actor, _) = Actor::spawn(None, Dns, DnsArgs { node: node.clone(), config }).await?;
        actor.send_message(DnsMsg::View(ViewUpdate::Reset(Arc::new(synthetic_view(names)))))?;
        let status = ractor::call_t!(actor, DnsMsg::Status, 60_000)?;
        println!("listening {} names {}", status.bound.udp, status.names);
        tokio::signal::ctrl_c().await?;
        actor.stop(None);
        node.shutdown();
        Ok(())
    })
}

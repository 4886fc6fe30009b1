//! One VIP served by Flotilla's load balancer, for benchmarks: the actor is fed a view with a
//! task per backend, and prints `VIP <ip>:<port>` once it serves.
//!
//! `l4lb_proxy <vip-label> <backend-port>... [--copy | --nftables]` where the label is a VIP
//! label value (`127.0.0.100:8080`, or `/bench:8080` for a named VIP, which needs root) and
//! backends are ports on 127.0.0.1. The mode: by default the user-space proxy relaying with
//! `splice(2)`; `--copy` the proxy copying through user space; `--nftables` the kernel's DNAT
//! (root and `nft`; the example fails rather than measure the proxy's fallback). Lines on
//! stdin: `remove <n>` (TaskGone of the n-th backend), `status`, `quit`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::discovery::{ClusterView, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate};
use flotilla_actors::l4lb::{DataPlane, L4lbArgs, L4lbConfig, L4lbMsg, LoadBalancer, VipState};
use flotilla_supervisors::{Node, NodeId};
use ractor::{Actor, ActorRef};

fn task(index: usize, port: u16, label: &str) -> TaskEntry {
    TaskEntry {
        id: format!("backend-{index}"),
        name: "bench".to_owned(),
        framework_id: "fw".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: "local".to_owned(),
        agent_ip: "127.0.0.1".parse().expect("an address"),
        container_ips: Vec::new(),
        healthy: None,
        ports: vec![PortEntry {
            number: port,
            protocol: PortProtocol::Tcp,
            name: None,
            labels: BTreeMap::from([("VIP_0".to_owned(), label.to_owned())]),
        }],
        labels: BTreeMap::new(),
    }
}

async fn wait_serving(lb: &ActorRef<L4lbMsg>) -> Result<String, Box<dyn std::error::Error>> {
    for _ in 0..500 {
        let status = flotilla_supervisors::call(lb, L4lbMsg::Status, Duration::from_secs(5)).await?;
        if let Some(error) = &status.data_plane_error {
            return Err(error.clone().into());
        }
        if let Some(vip) = status.vips.first() {
            match &vip.state {
                VipState::Serving => return Ok(format!("{}:{}", vip.key.ip, vip.key.port)),
                VipState::Failed(error) => return Err(error.clone().into()),
                VipState::Draining => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the VIP did not start".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let zero_copy = !args.iter().any(|a| a == "--copy");
    let data_plane = if args.iter().any(|a| a == "--nftables") { DataPlane::Nftables } else { DataPlane::Proxy };
    let args: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (label, ports) =
        args.split_first().ok_or("usage: l4lb_proxy <vip-label> <backend-port>... [--copy | --nftables]")?;
    let ports: Vec<u16> = ports.iter().map(|p| p.parse()).collect::<Result<_, _>>()?;

    let node = Node::builder(NodeId::new("bench")?).seed(1).start().await?;
    let config = L4lbConfig { zero_copy, data_plane, drain_timeout: Duration::from_secs(5), ..L4lbConfig::default() };
    let (lb, _) = Actor::spawn(None, LoadBalancer, L4lbArgs { node: node.clone(), config }).await?;
    let mut view = ClusterView::default();
    for (index, port) in ports.iter().enumerate() {
        view.apply(&ViewChange::TaskUp(task(index, *port, label)));
    }
    lb.send_message(L4lbMsg::View(ViewUpdate::Reset(Arc::new(view))))?;
    println!("VIP {}", wait_serving(&lb).await?);

    // Commands come from a plain thread: the example has no need for tokio's stdin.
    let (commands, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if commands.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = received.recv().await {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["remove", n] => {
                let changes = Arc::new(vec![ViewChange::TaskGone { id: format!("backend-{n}") }]);
                lb.send_message(L4lbMsg::View(ViewUpdate::Changes { revision: 2, changes }))?;
                println!("removed backend-{n}");
            }
            ["status"] => {
                let status = flotilla_supervisors::call(&lb, L4lbMsg::Status, Duration::from_secs(5)).await?;
                println!("{status:?}");
            }
            ["quit"] => break,
            _ => println!("commands: remove <n>, status, quit"),
        }
    }
    lb.stop(None);
    lb.get_cell().wait(Some(Duration::from_secs(5))).await?;
    node.shutdown();
    Ok(())
}

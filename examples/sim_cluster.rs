//! A whole cluster in one process with `flotilla::sim`: three masters and five agents on the
//! simulated network and virtual time. An app is deployed, the leader crashes and comes
//! back, a partition cuts an agent off for a while; then the cluster runs on for the rest
//! of the simulated span. Prints what happened, the run's trace digest (the same seed gives
//! the same digest) and how much faster than real time the simulation ran.
//!
//! Run: `cargo run --release --example sim_cluster -- [seed] [simulated minutes]`

use std::time::{Duration, Instant};

use flotilla::sim::{self, SimBuilder, SimCluster, wait_until};
use flotilla_transport::{Fault, NodeSet};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let minutes: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let wall = Instant::now();
    let simulated = sim::run(scenario(seed, Duration::from_secs(minutes * 60)))?;
    let elapsed = wall.elapsed();
    println!(
        "simulated {:.0} s in {:.2} s of wall time: {:.0}x real time",
        simulated.as_secs_f64(),
        elapsed.as_secs_f64(),
        simulated.as_secs_f64() / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Runs the story and returns how much virtual time it took.
async fn scenario(seed: u64, span: Duration) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    let cluster = SimBuilder::new(seed).masters(3).agents(5).start().await?;
    let at = |what: &str| println!("{:>9.3} s  {what}", start.elapsed().as_secs_f64());
    let leader = wait_until("a leader", BOUND, async || cluster.leader().await).await;
    at(&format!("{leader} leads"));

    let app = json!({"id": "/web", "cmd": "serve", "cpus": 0.25, "mem": 64, "instances": 8});
    wait_until("the app is created", BOUND, async || {
        cluster.marathon("POST", "/v2/apps", app.clone()).await.filter(|answer| answer.status == 201)
    })
    .await;
    running(&cluster, 8).await;
    at("/web runs 8 tasks");

    cluster.crash(&leader)?;
    at(&format!("{leader} crashed"));
    let next = wait_until("a new leader", BOUND, async || cluster.leader().await.filter(|l| *l != leader)).await;
    at(&format!("{next} leads"));
    cluster.restart(&leader).await?;
    at(&format!("{leader} restarted"));

    let cut = cluster.net().inject(Fault::Partition {
        a: NodeSet::of(["a1"]),
        b: NodeSet::of(cluster.master_ids()),
        one_way: false,
    })?;
    at("a1 partitioned from the masters");
    tokio::time::sleep(Duration::from_secs(20)).await;
    cluster.net().heal(cut);
    at("partition healed");
    running(&cluster, 8).await;
    at("/web runs 8 tasks");

    let rest = span.saturating_sub(start.elapsed());
    tokio::time::sleep(rest).await;
    running(&cluster, 8).await;
    at(&format!("still 8 tasks; trace {:?}", cluster.trace()));
    let simulated = start.elapsed();
    cluster.shutdown().await;
    Ok(simulated)
}

async fn running(cluster: &SimCluster, count: usize) {
    wait_until("the app's tasks run", BOUND, async || {
        let app = cluster.marathon("GET", "/v2/apps/web", serde_json::Value::Null).await?.json_body();
        let tasks = app["app"]["tasks"].as_array()?.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
        (tasks == count && app["app"]["deployments"].as_array()?.is_empty()).then_some(())
    })
    .await
}

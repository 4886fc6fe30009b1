//! `flotilla::sim` as a test author uses it: a whole cluster in one process on virtual time,
//! a leader's crash and return, and the same seed reproducing the same run frame for frame.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla::sim::{self, SimBuilder, SimCluster, wait_until};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(60);

/// Waits until `/app` has `count` running tasks and no deployment; returns their ids.
async fn app_running(cluster: &SimCluster, app: &str, count: usize) -> BTreeSet<String> {
    let what = format!("{app} with {count} running tasks");
    wait_until(&what, BOUND, async || {
        let answer = cluster.marathon("GET", &format!("/v2/apps{app}"), serde_json::Value::Null).await?;
        let body = answer.json_body();
        let app = &body["app"];
        let running: BTreeSet<String> = app["tasks"]
            .as_array()?
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING")
            .filter_map(|task| task["id"].as_str().map(str::to_owned))
            .collect();
        let idle = app["deployments"].as_array()?.is_empty();
        (idle && running.len() == count).then_some(running)
    })
    .await
}

/// Starts a cluster, deploys an app, crashes the leader and waits for its successor to
/// report the same tasks; returns the cluster and the two leaders.
async fn failover_scenario(seed: u64) -> (SimCluster, String, String) {
    let cluster = SimBuilder::new(seed).masters(3).agents(2).start().await.expect("the simulation starts");
    let first = wait_until("a leader", BOUND, async || cluster.leader().await).await;
    let created = wait_until("the app is created", BOUND, async || {
        let body = json!({"id": "/web", "cmd": "serve", "cpus": 0.5, "mem": 64, "instances": 3});
        cluster.marathon("POST", "/v2/apps", body).await.filter(|answer| answer.status == 201)
    })
    .await;
    assert_eq!(created.status, 201);
    let tasks = app_running(&cluster, "/web", 3).await;
    cluster.crash(&first).expect("the leader crashes");
    let second = wait_until("a new leader", BOUND, async || cluster.leader().await.filter(|l| *l != first)).await;
    assert_eq!(app_running(&cluster, "/web", 3).await, tasks, "the new leader reports the same tasks");
    (cluster, first, second)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cluster_keeps_its_app_across_a_leader_crash_and_the_old_leader_rejoins() {
    let (cluster, first, second) = failover_scenario(3).await;
    assert_eq!(cluster.running_tasks().len(), 3, "the tasks never stopped on their hosts");
    cluster.restart(&first).await.expect("the old leader restarts");
    let rejoined = wait_until("the old leader follows the new one", BOUND, async || {
        let status = cluster.registry().status_of(&first).await.ok()?;
        (status.leader.as_deref() == Some(second.as_str())).then_some(status)
    })
    .await;
    assert_eq!(rejoined.leader.as_deref(), Some(second.as_str()));
    let scaled = cluster.marathon("PUT", "/v2/apps/web", json!({"instances": 1})).await.expect("the leader answers");
    assert_eq!(scaled.status, 200, "{}", String::from_utf8_lossy(&scaled.body));
    app_running(&cluster, "/web", 1).await;
    cluster.shutdown().await;
}

#[test]
fn one_seed_reproduces_the_same_run_frame_for_frame() {
    let trace = |seed| {
        sim::run(async move {
            let (cluster, first, second) = failover_scenario(seed).await;
            let trace = cluster.trace();
            cluster.shutdown().await;
            (first, second, trace)
        })
    };
    let (first, second, once) = trace(5);
    let (first_again, second_again, twice) = trace(5);
    assert_eq!((first_again, second_again), (first, second), "the same leaders");
    assert_eq!(twice, once, "seed 5 delivered other frames the second time");
    assert!(once.frames > 100, "the scenario sends frames: {once:?}");
    let (_, _, other) = trace(6);
    assert_ne!(other.digest, once.digest, "another seed gives another run");
}

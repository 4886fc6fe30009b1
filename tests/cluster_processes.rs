//! Three real `flotilla master` processes and two real `flotilla agent` processes on loopback,
//! running real tasks (isolated when the test runs as root with writable cgroups, plain
//! processes otherwise): tasks started with `flotilla task run` run; an agent killed with
//! SIGKILL and restarted keeps its tasks running and re-adopts them; the leading master killed
//! with SIGKILL is replaced by a new leader that learns every running task from the agents;
//! health checks run on the agents (a passing one reports the task healthy, a failing one
//! kills it); bad task specs and bad configurations get clear errors.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use flotilla::client::ClusterClient;
use flotilla::local_cluster::{LocalCluster, http_request};
use flotilla_actors::mesos::core::TaskState;
use flotilla_actors::mesos::protocol::MasterState;

const BOUND: Duration = Duration::from_secs(60);

fn run_cli(cluster: &LocalCluster, args: &[&str]) -> Output {
    let mut cli = cluster.cli("task");
    // The test's bound, not the CLI's 10 s default: the killed leader stays in the list of
    // masters to try, and two cores run five nodes, their tasks and often a build.
    cli.args(["--timeout-secs", "30"]).args(args);
    cli.output().expect("the cli runs")
}

/// Waits until the leader (done recovering) reports these task states.
async fn states(client: &ClusterClient, want: &[(&str, TaskState)]) -> MasterState {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Ok(state) = client.master_state(Duration::from_secs(5)).await {
            let all: BTreeMap<&str, TaskState> =
                state.tasks.iter().chain(&state.completed_tasks).map(|t| (t.task.task_id.as_str(), t.state)).collect();
            if !state.recovering && want.iter().all(|(id, s)| all.get(id) == Some(s)) {
                return state;
            }
            assert!(tokio::time::Instant::now() < deadline, "want {want:?}, have {all:?}");
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader state within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn task_id(output: &Output) -> String {
    assert!(output.status.success(), "task run failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tasks_survive_an_agent_restart_and_a_master_failover() {
    flotilla_transport::tls::install_default_provider();
    let dir = std::env::temp_dir().join(format!("flotilla-cluster-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Dropped after the cluster, pass or fail: no task or cgroup of this test outlives it.
    let _cgroups = CgroupCleanup(format!("flotilla-test-{}-", std::process::id()));
    let mut cluster = LocalCluster::prepare(env!("CARGO_BIN_EXE_flotilla").as_ref(), &dir, 3, "").unwrap();
    cluster.start_all(BOUND).unwrap();
    for _ in 0..2 {
        let index = cluster
            .add_agent("resources = \"cpus:2;mem:1024\"\nmaster_timeout_secs = 5\nstatus_retry_secs = 1")
            .unwrap();
        cluster.start_agent(index, BOUND).unwrap();
    }
    let client = cluster.client().await.unwrap();

    // Bad specs are refused with the reason, and nothing starts.
    let refused = run_cli(&cluster, &["run", "--name", "nomem", "--mem", "0", "--", "true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cpus and mem"), "{refused:?}");

    let long = [
        "run",
        "--name",
        "web",
        "--cpus",
        "0.5",
        "--mem",
        "64",
        "--ports",
        "1",
        "--",
        "echo started >> $MESOS_SANDBOX/starts; exec sleep 600",
    ];
    let web: Vec<String> = (0..3).map(|_| task_id(&run_cli(&cluster, &long))).collect();
    let done = task_id(&run_cli(
        &cluster,
        &[
            "run",
            "--name",
            "done",
            "--",
            "test -n \"$MESOS_TASK_ID\" && test \"$(pwd)\" = \"$MESOS_SANDBOX\" || exit 7",
        ],
    ));
    let fails = task_id(&run_cli(&cluster, &["run", "--name", "fails", "--", "exit 3"]));
    let checked = |name: &str, check: &str| {
        let flags = ["run", "--name", name, "--health-cmd", check, "--health-interval-secs", "0.2"];
        let more = ["--health-grace-secs", "0", "--health-max-failures", "2", "--", "exec sleep 600"];
        task_id(&run_cli(&cluster, &[&flags[..], &more[..]].concat()))
    };
    let healthy = checked("healthy", "test -n \"$MESOS_TASK_ID\"");
    let unhealthy = checked("unhealthy", "test -e never-made");
    let mut want: Vec<(&str, TaskState)> = web.iter().map(|id| (id.as_str(), TaskState::Running)).collect();
    want.push((&done, TaskState::Finished));
    want.push((&fails, TaskState::Failed));
    want.push((&unhealthy, TaskState::Killed));
    let state = states(&client, &want).await;
    task_output_is_read_through_a_master(&cluster, &client).await;
    let killed = state.completed_tasks.iter().find(|t| t.task.task_id == unhealthy).expect("the unhealthy task");
    let last = killed.statuses.last().expect("statuses");
    assert!(last.message.contains("2 consecutive failed health checks"), "{last:?}");
    assert_eq!(last.healthy, Some(false));
    let deadline = tokio::time::Instant::now() + BOUND;
    while !client.master_state(Duration::from_secs(5)).await.is_ok_and(|state| {
        state.tasks.iter().any(|t| t.task.task_id == healthy && t.statuses.iter().any(|s| s.healthy == Some(true)))
    }) {
        assert!(tokio::time::Instant::now() < deadline, "the healthy task was never reported healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agents_used: std::collections::BTreeSet<&str> = state.tasks.iter().map(|t| t.agent_id.as_str()).collect();
    assert!(!agents_used.is_empty());

    // An agent killed with SIGKILL and restarted: its tasks keep running and are re-adopted.
    let on_a1: Vec<String> =
        state.tasks.iter().filter(|t| t.agent_id == "a1").map(|t| t.task.task_id.clone()).collect();
    cluster.kill_agent(0);
    cluster.start_agent(0, BOUND).unwrap();
    let running: Vec<(&str, TaskState)> = web.iter().map(|id| (id.as_str(), TaskState::Running)).collect();
    let after_restart = states(&client, &running).await;
    for id in &on_a1 {
        let task = after_restart.tasks.iter().find(|t| &t.task.task_id == id).unwrap();
        assert_eq!(task.agent_id, "a1");
    }
    // Each task's command ran exactly once: nothing was relaunched.
    let starts = |id: &str| {
        ["a1", "a2"]
            .iter()
            .filter_map(|agent| std::fs::read_to_string(dir.join(agent).join("sandboxes").join(id).join("starts")).ok())
            .map(|text| text.lines().count())
            .sum::<usize>()
    };
    for id in &web {
        assert_eq!(starts(id), 1, "{id} started once");
    }

    // The leading master killed with SIGKILL: a new leader learns every running task.
    let leader = after_restart.leader.clone();
    cluster.kill(cluster.index_of(&leader).unwrap());
    let deadline = tokio::time::Instant::now() + BOUND;
    let recovered = loop {
        if let Ok(state) = client.master_state(Duration::from_secs(5)).await
            && state.leader != leader
            && !state.recovering
        {
            break state;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = recovered;
    states(&client, &running).await;
    for id in &web {
        assert_eq!(starts(id), 1, "{id} still started once after the failover");
    }

    // A Marathon app created through a follower's HTTP API (forwarded to the leader), listed
    // through another master's, and removed with the CLI.
    marathon_through_followers(&cluster, &client).await;

    // Killing a task through the new leader's launcher.
    let killed = run_cli(&cluster, &["kill", &web[0]]);
    assert!(killed.status.success(), "{killed:?}");
    states(&client, &[(web[0].as_str(), TaskState::Killed)]).await;

    // Leave nothing behind: the other tasks killed, then the agents' (empty) cgroup roots.
    for id in web[1..].iter().chain([&healthy]) {
        let output = run_cli(&cluster, &["kill", id]);
        assert!(output.status.success(), "kill {id}: {output:?}");
    }
    let killed: Vec<(&str, TaskState)> =
        web[1..].iter().chain([&healthy]).map(|id| (id.as_str(), TaskState::Killed)).collect();
    states(&client, &killed).await;
    client.close().await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On drop, SIGKILLs every process left in the cgroups whose name starts with the prefix (in
/// every hierarchy: a failed test leaves its tasks running) and removes those cgroups,
/// children first, waiting a bounded time for the killed processes to leave them.
struct CgroupCleanup(String);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        let roots = cgroup_roots(&self.0);
        let pids: Vec<String> = roots.iter().flat_map(|root| processes_in(root)).collect();
        if !pids.is_empty() {
            let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
        }
        let deadline = std::time::Instant::now() + BOUND;
        for root in roots {
            while !remove_tree(&root) && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
    }
}

fn cgroup_roots(prefix: &str) -> Vec<std::path::PathBuf> {
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().filter_map(Result::ok);
    hierarchies
        .flat_map(|hierarchy| std::fs::read_dir(hierarchy.path()).into_iter().flatten().filter_map(Result::ok))
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect()
}

fn subdirectories(dir: &std::path::Path) -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
}

/// The pids in `dir`'s cgroup and its descendants.
fn processes_in(dir: &std::path::Path) -> Vec<String> {
    let here = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let mut pids: Vec<String> = here.split_whitespace().map(str::to_owned).collect();
    pids.extend(subdirectories(dir).flat_map(|child| processes_in(&child)));
    pids
}

/// Removes `dir` and its descendants, children first; whether it is gone.
fn remove_tree(dir: &std::path::Path) -> bool {
    subdirectories(dir).for_each(|child| {
        remove_tree(&child);
    });
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

#[test]
fn a_bad_agent_config_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("flotilla-bad-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(&config, "[node]\nid = \"a1\"\ndata_dir = \"/tmp/a1\"\nlisten = \"127.0.0.1:0\"\nlisen = 1\n")
        .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5") && stderr.contains("lisen"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Marathon app posted to a follower's HTTP API runs (the request is forwarded to the
/// leader's scheduler), every master's API shows it, and `flotilla app remove` removes it.
async fn marathon_through_followers(cluster: &LocalCluster, client: &ClusterClient) {
    let leader = client.master_state(BOUND).await.unwrap().leader;
    let followers: Vec<usize> =
        (0..cluster.masters().len()).filter(|i| cluster.is_running(*i) && cluster.masters()[*i].0 != leader).collect();
    let api = |index: usize| cluster.api(index).expect("a running master prints its API address");
    let app = r#"{"id": "/svc", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2}"#;
    let (status, body) = http_request(api(followers[0]), "POST", "/service/marathon/v2/apps", app).unwrap();
    assert_eq!(status, 201, "{body}");
    // The event stream lives on the leader: a follower sends its clients there.
    let leader_index = cluster.masters().iter().position(|m| m.0 == leader).unwrap();
    let location = redirect_location(api(followers[0]), "/v2/events?event_type=deployment_info");
    assert_eq!(location, format!("http://{}/v2/events?event_type=deployment_info", api(leader_index)));
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (status, body) = http_request(api(followers[1 % followers.len()]), "GET", "/v2/apps/svc", "").unwrap();
        let app: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200
            && app["app"]["tasksRunning"] == 2
            && app["app"]["deployments"].as_array().is_some_and(Vec::is_empty)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app did not run within {BOUND:?}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = cluster.cli("app").args(["--timeout-secs", "30", "list"]).output().unwrap();
    assert!(listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("/svc"), "{listed:?}");
    let removed = cluster.cli("app").args(["--timeout-secs", "30", "remove", "/svc", "--wait"]).output().unwrap();
    assert!(removed.status.success(), "{removed:?}");
    let (status, _) = http_request(api(followers[0]), "GET", "/v2/apps/svc", "").unwrap();
    assert_eq!(status, 404);
}

/// The `Location` of a `307` answer to `GET path`.
fn redirect_location(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 307") || answer.starts_with("HTTP/1.1 307"), "{answer}");
    let header = answer.lines().find_map(|line| line.strip_prefix("location: ").or(line.strip_prefix("Location: ")));
    header.expect("a Location header").trim().to_owned()
}

/// `flotilla task log` prints what a task wrote to its sandbox's stdout and stderr, read from
/// its agent through a master.
async fn task_output_is_read_through_a_master(cluster: &LocalCluster, client: &ClusterClient) {
    let talks = task_id(&run_cli(
        cluster,
        &["run", "--name", "talks", "--", "echo hello-from-task; echo oops >&2; exec sleep 600"],
    ));
    states(client, &[(talks.as_str(), TaskState::Running)]).await;
    for (flags, want) in [(&[][..], "hello-from-task"), (&["--stderr"][..], "oops")] {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let output = run_cli(cluster, &[&["log", talks.as_str()][..], flags].concat());
            if output.status.success() && String::from_utf8_lossy(&output.stdout).contains(want) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "task log {flags:?} never showed {want}: {output:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let missing = run_cli(cluster, &["log", "no-such-task"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(run_cli(cluster, &["kill", &talks]).status.success());
    states(client, &[(talks.as_str(), TaskState::Killed)]).await;
}

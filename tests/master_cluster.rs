//! Three real `flotilla master` processes on loopback: the leader is killed with SIGKILL, the
//! others elect a new leader and take writes, the killed master comes back and catches up, and
//! no acknowledged write is lost.

use std::path::PathBuf;
use std::time::Duration;

use flotilla::client::ClusterClient;
use flotilla::local_cluster::LocalCluster;
use flotilla_actors::registry::client::RegistryClient;

const BOUND: Duration = Duration::from_secs(30);

/// The leader all reachable masters agree on, polled every 10 ms for at most `BOUND`.
async fn agreed_leader(cluster: &LocalCluster, client: &RegistryClient) -> String {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let mut leaders = Vec::new();
        for (index, (id, _)) in cluster.masters().iter().enumerate() {
            if cluster.is_running(index) {
                leaders.push(client.status_of(id).await.ok().and_then(|status| status.leader));
            }
        }
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|leader| leader.as_ref() == Some(first))
        {
            return first.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no agreed leader within {BOUND:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three masters under a fresh `name` directory, an operator's client, the leader they agree
/// on, and `writes` acknowledged keys (each its own value) written before anything happens.
async fn started_cluster(name: &str, writes: usize) -> (PathBuf, LocalCluster, ClusterClient, String, Vec<String>) {
    flotilla_transport::tls::install_default_provider();
    let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster = LocalCluster::prepare(env!("CARGO_BIN_EXE_flotilla").as_ref(), &dir, 3, "").unwrap();
    cluster.start_all(BOUND).unwrap();
    let mut client = cluster.client().await.unwrap();
    let leader = agreed_leader(&cluster, &client.registry).await;
    let mut acknowledged = Vec::new();
    for i in 0..writes {
        let key = format!("/before/{i}");
        client.registry.put(&key, key.as_bytes(), BOUND).await.expect("write before anything happens");
        acknowledged.push(key);
    }
    (dir, cluster, client, leader, acknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let (dir, mut cluster, mut client, leader, mut acknowledged) = started_cluster("master-cluster", 20).await;

    let victim = cluster.index_of(&leader).unwrap();
    cluster.kill(victim);
    let killed = tokio::time::Instant::now();
    client.registry.put("/after/0", b"/after/0", BOUND).await.expect("a write after the kill");
    acknowledged.push("/after/0".to_owned());
    let recovered = killed.elapsed();
    let new_leader = agreed_leader(&cluster, &client.registry).await;
    assert_ne!(new_leader, leader);
    println!("leader {leader} killed; a write succeeded {recovered:?} later; new leader {new_leader}");
    for i in 1..20 {
        let key = format!("/after/{i}");
        client.registry.put(&key, key.as_bytes(), BOUND).await.expect("write on the new leader");
        acknowledged.push(key);
    }

    // The killed master restarts from its disk and catches up; every acknowledged write is
    // there, read linearizably through each master in turn.
    cluster.start(victim, BOUND).unwrap();
    agreed_leader(&cluster, &client.registry).await;
    for (id, _) in cluster.masters() {
        let mut via = RegistryClient::new(client.transport.clone(), vec![id.clone()], 1000 + id.len() as u64);
        for key in &acknowledged {
            let (_, kv) = via.get(key, BOUND).await.unwrap_or_else(|e| panic!("read {key} via {id}: {e}"));
            assert_eq!(kv.map(|kv| kv.value), Some(key.as_bytes().to_vec()), "{key} via {id}");
        }
        let status = client.registry.status_of(id).await.unwrap();
        assert!(status.revision >= acknowledged.len() as u64, "{id}: {status:?}");
    }
    client.close().await;

    // The operator's CLI against the same cluster.
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command.arg("registry").arg("--pki-dir").arg(cluster.pki_dir());
        for (id, address) in cluster.masters() {
            command.arg("--master").arg(format!("{id}={address}"));
        }
        let output = command.args(args).output().expect("flotilla runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    };
    let (ok, out, err) = cli(&["put", "/cli", "hello"]);
    assert!(ok && out.starts_with("revision "), "{out}{err}");
    assert_eq!(cli(&["get", "/cli"]).1, "hello\n");
    let (ok, _, err) = cli(&["get", "/missing"]);
    assert!(!ok && err.contains("/missing: no such key"), "{err}");
    let (ok, out, _) = cli(&["status"]);
    assert!(ok && out.lines().filter(|line| line.contains(" leader ")).count() == 1, "{out}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A leader all running masters agree on other than `old` (which may still be believed in for
/// an election timeout after it stopped leading), polled every 10 ms for at most `BOUND`.
async fn leader_other_than(cluster: &LocalCluster, client: &RegistryClient, old: &str) -> String {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let leader = agreed_leader(cluster, client).await;
        if leader != old {
            return leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "{old} still leads after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `flotilla <args>` as the operator; its exit code, stdout and stderr.
fn run(mut command: std::process::Command, args: &[&str]) -> (Option<i32>, String, String) {
    let output = command.args(args).output().expect("flotilla runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_added_and_the_leader_removed_with_the_cli_then_the_new_leader_killed_loses_no_write() {
    let (dir, mut cluster, client, leader, mut acknowledged) = started_cluster("membership", 10).await;
    client.close().await;

    let members = |args: &[&str]| run(cluster.cli("members"), args);
    assert_eq!(members(&["list"]), (Some(0), "m1\nm2\nm3\n".to_owned(), String::new()));
    let (code, _, err) = members(&["add", "m1"]);
    assert_eq!(code, Some(1), "a refused change exits 1: {err}");
    assert!(err.contains("m1 is already a voter"), "{err}");

    // A fourth master starts with `join = true`, then the operator adds it.
    let m4 = cluster.add_master().unwrap();
    cluster.start(m4, BOUND).unwrap();
    let members = |args: &[&str]| run(cluster.cli("members"), args);
    let (code, out, err) = members(&["add", "m4"]);
    assert_eq!((code, out.as_str()), (Some(0), "m1\nm2\nm3\nm4\n"), "{err}");

    // The operator removes the leader, then stops its process.
    let (code, out, err) = members(&["remove", &leader]);
    let mut remaining: Vec<&str> = ["m1", "m2", "m3", "m4"].into_iter().filter(|id| *id != leader).collect();
    assert_eq!((code, out), (Some(0), remaining.iter().map(|id| format!("{id}\n")).collect()), "{err}");
    cluster.kill(cluster.index_of(&leader).unwrap());

    let mut client = cluster.client().await.unwrap();
    let second = leader_other_than(&cluster, &client.registry, &leader).await;
    let status = client.registry.status_of("m4").await.expect("m4 answers");
    assert!(status.revision >= acknowledged.len() as u64, "m4 caught up: {status:?}");
    for i in 0..10 {
        let key = format!("/middle/{i}");
        client.registry.put(&key, key.as_bytes(), BOUND).await.expect("write after removing the leader");
        acknowledged.push(key);
    }

    // Kill the new leader: two of the three voters remain, and writes still commit.
    cluster.kill(cluster.index_of(&second).unwrap());
    remaining.retain(|id| *id != second);
    for i in 0..10 {
        let key = format!("/after/{i}");
        client.registry.put(&key, key.as_bytes(), BOUND).await.expect("write after killing the new leader");
        acknowledged.push(key);
    }
    let third = leader_other_than(&cluster, &client.registry, &second).await;
    assert!(remaining.contains(&third.as_str()), "{third} leads, among {remaining:?}");
    for id in &remaining {
        let mut via = RegistryClient::new(client.transport.clone(), vec![(*id).to_owned()], 2000 + id.len() as u64);
        for key in &acknowledged {
            let (_, kv) = via.get(key, BOUND).await.unwrap_or_else(|e| panic!("read {key} via {id}: {e}"));
            assert_eq!(kv.map(|kv| kv.value), Some(key.as_bytes().to_vec()), "{key} via {id}");
        }
    }
    client.close().await;

    // No master answers: exit status 3 (the outcome is unknown).
    let mut silent = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
    let (_, address) = &cluster.masters()[cluster.index_of(&leader).unwrap()];
    silent.args(["members", "--timeout-secs", "1", "--master", &format!("{leader}={address}")]);
    silent.arg("--pki-dir").arg(cluster.pki_dir());
    let (code, _, err) = run(silent, &["list"]);
    assert_eq!(code, Some(3), "{err}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

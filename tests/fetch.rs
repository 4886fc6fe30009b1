//! The Mesos fetcher end to end: the real agent actor with the plain driver (real processes,
//! the built `flotilla-task-init` as the shim, so these run as any user), a stand-in master on
//! SimNet in real time, and a tiny HTTP server in the test. Each test launches tasks whose
//! URIs the agent must bring into the sandbox before their command starts:
//!
//! - a plain file made executable and a `.tar.gz` extracted, both seen by the command;
//! - a 404, which fails the task with the URI in its message, the command never run;
//! - a `file://` copy;
//! - a cached URI fetched by two tasks and downloaded once;
//! - a kill while a download hangs, which ends the task without starting it.
//!
//! No test sleeps to wait: every wait is on a condition with a bound.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::agent_child;
use flotilla_actors::agent::driver::isolation::{IsolationConfig, PlainDriver};
use flotilla_actors::agent::driver::{TaskCommand, TaskDriver};
use flotilla_actors::mesos::core::{Resources, RoleResources, TaskState, UNRESERVED, UpdateReason};
use flotilla_actors::mesos::protocol::{
    AGENT_NAME, AgentInfo, AgentMessage, Command, FetchUri, MASTER_NAME, TaskInfo, ToAgent,
};
use flotilla_supervisors::{Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec};
use flotilla_transport::{Address, ClusterId, Network, PeerIdentity, Role, Sender, SimNet, Transport, TransportConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const MASTER: &str = "m1";
const AGENT: &str = "a1";
const TERM: u64 = 1;
/// The longest any condition below is waited for.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The test's HTTP server.
// ---------------------------------------------------------------------------------------------

/// What the server answers for a path.
#[derive(Clone)]
enum Answer {
    /// 200 with this body, `Content-Length` framed.
    Body(Vec<u8>),
    /// 200 with this body, chunked in pieces of 7 bytes.
    Chunked(Vec<u8>),
    /// This status and an empty body.
    Status(u16),
    /// Reads the request, then never answers.
    Hang,
}

/// A tiny HTTP/1.1 server: one request per connection, answers by path, counts requests.
struct Server {
    port: u16,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
    heard: mpsc::UnboundedReceiver<String>,
}

impl Server {
    async fn start(routes: BTreeMap<&'static str, Answer>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the test server");
        let port = listener.local_addr().expect("its address").port();
        let requests: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (heard_tx, heard) = mpsc::unbounded_channel();
        let routes: Arc<BTreeMap<String, Answer>> =
            Arc::new(routes.into_iter().map(|(path, answer)| (path.to_owned(), answer)).collect());
        let counts = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (routes, counts, heard) = (Arc::clone(&routes), Arc::clone(&counts), heard_tx.clone());
                tokio::spawn(async move { answer(socket, &routes, &counts, &heard).await });
            }
        });
        Server { port, requests, heard }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn count(&self, path: &str) -> usize {
        self.requests.lock().expect("counts").get(path).copied().unwrap_or(0)
    }
}

async fn answer(
    mut socket: tokio::net::TcpStream,
    routes: &BTreeMap<String, Answer>,
    counts: &Mutex<BTreeMap<String, usize>>,
    heard: &mpsc::UnboundedSender<String>,
) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&chunk[..read]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    *counts.lock().expect("counts").entry(path.clone()).or_default() += 1;
    let _ = heard.send(path.clone());
    let response = match routes.get(&path) {
        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Some(Answer::Status(status)) => format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n").into_bytes(),
        Some(Answer::Body(body)) => {
            let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            response.extend_from_slice(body);
            response
        }
        Some(Answer::Chunked(body)) => {
            let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in body.chunks(7) {
                response.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                response.extend_from_slice(piece);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"0\r\n\r\n");
            response
        }
        Some(Answer::Hang) => {
            // Holds the connection open without a byte until the client goes away.
            let _ = socket.read(&mut chunk).await;
            return;
        }
    };
    let _ = socket.write_all(&response).await;
}

// ---------------------------------------------------------------------------------------------
// The stand-in master and the agent.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Update {
    task_id: String,
    state: TaskState,
    reason: Option<UpdateReason>,
    message: String,
}

/// Registers the agent and acknowledges every update, passing it on to the test.
struct FakeMaster;

struct FakeState {
    transport: Transport,
    heard: mpsc::UnboundedSender<Update>,
    registered: mpsc::UnboundedSender<()>,
}

impl Actor for FakeMaster {
    type Msg = (Sender, AgentMessage);
    type State = FakeState;
    type Arguments = FakeState;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, state: FakeState) -> Result<FakeState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        (from, message): Self::Msg,
        state: &mut FakeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMessage::Register { .. } => {
                send(&state.transport, &from.node, Command::Registered);
                let _ = state.registered.send(());
            }
            AgentMessage::Update(status) => {
                if let Some(uuid) = status.uuid {
                    let task_id = status.task_id.clone();
                    send(&state.transport, &from.node, Command::Acknowledge { task_id, uuid });
                }
                let _ = state.heard.send(Update {
                    task_id: status.task_id,
                    state: status.state,
                    reason: status.reason,
                    message: status.message,
                });
            }
            AgentMessage::Pong { .. } | AgentMessage::NeverLaunched { .. } => {}
        }
        Ok(())
    }
}

fn send(transport: &Transport, agent: &str, command: Command) {
    transport.cast(agent, AGENT_NAME, &ToAgent { term: TERM, command }).expect("casting to the agent");
}

async fn start_node(net: &SimNet, id: &str, role: Role) -> (Node, Transport) {
    let node = Node::builder(NodeId::new(id).expect("id")).seed(7).start().await.expect("node");
    let identity = PeerIdentity { cluster: ClusterId::new("fetch").expect("cluster"), node: id.into(), role };
    let transport = Transport::start(&node, identity, TransportConfig::default(), Network::Sim(net.clone()), None)
        .await
        .expect("transport");
    (node, transport)
}

/// One agent with the plain driver and a stand-in master; cleans up after itself.
struct Cluster {
    /// The two nodes live as long as the test.
    _nodes: (Node, Node),
    master: Transport,
    agent: Transport,
    root: SupervisorRef,
    driver: Arc<PlainDriver>,
    updates: mpsc::UnboundedReceiver<Update>,
    work: PathBuf,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let mut isolation = IsolationConfig::new(env!("CARGO_BIN_EXE_flotilla-task-init"), Vec::new());
        isolation.cgroup_root = format!("flotilla-fetch-{name}-{}", std::process::id());
        let driver = Arc::new(PlainDriver::new(isolation.clone(), "forced by the test"));
        let work = std::env::temp_dir().join(&isolation.cgroup_root);
        let _ = std::fs::remove_dir_all(&work);

        let net = SimNet::new(7);
        let (master_node, master) = start_node(&net, MASTER, Role::Master).await;
        let (heard, updates) = mpsc::unbounded_channel();
        let (registered, mut registration) = mpsc::unbounded_channel();
        let state = FakeState { transport: master.clone(), heard, registered };
        let (fake, _) = Actor::spawn(None, FakeMaster, state).await.expect("master");
        master.export_from::<AgentMessage, (Sender, AgentMessage)>(MASTER_NAME, &fake, |from, m| (from, m));

        let (agent_node, agent) = start_node(&net, AGENT, Role::Agent).await;
        agent.connect(MASTER, Address::Sim);
        let mut resources = RoleResources::new();
        resources.insert(UNRESERVED.into(), Resources::cpus_mem_disk(2.0, 1024.0, 1000.0));
        let info = AgentInfo {
            id: AGENT.into(),
            hostname: "fetch-test".into(),
            resources,
            attributes: BTreeMap::new(),
            driver: String::new(),
            isolation_missing: Vec::new(),
        };
        let config = AgentConfig::new(info, work.clone(), vec![MASTER.into()]);
        let current = agent.clone();
        let child = agent_child(config, driver.clone(), Arc::new(move || Some(current.clone())));
        let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne)).named("agent").child(child);
        let root = Supervisor::spawn(agent_node.clone(), spec, None).await.expect("agent");
        // Commands reach only a registered agent.
        tokio::time::timeout(PATIENCE, registration.recv()).await.expect("the agent never registered");
        Cluster { _nodes: (master_node, agent_node), master, agent, root, driver, updates, work }
    }

    fn launch(&self, task: TaskInfo) {
        send(&self.master, AGENT, Command::Launch(Box::new(task)));
    }

    fn kill(&self, task_id: &str) {
        send(&self.master, AGENT, Command::Kill { task_id: task_id.to_owned(), grace_ms: Some(0) });
    }

    /// The task's first terminal update (failing the test after [`PATIENCE`]).
    async fn terminal(&mut self, task_id: &str) -> Update {
        let wait = async {
            loop {
                let update = self.updates.recv().await.expect("the master's channel closed");
                if update.task_id == task_id && update.state.is_terminal() {
                    return update;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("{task_id} never ended"))
    }

    /// The task's sandbox (the agent names it after the task id).
    fn sandbox(&self, task_id: &str) -> PathBuf {
        self.work.join("sandboxes").join(task_id)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.root.cell().kill();
        self.agent.abort();
        self.master.abort();
        self.driver.reap_orphans(&BTreeSet::new());
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn task(task_id: &str, script: &str, fetch: Vec<FetchUri>) -> TaskInfo {
    TaskInfo {
        task_id: task_id.into(),
        name: "fetch".into(),
        framework_id: "test".into(),
        role: UNRESERVED.into(),
        command: TaskCommand { shell: true, value: script.into(), arguments: Vec::new() },
        resources: Resources::cpus_mem_disk(0.1, 32.0, 0.0),
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        kill_grace_ms: 1_000,
        health_check: None,
        fetch,
        discovery: None,
    }
}

fn uri(uri: String) -> FetchUri {
    FetchUri { uri, extract: false, executable: false, cache: false, output_file: None }
}

/// A `.tar.gz` holding `data/file.txt`, made with the system's tar as an operator would.
fn tar_gz(scratch: &Path, contents: &str) -> Vec<u8> {
    let source = scratch.join("archive-source");
    std::fs::create_dir_all(source.join("data")).expect("archive source");
    std::fs::write(source.join("data/file.txt"), contents).expect("file.txt");
    let archive = scratch.join("bundle.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&source)
        .arg("data")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    std::fs::read(&archive).expect("the archive")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flotilla-fetch-scratch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_files_and_extracted_archives_are_in_the_sandbox_before_the_command_runs() {
    let scratch = scratch("archive");
    let archive = tar_gz(&scratch, "hello from the archive\n");
    let tool = b"#!/bin/sh\necho tool ran\n".to_vec();
    let server = Server::start(BTreeMap::from([
        ("/bin/tool", Answer::Chunked(tool)),
        ("/dl/bundle.tar.gz", Answer::Body(archive)),
    ]))
    .await;
    let mut cluster = Cluster::start("archive").await;
    let fetch = vec![
        FetchUri { executable: true, ..uri(server.url("/bin/tool")) },
        FetchUri { extract: true, ..uri(server.url("/dl/bundle.tar.gz")) },
    ];
    cluster.launch(task("archive", "test -x ./tool && ./tool && cat ./data/file.txt", fetch));

    let end = cluster.terminal("archive").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    let sandbox = cluster.sandbox("archive");
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).expect("the task's stdout");
    assert!(stdout.contains("tool ran\nhello from the archive\n"), "stdout: {stdout:?}");
    assert!(sandbox.join("bundle.tar.gz").is_file(), "the archive stays in the sandbox, as Mesos leaves it");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_that_cannot_be_fetched_fails_the_task_without_running_it() {
    let server = Server::start(BTreeMap::from([("/nowhere/app.tgz", Answer::Status(404))])).await;
    let mut cluster = Cluster::start("missing").await;
    let missing = server.url("/nowhere/app.tgz");
    cluster.launch(task("missing", "touch ./ran", vec![uri(missing.clone())]));

    let end = cluster.terminal("missing").await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.reason, Some(UpdateReason::ContainerLaunchFailed), "{end:?}");
    assert!(end.message.contains(&missing) && end.message.contains("404"), "message: {}", end.message);
    assert!(end.message.starts_with("Failed to fetch all URIs"), "message: {}", end.message);
    assert!(!cluster.sandbox("missing").join("ran").exists(), "the command never ran");
    assert!(!cluster.sandbox("missing").join("app.tgz").exists(), "no partial download is left");

    // A URI the fetcher cannot take at all fails the same way, before any download.
    cluster.launch(task("s3", "touch ./ran", vec![uri("s3://bucket/key".into())]));
    let end = cluster.terminal("s3").await;
    assert_eq!((end.state, end.reason), (TaskState::Failed, Some(UpdateReason::ContainerLaunchFailed)));
    assert!(end.message.contains("'s3://bucket/key': unsupported scheme 's3'"), "message: {}", end.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_and_absolute_paths_are_copied() {
    let scratch = scratch("local");
    let source = scratch.join("settings.conf");
    std::fs::write(&source, "answer=42\n").expect("the local file");
    let mut cluster = Cluster::start("local").await;
    let fetch = vec![
        uri(format!("file://{}", source.display())),
        FetchUri { output_file: Some("copy.conf".into()), ..uri(source.display().to_string()) },
    ];
    cluster.launch(task("local", "cat ./settings.conf ./copy.conf", fetch));

    let end = cluster.terminal("local").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    let stdout = std::fs::read_to_string(cluster.sandbox("local").join("stdout")).expect("stdout");
    assert!(stdout.contains("answer=42\nanswer=42\n"), "stdout: {stdout:?}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_uri_is_downloaded_once_for_many_tasks() {
    let server = Server::start(BTreeMap::from([("/shared/lib.txt", Answer::Body(b"shared bytes\n".to_vec()))])).await;
    let mut cluster = Cluster::start("cache").await;
    let cached = FetchUri { cache: true, ..uri(server.url("/shared/lib.txt")) };
    for task_id in ["cache-1", "cache-2"] {
        cluster.launch(task(task_id, "cat ./lib.txt", vec![cached.clone()]));
        let end = cluster.terminal(task_id).await;
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
        let stdout = std::fs::read_to_string(cluster.sandbox(task_id).join("stdout")).expect("stdout");
        assert!(stdout.contains("shared bytes"), "{task_id} stdout: {stdout:?}");
    }
    assert_eq!(server.count("/shared/lib.txt"), 1, "the second task got the cached copy");

    // Without `cache`, every task downloads.
    cluster.launch(task("uncached", "cat ./lib.txt", vec![uri(server.url("/shared/lib.txt"))]));
    assert_eq!(cluster.terminal("uncached").await.state, TaskState::Finished);
    assert_eq!(server.count("/shared/lib.txt"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_while_fetching_never_starts() {
    let mut server = Server::start(BTreeMap::from([("/slow/big.bin", Answer::Hang)])).await;
    let mut cluster = Cluster::start("kill").await;
    cluster.launch(task("slow", "touch ./ran", vec![uri(server.url("/slow/big.bin"))]));
    let asked = tokio::time::timeout(PATIENCE, server.heard.recv()).await.expect("the agent never asked");
    assert_eq!(asked.as_deref(), Some("/slow/big.bin"));

    cluster.kill("slow");
    let end = cluster.terminal("slow").await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert_eq!(end.reason, Some(UpdateReason::TaskKilledDuringLaunch), "{end:?}");
    // The next task on the agent runs normally, and the killed one never did.
    cluster.launch(task("after", "true", Vec::new()));
    assert_eq!(cluster.terminal("after").await.state, TaskState::Finished);
    let sandbox = cluster.sandbox("slow");
    assert!(!sandbox.join("ran").exists(), "the killed task's command never ran");
    // The watcher drops the fetch on its own time, after the update: wait for its cleanup.
    wait_until("the unfinished download is removed", || {
        !sandbox.join("big.bin").exists() && !sandbox.join(".big.bin.fetching").exists()
    })
    .await;
}

/// Polls a condition on the file system until it holds, failing the test after [`PATIENCE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

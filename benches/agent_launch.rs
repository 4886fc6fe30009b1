//! Task launch through one agent: the agent actor itself, not just its driver.
//!
//! One agent (the real actor, with the isolating driver and its checkpoint on disk) and a
//! stand-in master on a SimNet transport in real time. The master registers the agent, then
//! sends 1,000 `Launch` commands as fast as the transport takes them (each task
//! `/usr/bin/date`, isolated in its own pid, mount, uts and ipc namespaces and cgroups with
//! limits) and acknowledges every status update. Measured: tasks/s from the first `Launch` to
//! the 1,000th `TASK_RUNNING` update received by the master, and each task's time from its
//! `Launch` being sent to its `TASK_RUNNING` arriving (p50/p99). So every cost an agent has
//! per task is in: the command's decoding, the checkpoint written (and fsync'd) before the
//! process starts, the launch through the shim, the `TASK_RUNNING` update checkpointed and
//! sent, the acknowledgement checkpointed, and later the exit and `TASK_FINISHED`.
//!
//! The peer for a single launch (crun) is in `benches/launch.rs`; this one has no peer: it
//! shows what the agent adds to the driver's figure there.
//!
//! Run: `cargo bench --bench agent_launch` (root). `FLOTILLA_BENCH_QUICK=1` runs 100 tasks.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::agent_child;
use flotilla_actors::agent::driver::isolation::{IsolatingDriver, IsolationConfig};
use flotilla_actors::agent::driver::{TaskCommand, TaskDriver};
use flotilla_actors::mesos::core::{Resources, RoleResources, TaskState, UNRESERVED};
use flotilla_actors::mesos::protocol::{AGENT_NAME, AgentInfo, AgentMessage, Command, MASTER_NAME, TaskInfo, ToAgent};
use flotilla_supervisors::{Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorSpec};
use flotilla_transport::{
    Address, ClusterId, Network, PeerIdentity, Role, SendError, Sender, SimNet, Transport, TransportConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use support::{percentile, quick};
use tokio::sync::mpsc;

const MASTER: &str = "m1";
const AGENT: &str = "a1";
const TERM: u64 = 1;
const BOUND: Duration = Duration::from_secs(120);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("agent_launch: skipped, not running as root (the isolating driver needs it)");
        return;
    }
    let tasks = if quick() { 100 } else { 1000 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run(tasks));
}

/// What the stand-in master hears from the agent.
enum Heard {
    Registered,
    Update(TaskState, String),
}

struct FakeMaster;

struct FakeState {
    transport: Transport,
    heard: mpsc::UnboundedSender<Heard>,
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
                send(&state.transport, &from.node, Command::Registered).await;
                let _ = state.heard.send(Heard::Registered);
            }
            AgentMessage::Update(status) => {
                if let Some(uuid) = status.uuid {
                    let task_id = status.task_id.clone();
                    send(&state.transport, &from.node, Command::Acknowledge { task_id, uuid }).await;
                }
                let _ = state.heard.send(Heard::Update(status.state, status.task_id));
            }
            AgentMessage::Pong { .. } | AgentMessage::NeverLaunched { .. } => {}
        }
        Ok(())
    }
}

/// Casts a command, waiting while the peer's bounded queue is full (backpressure).
async fn send(transport: &Transport, agent: &str, command: Command) {
    let message = ToAgent { term: TERM, command };
    loop {
        match transport.cast(agent, AGENT_NAME, &message) {
            // Backpressure: wait for the queue to drain rather than spin on a worker thread.
            Err(SendError::QueueFull(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return,
        }
    }
}

async fn start_node(net: &SimNet, id: &str, role: Role) -> (Node, Transport) {
    let node = Node::builder(NodeId::new(id).expect("id")).seed(7).start().await.expect("node");
    let identity = PeerIdentity { cluster: ClusterId::new("bench").expect("cluster"), node: id.into(), role };
    let transport = Transport::start(&node, identity, TransportConfig::default(), Network::Sim(net.clone()), None)
        .await
        .expect("transport");
    (node, transport)
}

fn task(index: usize) -> TaskInfo {
    TaskInfo {
        task_id: format!("bench-{index:05}"),
        name: "bench".into(),
        framework_id: "bench".into(),
        role: UNRESERVED.into(),
        command: TaskCommand { shell: false, value: "/usr/bin/date".into(), arguments: vec!["date".into()] },
        resources: Resources::cpus_mem_disk(0.01, 32.0, 0.0),
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        kill_grace_ms: 1_000,
        health_check: None,
        fetch: Vec::new(),
        discovery: None,
    }
}

async fn run(tasks: usize) {
    let mut config = IsolationConfig::new(env!("CARGO_BIN_EXE_flotilla-task-init"), Vec::new());
    config.cgroup_root = format!("flotilla-bench-agent-{}", std::process::id());
    let driver = match IsolatingDriver::new(config.clone()) {
        Ok(driver) => Arc::new(driver),
        Err(why) => {
            println!("agent_launch: skipped, cannot isolate here: {why}");
            return;
        }
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let work = std::env::temp_dir().join(&config.cgroup_root);
    let _ = std::fs::remove_dir_all(&work);

    let net = SimNet::new(7);
    let (_master_node, master) = start_node(&net, MASTER, Role::Master).await;
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let state = FakeState { transport: master.clone(), heard: heard_tx };
    let (fake, _) = Actor::spawn(None, FakeMaster, state).await.expect("fake master");
    master.export_from::<AgentMessage, (Sender, AgentMessage)>(MASTER_NAME, &fake, |from, m| (from, m));

    let (agent_node, agent_transport) = start_node(&net, AGENT, Role::Agent).await;
    agent_transport.connect(MASTER, Address::Sim);
    let mut resources = RoleResources::new();
    resources.insert(UNRESERVED.into(), Resources::cpus_mem_disk(2.0, 4096.0, 1000.0));
    let info = AgentInfo {
        id: AGENT.into(),
        hostname: "bench".into(),
        resources,
        attributes: BTreeMap::new(),
        driver: String::new(),
        isolation_missing: Vec::new(),
    };
    let agent_config = AgentConfig::new(info, work.clone(), vec![MASTER.into()]);
    let current = agent_transport.clone();
    let child = agent_child(agent_config, driver.clone(), Arc::new(move || Some(current.clone())));
    let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne)).named("agent").child(child);
    let root = Supervisor::spawn(agent_node.clone(), spec, None).await.expect("agent");
    tokio::time::timeout(BOUND, async { while !matches!(heard.recv().await, Some(Heard::Registered)) {} })
        .await
        .expect("the agent registers");

    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let started = Instant::now();
    let sender = {
        let (master, sent_at) = (master.clone(), Arc::clone(&sent_at));
        tokio::spawn(async move {
            for index in 0..tasks {
                sent_at.lock().expect("lock").push(Instant::now());
                send(&master, AGENT, Command::Launch(Box::new(task(index)))).await;
            }
        })
    };
    let mut running_at = vec![None; tasks];
    let (mut running, mut finished, mut other) = (0, 0, 0);
    let outcome = tokio::time::timeout(BOUND, async {
        while finished + other < tasks {
            let Some(Heard::Update(state, task_id)) = heard.recv().await else { continue };
            let index: usize = task_id.trim_start_matches("bench-").parse().unwrap_or(0);
            match state {
                TaskState::Running => {
                    running += 1;
                    running_at[index] = Some(Instant::now());
                    if running == tasks {
                        println!(
                            "through one agent: {tasks} isolated tasks running in {:.2} s = {:.0} tasks/s (goal >= 200)",
                            started.elapsed().as_secs_f64(),
                            tasks as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
                TaskState::Finished => finished += 1,
                state if state.is_terminal() => other += 1,
                _ => {}
            }
        }
    })
    .await;
    let _ = sender.await;
    if outcome.is_err() {
        println!("agent_launch: only {running} running and {finished} finished of {tasks} within {BOUND:?}");
    }
    let sent = sent_at.lock().expect("lock").clone();
    let mut latencies: Vec<Duration> =
        running_at.iter().zip(&sent).filter_map(|(at, sent)| at.map(|at| at.duration_since(*sent))).collect();
    latencies.sort();
    if !latencies.is_empty() {
        println!(
            "  Launch sent -> TASK_RUNNING received: p50 {:.1} ms, p99 {:.1} ms; all {} finished ({} otherwise) after {:.2} s",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            finished,
            other,
            started.elapsed().as_secs_f64()
        );
    }
    root.cell().kill();
    agent_transport.abort();
    master.abort();
    driver.reap_orphans(&std::collections::BTreeSet::new());
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().filter_map(Result::ok) {
        let _ = std::fs::remove_dir(hierarchy.path().join(&config.cgroup_root));
    }
    let _ = std::fs::remove_dir_all(&work);
}

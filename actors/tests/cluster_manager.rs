//! The cluster manager on a simulated network, on virtual time: three masters (control plane
//! with the leader-only master and launcher) and two agents running mock tasks. Tasks launched
//! through the launcher run and end with their Mesos states; an agent restart keeps its tasks
//! running and re-adopts them; a master failover keeps every task running while the new leader
//! learns from the re-registering agents what runs where; a partitioned agent's tasks become
//! unreachable and come back. The service scheduler runs beside the launcher: its apps and
//! their tasks survive a failover, and the new leader's scheduler scales and removes them.
//! Service discovery's feed on an agent follows the running tasks through all of it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{SharedDisk, start_transport, wait_until};
use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::agent_child;
use flotilla_actors::agent::driver::TaskCommand;
use flotilla_actors::agent::driver::mock::{MockBehaviour, MockDriver};
use flotilla_actors::control_plane::{ControlPlanePlan, control_plane_spec};
use flotilla_actors::discovery::feed::{Feed, FeedMsg, ViewSink, ViewSource};
use flotilla_actors::discovery::{ClusterView, ViewUpdate};
use flotilla_actors::election::core::{PeerId, RaftConfig};
use flotilla_actors::launcher::protocol::{LAUNCHER_NAME, LauncherReply, LauncherRequest};
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse, ServerInfo};
use flotilla_actors::marathon::protocol::{MARATHON_FRAMEWORK_ID, MARATHON_NAME, MarathonCall};
use flotilla_actors::marathon::scheduler_child;
use flotilla_actors::master::cluster_manager_tree;
use flotilla_actors::master::core::MasterConfig;
use flotilla_actors::mesos::core::{Resources, RoleResources, TaskState, UNRESERVED};
use flotilla_actors::mesos::protocol::{AgentInfo, MASTER_NAME, MasterQuery, MasterState, TaskInfo};
use flotilla_actors::registry::actor::RegistryConfig;
use flotilla_actors::storage::{RaftStorage, SimDisk};
use flotilla_supervisors::{Node, Rng, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec};
use flotilla_transport::{Address, Fault, NodeSet, Role, SimNet, Transport};

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const AGENTS: [&str; 2] = ["a1", "a2"];
const LONG: Duration = Duration::from_secs(60);

fn master_config() -> MasterConfig {
    MasterConfig {
        ping_interval_ms: 1_000,
        max_missed_pings: 3,
        reregister_timeout_ms: 10_000,
        ..MasterConfig::default()
    }
}

struct Sim {
    net: SimNet,
    masters: Vec<Option<(Transport, SupervisorRef, Node)>>,
    disks: Vec<SharedDisk>,
    agents: Vec<Option<(Transport, SupervisorRef, Node)>>,
    /// One driver per agent (its host's processes), shared across the agent's restarts.
    drivers: Vec<Arc<MockDriver>>,
    work: PathBuf,
    seed: u64,
    operator: Transport,
}

async fn start_master(net: &SimNet, index: usize, disk: &SharedDisk, seed: u64) -> (Transport, SupervisorRef, Node) {
    let id = MASTERS[index];
    let (node, transport) = start_transport(net, id, Role::Master, seed).await;
    for peer in MASTERS.iter().filter(|p| **p != id) {
        transport.connect(peer, Address::Sim);
    }
    let current = transport.clone();
    let current: flotilla_actors::control_plane::CurrentTransport = Arc::new(move || Some(current.clone()));
    let server = ServerInfo {
        leader: format!("{id}:8080"),
        framework_id: MARATHON_FRAMEWORK_ID.to_owned(),
        http_port: 8080,
        version: "test".to_owned(),
    };
    let disk = disk.clone();
    let plan = ControlPlanePlan {
        me: PeerId::from(id),
        peers: MASTERS.iter().filter(|p| **p != id).map(|p| PeerId::from(*p)).collect(),
        joining: false,
        raft: RaftConfig::default(),
        registry: RegistryConfig::default(),
        tick_interval: Duration::from_millis(10),
        storage: Arc::new(move || Ok(Box::new(disk.clone()) as Box<dyn RaftStorage + Send>)),
        transport: Arc::clone(&current),
        leader_tree: cluster_manager_tree(
            master_config(),
            Arc::clone(&current),
            vec![scheduler_child(current, server)],
        ),
    };
    let root = Supervisor::spawn(node.clone(), control_plane_spec(plan), None).await.unwrap();
    (transport, root, node)
}

async fn start_agent(sim: &Sim, index: usize, seed: u64) -> (Transport, SupervisorRef, Node) {
    let id = AGENTS[index];
    let (node, transport) = start_transport(&sim.net, id, Role::Agent, seed).await;
    for master in MASTERS {
        transport.connect(master, Address::Sim);
    }
    let mut resources = RoleResources::new();
    resources.insert(
        UNRESERVED.to_owned(),
        Resources::cpus_mem_disk(2.0, 2048.0, 10_000.0)
            .with_ranges("ports", flotilla_actors::mesos::core::Ranges::single(31000, 32000)),
    );
    let info = AgentInfo {
        id: id.to_owned(),
        // An address as hostname: discovery publishes it (SimNet sessions have none).
        hostname: format!("10.0.0.{}", index + 1),
        resources,
        attributes: BTreeMap::new(),
        driver: String::new(),
        isolation_missing: Vec::new(),
    };
    let mut config = AgentConfig::new(info, sim.work.join(id), MASTERS.iter().map(|m| m.to_string()).collect());
    config.master_timeout = Duration::from_secs(5);
    config.status_retry = Duration::from_secs(2);
    let current = transport.clone();
    let child = agent_child(config, sim.drivers[index].clone(), Arc::new(move || Some(current.clone())));
    let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne)).named("agent").child(child);
    let root = Supervisor::spawn(node.clone(), spec, None).await.unwrap();
    (transport, root, node)
}

fn crash(parts: (Transport, SupervisorRef, Node)) {
    let (transport, root, node) = parts;
    transport.abort();
    root.cell().kill();
    node.shutdown();
}

impl Sim {
    async fn start(seed: u64, name: &str) -> Sim {
        let net = SimNet::new(seed);
        let work = std::env::temp_dir().join(format!("flotilla-cm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        // Tasks named "finish-*" end with 0 after 5 s, "fail-*" with 3 after 2 s; the others
        // run until killed.
        let script: flotilla_actors::agent::driver::mock::MockScript = Arc::new(|spec| {
            let id = &spec.task_id;
            if id.starts_with("finish") {
                MockBehaviour { lifetime: Some(Duration::from_secs(5)), ..MockBehaviour::default() }
            } else if id.starts_with("fail") {
                MockBehaviour { lifetime: Some(Duration::from_secs(2)), exit_code: 3, ..MockBehaviour::default() }
            } else {
                MockBehaviour::default()
            }
        });
        let drivers = AGENTS.iter().map(|_| MockDriver::new(Arc::clone(&script))).collect();
        let (_, operator) = start_transport(&net, "ops", Role::Operator, seed ^ 0x0b5).await;
        for master in MASTERS {
            operator.connect(master, Address::Sim);
        }
        let mut sim =
            Sim { net, masters: Vec::new(), disks: Vec::new(), agents: Vec::new(), drivers, work, seed, operator };
        for i in 0..MASTERS.len() {
            let disk = SharedDisk(Arc::new(Mutex::new(SimDisk::new(Rng::seeded(seed ^ i as u64)))));
            sim.masters.push(Some(start_master(&sim.net, i, &disk, seed + i as u64).await));
            sim.disks.push(disk);
        }
        for i in 0..AGENTS.len() {
            let agent = start_agent(&sim, i, seed + 10 + i as u64).await;
            sim.agents.push(Some(agent));
        }
        sim
    }

    /// The leading master's state, asked of whichever master runs the master actor.
    async fn state(&self) -> Option<MasterState> {
        for master in MASTERS {
            if let Ok(state) =
                self.operator.call(master, MASTER_NAME, &MasterQuery::State, Duration::from_secs(1)).await
            {
                return Some(state);
            }
        }
        None
    }

    async fn launcher(&self, request: LauncherRequest) -> Option<LauncherReply> {
        let state = self.state().await?;
        self.operator.call(&state.leader, LAUNCHER_NAME, &request, Duration::from_secs(5)).await.ok()
    }

    /// A Marathon request answered by the leader's scheduler (`None` while there is none).
    async fn marathon(&self, method: &str, path: &str, body: serde_json::Value) -> Option<RestResponse> {
        let state = self.state().await?;
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
        let request = RestRequest { method: method.to_owned(), path: path.to_owned(), query: String::new(), body };
        self.operator.call(&state.leader, MARATHON_NAME, &MarathonCall(request), Duration::from_secs(5)).await.ok()
    }

    /// Waits until the app has `count` running tasks and no deployment; returns their ids.
    async fn app_running(&self, id: &str, count: usize) -> BTreeSet<String> {
        let what = format!("{id} with {count} running tasks and no deployment");
        wait_until(&what, LONG, async || {
            let app = self.marathon("GET", &format!("/v2/apps{id}"), serde_json::Value::Null).await?.json_body();
            let app = &app["app"];
            let tasks: BTreeSet<String> = app["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect();
            let idle = app["deployments"].as_array()?.is_empty();
            (idle && tasks.len() == count).then_some(tasks)
        })
        .await
    }

    async fn run(&self, id: &str) {
        self.run_sized(id, 0.5).await;
    }

    async fn run_sized(&self, id: &str, cpus: f64) {
        let task = TaskInfo {
            task_id: id.to_owned(),
            name: id.to_owned(),
            framework_id: String::new(),
            role: String::new(),
            command: TaskCommand { shell: true, value: "sleep 1000".to_owned(), arguments: Vec::new() },
            resources: Resources::cpus_mem_disk(cpus, 128.0, 0.0)
                .with_ranges("ports", flotilla_actors::mesos::core::Ranges::single(0, 0)),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            kill_grace_ms: 1_000,
            health_check: None,
            fetch: Vec::new(),
            discovery: None,
        };
        let reply = wait_until("the launcher accepts the task", LONG, async || {
            self.launcher(LauncherRequest::Run(Box::new(task.clone()))).await
        })
        .await;
        assert_eq!(reply, LauncherReply::Accepted { task_id: id.to_owned() });
    }

    /// Waits until the leader (not recovering) sees these states.
    async fn states(&self, want: &[(&str, TaskState)]) -> MasterState {
        let what = format!("task states {want:?}");
        wait_until(&what, LONG, async || {
            let state = self.state().await?;
            let all: BTreeMap<&str, TaskState> = state
                .tasks
                .iter()
                .chain(state.completed_tasks.iter())
                .map(|t| (t.task.task_id.as_str(), t.state))
                .collect();
            let done = !state.recovering && want.iter().all(|(id, s)| all.get(id) == Some(s));
            done.then_some(state.clone())
        })
        .await
    }
}

impl Sim {
    fn launches(&self) -> u64 {
        self.drivers.iter().map(|d| d.launches()).sum()
    }

    fn running(&self) -> usize {
        self.drivers.iter().map(|d| d.running().len()).sum()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tasks_run_survive_an_agent_restart_and_a_master_failover_and_the_new_leader_reconciles() {
    let mut sim = Sim::start(7, "failover").await;
    let state = wait_until("both agents registered", LONG, async || {
        let state = sim.state().await?;
        (state.agents.iter().filter(|a| a.active).count() == 2).then_some(state)
    })
    .await;
    let first_leader = state.leader.clone();

    for id in ["web-1", "web-2", "web-3", "finish-1", "fail-1"] {
        sim.run(id).await;
    }
    let state = sim
        .states(&[
            ("web-1", TaskState::Running),
            ("web-2", TaskState::Running),
            ("web-3", TaskState::Running),
            ("finish-1", TaskState::Finished),
            ("fail-1", TaskState::Failed),
        ])
        .await;
    let placed: BTreeSet<&str> = state.tasks.iter().map(|t| t.agent_id.as_str()).collect();
    assert_eq!(placed.len(), 2, "DRF spreads the tasks over both agents: {placed:?}");
    assert!(state.tasks.iter().all(|t| t.task.resources.ports().count() == 1), "each task got one port");
    let launches = sim.launches();
    assert_eq!(launches, 5);

    // Agent restart: the agent actor and its node go away; the mock processes do not.
    let a1 = sim.agents[0].take().unwrap();
    crash(a1);
    sim.agents[0] = Some(start_agent(&sim, 0, sim.seed + 100).await);
    let state = sim
        .states(&[("web-1", TaskState::Running), ("web-2", TaskState::Running), ("web-3", TaskState::Running)])
        .await;
    assert_eq!(sim.launches(), launches, "no task was launched again");
    assert_eq!(sim.running(), 3);
    assert!(state.agents.iter().all(|a| a.active));

    // Master failover: the leader crashes; the new one waits for the agents, then reconciles.
    let index = MASTERS.iter().position(|m| *m == first_leader).unwrap();
    crash(sim.masters[index].take().unwrap());
    sim.disks[index].0.lock().unwrap().crash();
    let state = wait_until("a new leader that has recovered", LONG, async || {
        let state = sim.state().await?;
        (state.leader != first_leader && !state.recovering && state.agents.iter().filter(|a| a.active).count() == 2)
            .then_some(state)
    })
    .await;
    let running: BTreeSet<&str> =
        state.tasks.iter().filter(|t| t.state == TaskState::Running).map(|t| t.task.task_id.as_str()).collect();
    assert_eq!(running, BTreeSet::from(["web-1", "web-2", "web-3"]), "the new leader learned every running task");
    assert_eq!(sim.launches(), launches, "the new leader launched nothing twice");
    assert_eq!(sim.running(), 3);

    // The launcher on the new leader still knows its tasks and kills one.
    let reply = wait_until("the launcher kills", LONG, async || {
        sim.launcher(LauncherRequest::Kill { task_id: "web-2".into() }).await
    })
    .await;
    assert_eq!(reply, LauncherReply::Killing { task_id: "web-2".to_owned() });
    sim.states(&[("web-2", TaskState::Killed), ("web-1", TaskState::Running)]).await;
    assert_eq!(sim.running(), 2);
    // And launches new tasks on the new leader.
    sim.run("web-4").await;
    sim.states(&[("web-4", TaskState::Running)]).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_partitioned_agent_is_marked_unreachable_and_its_tasks_come_back_when_it_returns() {
    let sim = Sim::start(11, "partition").await;
    wait_until("both agents registered", LONG, async || {
        let state = sim.state().await?;
        (state.agents.iter().filter(|a| a.active).count() == 2).then_some(())
    })
    .await;
    // Two cpus per agent, one per task: two tasks on each agent.
    for id in ["web-1", "web-2", "web-3", "web-4"] {
        sim.run_sized(id, 1.0).await;
    }
    let state = sim
        .states(&[
            ("web-1", TaskState::Running),
            ("web-2", TaskState::Running),
            ("web-3", TaskState::Running),
            ("web-4", TaskState::Running),
        ])
        .await;
    let on_a2: Vec<String> =
        state.tasks.iter().filter(|t| t.agent_id == "a2").map(|t| t.task.task_id.clone()).collect();
    assert!(!on_a2.is_empty());
    let cut = sim.net.inject(Fault::Partition { a: NodeSet::one("a2"), b: NodeSet::All, one_way: false }).unwrap();
    let want: Vec<(&str, TaskState)> = on_a2.iter().map(|id| (id.as_str(), TaskState::Unreachable)).collect();
    let state = sim.states(&want).await;
    assert!(!state.agents.iter().find(|a| a.info.id == "a2").unwrap().active);
    sim.net.heal(cut);
    let want: Vec<(&str, TaskState)> = on_a2.iter().map(|id| (id.as_str(), TaskState::Running)).collect();
    let state = sim.states(&want).await;
    assert!(state.agents.iter().all(|a| a.active));
    assert_eq!(sim.running(), 4, "nothing was killed or relaunched");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn marathon_apps_keep_their_tasks_across_a_leader_failover() {
    let mut sim = Sim::start(23, "marathon").await;
    wait_until("both agents registered", LONG, async || {
        let state = sim.state().await?;
        (state.agents.iter().filter(|a| a.active).count() == 2).then_some(())
    })
    .await;
    let app = serde_json::json!({ "id": "/web", "cmd": "sleep 1000", "cpus": 0.25, "mem": 64, "instances": 3,
                                  "portDefinitions": [{ "port": 0 }] });
    let created = wait_until("the scheduler creates the app", LONG, async || {
        sim.marathon("POST", "/v2/apps", app.clone()).await.filter(|r| r.status != 503)
    })
    .await;
    assert_eq!(created.status, 201, "{:?}", created.json_body());
    let tasks = sim.app_running("/web", 3).await;
    assert_eq!(sim.launches(), 3);

    let leader = sim.state().await.unwrap().leader;
    let index = MASTERS.iter().position(|m| *m == leader).unwrap();
    crash(sim.masters[index].take().unwrap());
    sim.disks[index].0.lock().unwrap().crash();
    wait_until("a new leader that has recovered", LONG, async || {
        let state = sim.state().await?;
        (state.leader != leader && !state.recovering).then_some(())
    })
    .await;
    assert_eq!(sim.app_running("/web", 3).await, tasks, "the new leader's scheduler knows the same tasks");
    assert_eq!(sim.launches(), 3, "nothing was launched twice");

    let scaled = sim.marathon("PUT", "/v2/apps/web", serde_json::json!({ "instances": 4 })).await.unwrap();
    assert_eq!(scaled.status, 200, "{:?}", scaled.json_body());
    let more = sim.app_running("/web", 4).await;
    assert!(more.is_superset(&tasks));
    assert_eq!(sim.running(), 4);

    let removed = sim.marathon("DELETE", "/v2/apps/web", serde_json::Value::Null).await.unwrap();
    assert_eq!(removed.status, 200);
    wait_until("every task of the removed app killed", LONG, async || (sim.running() == 0).then_some(())).await;
    let gone = sim.marathon("GET", "/v2/apps/web", serde_json::Value::Null).await.unwrap();
    assert_eq!(gone.status, 404);
}

/// A discovery feed on agent a1 (reading the masters over the transport) and the view its
/// consumer holds, rebuilt from the updates it receives.
async fn discovery_on(sim: &Sim) -> Arc<Mutex<ClusterView>> {
    let (transport, _, node) = sim.agents[0].as_ref().unwrap();
    let source =
        ViewSource::Remote { transport: transport.clone(), masters: MASTERS.iter().map(|m| m.to_string()).collect() };
    let (feed, _) = ractor::Actor::spawn(None, Feed, (source, node.clone())).await.unwrap();
    let held = Arc::new(Mutex::new(ClusterView::default()));
    let consumer = Arc::clone(&held);
    let sink: ViewSink = Arc::new(move |update| {
        let mut view = consumer.lock().unwrap();
        match update {
            ViewUpdate::Reset(whole) => *view = (*whole).clone(),
            ViewUpdate::Changes { revision, changes } => {
                changes.iter().for_each(|change| view.apply(change));
                view.revision = revision;
            }
        }
        Ok(())
    });
    feed.send_message(FeedMsg::Subscribe(sink)).unwrap();
    held
}

/// The running tasks of the held view, by id.
async fn discovered(view: &Arc<Mutex<ClusterView>>, what: &str, want: impl Fn(&ClusterView) -> bool) -> ClusterView {
    wait_until(what, LONG, async || {
        let view = view.lock().unwrap().clone();
        want(&view).then_some(view)
    })
    .await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn discovery_follows_tasks_through_deployments_and_a_leader_failover() {
    let mut sim = Sim::start(29, "discovery").await;
    let view = discovery_on(&sim).await;
    let app = serde_json::json!({ "id": "/shop/web", "cmd": "sleep 1000", "cpus": 0.25, "mem": 64, "instances": 2,
        "portDefinitions": [{ "port": 0, "name": "http", "labels": { "VIP_0": "/shop/web:80" } },
                            { "port": 0, "protocol": "udp,tcp" }] });
    let created = wait_until("the scheduler creates the app", LONG, async || {
        sim.marathon("POST", "/v2/apps", app.clone()).await.filter(|r| r.status != 503)
    })
    .await;
    assert_eq!(created.status, 201, "{:?}", created.json_body());
    let tasks = sim.app_running("/shop/web", 2).await;
    let seen = discovered(&view, "both tasks discovered", |v| v.tasks.len() == 2).await;
    assert_eq!(seen.tasks.keys().cloned().collect::<BTreeSet<_>>(), tasks);
    for task in seen.tasks.values() {
        assert_eq!((task.name.as_str(), task.framework.as_str()), ("web.shop", "marathon"));
        assert!(["10.0.0.1", "10.0.0.2"].contains(&task.agent_ip.to_string().as_str()), "{task:?}");
        let ports: Vec<_> = task.ports.iter().map(|p| (p.protocol.as_str(), p.name.as_deref())).collect();
        assert_eq!(ports, [("tcp", Some("http")), ("udp", None), ("tcp", None)]);
        assert_eq!(task.ports[0].labels["VIP_0"], "/shop/web:80");
        assert_eq!(task.ports[1].number, task.ports[2].number, "one host port, two protocols");
    }
    assert_eq!(seen.agents.len(), 2);
    assert!(seen.frameworks.values().any(|f| f.name == "marathon"));
    let leader = sim.state().await.unwrap().leader;
    assert_eq!(seen.leader.as_deref(), Some(leader.as_str()));

    let index = MASTERS.iter().position(|m| *m == leader).unwrap();
    crash(sim.masters[index].take().unwrap());
    sim.disks[index].0.lock().unwrap().crash();
    let after =
        discovered(&view, "the new leader's entries", |v| v.leader.as_deref().is_some_and(|l| l != leader)).await;
    assert_eq!(after.tasks.keys().cloned().collect::<BTreeSet<_>>(), tasks, "the same tasks, nothing stale");
    sim.app_running("/shop/web", 2).await;

    let scaled = sim.marathon("PUT", "/v2/apps/shop/web", serde_json::json!({ "instances": 1 })).await.unwrap();
    assert_eq!(scaled.status, 200, "{:?}", scaled.json_body());
    discovered(&view, "one task left", |v| v.tasks.len() == 1).await;
    sim.app_running("/shop/web", 1).await;
    let removed = sim.marathon("DELETE", "/v2/apps/shop/web", serde_json::Value::Null).await.unwrap();
    assert_eq!(removed.status, 200);
    discovered(&view, "no task left", |v| v.tasks.is_empty()).await;
}

//! The service scheduler end to end, in one process on SimNet in real time: placement
//! throughput at C1M's shape, and the throughput of `GET /v2/apps`.
//!
//! **1. Placement throughput.** `M` masters (default one: a single-voter Raft on `SimDisk`, so
//! it leads after one election timeout) run the control plane with the leader-only subtree of
//! the cluster manager (master, launcher) and the Marathon-style scheduler
//! (`marathon::scheduler_child`); `N` agents are nodes of their own on the same SimNet, each
//! the real agent actor with the mock task driver (tasks run until killed; checkpoints and
//! sandboxes under `FLOTILLA_BENCH_WORK`, default `/dev/shm` when present). Every agent offers
//! `cpus:64;mem:262144;disk:10000;ports:[31000-32000]`; every app asks `cpus:0.01, mem:1`, no
//! ports, so nothing but the pipeline limits placement. Once every agent is registered, `A`
//! apps of `I` instances are POSTed to `/v2/apps` as fast as the scheduler accepts them (a
//! `403` for too many running deployments waits for one to end, then retries). Measured:
//! wall time from the first POST to the moment the scheduler has seen every task
//! `TASK_RUNNING` (counted, per distinct task, from its event stream — `status_update_event`
//! — with `GET /v2/apps` polled instead if the stream ever lags), with the phases: all POSTs
//! accepted, first and last launch reaching a driver, all running. Printed: tasks/s and the
//! ratios to Nomad C1M's 3,750 tasks/s, kube-scheduler's 810 pods/s at 5,000 nodes
//! (`scheduler_perf` floor) and the goal of 10,000 tasks/s; peak RSS (`VmHWM`); and one
//! `GET /v2/apps` at the end, over every instance.
//!
//! The scale (the default): 5,000 agents, 1,000 apps × 1,000 instances.
//! `FLOTILLA_BENCH_QUICK=1`: 50 agents, 10 apps × 100.
//! `FLOTILLA_BENCH_AGENTS`, `FLOTILLA_BENCH_APPS`, `FLOTILLA_BENCH_INSTANCES`,
//! `FLOTILLA_BENCH_MASTERS` (1 or 3) set the scale; `FLOTILLA_BENCH_BOUND_SECS` bounds the
//! wait for all running (default 1,800 s); `FLOTILLA_BENCH_POSTERS` POSTs in flight (4).
//!
//! **2. `GET /v2/apps` with 1,000 apps** (`FLOTILLA_BENCH_API_APPS`, default 1,000, one
//! instance each on `FLOTILLA_BENCH_API_AGENTS` = 10 agents): on a cluster of its own, the
//! apps are created and running, then `GET /v2/apps` is issued for `FLOTILLA_BENCH_API_SECS`
//! (default 10 s, QUICK 2 s) (a) to the scheduler actor (`SchedulerMsg::Rest`, what the HTTP
//! shell does), one request at a time, and (b) over real HTTP to `flotilla::http::HttpApi` on
//! 127.0.0.1 with a keep-alive HTTP/1.1 client in this file, 1 and 8 connections; and with
//! `wrk -t1 -c8` if `wrk` is installed. Printed: requests/s, p50 and p99. There is no
//! published Marathon figure for this in `reference/perf.md`, so no ratio is printed.
//!
//! Both run on a two-worker tokio runtime in real time (not paused), checked at the start
//! and at the end of each measurement (tokio's clock against `std::time::Instant`).
//!
//! Run:
//!   `CARGO_TARGET_DIR=... cargo bench --bench marathon --no-run`, then run the printed binary
//!   (`target/release/deps/marathon-*`) with `--bench`, e.g.
//!   `FLOTILLA_BENCH_QUICK=1 target/release/deps/marathon-<hash> --bench`
//!   `FLOTILLA_BENCH_AGENTS=1000 FLOTILLA_BENCH_APPS=100 FLOTILLA_BENCH_INSTANCES=1000 .../marathon-<hash> --bench`
//!   `FLOTILLA_BENCH_PART=placement` or `api` runs one measurement.
//!   Or simply `cargo bench --bench marathon` (the full scale).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla::http::{BoundApi, HttpApi};
use flotilla_actors::agent::actor::AgentConfig;
use flotilla_actors::agent::agent_child;
use flotilla_actors::agent::driver::mock::MockDriver;
use flotilla_actors::control_plane::{ControlPlanePlan, CurrentTransport, control_plane_spec};
use flotilla_actors::election::core::{PeerId, RaftConfig};
use flotilla_actors::marathon::actor::{MarathonEvent, SCHEDULER_ACTOR, SchedulerMsg};
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse, ServerInfo};
use flotilla_actors::marathon::protocol::MARATHON_FRAMEWORK_ID;
use flotilla_actors::marathon::scheduler_child;
use flotilla_actors::master::actor::{MASTER_ACTOR, MasterMsg};
use flotilla_actors::master::cluster_manager_tree;
use flotilla_actors::master::core::MasterConfig;
use flotilla_actors::mesos::core::{Ranges, Resources, RoleResources, UNRESERVED};
use flotilla_actors::mesos::protocol::AgentInfo;
use flotilla_actors::registry::actor::RegistryConfig;
use flotilla_actors::storage::{RaftStorage, SharedSimDisk, SimDisk};
use flotilla_supervisors::{Node, NodeId, Rng, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec};
use flotilla_transport::{Address, ClusterId, Network, PeerIdentity, Role, SimNet, Transport, TransportConfig};
use futures::StreamExt;
use ractor::ActorRef;
use support::{percentile, quick};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, broadcast};

/// Nomad C1M: 1,000,000 containers on 5,000 hosts in under 5 minutes.
const NOMAD_C1M: f64 = 3_750.0;
/// kube-scheduler's `scheduler_perf` floor, SchedulingBasic 5000Nodes_50000Pods.
const KUBE_SCHEDULER: f64 = 810.0;
const GOAL: f64 = 10_000.0;

/// How long the cluster may take to come up (5,000 agents registering).
const SETUP_BOUND: Duration = Duration::from_secs(600);
/// How long one REST call may take.
const REST_TIMEOUT_MS: u64 = 120_000;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn main() {
    // `RUST_LOG=warn` shows what the cluster logs (a scheduler restart, an unreachable agent).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let part = std::env::var("FLOTILLA_BENCH_PART").unwrap_or_else(|_| "all".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        real_time_check().await;
        if part == "all" || part == "placement" {
            let (agents, apps, instances) = if quick() { (50, 10, 100) } else { (5_000, 1_000, 1_000) };
            let scale = Scale {
                masters: env_usize("FLOTILLA_BENCH_MASTERS", 1),
                agents: env_usize("FLOTILLA_BENCH_AGENTS", agents),
                apps: env_usize("FLOTILLA_BENCH_APPS", apps),
                instances: env_usize("FLOTILLA_BENCH_INSTANCES", instances),
                posters: env_usize("FLOTILLA_BENCH_POSTERS", 4).max(1),
                bound: Duration::from_secs(env_usize("FLOTILLA_BENCH_BOUND_SECS", 1_800) as u64),
            };
            placement(scale).await;
        }
        if part == "all" || part == "api" {
            let apps = env_usize("FLOTILLA_BENCH_API_APPS", if quick() { 100 } else { 1_000 });
            let instances = env_usize("FLOTILLA_BENCH_API_INSTANCES", 1);
            let agents = env_usize("FLOTILLA_BENCH_API_AGENTS", if quick() { 20 } else { 200 });
            let seconds = env_usize("FLOTILLA_BENCH_API_SECS", if quick() { 2 } else { 10 });
            api(apps, instances, agents, Duration::from_secs(seconds as u64)).await;
        }
    });
}

/// SimNet, node clocks and timers follow tokio's clock: real unless the runtime is paused.
/// Throughput must be wall-clock, so check that tokio's clock moves with the OS's.
async fn real_time_check() {
    let (std_start, tokio_start) = (Instant::now(), tokio::time::Instant::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (std_elapsed, tokio_elapsed) = (std_start.elapsed(), tokio_start.elapsed());
    let drift = std_elapsed.as_secs_f64() - tokio_elapsed.as_secs_f64();
    assert!(drift.abs() < 0.02, "tokio's clock is not real time here: {tokio_elapsed:?} vs {std_elapsed:?}");
    println!(
        "clock: real time (a 50 ms tokio sleep took {:.1} ms of std::time::Instant; SimNet and node clocks follow tokio's)",
        std_elapsed.as_secs_f64() * 1e3
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}

/// Peak and current resident set size of this process, from `/proc/self/status`.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or("?".to_owned(), |kb| format!("{:.0} MiB", kb / 1024.0))
    };
    format!("peak RSS (VmHWM) {}, RSS now {}", field("VmHWM:"), field("VmRSS:"))
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// A simulated disk shared by a master's restarts (only the first start matters here).
#[derive(Clone)]
struct Member {
    node: Node,
    transport: Transport,
    root: SupervisorRef,
}

struct Cluster {
    masters: Vec<Member>,
    agents: Vec<Member>,
    drivers: Vec<Arc<MockDriver>>,
    work: PathBuf,
    master_ids: Vec<String>,
}

async fn start_node(net: &SimNet, id: &str, role: Role, seed: u64) -> (Node, Transport) {
    let node = Node::builder(NodeId::new(id).expect("node id")).seed(seed).start().await.expect("node");
    let identity = PeerIdentity { cluster: ClusterId::new("mbench").expect("cluster"), node: id.into(), role };
    let transport = Transport::start(&node, identity, TransportConfig::default(), Network::Sim(net.clone()), None)
        .await
        .expect("transport");
    (node, transport)
}

fn work_root() -> PathBuf {
    let base = std::env::var_os("FLOTILLA_BENCH_WORK").map(PathBuf::from).unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() { shm } else { std::env::temp_dir() }
    });
    base.join(format!("flotilla-mbench-{}", std::process::id()))
}

impl Cluster {
    async fn start(masters: usize, agents: usize, server: &ServerInfo, work: PathBuf) -> Cluster {
        let net = SimNet::new(7);
        let _ = std::fs::remove_dir_all(&work);
        let master_ids: Vec<String> = (1..=masters).map(|i| format!("m{i}")).collect();
        let mut cluster = Cluster {
            masters: Vec::new(),
            agents: Vec::new(),
            drivers: Vec::new(),
            work,
            master_ids: master_ids.clone(),
        };
        for (index, id) in master_ids.iter().enumerate() {
            let (node, transport) = start_node(&net, id, Role::Master, 100 + index as u64).await;
            for peer in master_ids.iter().filter(|p| *p != id) {
                transport.connect(peer, Address::Sim);
            }
            let current = transport.clone();
            let current: CurrentTransport = Arc::new(move || Some(current.clone()));
            let disk = SharedSimDisk::new(SimDisk::new(Rng::seeded(index as u64)));
            let scheduler = scheduler_child(Arc::clone(&current), server.clone());
            let plan = ControlPlanePlan {
                me: PeerId::from(id.as_str()),
                peers: master_ids.iter().filter(|p| *p != id).map(|p| PeerId::from(p.as_str())).collect(),
                joining: false,
                raft: RaftConfig::default(),
                registry: RegistryConfig::default(),
                tick_interval: Duration::from_millis(10),
                storage: Arc::new(move || Ok(Box::new(disk.clone()) as Box<dyn RaftStorage + Send>)),
                transport: Arc::clone(&current),
                leader_tree: cluster_manager_tree(MasterConfig::default(), current, vec![scheduler]),
            };
            let root = Supervisor::spawn(node.clone(), control_plane_spec(plan), None).await.expect("master");
            cluster.masters.push(Member { node, transport, root });
        }
        for index in 0..agents {
            let id = format!("a{index:05}");
            let (node, transport) = start_node(&net, &id, Role::Agent, 1_000 + index as u64).await;
            for master in &master_ids {
                transport.connect(master, Address::Sim);
            }
            let mut resources = RoleResources::new();
            resources.insert(
                UNRESERVED.to_owned(),
                Resources::cpus_mem_disk(64.0, 262_144.0, 10_000.0)
                    .with_ranges("ports", Ranges::single(31_000, 32_000)),
            );
            let info = AgentInfo {
                id: id.clone(),
                hostname: format!("{id}.sim"),
                resources,
                attributes: BTreeMap::new(),
                driver: String::new(),
                isolation_missing: Vec::new(),
            };
            let config = AgentConfig::new(info, cluster.work.join(&id), master_ids.clone());
            // One driver per agent (its host's processes): every task runs until killed.
            let driver = MockDriver::forever();
            let current = transport.clone();
            let child = agent_child(config, driver.clone(), Arc::new(move || Some(current.clone())));
            let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne)).named("agent").child(child);
            let root = Supervisor::spawn(node.clone(), spec, None).await.expect("agent");
            cluster.agents.push(Member { node, transport, root });
            cluster.drivers.push(driver);
        }
        cluster
    }

    /// The leading master's index and its scheduler, once the scheduler is registered.
    async fn scheduler(&self) -> (usize, ActorRef<SchedulerMsg>) {
        let deadline = Instant::now() + SETUP_BOUND;
        loop {
            for (index, master) in self.masters.iter().enumerate() {
                if let Some(scheduler) = master.node.whereis_ref::<SchedulerMsg>(SCHEDULER_ACTOR) {
                    return (index, scheduler);
                }
            }
            assert!(Instant::now() < deadline, "no master ran the scheduler within {SETUP_BOUND:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the leading master counts every agent active.
    async fn wait_agents(&self, leader: usize) {
        let deadline = Instant::now() + SETUP_BOUND;
        let wanted = self.agents.len();
        let mut last = 0;
        loop {
            if let Some(master) = self.masters[leader].node.whereis_ref::<MasterMsg>(MASTER_ACTOR)
                && let Ok(state) = ractor::call_t!(master, MasterMsg::State, 60_000)
            {
                last = state.agents.iter().filter(|a| a.active).count();
                if last == wanted {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "only {last} of {wanted} agents registered within {SETUP_BOUND:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Launches that reached a driver, over all agents.
    fn launches(&self) -> u64 {
        self.drivers.iter().map(|d| d.launches()).sum()
    }

    fn stop(self) {
        for member in self.agents.into_iter().chain(self.masters) {
            member.transport.abort();
            member.root.cell().kill();
            member.node.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn server_info(leader: &str, port: u16) -> ServerInfo {
    ServerInfo {
        leader: leader.to_owned(),
        framework_id: MARATHON_FRAMEWORK_ID.to_owned(),
        http_port: port,
        version: "bench".to_owned(),
    }
}

/// One REST request to the scheduler actor, as the HTTP shell sends it; `Err` if the
/// scheduler does not answer within [`REST_TIMEOUT_MS`] (its mailbox is that far behind).
async fn try_rest(
    scheduler: &ActorRef<SchedulerMsg>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<RestResponse, String> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let request = RestRequest { method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), body };
    ractor::call_t!(scheduler, SchedulerMsg::Rest, REST_TIMEOUT_MS, request)
        .map_err(|error| format!("{method} {path}: the scheduler did not answer within {REST_TIMEOUT_MS} ms: {error}"))
}

async fn rest(scheduler: &ActorRef<SchedulerMsg>, method: &str, path: &str, body: Vec<u8>) -> RestResponse {
    try_rest(scheduler, method, path, body).await.unwrap_or_else(|error| panic!("{error}"))
}

fn app_json(index: usize, instances: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": format!("/bench/app-{index:05}"),
        "cmd": "sleep 1000000",
        "cpus": 0.01,
        "mem": 1,
        "disk": 0,
        "instances": instances,
        "portDefinitions": [],
    }))
    .expect("json")
}

// ---------------------------------------------------------------------------------------------
// What the event stream says.

/// Counters fed by the scheduler's event stream.
#[derive(Default)]
struct Seen {
    /// Distinct tasks seen `TASK_RUNNING`.
    running: AtomicU64,
    /// `TASK_RUNNING` updates, repeats included (an agent re-sends an unacknowledged one).
    updates: AtomicU64,
    /// Distinct tasks that reached a terminal state (none expected).
    ended: AtomicU64,
    deployments_done: AtomicU64,
    lagged: AtomicU64,
    all_running: Notify,
    deployment_ended: Notify,
    first_running_us: AtomicU64,
    closed: AtomicBool,
}

/// Counts `status_update_event`s with `TASK_RUNNING` per distinct task, and deployment ends.
fn watch_events(mut events: broadcast::Receiver<Arc<MarathonEvent>>, total: u64, start: Instant) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let out = Arc::clone(&seen);
    tokio::spawn(async move {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut running: HashSet<u64> = HashSet::with_capacity(total as usize);
        let mut ended: HashSet<u64> = HashSet::new();
        loop {
            match events.recv().await {
                Ok(event) => match event.event_type.as_str() {
                    "status_update_event" => {
                        let Some(task_id) = json_field(&event.json, "taskId") else { continue };
                        let mut h = hasher.build_hasher();
                        h.write(task_id.as_bytes());
                        let key = h.finish();
                        let status = json_field(&event.json, "taskStatus").unwrap_or("");
                        if status == "TASK_RUNNING" {
                            out.updates.fetch_add(1, Ordering::Relaxed);
                            if running.insert(key) {
                                if running.len() == 1 {
                                    out.first_running_us.store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                                }
                                out.running.store(running.len() as u64, Ordering::Relaxed);
                                if running.len() as u64 == total {
                                    out.all_running.notify_one();
                                }
                            }
                        } else if matches!(
                            status,
                            "TASK_FINISHED"
                                | "TASK_FAILED"
                                | "TASK_KILLED"
                                | "TASK_LOST"
                                | "TASK_ERROR"
                                | "TASK_DROPPED"
                                | "TASK_GONE"
                        ) && ended.insert(key)
                        {
                            out.ended.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "deployment_success" | "deployment_failed" => {
                        out.deployments_done.fetch_add(1, Ordering::Relaxed);
                        out.deployment_ended.notify_waiters();
                    }
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    out.lagged.fetch_add(missed, Ordering::Relaxed);
                    // Anyone waiting for a deployment's end may have missed it.
                    out.deployment_ended.notify_waiters();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    out.closed.store(true, Ordering::Relaxed);
                    out.all_running.notify_one();
                    return;
                }
            }
        }
    });
    seen
}

/// The string value of `"key":"..."` in a compact JSON object (no escapes in our ids).
fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let end = json[start..].find('"')?;
    Some(&json[start..start + end])
}

/// `tasksRunning` summed over `GET /v2/apps`, and how long the request took.
/// What the scheduler says of a run that did not finish: its queue and deployments.
async fn print_stall(scheduler: &ActorRef<SchedulerMsg>) {
    let queue = rest(scheduler, "GET", "/v2/queue", Vec::new()).await.json_body();
    let items = queue["queue"].as_array().cloned().unwrap_or_default();
    let waiting: u64 = items.iter().filter_map(|i| i["count"].as_u64()).sum();
    println!("  stall: {} apps queued with {waiting} instances waiting", items.len());
    for item in items.iter().take(3) {
        let summary = &item["processedOffersSummary"];
        println!(
            "    {} count {} delay {} offers processed {} unused {} rejections {}",
            item["app"]["id"],
            item["count"],
            item["delay"],
            summary["processedOffersCount"],
            summary["unusedOffersCount"],
            summary["rejectSummaryLastOffers"]
        );
    }
    let deployments = rest(scheduler, "GET", "/v2/deployments", Vec::new()).await.json_body();
    let deployments = deployments.as_array().cloned().unwrap_or_default();
    println!("  stall: {} deployments running", deployments.len());
    for deployment in deployments.iter().take(3) {
        println!(
            "    {} step {}/{} {}",
            deployment["id"], deployment["currentStep"], deployment["totalSteps"], deployment["currentActions"]
        );
    }
}

async fn running_by_api(scheduler: &ActorRef<SchedulerMsg>) -> Result<(u64, Duration), String> {
    let started = Instant::now();
    let response = try_rest(scheduler, "GET", "/v2/apps", Vec::new()).await?;
    let took = started.elapsed();
    let body = response.json_body();
    let running =
        body["apps"].as_array().map_or(0, |apps| apps.iter().map(|a| a["tasksRunning"].as_u64().unwrap_or(0)).sum());
    Ok((running, took))
}

// ---------------------------------------------------------------------------------------------
// 1. Placement throughput.

#[derive(Clone, Copy)]
struct Scale {
    masters: usize,
    agents: usize,
    apps: usize,
    instances: usize,
    posters: usize,
    bound: Duration,
}

/// What posting the apps took.
struct Posted {
    /// When the last one was accepted.
    at: Instant,
    /// `403`s (too many running deployments) retried.
    retries: u64,
    /// Each accepted POST's latency, sorted.
    latencies: Vec<Duration>,
}

impl Posted {
    fn describe(&self, start: Instant) -> String {
        format!(
            "all {} apps accepted after {} (POST p50 {:.1} ms, p99 {:.1} ms; {} retried after 403 Too many running deployments)",
            self.latencies.len(),
            secs(self.at - start),
            percentile(&self.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            self.retries
        )
    }
}

/// Posts every app as fast as accepted, or says why a POST failed.
async fn post_apps(scheduler: ActorRef<SchedulerMsg>, scale: &Scale, seen: Arc<Seen>) -> Result<Posted, String> {
    let retries = Arc::new(AtomicU64::new(0));
    let instances = scale.instances;
    let latencies = futures::stream::iter(0..scale.apps)
        .map(|index| {
            let (scheduler, seen, retries) = (scheduler.clone(), Arc::clone(&seen), Arc::clone(&retries));
            async move {
                loop {
                    // Registered before the POST, so a deployment ending in between wakes us.
                    let ended = seen.deployment_ended.notified();
                    let sent = Instant::now();
                    let response = try_rest(&scheduler, "POST", "/v2/apps", app_json(index, instances)).await?;
                    match response.status {
                        201 => return Ok(sent.elapsed()),
                        403 => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            let _ = tokio::time::timeout(Duration::from_millis(500), ended).await;
                        }
                        status => {
                            return Err(format!(
                                "POST /v2/apps (app {index}) answered {status}: {}",
                                String::from_utf8_lossy(&response.body)
                            ));
                        }
                    }
                }
            }
        })
        .buffer_unordered(scale.posters)
        .collect::<Vec<Result<Duration, String>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<Duration>, String>>()?;
    let mut latencies = latencies;
    latencies.sort();
    Ok(Posted { at: Instant::now(), retries: retries.load(Ordering::Relaxed), latencies })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn placement(scale: Scale) {
    let total = (scale.apps * scale.instances) as u64;
    println!();
    println!(
        "== 1. placement throughput: {} master(s), {} agents, {} apps x {} instances = {} tasks (mock driver, SimNet) ==",
        scale.masters, scale.agents, scale.apps, scale.instances, total
    );
    let setup = Instant::now();
    let work = work_root();
    println!("agent checkpoints and sandboxes under {}", work.display());
    let cluster = Cluster::start(scale.masters, scale.agents, &server_info("m1:8080", 8080), work).await;
    let nodes_up = setup.elapsed();
    let (leader, scheduler) = cluster.scheduler().await;
    let leading = setup.elapsed();
    cluster.wait_agents(leader).await;
    println!(
        "setup: {} nodes started in {}, scheduler on {} after {}, all {} agents registered after {}; {}",
        scale.masters + scale.agents,
        secs(nodes_up),
        cluster.master_ids[leader],
        secs(leading),
        scale.agents,
        secs(setup.elapsed()),
        memory()
    );

    let events = ractor::call_t!(scheduler, SchedulerMsg::Events, 10_000).expect("the scheduler's event stream");
    let (start, tokio_start) = (Instant::now(), tokio::time::Instant::now());
    let seen = watch_events(events, total, start);
    let mut poster = Some({
        let (scheduler, seen) = (scheduler.clone(), Arc::clone(&seen));
        tokio::spawn(async move { post_apps(scheduler, &scale, seen).await })
    });

    let deadline = start + scale.bound;
    let mut posted: Option<Result<Posted, String>> = None;
    let (mut first_launch, mut all_launched): (Option<Duration>, Option<Duration>) = (None, None);
    let mut last_report = Instant::now();
    let mut by_api: Option<u64> = None;
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let outcome: Result<(), String> = loop {
        let wait = seen.all_running.notified();
        if seen.running.load(Ordering::Relaxed) < total {
            let _ = tokio::time::timeout(Duration::from_millis(100), wait).await;
        }
        if poster.as_ref().is_some_and(|handle| handle.is_finished()) {
            posted = Some(poster.take().expect("poster").await.expect("the poster panicked"));
        }
        let launches = cluster.launches();
        let elapsed = start.elapsed();
        if first_launch.is_none() && launches > 0 {
            first_launch = Some(elapsed);
        }
        if all_launched.is_none() && launches >= total {
            all_launched = Some(elapsed);
        }
        let running = seen.running.load(Ordering::Relaxed);
        if running == total {
            break Ok(());
        }
        if let Some(Err(error)) = &posted {
            break Err(error.clone());
        }
        if seen.closed.load(Ordering::Relaxed) {
            break Err("the scheduler's event stream closed (did the scheduler restart?)".to_owned());
        }
        // The stream lost events: count through the API instead (every 500 ms at most).
        if seen.lagged.load(Ordering::Relaxed) > 0 {
            match running_by_api(&scheduler).await {
                Ok((count, _)) if count == total => break Ok(()),
                Ok((count, took)) => {
                    by_api = Some(count);
                    tokio::time::sleep(Duration::from_millis(500).saturating_sub(took)).await;
                }
                Err(error) => break Err(error),
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let t = elapsed.as_secs_f64();
            samples.push((t, launches, running));
            println!(
                "  t={t:7.1} s  POSTs {}  launched {launches:>8}  running {running:>8} ({:.0}/s so far)  TASK_RUNNING updates {} (repeats included)  deployments ended {}  events lost {}  {}",
                match &posted {
                    Some(Ok(_)) => "all accepted",
                    Some(Err(_)) => "failed",
                    None => "in flight",
                },
                running as f64 / t,
                seen.updates.load(Ordering::Relaxed),
                seen.deployments_done.load(Ordering::Relaxed),
                seen.lagged.load(Ordering::Relaxed),
                memory()
            );
        }
        if Instant::now() > deadline {
            break Err(format!("the bound of {} ran out (FLOTILLA_BENCH_BOUND_SECS)", secs(scale.bound)));
        }
    };
    let elapsed = start.elapsed();
    let tokio_elapsed = tokio_start.elapsed();
    if let Some(handle) = poster.take() {
        if handle.is_finished() {
            posted = Some(handle.await.expect("the poster panicked"));
        } else {
            handle.abort();
        }
    }
    let running = seen.running.load(Ordering::Relaxed).max(by_api.unwrap_or(0));
    let launches = cluster.launches();
    println!(
        "clock check: {:.3} s by std::time::Instant, {:.3} s by tokio's clock (real time: {})",
        elapsed.as_secs_f64(),
        tokio_elapsed.as_secs_f64(),
        (elapsed.as_secs_f64() - tokio_elapsed.as_secs_f64()).abs() < 0.05
    );
    match &outcome {
        Ok(()) => {
            let rate = total as f64 / elapsed.as_secs_f64();
            println!(
                "placement: {total} tasks TASK_RUNNING in {} = {rate:.0} tasks/s  (x{:.2} Nomad C1M 3,750/s; x{:.2} kube-scheduler 810 pods/s; x{:.2} of the 10,000/s goal)",
                secs(elapsed),
                rate / NOMAD_C1M,
                rate / KUBE_SCHEDULER,
                rate / GOAL
            );
        }
        Err(why) => println!(
            "FAILED after {}: {why}; {running} of {total} tasks seen TASK_RUNNING by the scheduler ({:.0}/s), {launches} launched on agents",
            secs(elapsed),
            running as f64 / elapsed.as_secs_f64(),
        ),
    }
    if outcome.is_err() {
        print_stall(&scheduler).await;
    }
    let posted_line = match &posted {
        Some(Ok(posted)) => posted.describe(start),
        Some(Err(error)) => format!("a POST failed: {error}"),
        None => "the POSTs had not all been accepted".to_owned(),
    };
    println!("  phases from the first POST: {posted_line}");
    println!(
        "  first launch on an agent after {}, all {total} launched after {}, first TASK_RUNNING seen after {}, all running after {}",
        first_launch.map_or("-".to_owned(), secs),
        all_launched.map_or("-".to_owned(), secs),
        secs(Duration::from_micros(seen.first_running_us.load(Ordering::Relaxed))),
        if outcome.is_ok() { secs(elapsed) } else { "-".to_owned() },
    );
    println!(
        "  events: {} TASK_RUNNING updates for {} tasks, {} deployments ended, {} tasks ended (expected 0), {} events lost by the stream",
        seen.updates.load(Ordering::Relaxed),
        seen.running.load(Ordering::Relaxed),
        seen.deployments_done.load(Ordering::Relaxed),
        seen.ended.load(Ordering::Relaxed),
        seen.lagged.load(Ordering::Relaxed),
    );
    if !samples.is_empty() {
        let (mut prev_t, mut prev_launched, mut prev_running) = (0.0, 0, 0);
        let rates: Vec<String> = samples
            .iter()
            .map(|&(t, launched, running)| {
                let dt = t - prev_t;
                let line = format!(
                    "{t:.0}s:{:.0}/{:.0}",
                    (launched - prev_launched) as f64 / dt,
                    (running - prev_running) as f64 / dt
                );
                (prev_t, prev_launched, prev_running) = (t, launched, running);
                line
            })
            .collect();
        println!("  launched on agents/s / seen running/s, per 5 s window: {}", rates.join(" "));
    }
    match running_by_api(&scheduler).await {
        Ok((count, took)) => println!(
            "  GET /v2/apps over {} apps and {} instances: {:.1} ms (tasksRunning summed: {count}); {}",
            scale.apps,
            total,
            took.as_secs_f64() * 1e3,
            memory()
        ),
        Err(error) => println!("  GET /v2/apps: {error}; {}", memory()),
    }
    cluster.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. GET /v2/apps.

struct Figures {
    requests: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes: usize,
}

fn figures(mut samples: Vec<Duration>, elapsed: Duration, bytes: usize) -> Figures {
    samples.sort();
    Figures {
        requests: samples.len(),
        rate: samples.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&samples, 0.50).as_secs_f64() * 1e3,
        p99_ms: percentile(&samples, 0.99).as_secs_f64() * 1e3,
        bytes,
    }
}

fn print_figures(what: &str, f: &Figures) {
    println!(
        "  {what}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {:.0} KiB each)",
        f.rate,
        f.p50_ms,
        f.p99_ms,
        f.requests,
        f.bytes as f64 / 1024.0
    );
}

/// A keep-alive HTTP/1.1 client on one connection.
struct HttpClient {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl HttpClient {
    async fn connect(address: SocketAddr) -> HttpClient {
        let stream = tokio::net::TcpStream::connect(address).await.expect("connect to the HTTP API");
        stream.set_nodelay(true).expect("nodelay");
        HttpClient { stream, buffer: Vec::with_capacity(1 << 20) }
    }

    /// `GET path`; returns the status and the body's length.
    async fn get(&mut self, path: &str) -> (u16, usize) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: application/json\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await.expect("send");
        self.buffer.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        let header_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buffer[..header_end]).to_string();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .expect("a Content-Length (the shell sends whole bodies)");
        while self.buffer.len() < header_end + length {
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        (status, length)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `connections` clients, each issuing `GET /v2/apps` back to back for `duration`.
async fn http_load(address: SocketAddr, connections: usize, duration: Duration) -> Figures {
    let started = Instant::now();
    let end = started + duration;
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = HttpClient::connect(address).await;
                let mut samples = Vec::new();
                let mut bytes = 0;
                while Instant::now() < end {
                    let at = Instant::now();
                    let (status, length) = client.get("/v2/apps").await;
                    assert_eq!(status, 200, "GET /v2/apps over HTTP");
                    samples.push(at.elapsed());
                    bytes = length;
                }
                (samples, bytes)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut bytes = 0;
    for client in clients {
        let (samples, length) = client.await.expect("client");
        all.extend(samples);
        bytes = length;
    }
    figures(all, started.elapsed(), bytes)
}

async fn api(apps: usize, instances: usize, agents: usize, duration: Duration) {
    println!();
    println!(
        "== 2. GET /v2/apps with {apps} apps ({instances} instance(s) each on {agents} agents, 1 master): {} s per client shape ==",
        duration.as_secs()
    );
    let bound = BoundApi::bind("127.0.0.1:0".parse().expect("address")).expect("bind the HTTP API");
    let address = bound.address;
    let work = work_root().with_extension("api");
    let cluster = Cluster::start(1, agents, &server_info(&address.to_string(), address.port()), work).await;
    let (leader, scheduler) = cluster.scheduler().await;
    cluster.wait_agents(leader).await;

    let events = ractor::call_t!(scheduler, SchedulerMsg::Events, 10_000).expect("the scheduler's event stream");
    let created = Instant::now();
    let total = (apps * instances) as u64;
    let seen = watch_events(events, total, created);
    let scale = Scale { masters: 1, agents, apps, instances, posters: 4, bound: SETUP_BOUND };
    let posted =
        post_apps(scheduler.clone(), &scale, Arc::clone(&seen)).await.unwrap_or_else(|error| panic!("{error}"));
    println!("setup: {}", posted.describe(created));
    let deadline = Instant::now() + SETUP_BOUND;
    while seen.running.load(Ordering::Relaxed) < total {
        let wait = seen.all_running.notified();
        let _ = tokio::time::timeout(Duration::from_millis(100), wait).await;
        if seen.lagged.load(Ordering::Relaxed) > 0 && running_by_api(&scheduler).await.is_ok_and(|(n, _)| n == total) {
            break;
        }
        assert!(Instant::now() < deadline, "the {apps} apps' tasks did not all run within {SETUP_BOUND:?}");
    }
    // And their deployments ended, so that GET /v2/apps reads a steady state.
    while !rest(&scheduler, "GET", "/v2/deployments", Vec::new())
        .await
        .json_body()
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "deployments still running after {SETUP_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "setup: {apps} apps created, their {total} tasks running and deployments ended after {}; {}",
        secs(created.elapsed()),
        memory()
    );

    // (a) The scheduler actor, one request at a time.
    for _ in 0..20 {
        rest(&scheduler, "GET", "/v2/apps", Vec::new()).await;
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut bytes = 0;
    while started.elapsed() < duration {
        let at = Instant::now();
        let response = rest(&scheduler, "GET", "/v2/apps", Vec::new()).await;
        samples.push(at.elapsed());
        assert_eq!(response.status, 200);
        bytes = response.body.len();
    }
    let local = figures(samples, started.elapsed(), bytes);
    print_figures("(a) scheduler actor, SchedulerMsg::Rest, 1 at a time", &local);

    // (b) Real HTTP through the binary's shell.
    let http = HttpApi::serve(
        bound,
        cluster.masters[leader].node.clone(),
        {
            let transport = cluster.masters[leader].transport.clone();
            std::sync::Arc::new(move || Some(transport.clone()))
        },
        cluster.master_ids.clone(),
    )
    .expect("the HTTP API");
    {
        let mut client = HttpClient::connect(address).await;
        for _ in 0..20 {
            assert_eq!(client.get("/v2/apps").await.0, 200, "GET /v2/apps over HTTP");
        }
    }
    let one = http_load(address, 1, duration).await;
    print_figures("(b) HTTP/1.1 keep-alive, 1 connection", &one);
    let eight = http_load(address, 8, duration).await;
    print_figures("(b) HTTP/1.1 keep-alive, 8 connections", &eight);
    wrk(address, duration).await;
    println!("  peer: no published Marathon figure for GET /v2/apps in reference/perf.md, so no ratio; {}", memory());
    http.stop().await;
    cluster.stop();
}

/// `wrk -t1 -c8` against the API, if wrk is installed.
async fn wrk(address: SocketAddr, duration: Duration) {
    let url = format!("http://{address}/v2/apps");
    let seconds = format!("{}s", duration.as_secs().max(1));
    let args = ["-t1".to_owned(), "-c8".to_owned(), "-d".to_owned(), seconds.clone(), "--latency".to_owned(), url];
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(&args).output())
        .await
        .expect("wrk runner");
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let pick = |prefix: &str| {
                text.lines()
                    .find(|l| l.trim_start().starts_with(prefix))
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            };
            println!(
                "  (b) wrk -t1 -c8 -d{seconds}: {} | {} | {} | {}",
                pick("Requests/sec").unwrap_or_default(),
                pick("50%").map(|l| format!("p50 {l}")).unwrap_or_default(),
                pick("99%").map(|l| format!("p99 {l}")).unwrap_or_default(),
                pick("Non-2xx").unwrap_or_else(|| "all 2xx".to_owned()),
            );
        }
        Ok(output) => println!("  (b) wrk failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
        Err(_) => println!("  (b) wrk is not installed (apt-get install -y wrk); skipped"),
    }
}

//! The randomized battery: per seed, a simulated cluster under a client workload while the
//! monkey's faults fire (the chaos phase), then everything healed (the heal phase), with
//! safety invariants checked throughout and liveness checked after healing.
//!
//! Workload: one registry client writing a new key every 100 ms; one Marathon client
//! creating, scaling, updating and deleting apps every second (with `force=true`, so a
//! change never waits behind a deployment).
//!
//! Safety, checked throughout:
//! - at most one master claims leadership per term (every master's own status, sampled);
//! - the revisions of one client's acknowledged writes only go up;
//! - no task id is launched twice (every agent host's launches);
//! - the leader records no status update twice (a duplicated or re-sent update changes nothing);
//! - no invariant a node checks locally is reported broken ([`SimCluster::broken_invariants`]:
//!   an agent admitting a command of a deposed leader's term, an agent's recovery killing a
//!   task its checkpoint holds);
//! - no acknowledged write is lost (checked once the cluster has healed).
//!
//! Liveness, after healing (simulated time): a leader within 10 s; every acknowledged write
//! applied on every master within 10 s; every app at its instance count with no deployment
//! within 60 s, as the last acknowledged change left it; no host runs a task the leader does
//! not know (no orphan after agent recovery).
//!
//! Not checked yet (reliability.md §7.4 lists it): linearizability of the whole registry
//! history here (the registry's own battery, `actors/tests/registry.rs`, checks it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_actors::agent::actor::AGENT_ACTOR;
use flotilla_actors::chaos::core::{MonkeyConfig, ScheduledFault, schedule};
use flotilla_actors::election::actor::ELECTION_NAME;
use flotilla_actors::marathon::actor::SCHEDULER_ACTOR;
use flotilla_actors::master::actor::MASTER_ACTOR;
use flotilla_actors::mesos::protocol::MasterState;
use flotilla_actors::registry::core::Revision;
use flotilla_actors::registry::protocol::REGISTRY_NAME;
use flotilla_supervisors::Rng;
use flotilla_transport::Trace;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::chaos::Injected;
use super::{SimBuilder, SimCluster};

/// How long a client waits for one registry write.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// The liveness bounds after healing.
const LEADER_BOUND: Duration = Duration::from_secs(10);
const REPLICATION_BOUND: Duration = Duration::from_secs(10);
const APPS_BOUND: Duration = Duration::from_secs(60);
/// How long after the apps settle a task unknown to the leader may still run (a kill in
/// flight, its grace period).
const ORPHAN_BOUND: Duration = Duration::from_secs(30);

/// One battery run's shape.
#[derive(Clone, Debug)]
pub struct BatteryConfig {
    pub masters: usize,
    pub agents: usize,
    /// How long faults fire.
    pub chaos: Duration,
    /// Mean time between two faults.
    pub mean_fault_interval: Duration,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        BatteryConfig {
            masters: 3,
            agents: 5,
            chaos: Duration::from_secs(60),
            mean_fault_interval: Duration::from_secs(2),
        }
    }
}

/// What one seed did and what it broke.
#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub schedule: Vec<ScheduledFault>,
    pub violations: Vec<String>,
    pub acknowledged_writes: usize,
    pub acknowledged_app_changes: usize,
    /// Simulated time from start to the end of the checks.
    pub simulated: Duration,
    pub trace: Trace,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl std::fmt::Display for SeedReport {
    /// The seed, its violations and its fault schedule: what it takes to reproduce a failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}: {} violation(s)", self.seed, self.violations.len())?;
        for violation in &self.violations {
            writeln!(f, "  violation: {violation}")?;
        }
        writeln!(f, "  fault schedule ({} faults):", self.schedule.len())?;
        for fault in &self.schedule {
            writeln!(f, "    {fault}")?;
        }
        Ok(())
    }
}

/// The monkey's settings for a cluster of this shape: every node, the actors it may kill.
pub fn monkey_config(config: &BatteryConfig) -> MonkeyConfig {
    let masters = (1..=config.masters).map(|i| format!("m{i}")).collect();
    let agents = (1..=config.agents).map(|i| format!("a{i}")).collect();
    let mut monkey = MonkeyConfig::new(masters, agents);
    monkey.mean_interval = config.mean_fault_interval;
    monkey.actors = [REGISTRY_NAME, ELECTION_NAME, MASTER_ACTOR, SCHEDULER_ACTOR, AGENT_ACTOR]
        .into_iter()
        .map(str::to_owned)
        .collect();
    monkey
}

/// Runs one seed (on the caller's runtime, which should be on paused time: [`super::run`]).
pub async fn run_seed(seed: u64, config: &BatteryConfig) -> anyhow::Result<SeedReport> {
    let start = Instant::now();
    let faults = schedule(&monkey_config(config), seed, config.chaos);
    let cluster = SimBuilder::new(seed).masters(config.masters).agents(config.agents).start().await?;
    let mut violations = Vec::new();
    let chaos_end = start + config.chaos;
    let (chaos, writes, leaders, apps, tasks) = tokio::join!(
        run_schedule(&cluster, &faults, start),
        write_keys(&cluster, chaos_end),
        observe_leaders(&cluster, chaos_end),
        change_apps(&cluster, seed, chaos_end),
        observe_tasks(&cluster, chaos_end),
    );
    chaos?;
    heal_everything(&cluster).await?;
    violations.extend(writes.violations.iter().cloned());
    violations.extend(leaders);
    violations.extend(tasks);
    violations.extend(check_leader(&cluster).await);
    violations.extend(check_writes(&cluster, &writes).await);
    violations.extend(check_apps(&cluster, &apps.expected).await);
    violations.extend(relaunched_tasks(&cluster));
    violations.extend(check_orphans(&cluster).await);
    violations.extend(cluster.master_state().await.map(|state| repeated_statuses(&state)).unwrap_or_default());
    violations.extend(cluster.broken_invariants().into_iter().map(|report| format!("invariant broken on {report}")));
    let report = SeedReport {
        seed,
        schedule: faults,
        violations,
        acknowledged_writes: writes.acknowledged.len(),
        acknowledged_app_changes: apps.acknowledged,
        simulated: start.elapsed(),
        trace: cluster.trace(),
    };
    cluster.shutdown().await;
    Ok(report)
}

/// Injects and heals the schedule's faults at their times.
async fn run_schedule(cluster: &SimCluster, faults: &[ScheduledFault], start: Instant) -> anyhow::Result<()> {
    enum Step<'a> {
        Inject(usize, &'a ScheduledFault),
        Heal(usize),
    }
    let mut steps: Vec<(Duration, u8, Step)> = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        steps.push((fault.at, 1, Step::Inject(index, fault)));
        if let Some(heal_at) = fault.heal_at {
            // At one instant, heals go before injections, so a node is up before it is hit again.
            steps.push((heal_at, 0, Step::Heal(index)));
        }
    }
    steps.sort_by_key(|(at, order, _)| (*at, *order));
    let mut active: BTreeMap<usize, Injected> = BTreeMap::new();
    for (at, _, step) in steps {
        tokio::time::sleep_until(start + at).await;
        match step {
            Step::Inject(index, fault) => {
                active.insert(index, cluster.inject(&fault.fault).await?);
            }
            Step::Heal(index) => {
                if let Some(injected) = active.remove(&index) {
                    cluster.heal(injected).await?;
                }
            }
        }
    }
    for injected in active.into_values() {
        cluster.heal(injected).await?;
    }
    Ok(())
}

/// Lifts every link fault, restarts every node that is down and sets every clock right.
async fn heal_everything(cluster: &SimCluster) -> anyhow::Result<()> {
    cluster.net().heal_all();
    for id in cluster.master_ids().into_iter().chain(cluster.agent_ids()) {
        if !cluster.is_running(&id) {
            cluster.restart(&id).await?;
        }
        cluster.skew_clock(&id, 0)?;
    }
    Ok(())
}

#[derive(Default)]
struct Writes {
    /// Keys whose write was acknowledged, with its value and revision.
    acknowledged: Vec<(String, Vec<u8>, Revision)>,
    violations: Vec<String>,
}

/// One client writing a fresh key every 100 ms until `end`.
async fn write_keys(cluster: &SimCluster, end: Instant) -> Writes {
    let mut client = cluster.registry();
    let mut writes = Writes::default();
    let mut last: Revision = 0;
    let mut number = 0u32;
    while Instant::now() < end {
        number += 1;
        let key = format!("/battery/w{number:06}");
        let value = number.to_be_bytes().to_vec();
        if let Ok(response) = client.put(&key, &value, WRITE_DEADLINE).await {
            if response.revision <= last {
                writes.violations.push(format!(
                    "write {key} acknowledged at revision {} after an earlier write at {last}",
                    response.revision
                ));
            }
            last = last.max(response.revision);
            writes.acknowledged.push((key, value, response.revision));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writes
}

/// Samples every running master's own status; a term claimed by two masters is a violation.
async fn observe_leaders(cluster: &SimCluster, end: Instant) -> Vec<String> {
    let registry = cluster.registry();
    let mut claims: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    while Instant::now() < end {
        for master in cluster.master_ids() {
            if !cluster.is_running(&master) {
                continue;
            }
            if let Ok(status) = registry.status_of(&master).await
                && status.is_leader
            {
                claims.entry(status.term).or_default().insert(status.node);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    claims
        .into_iter()
        .filter(|(_, leaders)| leaders.len() > 1)
        .map(|(term, leaders)| format!("term {term} had {} leaders: {leaders:?}", leaders.len()))
        .collect()
}

/// What the last acknowledged change of an app left it as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Instances(u64),
    Deleted,
    /// The last change was not acknowledged: it may or may not have happened.
    Unknown,
}

struct Apps {
    expected: BTreeMap<String, Expected>,
    acknowledged: usize,
}

/// Every app's resources, in every request: a `PUT` to an app that is gone (or whose
/// creation was not acknowledged) creates it, and without them Marathon's defaults (1 cpu)
/// would fill the agents until instances wait for capacity that never comes.
const APP_CPUS: f64 = 0.1;
const APP_MEM: u64 = 16;

/// One Marathon client changing apps every second until `end`.
async fn change_apps(cluster: &SimCluster, seed: u64, end: Instant) -> Apps {
    let mut rng = Rng::seeded(seed ^ 0xa995);
    let mut apps = Apps { expected: BTreeMap::new(), acknowledged: 0 };
    let mut created = 0u32;
    while Instant::now() < end {
        let live: Vec<String> =
            apps.expected.iter().filter(|(_, e)| **e != Expected::Deleted).map(|(id, _)| id.clone()).collect();
        let (id, method, path, body, outcome) = if live.is_empty() || rng.below(4) == 0 {
            created += 1;
            let id = format!("/app{created}");
            let instances = 1 + rng.below(3);
            let body = json!({"id": id, "cmd": "serve", "cpus": APP_CPUS, "mem": APP_MEM, "instances": instances});
            (id, "POST", "/v2/apps".to_owned(), body, Expected::Instances(instances))
        } else {
            let id = live[usize::try_from(rng.below(live.len() as u64)).unwrap_or(0)].clone();
            let path = format!("/v2/apps{id}?force=true");
            match rng.below(4) {
                0 => (id, "DELETE", path, Value::Null, Expected::Deleted),
                1 => {
                    let keep = apps.expected.get(&id).copied().unwrap_or(Expected::Unknown);
                    let cmd = format!("serve --generation {}", rng.below(1_000));
                    let body = json!({"cmd": cmd, "cpus": APP_CPUS, "mem": APP_MEM});
                    (id, "PUT", path, body, keep)
                }
                _ => {
                    let instances = rng.below(4);
                    let body = json!({"instances": instances, "cpus": APP_CPUS, "mem": APP_MEM});
                    (id, "PUT", path, body, Expected::Instances(instances))
                }
            }
        };
        let answer = cluster.marathon(method, &path, body).await;
        let status = answer.as_ref().map(|a| a.status);
        let expected = match status {
            Some(200 | 201) => {
                apps.acknowledged += 1;
                outcome
            }
            // Refused: nothing changed (a POST of an existing id, a 404 after a lost delete).
            Some(400..=499) => apps.expected.get(&id).copied().unwrap_or(Expected::Unknown),
            _ => Expected::Unknown,
        };
        apps.expected.insert(id, expected);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    apps
}

/// Checks every 500 ms that no task id was launched twice on any host and that the leader
/// recorded no status update twice; stops at the first violation.
async fn observe_tasks(cluster: &SimCluster, end: Instant) -> Vec<String> {
    while Instant::now() < end {
        let mut found = relaunched_tasks(cluster);
        if let Some(state) = cluster.master_state().await {
            found.extend(repeated_statuses(&state));
        }
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Vec::new()
}

/// Status updates the leader recorded twice in one task's history: a re-sent or duplicated
/// update (same uuid) must change nothing.
fn repeated_statuses(state: &MasterState) -> Vec<String> {
    let tasks = state.tasks.iter().chain(&state.completed_tasks);
    tasks
        .filter_map(|task| {
            let mut seen = BTreeSet::new();
            let twice = task.statuses.iter().filter_map(|s| s.uuid).find(|uuid| !seen.insert(*uuid))?;
            let id = &task.task.task_id;
            Some(format!("the leader (term {}) recorded status update {twice:x} of task {id} twice", state.term))
        })
        .collect()
}

fn relaunched_tasks(cluster: &SimCluster) -> Vec<String> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for agent in cluster.agent_ids() {
        for (task, count) in cluster.driver(&agent).map(|d| d.launch_counts()).unwrap_or_default() {
            *counts.entry(task).or_default() += count;
        }
    }
    counts.into_iter().filter(|(_, n)| *n > 1).map(|(task, n)| format!("task {task} launched {n} times")).collect()
}

async fn check_leader(cluster: &SimCluster) -> Vec<String> {
    let deadline = Instant::now() + LEADER_BOUND;
    while Instant::now() < deadline {
        if cluster.leader().await.is_some() {
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    vec![format!("no leader within {LEADER_BOUND:?} of healing")]
}

/// Every acknowledged write applied on every master within the bound, and each readable
/// with its value.
async fn check_writes(cluster: &SimCluster, writes: &Writes) -> Vec<String> {
    let Some(newest) = writes.acknowledged.iter().map(|(_, _, revision)| *revision).max() else { return Vec::new() };
    let registry = cluster.registry();
    let deadline = Instant::now() + REPLICATION_BOUND;
    let mut behind = cluster.master_ids();
    while !behind.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for master in behind {
            let applied = registry.status_of(&master).await.map(|status| status.revision).unwrap_or(0);
            if applied < newest {
                still.push(master);
            }
        }
        behind = still;
        if !behind.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut violations: Vec<String> = behind
        .iter()
        .map(|master| format!("{master} had not applied revision {newest} within {REPLICATION_BOUND:?} of healing"))
        .collect();
    let mut client = cluster.registry();
    for (key, value, revision) in &writes.acknowledged {
        match client.get(key, WRITE_DEADLINE).await {
            Ok((_, Some(kv))) if kv.value == *value => {}
            Ok((_, Some(kv))) => violations.push(format!("{key} (acknowledged at {revision}) reads {:?}", kv.value)),
            Ok((_, None)) => violations.push(format!("acknowledged write {key} (revision {revision}) is lost")),
            Err(error) => violations.push(format!("{key} could not be read after healing: {error}")),
        }
    }
    violations
}

/// Every app as its last acknowledged change left it, all instances running, no deployment.
async fn check_apps(cluster: &SimCluster, expected: &BTreeMap<String, Expected>) -> Vec<String> {
    let deadline = Instant::now() + APPS_BOUND;
    let mut last = Vec::new();
    let mut listed = BTreeSet::new();
    while Instant::now() < deadline {
        last = match cluster.marathon("GET", "/v2/apps?embed=apps.tasks", Value::Null).await {
            Some(answer) if answer.status == 200 => {
                let body = answer.json_body();
                listed = listed_tasks(&body);
                app_differences(&body, expected)
            }
            other => vec![format!("GET /v2/apps answered {:?}", other.map(|a| a.status))],
        };
        if last.is_empty() {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue = cluster.marathon("GET", "/v2/queue", Value::Null).await.map(|answer| answer.json_body());
    let waiting = queue.as_ref().map_or_else(|| "no answer".to_owned(), queue_summary);
    let leader =
        cluster.master_state().await.map_or_else(|| "no answer".to_owned(), |state| leader_summary(&state, &listed));
    let mut violations: Vec<String> =
        last.into_iter().map(|why| format!("{APPS_BOUND:?} after healing: {why}")).collect();
    // Why, once for all of them: what Marathon waits for and what the leader holds.
    if let Some(first) = violations.first_mut() {
        first.push_str(&format!(" [queue: {waiting}] [leader: {leader}]"));
    }
    violations
}

/// The ids of the tasks Marathon lists under its apps.
fn listed_tasks(apps: &Value) -> BTreeSet<String> {
    let apps = apps["apps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let tasks = apps.iter().flat_map(|app| app["tasks"].as_array().map(Vec::as_slice).unwrap_or_default());
    tasks.filter_map(|task| task["id"].as_str().map(str::to_owned)).collect()
}

/// The leader's agents in brief: active or not, cpus used and offered, active tasks by state;
/// then the active tasks Marathon does not list (resources nobody will free).
fn leader_summary(state: &MasterState, listed: &BTreeSet<String>) -> String {
    let agents: Vec<String> = state
        .agents
        .iter()
        .map(|agent| {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for task in state.tasks.iter().filter(|task| task.agent_id == agent.info.id) {
                *states.entry(format!("{:?}", task.state)).or_default() += 1;
            }
            format!(
                "{} active {} cpus used {} offered {} tasks {states:?}",
                agent.info.id,
                agent.active,
                agent.used.scalar("cpus"),
                agent.offered.scalar("cpus")
            )
        })
        .collect();
    let unlisted: Vec<String> = state
        .tasks
        .iter()
        .filter(|task| !listed.contains(&task.task.task_id))
        .map(|task| format!("{} {:?} on {}", task.task.task_id, task.state, task.agent_id))
        .collect();
    format!(
        "term {} recovering {}; {}; not listed by Marathon: {unlisted:?}",
        state.term,
        state.recovering,
        agents.join("; ")
    )
}

/// Why each queued app waits, in brief: its id, instances to launch, delay and offer verdicts.
fn queue_summary(queue: &Value) -> String {
    let entries = queue["queue"].as_array().map(Vec::as_slice).unwrap_or_default();
    let brief: Vec<String> = entries
        .iter()
        .map(|entry| {
            format!(
                "{} count {} delay {} summary {}",
                entry["app"]["id"], entry["count"], entry["delay"], entry["processedOffersSummary"]
            )
        })
        .collect();
    if brief.is_empty() { "empty".to_owned() } else { brief.join("; ") }
}

fn app_differences(body: &Value, expected: &BTreeMap<String, Expected>) -> Vec<String> {
    let apps: BTreeMap<&str, &Value> = body["apps"]
        .as_array()
        .map(|apps| apps.iter().filter_map(|app| Some((app["id"].as_str()?, app))).collect())
        .unwrap_or_default();
    let mut differences = Vec::new();
    for (id, want) in expected {
        match (want, apps.get(id.as_str())) {
            (Expected::Deleted, Some(_)) => differences.push(format!("{id} was deleted but exists")),
            (Expected::Instances(n), None) => differences.push(format!("{id} should have {n} instances but is gone")),
            (Expected::Instances(n), Some(app)) if app["instances"].as_u64() != Some(*n) => {
                differences.push(format!("{id} has instances {} where {n} was acknowledged", app["instances"]));
            }
            _ => {}
        }
    }
    for (id, app) in apps {
        let running = app["tasksRunning"].as_u64().unwrap_or(0);
        let instances = app["instances"].as_u64().unwrap_or(0);
        let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
        if running != instances || deploying {
            let tasks: Vec<String> = app["tasks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|task| format!("{} {} on {}", task["id"], task["state"], task["slaveId"]))
                .collect();
            differences
                .push(format!("{id}: {running} of {instances} running, deploying: {deploying}, tasks {tasks:?}"));
        }
    }
    differences
}

/// No host runs a task the leader does not list, once kills in flight have had their time.
async fn check_orphans(cluster: &SimCluster) -> Vec<String> {
    let deadline = Instant::now() + ORPHAN_BOUND;
    loop {
        let orphans = orphans(cluster).await;
        if orphans.is_empty() || Instant::now() >= deadline {
            return orphans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn orphans(cluster: &SimCluster) -> Vec<String> {
    let Some(state) = cluster.master_state().await else {
        return vec!["no leader answered to check for orphans".to_owned()];
    };
    let known: BTreeSet<&str> = state.tasks.iter().map(|task| task.task.task_id.as_str()).collect();
    let mut orphans = Vec::new();
    for agent in cluster.agent_ids() {
        let running = cluster.driver(&agent).map(|driver| driver.running()).unwrap_or_default();
        for task in running.iter().filter(|task| !known.contains(task.as_str())) {
            let ended = state.completed_tasks.iter().find(|done| done.task.task_id == *task);
            let seen = ended.map_or("never".to_owned(), |done| format!("ended {:?} on {}", done.state, done.agent_id));
            orphans.push(format!(
                "task {task} runs on {agent}'s host but the leader does not know it (leader: {seen}) \
                 {ORPHAN_BOUND:?} after the apps settled"
            ));
        }
    }
    orphans
}

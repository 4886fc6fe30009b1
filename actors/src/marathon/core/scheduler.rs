//! The service scheduler's state machine: apps, their instances and the deployments between
//! app sets, driven by API changes, offers, status updates and the clock — all arguments. It
//! answers with [`Effect`]s for the master and records to write; the actor writes the records
//! first and only then sends the effects (a launch leaves only once its instance is stored, a
//! change is acknowledged only once its app and deployment are).
//!
//! # The model
//!
//! - An *app record* holds the current definition, its version info and earlier versions.
//! - An *instance* is one wanted copy of an app: *scheduled* (waiting for an offer, kept in
//!   memory only), then *launched* (a Mesos task on an agent, stored) until its task ends.
//!   Each instance runs one configuration, named by its *config key* (the definition's
//!   fingerprint and `lastConfigChangeAt`, so a restart is a change of configuration).
//! - A *deployment run* (see [`super::deployment`]) moves apps from one app set to another;
//!   every [`SchedulerCore::converge`] observes the instances of its apps and schedules or
//!   kills what its current step needs. Apps outside every deployment are kept at their
//!   instance count: a failed instance is replaced, after the app's launch backoff.
//! - Offers are matched by [`super::placement::place`] against the scheduled instances.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_supervisors::planted::{PlantedBug, planted};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::app::{AppConfig, AppDefinition, HealthCheckProtocol, UnreachableStrategy, VersionInfo, task_environment};
use super::backoff::{BackoffStrategy, ConfigRef, InstanceEvent, LaunchDelays};
use super::constraints::{AgentFacts, AttributeValue, Constraint};
use super::deployment::{
    self, Admission, AppView, Apps, DeploymentEvent, DeploymentId, DeploymentPlan, DeploymentRun, Observation,
    ReadinessCheckResultView, RunState,
};
use super::path::PathId;
use super::placement::{
    self, Demand, InstanceResources, LaunchAttemptStats, PlacementOffer, PlacementSnapshot, PortRequest,
};
use super::timestamp::Timestamp;
use super::upgrade::{InstanceId, InstanceState, InstanceVersion, InstanceView, UpgradeStrategy, kill_order};
use crate::agent::driver::TaskCommand;
use crate::discovery::{PortEntry, PortProtocol as DiscoveryProtocol};
use crate::mesos::core::health::{HealthCheck as MesosHealthCheck, Probe};
use crate::mesos::core::{Resources, TaskState, TaskStatus, UNRESERVED};
use crate::mesos::protocol::{DiscoveryInfo, FetchUri, OfferInfo, TaskInfo};

/// Registry prefixes of the scheduler's records.
pub const APPS_PREFIX: &str = "/marathon/apps";
pub const INSTANCES_PREFIX: &str = "/marathon/instances/";
pub const DEPLOYMENTS_PREFIX: &str = "/marathon/deployments/";

/// DC/OS's `--max_instances_per_offer` (Marathon's own default is 5, which leaves most of a
/// large agent's offer unused in each round).
pub const DCOS_MAX_INSTANCES_PER_OFFER: u32 = 100;

/// How often [`SchedulerCore::tick`] looks at every app and deployment.
const FULL_CONVERGE_MS: u64 = 1_000;

/// How long a deployment goes unobserved after an observation while status updates arrive:
/// 100 ms, plus 1 ms per thousand instances of its apps (observing reads them all).
fn observe_interval_ms(run: &DeploymentRun, instances: &Instances) -> u64 {
    let count: usize = run
        .plan()
        .affected_apps()
        .into_iter()
        .filter_map(app_path)
        .map(|app| instances.by_app.get(&app).map_or(0, BTreeSet::len))
        .sum();
    100 + (count / 1_000) as u64
}

/// How many earlier versions of an app are kept for `/v2/apps/{id}/versions`.
pub const MAX_VERSIONS: usize = 50;
/// Mesos's default grace between SIGTERM and SIGKILL when the app names none.
const DEFAULT_KILL_GRACE_MS: u64 = 3_000;

/// What the scheduler is configured with.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub framework_id: String,
    pub apps: AppConfig,
    pub max_running_deployments: usize,
    pub max_instances_per_offer: u32,
    /// Marathon's `--task_launch_timeout`: an instance launched this long ago that has not
    /// reached `TASK_RUNNING` is killed and replaced (its launch may have been lost).
    pub task_launch_timeout_ms: u64,
    /// A kill that has not ended its task this long after it was sent is sent again: the
    /// first may have been lost with a connection (Marathon retries kills the same way).
    pub kill_retry_timeout_ms: u64,
}

/// Marathon's default `--task_launch_timeout` (5 minutes).
pub const DEFAULT_TASK_LAUNCH_TIMEOUT_MS: u64 = 300_000;
/// How long a kill waits for its task to end before it is sent again.
pub const DEFAULT_KILL_RETRY_TIMEOUT_MS: u64 = 10_000;

impl SchedulerConfig {
    pub fn new(framework_id: &str) -> SchedulerConfig {
        SchedulerConfig {
            framework_id: framework_id.to_owned(),
            apps: AppConfig::default(),
            max_running_deployments: deployment::DEFAULT_MAX_RUNNING_DEPLOYMENTS,
            max_instances_per_offer: DCOS_MAX_INSTANCES_PER_OFFER,
            task_launch_timeout_ms: DEFAULT_TASK_LAUNCH_TIMEOUT_MS,
            kill_retry_timeout_ms: DEFAULT_KILL_RETRY_TIMEOUT_MS,
        }
    }
}

/// An app as stored: the current definition, its version info and earlier definitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app: AppDefinition,
    pub version_info: VersionInfo,
    /// Earlier versions (and the current one), oldest first, at most [`MAX_VERSIONS`].
    pub versions: BTreeMap<Timestamp, AppDefinition>,
    /// The configuration key (see [`AppRecord::config_key`]), kept since computing it means
    /// serializing the whole definition.
    #[serde(default)]
    config: String,
    /// The definition's JSON (`App` with its version), rendered once per version: reading
    /// a thousand apps then costs their counts, not a thousand renderings.
    #[serde(skip)]
    rendered: std::sync::Arc<str>,
}

impl AppRecord {
    fn new(app: AppDefinition, version_info: VersionInfo, versions: BTreeMap<Timestamp, AppDefinition>) -> AppRecord {
        let config = format!("{}-{}", app.config_fingerprint(), version_info.last_config_change_at.millis());
        let rendered = app.to_json(&version_info).to_string().into();
        AppRecord { app, version_info, versions, config, rendered }
    }

    /// The definition as JSON (an object), as [`AppDefinition::to_json`] renders it.
    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    /// The configuration an instance of this app launches with: the fingerprint of the
    /// definition and the time of its last configuration change (so a restart replaces).
    pub fn config_key(&self) -> String {
        self.config.clone()
    }

    fn view(&self) -> AppView {
        let app = &self.app;
        let strategy = UpgradeStrategy::new(
            app.upgrade_strategy.minimum_health_capacity,
            app.upgrade_strategy.maximum_over_capacity,
        )
        .unwrap_or_default();
        AppView {
            id: plan_id(&app.id),
            instances: u32::try_from(app.instances).unwrap_or(0),
            version: self.version_info.version.to_string(),
            config_fingerprint: self.config_key(),
            dependencies: app.dependencies.iter().map(plan_id).collect(),
            upgrade_strategy: strategy,
            kill_selection: app.kill_selection,
            has_health_checks: !app.health_checks.is_empty(),
            has_readiness_checks: !app.readiness_checks.is_empty(),
        }
    }
}

/// Where a launched instance runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub agent_id: String,
    pub host: String,
    /// Host ports, one per declared port.
    pub ports: Vec<u64>,
    pub staged_at: Timestamp,
}

/// One instance of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub task_id: String,
    pub app_id: PathId,
    /// The app version it launched with.
    pub version: Timestamp,
    pub config_key: String,
    /// `None` while scheduled (waiting for an offer).
    pub placed: Option<Placed>,
    pub state: TaskState,
    pub healthy: Option<bool>,
    pub started_at: Option<Timestamp>,
    /// A kill was sent (the instance counts as killing until its task ends).
    pub killing: bool,
    /// When its agent became unreachable, if it is.
    pub unreachable_since: Option<Timestamp>,
    pub scheduled_at: Timestamp,
}

impl Instance {
    fn staged_ms(&self) -> u64 {
        self.placed.as_ref().map_or(self.scheduled_at, |p| p.staged_at).millis()
    }

    fn is_running(&self) -> bool {
        self.state == TaskState::Running
    }
}

/// Every instance, indexed by app, with those waiting for an offer (oldest first) and those
/// unreachable kept apart: the scheduler looks at one app's instances at a time, never at all.
#[derive(Debug, Default)]
struct Instances {
    all: BTreeMap<String, Instance>,
    by_app: BTreeMap<PathId, BTreeSet<String>>,
    waiting: BTreeMap<PathId, BTreeSet<(Timestamp, String)>>,
    unreachable: BTreeSet<String>,
}

impl Readiness {
    fn forget(&mut self, task_id: &str) {
        self.ready.remove(task_id);
        self.probed_at.remove(task_id);
        self.in_flight.remove(task_id);
        self.last.remove(task_id);
    }
}

impl Instances {
    fn get(&self, task_id: &str) -> Option<&Instance> {
        self.all.get(task_id)
    }

    fn values(&self) -> impl Iterator<Item = &Instance> {
        self.all.values()
    }

    fn of_app<'a>(&'a self, app: &PathId) -> impl Iterator<Item = &'a Instance> + 'a {
        self.by_app.get(app).into_iter().flatten().filter_map(|id| self.all.get(id))
    }

    fn insert(&mut self, instance: Instance) {
        self.index(&instance);
        self.all.insert(instance.task_id.clone(), instance);
    }

    fn remove(&mut self, task_id: &str) -> Option<Instance> {
        let instance = self.all.remove(task_id)?;
        self.unindex(&instance);
        Some(instance)
    }

    /// Changes one instance, keeping the indexes true.
    fn update<R>(&mut self, task_id: &str, change: impl FnOnce(&mut Instance) -> R) -> Option<R> {
        let mut instance = self.remove(task_id)?;
        let result = change(&mut instance);
        self.insert(instance);
        Some(result)
    }

    fn index(&mut self, instance: &Instance) {
        self.by_app.entry(instance.app_id.clone()).or_default().insert(instance.task_id.clone());
        if instance.placed.is_none() {
            let waiting = self.waiting.entry(instance.app_id.clone()).or_default();
            waiting.insert((instance.scheduled_at, instance.task_id.clone()));
        }
        if instance.unreachable_since.is_some() {
            self.unreachable.insert(instance.task_id.clone());
        }
    }

    fn unindex(&mut self, instance: &Instance) {
        if let Some(ids) = self.by_app.get_mut(&instance.app_id) {
            ids.remove(&instance.task_id);
            if ids.is_empty() {
                self.by_app.remove(&instance.app_id);
            }
        }
        if let Some(waiting) = self.waiting.get_mut(&instance.app_id) {
            waiting.remove(&(instance.scheduled_at, instance.task_id.clone()));
            if waiting.is_empty() {
                self.waiting.remove(&instance.app_id);
            }
        }
        self.unreachable.remove(&instance.task_id);
    }
}

/// One readiness probe to make: `GET path` on the instance's host port, ready when the
/// status is one of `codes` (Marathon runs readiness checks from the scheduler, on the new
/// instances of a deployment only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessProbe {
    pub task_id: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub https: bool,
    pub timeout_ms: u64,
    pub codes: Vec<u16>,
}

/// Which instances passed their readiness check, and when each was last probed.
#[derive(Debug, Default)]
struct Readiness {
    ready: BTreeSet<String>,
    /// Probes in flight or made, by task: when the last one was sent.
    probed_at: BTreeMap<String, u64>,
    in_flight: BTreeSet<String>,
    /// The last result of each probed task (shown in `/v2/deployments` `currentActions`).
    last: BTreeMap<String, bool>,
}

/// A stored deployment: its plan (runs are rebuilt from it by a new leader) and the records
/// of the apps it changes as they were before it (a rollback restores them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub plan: DeploymentPlan,
    pub original: Vec<AppRecord>,
}

/// What the actor must do for the scheduler, after writing the records.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Launch these tasks on this offer (and decline the rest of it).
    Launch {
        offer_id: String,
        tasks: Vec<TaskInfo>,
    },
    /// Offers nothing launched on.
    Decline(Vec<String>),
    Kill {
        task_id: String,
    },
    /// Instances wait for offers: ask for them again.
    Revive,
    /// Nothing waits: stop the offers.
    Suppress,
    /// Ask the master for the state of these tasks (after a failover).
    Reconcile(Vec<String>),
}

/// A record to write (`Some`) or delete (`None`), under its registry key.
pub type Write = (String, Option<Vec<u8>>);

/// Why a change of apps is refused; each renders as Marathon's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeError {
    /// 409 with the conflicting deployments (the body's JSON).
    Locked(Value),
    /// 404 `App '/x' does not exist`.
    UnknownApp(PathId),
    /// 409, e.g. an app that already exists.
    Conflict(String),
    /// 422 (a plan the deployment model refuses: missing dependency, cycle, ...).
    Invalid(String),
    /// 403 (too many running deployments).
    Forbidden(String),
}

impl ChangeError {
    pub fn status(&self) -> u16 {
        match self {
            ChangeError::Locked(_) | ChangeError::Conflict(_) => 409,
            ChangeError::UnknownApp(_) => 404,
            ChangeError::Invalid(_) => 422,
            ChangeError::Forbidden(_) => 403,
        }
    }

    pub fn body(&self) -> Value {
        match self {
            ChangeError::Locked(body) => body.clone(),
            ChangeError::UnknownApp(id) => json!({ "message": format!("App '{id}' does not exist") }),
            ChangeError::Conflict(message) | ChangeError::Invalid(message) | ChangeError::Forbidden(message) => {
                json!({ "message": message })
            }
        }
    }
}

/// An accepted change: the deployment that carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub deployment_id: String,
    pub version: Timestamp,
}

/// The scheduler's whole state (see the module documentation).
#[derive(Debug)]
pub struct SchedulerCore {
    config: SchedulerConfig,
    apps: BTreeMap<PathId, AppRecord>,
    instances: Instances,
    /// Apps whose instances or definition changed since the last [`SchedulerCore::converge`].
    dirty: BTreeSet<PathId>,
    /// Every app is to be looked at (after a failover, on the tick).
    all_dirty: bool,
    /// When [`SchedulerCore::tick`] last looked at everything.
    full_at: u64,
    /// The running deployments acting on each app.
    app_runs: BTreeMap<PathId, BTreeSet<String>>,
    /// Deployments with news since they were last observed, and when that was.
    dirty_runs: BTreeSet<String>,
    observed_at: BTreeMap<String, u64>,
    /// Records whose writing nothing waits for (a finished task's record deleted): a record
    /// left behind by a crash is corrected by the next leader's reconciliation.
    lazy_writes: Vec<Write>,
    runs: BTreeMap<String, DeploymentRun>,
    /// The app records each running deployment started from.
    originals: BTreeMap<String, Vec<AppRecord>>,
    delays: LaunchDelays,
    /// Attributes of the agents seen in offers, by hostname (for constraints).
    agent_facts: BTreeMap<String, AgentFacts>,
    /// Kills asked for through the API, sent with the next effects.
    pending_kills: Vec<String>,
    /// When each instance being killed was last sent its kill (as far as the periodic pass
    /// knows), for retries. Not stored: a new leader sends its kills afresh.
    kills_sent: BTreeMap<String, u64>,
    attempts: BTreeMap<PathId, LaunchAttemptStats>,
    /// Readiness checks of new instances during deployments.
    readiness: Readiness,
    /// Each app's last failed task (`lastTaskFailure`).
    last_failures: BTreeMap<PathId, Value>,
    rng: u64,
    suppressed: bool,
    /// Instances were scheduled since the last revive: offers declined earlier (and filtered
    /// by the master) may fit them now.
    revive_wanted: bool,
    writes: Vec<Write>,
    events: Vec<Value>,
}

impl SchedulerCore {
    /// A scheduler from its stored records (a new leader's start). `seed` makes task ids.
    pub fn recover(
        config: SchedulerConfig,
        apps: Vec<AppRecord>,
        instances: Vec<Instance>,
        deployments: Vec<DeploymentRecord>,
        now: Timestamp,
        seed: u64,
    ) -> (SchedulerCore, Vec<Effect>) {
        let mut core = SchedulerCore {
            config,
            apps: apps
                .into_iter()
                .map(|record| (record.app.id.clone(), AppRecord::new(record.app, record.version_info, record.versions)))
                .collect(),
            instances: Instances::default(),
            dirty: BTreeSet::new(),
            all_dirty: true,
            full_at: now.millis(),
            app_runs: BTreeMap::new(),
            dirty_runs: BTreeSet::new(),
            observed_at: BTreeMap::new(),
            lazy_writes: Vec::new(),
            runs: BTreeMap::new(),
            originals: BTreeMap::new(),
            delays: LaunchDelays::new(),
            agent_facts: BTreeMap::new(),
            pending_kills: Vec::new(),
            kills_sent: BTreeMap::new(),
            attempts: BTreeMap::new(),
            last_failures: BTreeMap::new(),
            readiness: Readiness::default(),
            rng: seed,
            suppressed: false,
            revive_wanted: false,
            writes: Vec::new(),
            events: Vec::new(),
        };
        for instance in instances {
            core.instances.insert(instance);
        }
        for record in deployments {
            core.track_run(DeploymentRun::resume(record.plan), record.original);
        }
        let live: Vec<String> =
            core.instances.values().filter(|i| i.placed.is_some()).map(|i| i.task_id.clone()).collect();
        let mut effects = Vec::new();
        if !live.is_empty() {
            effects.push(Effect::Reconcile(live));
        }
        // And every task the master holds for this framework: one whose instance record was
        // lost (launched just before a failover) is unknown here and is killed when its
        // status comes, instead of holding its resources for good.
        effects.push(Effect::Reconcile(Vec::new()));
        effects.extend(core.converge(now));
        (core, effects)
    }

    /// Records to write before the effects of the last call are sent.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// Records to write that nothing waits for (see [`SchedulerCore::lazy_writes`]).
    pub fn take_lazy_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.lazy_writes)
    }

    /// Adds an event for `/v2/events` (the REST routes' `api_post_event`).
    pub fn publish(&mut self, event: Value) {
        self.events.push(event);
    }

    /// Events for `/v2/events` since the last call.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn apps(&self) -> impl Iterator<Item = &AppRecord> {
        self.apps.values()
    }

    pub fn app(&self, id: &PathId) -> Option<&AppRecord> {
        self.apps.get(id)
    }

    /// The app's launched instances (scheduled ones are not tasks yet).
    pub fn tasks_of<'a>(&'a self, id: &'a PathId) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.of_app(id).filter(|i| i.placed.is_some())
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(|i| i.placed.is_some())
    }

    pub fn instance(&self, task_id: &str) -> Option<&Instance> {
        self.instances.get(task_id)
    }

    pub fn runs(&self) -> impl Iterator<Item = &DeploymentRun> {
        self.runs.values()
    }

    /// The deployments that touch this app.
    pub fn deployments_of(&self, id: &PathId) -> Vec<String> {
        let key = plan_id(id);
        self.runs
            .values()
            .filter(|run| run.plan().affected_apps().contains(&key))
            .map(|run| run.plan().id().to_string())
            .collect()
    }

    /// Instances waiting for an offer, by app.
    pub fn scheduled(&self) -> BTreeMap<&PathId, u32> {
        self.instances
            .waiting
            .iter()
            .map(|(id, waiting)| (id, u32::try_from(waiting.len()).unwrap_or(u32::MAX)))
            .collect()
    }

    /// The app's last failed task, as `lastTaskFailure` shows it.
    pub fn last_failure(&self, id: &PathId) -> Option<&Value> {
        self.last_failures.get(id)
    }

    pub fn launch_attempts(&self, id: &PathId) -> Option<&LaunchAttemptStats> {
        self.attempts.get(id)
    }

    /// The app's launch delay deadline, if one is in force.
    pub fn delay_until_ms(&self, record: &AppRecord, now: Timestamp) -> Option<u64> {
        self.delays.delay_until_ms(&config_ref(record), now.millis())
    }

    /// `DELETE /v2/queue/{id}/delay`: whether the app had instances waiting.
    pub fn reset_delay(&mut self, id: &PathId, now: Timestamp) -> bool {
        let Some(record) = self.apps.get(id) else { return false };
        let waiting = self.instances.waiting.contains_key(id);
        self.delays.reset(&config_ref(record), now.millis());
        waiting
    }

    /// Moves the apps to `target` (the whole app set after the change) by a new deployment.
    /// `force` cancels conflicting deployments; `kills` names instances to kill while scaling.
    pub fn change(
        &mut self,
        target: BTreeMap<PathId, AppRecord>,
        force: bool,
        kills: BTreeMap<PathId, BTreeSet<String>>,
        now: Timestamp,
    ) -> Result<Accepted, ChangeError> {
        let original = app_set(self.apps.values())?;
        let target_set = app_set(target.values())?;
        let before: Vec<AppRecord> = self
            .apps
            .iter()
            .filter(|(id, record)| target.get(*id) != Some(*record))
            .map(|(_, record)| record.clone())
            .collect();
        let kills = kills
            .into_iter()
            .map(|(id, tasks)| {
                let tasks = tasks.into_iter().filter_map(|t| InstanceId::new(t).ok()).collect();
                (plan_id(&id), tasks)
            })
            .collect();
        let id = DeploymentId::new(self.uuid()).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let plan = DeploymentPlan::between_with_kills(&original, &target_set, &kills, id, now.to_string())
            .map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let running: Vec<&DeploymentPlan> = self.runs.values().map(DeploymentRun::plan).collect();
        let admission = deployment::admit(running, &plan, force, self.config.max_running_deployments)
            .map_err(|e| ChangeError::Forbidden(e.to_string()))?;
        match admission {
            Admission::Start => {}
            Admission::CancelThenStart(ids) => {
                for cancelled in ids {
                    self.end_run(cancelled.as_str(), now);
                }
            }
            Admission::Locked(body) => {
                return Err(ChangeError::Locked(serde_json::to_value(body).unwrap_or(Value::Null)));
            }
        }
        for id in self.apps.keys().filter(|id| !target.contains_key(*id)).cloned().collect::<Vec<_>>() {
            self.apps.remove(&id);
            self.last_failures.remove(&id);
            self.writes.push((app_key(&id), None));
            self.events.push(
                json!({ "eventType": "app_terminated_event", "appId": id.to_string(), "timestamp": now.to_string() }),
            );
        }
        for (id, record) in target {
            if self.apps.get(&id) != Some(&record) {
                self.writes.push((app_key(&id), Some(encode(&record))));
                self.apps.insert(id, record);
            }
        }
        self.all_dirty = true;
        let accepted = Accepted { deployment_id: plan.id().to_string(), version: now };
        let (run, events) = DeploymentRun::start(plan.trimmed(), &now.to_string());
        self.publish_deployment_events(events);
        if matches!(run.state(), RunState::Running { .. }) {
            let record = DeploymentRecord { plan: run.plan().clone(), original: before };
            self.writes.push((deployment_key(&accepted.deployment_id), Some(encode(&record))));
            self.track_run(run, record.original);
        }
        Ok(accepted)
    }

    /// `DELETE /v2/deployments/{id}`: with `force` the deployment just stops; without, a new
    /// deployment puts its apps back as they were before it (apps it added are removed).
    /// `None` if no such deployment runs.
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: Timestamp,
    ) -> Option<Result<Accepted, ChangeError>> {
        let run = self.runs.get(id)?;
        let affected: Vec<PathId> = run.plan().affected_apps().into_iter().filter_map(app_path).collect();
        let original = self.end_run(id, now);
        if force {
            return Some(Ok(Accepted { deployment_id: id.to_owned(), version: now }));
        }
        let mut target = self.apps.clone();
        for app_id in &affected {
            target.remove(app_id);
        }
        for record in original {
            let current = self.apps.get(&record.app.id).unwrap_or(&record);
            target.insert(record.app.id.clone(), current.updated(record.app.clone(), now));
        }
        Some(self.change(target, true, BTreeMap::new(), now))
    }

    /// Stops a running deployment (cancelled); returns the app records it started from.
    fn end_run(&mut self, id: &str, now: Timestamp) -> Vec<AppRecord> {
        let original = self.originals.get(id).cloned().unwrap_or_default();
        if let Some(mut run) = self.forget_run(id) {
            self.publish_deployment_events(run.cancel(&now.to_string()));
        }
        self.all_dirty = true;
        original
    }

    /// Offers from the master: scheduled instances are placed on them.
    pub fn offers(&mut self, offers: Vec<OfferInfo>, now: Timestamp) -> Vec<Effect> {
        self.fail_unlaunchable(now);
        let placement_offers: Vec<PlacementOffer> = offers.iter().map(placement_offer).collect();
        let demands = self.demands(now);
        if demands.is_empty() {
            let mut effects = vec![Effect::Decline(offers.into_iter().map(|o| o.id).collect())];
            effects.extend(self.suppress_or_revive());
            return effects;
        }
        let mut snapshot = PlacementSnapshot::new(placement_offers.clone(), demands);
        snapshot.max_instances_per_offer = self.config.max_instances_per_offer;
        let seed = self.next_random();
        let plan = match placement::place(&snapshot, now.millis(), seed) {
            Ok(plan) => plan,
            Err(_) => return vec![Effect::Decline(offers.into_iter().map(|o| o.id).collect())],
        };
        for report in &plan.demands {
            if let Ok(id) = PathId::parse(&report.run_spec_id) {
                let stats = self.attempts.entry(id).or_insert_with(|| LaunchAttemptStats::new(now.millis()));
                stats.record(report, &placement_offers, now.millis());
            }
        }
        let mut by_offer: BTreeMap<String, Vec<TaskInfo>> = BTreeMap::new();
        for launch in plan.launches {
            let Ok(app_id) = PathId::parse(&launch.run_spec_id) else { continue };
            let Some(task) = self.launch_one(&app_id, &launch, now) else { continue };
            by_offer.entry(launch.offer_id.clone()).or_default().push(task);
        }
        let mut effects: Vec<Effect> =
            by_offer.into_iter().map(|(offer_id, tasks)| Effect::Launch { offer_id, tasks }).collect();
        if !plan.unused_offers.is_empty() {
            effects.push(Effect::Decline(plan.unused_offers));
        }
        effects.extend(self.suppress_or_revive());
        effects
    }

    /// Apps whose container names an image cannot launch on these agents (they run commands
    /// on the host): each time their backoff allows a launch, the launch fails as a pulled
    /// image that does not exist would — a `TASK_FAILED` event, `lastTaskFailure` and a
    /// longer delay in `/v2/queue` — so the reason is visible where users look for it.
    fn fail_unlaunchable(&mut self, now: Timestamp) {
        let due: Vec<(PathId, String)> = self
            .instances
            .waiting
            .keys()
            .filter_map(|id| {
                let record = self.apps.get(id)?;
                let image = container_image(&record.app)?;
                self.delays.launch_allowed(&config_ref(record), now.millis()).then(|| (id.clone(), image.to_owned()))
            })
            .collect();
        for (app_id, image) in due {
            let Some(record) = self.apps.get(&app_id) else { continue };
            let message = format!(
                "container images are not supported by Flotilla's agents yet (the app asks for image '{image}'); \
                 remove `container` to run `cmd` on the agent's host"
            );
            self.delays.on_failure(&config_ref(record), &backoff_strategy(&record.app), now.millis());
            let failure = json!({
                "appId": app_id.to_string(), "host": "", "message": message, "state": "TASK_FAILED",
                "taskId": "", "timestamp": now.to_string(), "version": record.version_info.version.to_string(),
                "slaveId": "",
            });
            let mut event = failure.clone();
            event["eventType"] = json!("status_update_event");
            event["taskStatus"] = json!("TASK_FAILED");
            self.events.push(event);
            self.last_failures.insert(app_id, failure);
        }
    }

    /// The readiness probes due now: for each deployment's apps with readiness checks, their
    /// running new instances not yet ready, each at most once per check interval and one at a
    /// time.
    pub fn readiness_due(&mut self, now: Timestamp) -> Vec<ReadinessProbe> {
        let mut due = Vec::new();
        for (app_id, runs) in &self.app_runs {
            let Some(record) = self.apps.get(app_id) else { continue };
            let Some(check) = record.app.readiness_checks.first() else { continue };
            let index = record.app.port_definitions.iter().position(|p| p.name.as_deref() == Some(&check.port_name));
            let interval = seconds_ms(i64::from(check.interval_seconds)).max(1);
            if runs.is_empty() {
                continue;
            }
            for instance in self.instances.of_app(app_id) {
                let id = &instance.task_id;
                let fresh = instance.config_key == record.config && instance.is_running() && !instance.killing;
                let waited = self.readiness.probed_at.get(id).is_none_or(|at| now.millis() >= at + interval);
                if !fresh || self.readiness.ready.contains(id) || self.readiness.in_flight.contains(id) || !waited {
                    continue;
                }
                let Some(placed) = &instance.placed else { continue };
                let Some(port) = index.and_then(|i| placed.ports.get(i)).and_then(|p| u16::try_from(*p).ok()) else {
                    continue;
                };
                due.push(ReadinessProbe {
                    task_id: id.clone(),
                    host: placed.host.clone(),
                    port,
                    path: check.path.clone(),
                    https: check.protocol == super::app::HttpScheme::Https,
                    timeout_ms: seconds_ms(i64::from(check.timeout_seconds)).max(1),
                    codes: check.http_status_codes_for_ready.iter().filter_map(|c| u16::try_from(*c).ok()).collect(),
                });
            }
        }
        for probe in &due {
            self.readiness.in_flight.insert(probe.task_id.clone());
            self.readiness.probed_at.insert(probe.task_id.clone(), now.millis());
        }
        due
    }

    /// A readiness probe's outcome.
    pub fn readiness_result(&mut self, task_id: &str, ready: bool, now: Timestamp) -> Vec<Effect> {
        self.readiness.in_flight.remove(task_id);
        let Some(instance) = self.instances.get(task_id) else { return Vec::new() };
        self.readiness.last.insert(task_id.to_owned(), ready);
        if ready {
            self.readiness.ready.insert(task_id.to_owned());
            self.dirty.insert(instance.app_id.clone());
        }
        self.converge(now)
    }

    /// A task's status from the master.
    pub fn status(&mut self, status: &TaskStatus, now: Timestamp) -> Vec<Effect> {
        let Some(was_healthy) = self.instances.get(&status.task_id).map(|i| i.healthy) else {
            // A task this scheduler does not know (a record lost, or a launch refused
            // after a failover): kill it if it lives.
            if !status.state.is_terminal() && status.state != TaskState::Unknown {
                return vec![Effect::Kill { task_id: status.task_id.clone() }];
            }
            return Vec::new();
        };
        let Some(instance) = self.instances.update(&status.task_id, |instance| {
            instance.state = status.state;
            if let Some(healthy) = status.healthy {
                instance.healthy = Some(healthy);
            }
            if status.state == TaskState::Running && instance.started_at.is_none() {
                instance.started_at = Some(Timestamp::from_millis(status.timestamp_ms.max(1)));
            }
            instance.unreachable_since = match status.state {
                TaskState::Unreachable => instance.unreachable_since.or(Some(now)),
                _ => None,
            };
            instance.clone()
        }) else {
            return Vec::new();
        };
        self.dirty.insert(instance.app_id.clone());
        self.events.push(status_event(&instance, status, now));
        if was_healthy != instance.healthy && status.healthy.is_some() {
            self.events.push(json!({
                "eventType": "health_status_changed_event", "appId": instance.app_id.to_string(),
                "taskId": instance.task_id, "instanceId": instance.task_id,
                "version": instance.version.to_string(), "alive": instance.healthy == Some(true),
                "timestamp": now.to_string(),
            }));
        }
        if let Some(record) = self.apps.get(&instance.app_id)
            && record.config_key() == instance.config_key
            && let Some(event) = InstanceEvent::from_task_state(status.state)
            && !(instance.killing && event == InstanceEvent::Failed)
        {
            let strategy = backoff_strategy(&record.app);
            self.delays.on_event(&config_ref(record), &strategy, event, now.millis());
        }
        if InstanceEvent::from_task_state(status.state) == Some(InstanceEvent::Failed) && !instance.killing {
            let placed = instance.placed.as_ref();
            let failure = json!({
                "appId": instance.app_id.to_string(), "host": placed.map_or("", |p| p.host.as_str()),
                "message": status.message, "state": status.state.name(), "taskId": instance.task_id,
                "timestamp": now.to_string(), "version": instance.version.to_string(),
                "slaveId": status.agent_id,
            });
            self.last_failures.insert(instance.app_id.clone(), failure);
        }
        // A task's progress is not stored: a new leader learns it by reconciliation. Only its
        // end is, lazily. `TASK_UNKNOWN` (the master has never heard of the task, e.g. a
        // launch lost in a failover) ends the instance too, as in Marathon.
        if status.state.is_terminal() || status.state == TaskState::Unknown {
            self.readiness.forget(&instance.task_id);
            self.instances.remove(&instance.task_id);
            self.lazy_writes.push((instance_key(&instance.task_id), None));
        }
        self.converge(now)
    }

    /// Kills these tasks of `app` (`DELETE /v2/apps/{id}/tasks`, `/v2/tasks/delete`). With
    /// `scale` the app's count drops by as many (through a deployment); with `wipe` the
    /// instances are forgotten at once. Unknown ids are ignored, as Marathon does.
    pub fn kill_tasks(
        &mut self,
        task_ids: &[String],
        scale: bool,
        wipe: bool,
        force: bool,
        now: Timestamp,
    ) -> Result<(Vec<Instance>, Option<Accepted>), ChangeError> {
        let killed: Vec<Instance> = task_ids.iter().filter_map(|id| self.instances.get(id).cloned()).collect();
        if scale {
            let mut target = self.apps.clone();
            let mut kills: BTreeMap<PathId, BTreeSet<String>> = BTreeMap::new();
            for instance in &killed {
                kills.entry(instance.app_id.clone()).or_default().insert(instance.task_id.clone());
            }
            for (app_id, tasks) in &kills {
                if let Some(record) = target.get_mut(app_id) {
                    let active = tasks.iter().filter(|t| self.instances.get(t).is_some_and(|i| !i.killing)).count();
                    let mut next = record.app.clone();
                    next.instances = next.instances.saturating_sub(i32::try_from(active).unwrap_or(i32::MAX)).max(0);
                    *record = record.updated(next, now);
                }
            }
            let accepted = self.change(target, force, kills, now)?;
            return Ok((killed, Some(accepted)));
        }
        let mut effects_kills = Vec::new();
        for instance in &killed {
            self.dirty.insert(instance.app_id.clone());
            if wipe {
                self.instances.remove(&instance.task_id);
                self.writes.push((instance_key(&instance.task_id), None));
            } else {
                self.mark_killing(&instance.task_id);
            }
            effects_kills.push(instance.task_id.clone());
        }
        self.pending_kills.extend(effects_kills);
        Ok((killed, None))
    }

    /// Kills sent by API calls, to be sent with the next effects.
    pub fn take_kills(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.pending_kills).into_iter().map(|task_id| Effect::Kill { task_id }).collect()
    }

    /// Re-derives the needs of the deployments and the missing instances of the apps that
    /// changed since the last call (every app after [`SchedulerCore::tick`] or a change of
    /// apps); ends finished deployments. Called after every input.
    ///
    /// A deployment is observed at most every [`observe_interval_ms`] (longer for larger
    /// deployments): a status update marks it, the next call after the interval observes it.
    pub fn converge(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut effects = self.take_kills();
        let all = std::mem::take(&mut self.all_dirty);
        let dirty = std::mem::take(&mut self.dirty);
        if all {
            effects.extend(self.expire_unreachable(now));
        }
        for app_id in &dirty {
            self.dirty_runs.extend(self.app_runs.get(app_id).into_iter().flatten().cloned());
        }
        let candidates: Vec<&String> = if all { self.runs.keys().collect() } else { self.dirty_runs.iter().collect() };
        let due: Vec<String> = candidates
            .into_iter()
            .filter(|id| {
                let Some(run) = self.runs.get(*id) else { return false };
                let since = now.millis().saturating_sub(self.observed_at.get(*id).copied().unwrap_or(0));
                all || since >= observe_interval_ms(run, &self.instances)
            })
            .cloned()
            .collect();
        for run_id in due {
            self.dirty_runs.remove(&run_id);
            self.observed_at.insert(run_id.clone(), now.millis());
            effects.extend(self.advance(&run_id, now));
        }
        let looked_at: Vec<PathId> = if all {
            self.apps.keys().chain(self.instances.by_app.keys()).cloned().collect()
        } else {
            dirty.into_iter().collect()
        };
        for app_id in looked_at {
            if self.app_runs.contains_key(&app_id) {
                continue;
            }
            effects.extend(self.keep_count(&app_id, now));
        }
        effects.extend(self.suppress_or_revive());
        effects
    }

    /// The periodic look at everything (the actor's tick): backoffs that ended, unreachable
    /// instances past their strategy's times, deployments waiting on nothing new.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut effects = Vec::new();
        if now.millis().saturating_sub(self.full_at) >= FULL_CONVERGE_MS {
            self.full_at = now.millis();
            self.all_dirty = true;
            effects = self.expire_launches(now);
            effects.extend(self.retry_kills(now));
        }
        effects.extend(self.converge(now));
        effects
    }

    /// Kills and forgets the instances launched more than the launch timeout ago that have
    /// not run: the converge that follows replaces them.
    fn expire_launches(&mut self, now: Timestamp) -> Vec<Effect> {
        let timeout = self.config.task_launch_timeout_ms;
        let expired: Vec<String> = self
            .instances
            .values()
            .filter(|i| matches!(i.state, TaskState::Staging | TaskState::Starting) && !i.killing)
            .filter(|i| i.placed.as_ref().is_some_and(|p| now.millis().saturating_sub(p.staged_at.millis()) >= timeout))
            .map(|i| i.task_id.clone())
            .collect();
        let mut effects = Vec::with_capacity(expired.len());
        for task_id in expired {
            let Some(instance) = self.instances.remove(&task_id) else { continue };
            self.readiness.forget(&task_id);
            self.lazy_writes.push((instance_key(&task_id), None));
            self.dirty.insert(instance.app_id.clone());
            effects.push(Effect::Kill { task_id });
        }
        effects
    }

    /// Sends again the kills that have not ended their task within the retry timeout. An
    /// instance first seen killing is stamped with this pass's time, so its first retry comes
    /// between one and two passes after the timeout.
    fn retry_kills(&mut self, now: Timestamp) -> Vec<Effect> {
        let killing: BTreeSet<String> =
            self.instances.values().filter(|i| i.killing && i.placed.is_some()).map(|i| i.task_id.clone()).collect();
        self.kills_sent.retain(|task_id, _| killing.contains(task_id));
        let timeout = self.config.kill_retry_timeout_ms;
        let mut effects = Vec::new();
        for task_id in killing {
            let sent = self.kills_sent.entry(task_id.clone()).or_insert(now.millis());
            if now.millis().saturating_sub(*sent) >= timeout {
                *sent = now.millis();
                effects.push(Effect::Kill { task_id });
            }
        }
        effects
    }

    /// Observes one deployment and carries out what its current step needs.
    fn advance(&mut self, run_id: &str, now: Timestamp) -> Vec<Effect> {
        let stamp = now.to_string();
        let observation = self.observe(run_id);
        let Some(run) = self.runs.get_mut(run_id) else { return Vec::new() };
        let report = match run.observe(&observation, &stamp) {
            Ok(report) => report,
            Err(error) => {
                let events = run.fail(&error.to_string(), &stamp);
                self.publish_deployment_events(events);
                self.forget_run(run_id);
                return Vec::new();
            }
        };
        self.publish_deployment_events(report.events);
        if !matches!(report.state, RunState::Running { .. }) {
            let apps: Vec<PathId> = self.run_apps(run_id);
            self.forget_run(run_id);
            // Its apps are on their own now: keep them at their counts.
            self.dirty.extend(apps);
            return Vec::new();
        }
        let mut effects = Vec::new();
        for need in report.needs {
            let Some(app_id) = app_path(need.action.app()) else { continue };
            for victim in &need.decision.kill {
                effects.extend(self.kill_instance(victim.as_str()));
            }
            for _ in 0..need.decision.start {
                self.schedule(&app_id, now);
            }
        }
        effects
    }

    /// An app outside every deployment: instances scheduled up to its count; the instances
    /// of an app that no longer exists killed.
    fn keep_count(&mut self, app_id: &PathId, now: Timestamp) -> Vec<Effect> {
        let Some(record) = self.apps.get(app_id) else {
            let orphans: Vec<String> = self.instances.of_app(app_id).map(|i| i.task_id.clone()).collect();
            return orphans.iter().filter_map(|task_id| self.kill_instance(task_id)).collect();
        };
        let wanted = usize::try_from(record.app.instances).unwrap_or(0);
        let active = self.instances.of_app(app_id).filter(|i| counts_as_active(i, record, now)).count();
        if active <= wanted {
            for _ in active..wanted {
                self.schedule(app_id, now);
            }
            return Vec::new();
        }
        // More than the count, with no deployment to blame: an unreachable instance came back
        // after its replacement started. The excess goes in the app's kill order, as
        // Marathon's scale check does.
        let view = record.view();
        let reachable: Vec<InstanceView> = self
            .instances
            .of_app(app_id)
            .filter(|i| counts_as_active(i, record, now) && i.unreachable_since.is_none())
            .filter_map(|i| self.instance_view(i, InstanceVersion::Old))
            .collect();
        let candidates: Vec<&InstanceView> = reachable.iter().collect();
        let victims: Vec<String> = kill_order(&candidates, view.checks(), view.kill_selection)
            .into_iter()
            .take(active - wanted)
            .map(|i| i.id.as_str().to_owned())
            .collect();
        victims.iter().filter_map(|task_id| self.kill_instance(task_id)).collect()
    }

    fn run_apps(&self, run_id: &str) -> Vec<PathId> {
        self.runs
            .get(run_id)
            .map(|run| run.plan().affected_apps().into_iter().filter_map(app_path).collect())
            .unwrap_or_default()
    }

    /// Starts tracking a running deployment (by the apps it acts on).
    fn track_run(&mut self, run: DeploymentRun, original: Vec<AppRecord>) {
        let id = run.plan().id().to_string();
        for app_id in run.plan().affected_apps().into_iter().filter_map(app_path) {
            self.app_runs.entry(app_id).or_default().insert(id.clone());
        }
        self.originals.insert(id.clone(), original);
        self.runs.insert(id, run);
    }

    /// Stops tracking a deployment and deletes its record; returns the run.
    fn forget_run(&mut self, run_id: &str) -> Option<DeploymentRun> {
        for app_id in self.run_apps(run_id) {
            if let Some(runs) = self.app_runs.get_mut(&app_id) {
                runs.remove(run_id);
                if runs.is_empty() {
                    self.app_runs.remove(&app_id);
                }
            }
        }
        self.originals.remove(run_id);
        self.dirty_runs.remove(run_id);
        self.observed_at.remove(run_id);
        self.writes.push((deployment_key(run_id), None));
        self.runs.remove(run_id)
    }

    fn expire_unreachable(&mut self, now: Timestamp) -> Vec<Effect> {
        let mut effects = Vec::new();
        let expired: Vec<String> = self
            .instances
            .unreachable
            .iter()
            .filter_map(|id| self.instances.get(id))
            .filter(|i| {
                let Some(since) = i.unreachable_since else { return false };
                let Some(record) = self.apps.get(&i.app_id) else { return true };
                match record.app.unreachable_strategy {
                    UnreachableStrategy::Disabled => false,
                    UnreachableStrategy::Enabled { expunge_after_seconds, .. } => {
                        now.millis().saturating_sub(since.millis()) >= seconds_ms(expunge_after_seconds)
                    }
                }
            })
            .map(|i| i.task_id.clone())
            .collect();
        for task_id in expired {
            self.instances.remove(&task_id);
            self.lazy_writes.push((instance_key(&task_id), None));
            effects.push(Effect::Kill { task_id });
        }
        effects
    }

    /// The instances of a run's apps as the deployment model sees them.
    fn observe(&self, run_id: &str) -> Observation {
        let mut observation = Observation::default();
        let Some(run) = self.runs.get(run_id) else { return observation };
        for view_id in run.plan().affected_apps() {
            let Some(app_id) = app_path(view_id) else { continue };
            let target_key = run.plan().target().get(view_id).map(|v| v.config_fingerprint.clone());
            let views = self
                .instances
                .of_app(&app_id)
                .filter(|i| i.unreachable_since.is_none())
                .filter_map(|i| {
                    let version = if target_key.as_deref() == Some(i.config_key.as_str()) {
                        InstanceVersion::New
                    } else {
                        InstanceVersion::Old
                    };
                    self.instance_view(i, version)
                })
                .collect();
            observation.instances.insert(view_id.clone(), views);
            if let Some(results) = self.readiness_results(&app_id) {
                observation.readiness.insert(view_id.clone(), results);
            }
        }
        observation
    }

    /// The last readiness result of each probed instance of the app, under its check's name.
    fn readiness_results(&self, app_id: &PathId) -> Option<Vec<ReadinessCheckResultView>> {
        let check = self.apps.get(app_id)?.app.readiness_checks.first()?;
        let results = self
            .instances
            .of_app(app_id)
            .filter_map(|i| {
                let ready = *self.readiness.last.get(&i.task_id)?;
                Some(ReadinessCheckResultView {
                    name: check.name.clone(),
                    task_id: i.task_id.clone(),
                    ready,
                    last_response: None,
                })
            })
            .collect();
        Some(results)
    }

    /// An instance as deployments and kill orders see it.
    fn instance_view(&self, i: &Instance, version: InstanceVersion) -> Option<InstanceView> {
        let state = if i.killing {
            InstanceState::Killing
        } else if i.is_running() {
            InstanceState::Running
        } else {
            InstanceState::Staged
        };
        Some(InstanceView {
            id: InstanceId::new(i.task_id.clone()).ok()?,
            version,
            state,
            healthy: i.healthy == Some(true),
            ready: self.readiness.ready.contains(&i.task_id),
            staged_at_ms: i.staged_ms(),
        })
    }

    fn kill_instance(&mut self, task_id: &str) -> Option<Effect> {
        let instance = self.instances.get(task_id)?;
        if instance.placed.is_none() {
            self.instances.remove(task_id);
            return None;
        }
        if instance.killing {
            return None;
        }
        self.mark_killing(task_id);
        Some(Effect::Kill { task_id: task_id.to_owned() })
    }

    fn mark_killing(&mut self, task_id: &str) {
        if self.instances.get(task_id).is_some_and(|i| i.placed.is_none()) {
            self.instances.remove(task_id);
            return;
        }
        let encoded = self.instances.update(task_id, |instance| {
            instance.killing = true;
            encode(&*instance)
        });
        if let Some(encoded) = encoded {
            self.writes.push((instance_key(task_id), Some(encoded)));
        }
    }

    /// A new instance of the app's current configuration, waiting for an offer.
    fn schedule(&mut self, app_id: &PathId, now: Timestamp) {
        let Some(record) = self.apps.get(app_id) else { return };
        let (version, config_key) = (record.version_info.version, record.config_key());
        let unique = if planted(PlantedBug::ReusedInstanceId) {
            // The planted bug: ids numbered by the app's live instances repeat after one ends.
            (self.instances.of_app(app_id).count() + 1).to_string()
        } else {
            self.uuid()
        };
        let task_id = format!("{}.{unique}", task_prefix(app_id));
        let instance = Instance {
            task_id: task_id.clone(),
            app_id: app_id.clone(),
            version,
            config_key,
            placed: None,
            state: TaskState::Staging,
            healthy: None,
            started_at: None,
            killing: false,
            unreachable_since: None,
            scheduled_at: now,
        };
        self.instances.insert(instance);
        self.revive_wanted = true;
    }

    /// One placement demand per app with scheduled instances, oldest scheduled first.
    fn demands(&self, now: Timestamp) -> Vec<Demand> {
        let mut demands: Vec<(Timestamp, Demand)> = self
            .instances
            .waiting
            .iter()
            .filter_map(|(app_id, waiting)| {
                let record = self.apps.get(app_id).filter(|r| container_image(&r.app).is_none())?;
                let since = waiting.first()?.0;
                Some((since, self.demand(record, u32::try_from(waiting.len()).unwrap_or(u32::MAX), now)))
            })
            .collect();
        demands.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.run_spec_id.cmp(&b.1.run_spec_id)));
        demands.into_iter().map(|(_, demand)| demand).collect()
    }

    fn demand(&self, record: &AppRecord, to_launch: u32, now: Timestamp) -> Demand {
        let app = &record.app;
        let key = record.config_key();
        let ports: Vec<(u64, Option<String>)> =
            app.port_definitions.iter().map(|p| (u64::try_from(p.port).unwrap_or(0), p.name.clone())).collect();
        // Only constraints look at where the app's instances are.
        let placed = if app.constraints.is_empty() {
            Vec::new()
        } else {
            self.instances
                .of_app(&app.id)
                .filter(|i| i.config_key == key && !i.state.is_terminal())
                .filter_map(|i| i.placed.as_ref())
                .map(|p| self.facts_of(&p.host))
                .collect()
        };
        Demand {
            run_spec_id: app.id.to_string(),
            version: record.version_info.version.to_string(),
            role: app.role.clone(),
            instances: u32::try_from(app.instances).unwrap_or(0),
            to_launch,
            resources: InstanceResources::new(app.cpus, app.mem, app.disk, u64::try_from(app.gpus).unwrap_or(0)),
            ports: PortRequest::from_port_definitions(&ports, app.require_ports),
            constraints: Constraint::parse_all(&app.constraints).unwrap_or_default(),
            accepted_resource_roles: app.accepted_resource_roles.iter().cloned().collect(),
            placed,
            delay_until_ms: self.delays.delay_until_ms(&config_ref(record), now.millis()),
        }
    }

    /// What constraints know of an agent: its hostname and the attributes it last offered.
    fn facts_of(&self, host: &str) -> AgentFacts {
        self.agent_facts.get(host).cloned().unwrap_or_else(|| AgentFacts::new(host))
    }

    /// Turns a scheduled instance of the launch's app into a task on the offer's agent.
    fn launch_one(&mut self, app_id: &PathId, launch: &placement::Launch, now: Timestamp) -> Option<TaskInfo> {
        let record = self.apps.get(app_id)?;
        let task_id = self
            .instances
            .waiting
            .get(app_id)?
            .iter()
            .map(|(_, id)| id)
            .find(|id| self.instances.get(id).is_some_and(|i| i.config_key == record.config))?
            .clone();
        let ports: Vec<u64> = launch.host_ports.iter().map(|p| p.unwrap_or(0)).collect();
        let placed = Placed { agent_id: launch.agent_id.clone(), host: launch.hostname.clone(), ports, staged_at: now };
        let mut resources = Resources::new();
        for part in launch.resources.values() {
            resources.add(part);
        }
        let task = task_info(record, &task_id, &placed, resources, &self.config.framework_id);
        let encoded = self.instances.update(&task_id, |instance| {
            instance.placed = Some(placed);
            instance.state = TaskState::Staging;
            encode(&*instance)
        })?;
        self.writes.push((instance_key(&task_id), Some(encoded)));
        Some(task)
    }

    fn suppress_or_revive(&mut self) -> Option<Effect> {
        let waiting = !self.instances.waiting.is_empty();
        let revive = std::mem::take(&mut self.revive_wanted);
        match (waiting, self.suppressed) {
            (true, true) => {
                self.suppressed = false;
                Some(Effect::Revive)
            }
            (true, false) if revive => Some(Effect::Revive),
            (false, false) => {
                self.suppressed = true;
                Some(Effect::Suppress)
            }
            _ => None,
        }
    }

    /// Remembers the attributes an agent offers (for constraints on attributes).
    pub fn note_agents(&mut self, offers: &[OfferInfo]) {
        for offer in offers {
            self.agent_facts.insert(offer.hostname.clone(), placement_offer(offer).agent);
        }
    }

    fn publish_deployment_events(&mut self, events: Vec<DeploymentEvent>) {
        for event in events {
            if let Ok(value) = serde_json::to_value(&event) {
                self.events.push(value);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: a seeded, reproducible stream.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random (version 4 layout) UUID from the seeded stream.
    fn uuid(&mut self) -> String {
        let (high, low) = (self.next_random(), self.next_random());
        let high = (high & !0xF000) | 0x4000;
        let low = (low & !(0xC000 << 48)) | (0x8000 << 48);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xFFFF,
            high & 0xFFFF,
            low >> 48,
            low & 0xFFFF_FFFF_FFFF
        )
    }
}

impl AppRecord {
    /// A new app, created at `now`.
    pub fn created(app: AppDefinition, now: Timestamp) -> AppRecord {
        AppRecord::new(app.clone(), VersionInfo::created(now), BTreeMap::from([(now, app)]))
    }

    /// The record after the app became `next` at `now` (unchanged if nothing changed).
    pub fn updated(&self, next: AppDefinition, now: Timestamp) -> AppRecord {
        let version_info = self.version_info.after_change(&self.app, &next, now);
        let mut versions = self.versions.clone();
        if version_info != self.version_info {
            versions.insert(version_info.version, next.clone());
            while versions.len() > MAX_VERSIONS {
                versions.pop_first();
            }
        }
        AppRecord::new(next, version_info, versions)
    }

    /// The same definition under a new configuration change time (`/restart`).
    pub fn restarted(&self, now: Timestamp) -> AppRecord {
        let mut versions = self.versions.clone();
        versions.insert(now, self.app.clone());
        while versions.len() > MAX_VERSIONS {
            versions.pop_first();
        }
        AppRecord::new(self.app.clone(), VersionInfo::created(now), versions)
    }
}

/// Whether an instance counts toward its app's count outside deployments: not being killed,
/// of the current configuration... or any configuration (an idle app keeps whatever runs),
/// and not unreachable for longer than the app's `inactiveAfterSeconds`.
fn counts_as_active(instance: &Instance, record: &AppRecord, now: Timestamp) -> bool {
    if instance.killing {
        return false;
    }
    match (instance.unreachable_since, record.app.unreachable_strategy) {
        (Some(since), UnreachableStrategy::Enabled { inactive_after_seconds, .. }) => {
            now.millis().saturating_sub(since.millis()) < seconds_ms(inactive_after_seconds)
        }
        _ => true,
    }
}

/// The image an app's container names, if any (Docker, or a Mesos container with an image).
fn container_image(app: &AppDefinition) -> Option<&str> {
    let docker = app.container.as_ref()?.docker.as_ref()?;
    (!docker.image.is_empty()).then_some(docker.image.as_str())
}

fn seconds_ms(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0).saturating_mul(1_000)
}

fn app_set<'a>(records: impl Iterator<Item = &'a AppRecord>) -> Result<Apps, ChangeError> {
    Apps::new(records.map(AppRecord::view)).map_err(|e| ChangeError::Invalid(e.to_string()))
}

/// The deployment model's text id of an app.
fn plan_id(id: &PathId) -> deployment::PathId {
    deployment::PathId::parse(&id.to_string()).unwrap_or_else(|_| deployment::PathId::root())
}

fn app_path(id: &deployment::PathId) -> Option<PathId> {
    PathId::parse(id.as_str()).ok()
}

fn config_ref(record: &AppRecord) -> ConfigRef {
    ConfigRef::new(&record.app.id.to_string(), &record.config_key())
}

fn backoff_strategy(app: &AppDefinition) -> BackoffStrategy {
    BackoffStrategy::new(
        u64::try_from(app.backoff_seconds).unwrap_or(0),
        app.backoff_factor,
        u64::try_from(app.max_launch_delay_seconds).unwrap_or(0),
    )
    .unwrap_or_default()
}

/// Marathon's task id prefix: the app's path with `/` as `_` (`/prod/db` → `prod_db`).
pub fn task_prefix(id: &PathId) -> String {
    id.segments().join("_")
}

pub fn app_key(id: &PathId) -> String {
    format!("{APPS_PREFIX}{id}")
}

pub fn instance_key(task_id: &str) -> String {
    format!("{INSTANCES_PREFIX}{task_id}")
}

pub fn deployment_key(id: &str) -> String {
    format!("{DEPLOYMENTS_PREFIX}{id}")
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("scheduler records serialize to JSON")
}

fn placement_offer(offer: &OfferInfo) -> PlacementOffer {
    let mut agent = AgentFacts::new(&offer.hostname);
    for (name, value) in &offer.attributes {
        agent.attributes.insert(name.clone(), AttributeValue::parse(value));
    }
    PlacementOffer {
        id: offer.id.clone(),
        agent_id: offer.agent_id.clone(),
        role: offer.role.clone(),
        agent,
        resources: BTreeMap::from([(UNRESERVED.to_owned(), offer.resources.clone())]),
    }
}

/// The Mesos task of an instance.
pub fn task_info(
    record: &AppRecord,
    task_id: &str,
    placed: &Placed,
    resources: Resources,
    framework_id: &str,
) -> TaskInfo {
    let app = &record.app;
    let host_ports: Vec<Option<u32>> = placed.ports.iter().map(|p| u32::try_from(*p).ok()).collect();
    let env = task_environment(
        app,
        &super::app::TaskEnvInput {
            version: record.version_info.version,
            host_ports: &host_ports,
            host: Some(&placed.host),
            task_id: Some(task_id),
            prefix: None,
        },
    );
    let command = match (&app.cmd, app.args.as_slice()) {
        (Some(cmd), _) => TaskCommand { shell: true, value: cmd.clone(), arguments: Vec::new() },
        (None, [program, ..]) => TaskCommand { shell: false, value: program.clone(), arguments: app.args.clone() },
        (None, []) => TaskCommand { shell: true, value: String::new(), arguments: Vec::new() },
    };
    TaskInfo {
        task_id: task_id.to_owned(),
        name: app.id.to_hostname(),
        framework_id: framework_id.to_owned(),
        role: app.role.clone(),
        command,
        resources,
        env,
        labels: app.labels.clone(),
        kill_grace_ms: app
            .task_kill_grace_period_seconds
            .map_or(DEFAULT_KILL_GRACE_MS, |s| u64::try_from(s).unwrap_or(0).saturating_mul(1_000)),
        health_check: app.health_checks.first().and_then(|check| mesos_health_check(check, &placed.ports)),
        fetch: app.fetch.iter().map(fetch_uri).collect(),
        discovery: Some(discovery_info(app, &placed.ports)),
    }
}

/// A `fetch` artifact as the agent downloads it.
fn fetch_uri(artifact: &super::app::Artifact) -> FetchUri {
    FetchUri {
        uri: artifact.uri.clone(),
        extract: artifact.extract,
        executable: artifact.executable,
        cache: artifact.cache,
        output_file: artifact.dest_path.clone(),
    }
}

/// The instance's ports for service discovery, as Marathon builds Mesos's `DiscoveryInfo`:
/// each declared port at its host port, with its name and labels (`udp,tcp` is one entry per
/// protocol).
fn discovery_info(app: &AppDefinition, host_ports: &[u64]) -> DiscoveryInfo {
    let mut ports = Vec::new();
    for (definition, host_port) in app.port_definitions.iter().zip(host_ports) {
        let Ok(number) = u16::try_from(*host_port) else { continue };
        let protocols: &[DiscoveryProtocol] = match definition.protocol {
            super::app::PortProtocol::Tcp => &[DiscoveryProtocol::Tcp],
            super::app::PortProtocol::Udp => &[DiscoveryProtocol::Udp],
            super::app::PortProtocol::UdpTcp => &[DiscoveryProtocol::Udp, DiscoveryProtocol::Tcp],
        };
        ports.extend(protocols.iter().map(|&protocol| PortEntry {
            number,
            protocol,
            name: definition.name.clone(),
            labels: definition.labels.clone(),
        }));
    }
    DiscoveryInfo { name: app.id.to_hostname(), ports }
}

/// An app's health check as the agent runs it: the port from `port` or `portIndex` (the
/// instance's host port), HTTP(S) and TCP whether Marathon's legacy or Mesos's own.
fn mesos_health_check(check: &super::app::HealthCheck, host_ports: &[u64]) -> Option<MesosHealthCheck> {
    let port = || -> Option<u16> {
        let port = match (check.port, check.port_index) {
            (Some(port), _) => u64::try_from(port).ok()?,
            (None, index) => *host_ports.get(usize::try_from(index.unwrap_or(0)).ok()?)?,
        };
        u16::try_from(port).ok()
    };
    let probe = match check.protocol {
        HealthCheckProtocol::Http
        | HealthCheckProtocol::MesosHttp
        | HealthCheckProtocol::Https
        | HealthCheckProtocol::MesosHttps => Probe::Http {
            tls: matches!(check.protocol, HealthCheckProtocol::Https | HealthCheckProtocol::MesosHttps),
            port: port()?,
            path: check.path.clone().unwrap_or_else(|| "/".to_owned()),
            ignore_1xx: check.ignore_http1xx.unwrap_or(false),
        },
        HealthCheckProtocol::Tcp | HealthCheckProtocol::MesosTcp => Probe::Tcp { port: port()? },
        HealthCheckProtocol::Command => Probe::Command { value: check.command.as_ref()?.value.clone() },
    };
    let ms = |seconds: i32| u64::try_from(seconds).unwrap_or(0).saturating_mul(1_000);
    Some(MesosHealthCheck {
        probe,
        delay_ms: ms(check.delay_seconds),
        interval_ms: ms(check.interval_seconds).max(1),
        timeout_ms: ms(check.timeout_seconds).max(1),
        grace_period_ms: ms(check.grace_period_seconds),
        max_consecutive_failures: u32::try_from(check.max_consecutive_failures).unwrap_or(0),
    })
}

/// Marathon's `status_update_event`.
fn status_event(instance: &Instance, status: &TaskStatus, now: Timestamp) -> Value {
    let placed = instance.placed.as_ref();
    json!({
        "eventType": "status_update_event",
        "timestamp": now.to_string(),
        "slaveId": status.agent_id,
        "taskId": instance.task_id,
        "instanceId": instance.task_id,
        "taskStatus": status.state.name(),
        "message": status.message,
        "appId": instance.app_id.to_string(),
        "host": placed.map_or("", |p| p.host.as_str()),
        "ipAddresses": [],
        "ports": placed.map_or(&[][..], |p| p.ports.as_slice()),
        "version": instance.version.to_string(),
    })
}

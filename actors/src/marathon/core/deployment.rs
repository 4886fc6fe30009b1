//! Marathon deployments, pure: the plan from one set of apps to another, the locks between
//! running deployments, the rollback of a cancelled one, and the progress of a running one.
//!
//! # Plans ([`DeploymentPlan::between`])
//!
//! Every change to apps is a deployment: steps run one after another, the actions of a step run
//! concurrently. From the original and the target set of apps:
//!
//! 1. Removed apps are stopped (`StopApplication`), dependents before their dependencies: an
//!    app is stopped one step after every removed app that depends on it.
//! 2. Added apps are started with zero instances (`StartApplication`, one step, a marker that
//!    completes at once) and scaled up in the steps that follow.
//! 3. Added and changed apps get, in dependency order, `ScaleApplication` (added apps, a
//!    changed instance count with the same configuration, or a target of zero instances) or
//!    `RestartApplication` (the config fingerprint changed). An app's step is the length of the
//!    longest dependency chain below it in the target (over all apps, affected or not), so
//!    independent apps share a step and a chain of dependencies takes successive steps.
//!    Steps left empty are dropped.
//!
//! A dependency names an app, or a group (a path prefix), meaning every app under it. A
//! dependency on nothing ([`PlanError::MissingDependency`]) and a dependency cycle
//! ([`PlanError::DependencyCycle`], self-dependencies through one's own group included) are
//! errors: missing dependencies in the original and the target alike (the original was an
//! earlier target), cycles in the target and among the apps the plan removes.
//!
//! # Locks ([`admit`], [`cancel`])
//!
//! An app is changed by one deployment at a time: a new plan conflicts with every running
//! deployment that affects one of its apps. Without `force` it is refused with Marathon's 409
//! body ([`app_locked_body`]); with `force` the conflicting deployments are cancelled first.
//! Cancelling a deployment without `force` also creates its rollback: the plan from the current
//! apps to those with this deployment's changes undone ([`revert`]).
//!
//! # Progress ([`DeploymentRun`])
//!
//! A run tracks the current step of a plan, takes observations of the affected apps'
//! instances, says what each current action needs next (see [`super::upgrade`]) and moves on
//! once every action of the step is done, producing the event-stream payloads
//! (`deployment_info`, `deployment_step_success`, `deployment_step_failure`,
//! `deployment_success`, `deployment_failed`).
//!
//! # Where this differs from Marathon
//!
//! - Marathon stops every removed app in one step, whatever their dependencies (its documents
//!   promise dependents first; this module keeps that promise).
//! - Marathon accepts a dependency on an app or group that does not exist (the deployment then
//!   waits for nothing); here it is an error.
//! - Only apps: pods and `ResolveArtifacts` are not modelled (`affectedPods` is always empty).
//!   Dependency paths arrive absolute: the app model resolves relative ones.
//! - The restart endpoint (`POST /v2/apps/{id}/restart`) is a change of fingerprint: Marathon
//!   bumps `versionInfo.lastConfigChangeAt`, which the app model folds into the fingerprint.
//!   A new version with the same fingerprint and count is no change.
//! - A scaling action waits for every instance started since it began to be available, like
//!   Marathon's `TaskStartActor`, but re-derives the kills and starts from each observation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::upgrade::{
    Checks, Decision, InstanceId, InstanceView, KillSelection, MAX_INSTANCES, ReplaceSpec, ScaleSpec, UpgradeError,
    UpgradeStrategy, replace_step, scale_step,
};

/// Marathon's `--max_running_deployments` default.
pub const DEFAULT_MAX_RUNNING_DEPLOYMENTS: usize = 100;

/// The largest number of apps one plan may span; bounds the graph work per request.
pub const MAX_APPS: usize = 100_000;

/// The 409 message for a change to an app that a running deployment holds (Marathon's text,
/// placeholder included).
pub const APP_LOCKED_MESSAGE: &str = "App is locked by one or more deployments. Override with the option \
                                      '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.";

/// The reason a cancelled deployment reports in its `deployment_failed` event.
pub const CANCELLED_REASON: &str = "The upgrade has been cancelled";

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A path is not an absolute Marathon path.
    #[error("invalid path '{path}': {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The root cannot be an app.
    #[error("the root group '/' cannot be an app")]
    RootIsApp,
    /// Two apps with one id.
    #[error("app {0} is defined more than once")]
    DuplicateApp(PathId),
    /// An app id is also the group of other apps.
    #[error("{app} is an app and also the group of {inner}")]
    AppIsGroup {
        /// The app whose id is a group.
        app: PathId,
        /// An app under it.
        inner: PathId,
    },
    /// More apps than [`MAX_APPS`].
    #[error("at most {MAX_APPS} apps may take part in a deployment, got {0}")]
    TooManyApps(usize),
    /// An app asks for more than [`MAX_INSTANCES`].
    #[error("app {app}: instances must be at most {MAX_INSTANCES}, got {instances}")]
    TooManyInstances {
        /// The app.
        app: PathId,
        /// Its requested count.
        instances: u32,
    },
    /// A dependency names neither an app nor a group with apps.
    #[error("app {app} depends on {dependency}, which is neither an app nor a group with apps")]
    MissingDependency {
        /// The dependent app.
        app: PathId,
        /// The dependency that resolves to nothing.
        dependency: PathId,
    },
    /// Apps depend on each other in a circle; the apps of one such circle, in order.
    #[error("dependency cycle: {}", cycle_text(.0))]
    DependencyCycle(Vec<PathId>),
    /// A deployment id is empty.
    #[error("a deployment id must not be empty")]
    EmptyDeploymentId,
}

fn cycle_text(cycle: &[PathId]) -> String {
    let mut text: Vec<&str> = cycle.iter().map(PathId::as_str).collect();
    if let Some(first) = cycle.first() {
        text.push(first.as_str());
    }
    text.join(" -> ")
}

/// An absolute Marathon path as plans and views carry it (text, cheap to compare and print):
/// `/`, or `/` followed by `/`-separated segments, each a name of the app model's
/// [`super::path`] grammar. The app model's [`super::path::PathId`] (segments, relative
/// resolution) is where ids come from; this one is what a plan keys its apps by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathId(String);

impl PathId {
    /// Parse an absolute path; a trailing `/` is dropped (`/prod/` is `/prod`).
    pub fn parse(path: &str) -> Result<PathId, PlanError> {
        let invalid = |reason| PlanError::InvalidPath { path: path.to_owned(), reason };
        let Some(rest) = path.strip_prefix('/') else {
            return Err(invalid("must be absolute (start with '/')"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(PathId("/".to_owned()));
        }
        for segment in rest.split('/') {
            if let Err(reason) = check_segment(segment) {
                return Err(invalid(reason));
            }
        }
        Ok(PathId(format!("/{rest}")))
    }

    /// The root group, `/`.
    pub fn root() -> PathId {
        PathId("/".to_owned())
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The groups above this path, nearest first, without the root.
    pub fn ancestors(&self) -> impl Iterator<Item = PathId> + '_ {
        let cuts: Vec<usize> = self.0.match_indices('/').skip(1).map(|(at, _)| at).collect();
        cuts.into_iter().rev().map(|at| PathId(self.0.get(..at).unwrap_or_default().to_owned()))
    }

    /// Whether `other` lies strictly under this path, seen as a group.
    pub fn contains(&self, other: &PathId) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other.0.strip_prefix(&self.0).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// One segment of an absolute path: a name as the app model's [`super::path`] defines it
/// (the relative forms `.` and `..` are not accepted here).
fn check_segment(segment: &str) -> Result<(), &'static str> {
    if super::path::is_name(segment) {
        Ok(())
    } else {
        Err("each segment is dot-separated names of lowercase letters, digits and '-', not starting or ending with '-'")
    }
}

impl TryFrom<String> for PathId {
    type Error = PlanError;
    fn try_from(path: String) -> Result<Self, Self::Error> {
        PathId::parse(&path)
    }
}

impl From<PathId> for String {
    fn from(path: PathId) -> String {
        path.0
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deployment's id (a UUID in Marathon; the caller draws it from the node's seeded RNG).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

impl DeploymentId {
    /// Any non-empty string.
    pub fn new(id: impl Into<String>) -> Result<Self, PlanError> {
        let id = id.into();
        if id.is_empty() {
            return Err(PlanError::EmptyDeploymentId);
        }
        Ok(DeploymentId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeploymentId {
    type Error = PlanError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        DeploymentId::new(id)
    }
}

impl From<DeploymentId> for String {
    fn from(id: DeploymentId) -> String {
        id.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a deployment needs to know of an app definition. The app model builds it; this module
/// never sees the full definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    /// The app's absolute id, such as `/prod/db`.
    pub id: PathId,
    /// The wanted instance count.
    pub instances: u32,
    /// The app's version (an ISO 8601 timestamp in Marathon); carried, never interpreted.
    pub version: String,
    /// A digest of everything in the definition but `instances` and `version` (and
    /// `versionInfo.lastScalingAt`): two definitions with equal fingerprints differ at most in
    /// scale, so a change of fingerprint means the instances must be replaced.
    pub config_fingerprint: String,
    /// Absolute ids of the apps or groups this app depends on.
    pub dependencies: BTreeSet<PathId>,
    /// How a replacement of its instances proceeds.
    pub upgrade_strategy: UpgradeStrategy,
    /// Which instance goes first when scaling down.
    pub kill_selection: KillSelection,
    /// The app defines health checks.
    pub has_health_checks: bool,
    /// The app defines readiness checks.
    pub has_readiness_checks: bool,
}

impl AppView {
    /// An app with Marathon's defaults: no dependencies, upgrade strategy `1`/`1`,
    /// `YOUNGEST_FIRST`, no checks.
    pub fn new(id: PathId, instances: u32, version: impl Into<String>, config_fingerprint: impl Into<String>) -> Self {
        AppView {
            id,
            instances,
            version: version.into(),
            config_fingerprint: config_fingerprint.into(),
            dependencies: BTreeSet::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            kill_selection: KillSelection::default(),
            has_health_checks: false,
            has_readiness_checks: false,
        }
    }

    /// The checks that gate this app's instances.
    pub fn checks(&self) -> Checks {
        Checks { health: self.has_health_checks, readiness: self.has_readiness_checks }
    }
}

/// A set of apps (the whole root group, flattened), keyed by id. Built only through
/// [`Apps::new`], so ids are unique, no app id is the group of another app and counts are in
/// range; dependencies are checked when a plan is made.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<AppView>", into = "Vec<AppView>")]
pub struct Apps(BTreeMap<PathId, AppView>);

impl Apps {
    /// The empty set.
    pub fn empty() -> Self {
        Apps(BTreeMap::new())
    }

    /// A set of apps, validated (see the type's documentation).
    pub fn new(apps: impl IntoIterator<Item = AppView>) -> Result<Self, PlanError> {
        let mut by_id = BTreeMap::new();
        for app in apps {
            if by_id.len() >= MAX_APPS {
                return Err(PlanError::TooManyApps(by_id.len() + 1));
            }
            if app.id.is_root() {
                return Err(PlanError::RootIsApp);
            }
            if app.instances > MAX_INSTANCES {
                return Err(PlanError::TooManyInstances { app: app.id.clone(), instances: app.instances });
            }
            let id = app.id.clone();
            if by_id.insert(id.clone(), app).is_some() {
                return Err(PlanError::DuplicateApp(id));
            }
        }
        for inner in by_id.keys() {
            if let Some(outer) = inner.ancestors().find(|group| by_id.contains_key(group)) {
                return Err(PlanError::AppIsGroup { app: outer, inner: inner.clone() });
            }
        }
        Ok(Apps(by_id))
    }

    /// The app with this id.
    pub fn get(&self, id: &PathId) -> Option<&AppView> {
        self.0.get(id)
    }

    /// The apps in id order.
    pub fn iter(&self) -> impl Iterator<Item = &AppView> {
        self.0.values()
    }

    /// How many apps.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same apps with `app` added or replaced (`PUT /v2/apps/{id}` on the flattened tree).
    pub fn with(&self, app: AppView) -> Result<Apps, PlanError> {
        let mut apps = self.0.clone();
        apps.insert(app.id.clone(), app);
        Apps::new(apps.into_values())
    }

    /// The same apps without `id`.
    pub fn without(&self, id: &PathId) -> Apps {
        let mut apps = self.0.clone();
        apps.remove(id);
        Apps(apps)
    }

    /// The apps `dependency` stands for: the app with that id, or every app under it.
    fn resolve(&self, dependency: &PathId) -> Vec<&PathId> {
        if let Some((id, _)) = self.0.get_key_value(dependency) {
            return vec![id];
        }
        self.0.keys().filter(|id| dependency.contains(id)).collect()
    }

    /// Every app's resolved dependencies, checked: each must resolve to at least one app.
    fn dependency_graph(&self) -> Result<BTreeMap<&PathId, BTreeSet<&PathId>>, PlanError> {
        let mut graph = BTreeMap::new();
        for app in self.0.values() {
            let mut resolved = BTreeSet::new();
            for dependency in &app.dependencies {
                let apps = self.resolve(dependency);
                if apps.is_empty() {
                    return Err(PlanError::MissingDependency { app: app.id.clone(), dependency: dependency.clone() });
                }
                resolved.extend(apps);
            }
            graph.insert(&app.id, resolved);
        }
        Ok(graph)
    }
}

impl TryFrom<Vec<AppView>> for Apps {
    type Error = PlanError;
    fn try_from(apps: Vec<AppView>) -> Result<Self, Self::Error> {
        Apps::new(apps)
    }
}

impl From<Apps> for Vec<AppView> {
    fn from(apps: Apps) -> Vec<AppView> {
        apps.0.into_values().collect()
    }
}

/// For every node, the length of the longest chain of `edges` starting at it (a node without
/// edges has depth 1), computed without recursion (chains may be long and the input is
/// untrusted). A cycle is an error naming the apps on one.
fn longest_chains<'a>(
    edges: &BTreeMap<&'a PathId, BTreeSet<&'a PathId>>,
) -> Result<BTreeMap<&'a PathId, usize>, PlanError> {
    // Kahn's algorithm on the reversed edges: a node is placed once every node it points to is.
    let mut waiting_on: BTreeMap<&PathId, usize> = edges.iter().map(|(node, targets)| (*node, targets.len())).collect();
    let mut pointed_from: BTreeMap<&PathId, Vec<&PathId>> = BTreeMap::new();
    for (node, targets) in edges {
        for target in targets {
            pointed_from.entry(*target).or_default().push(*node);
        }
    }
    let mut ready: Vec<&PathId> = waiting_on.iter().filter(|(_, count)| **count == 0).map(|(node, _)| *node).collect();
    let mut depth: BTreeMap<&PathId, usize> = BTreeMap::new();
    while let Some(node) = ready.pop() {
        let below = edges.get(node).into_iter().flatten().filter_map(|target| depth.get(target)).max().copied();
        depth.insert(node, below.unwrap_or(0) + 1);
        for source in pointed_from.get(node).into_iter().flatten() {
            if let Some(count) = waiting_on.get_mut(source) {
                *count -= 1;
                if *count == 0 {
                    ready.push(source);
                }
            }
        }
    }
    if depth.len() == edges.len() {
        return Ok(depth);
    }
    Err(PlanError::DependencyCycle(find_cycle(edges, &depth)))
}

/// One cycle among the nodes Kahn's algorithm could not place: each of them points to another
/// unplaced node, so walking from any of them must come back to a node already seen.
fn find_cycle(edges: &BTreeMap<&PathId, BTreeSet<&PathId>>, placed: &BTreeMap<&PathId, usize>) -> Vec<PathId> {
    let unplaced = |node: &PathId| !placed.contains_key(node);
    let Some(start) = edges.keys().find(|node| unplaced(node)) else {
        return Vec::new();
    };
    let mut path: Vec<&PathId> = vec![start];
    let mut position: BTreeMap<&PathId, usize> = BTreeMap::from([(*start, 0)]);
    loop {
        let Some(current) = path.last() else { return Vec::new() };
        let Some(next) = edges.get(current).into_iter().flatten().find(|node| unplaced(node)) else {
            return Vec::new();
        };
        if let Some(&at) = position.get(next) {
            return path.get(at..).unwrap_or_default().iter().map(|id| (*id).clone()).collect();
        }
        position.insert(*next, path.len());
        path.push(*next);
    }
}

/// The name of a deployment action, as Marathon spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionName {
    /// A new app, started with zero instances (done at once).
    StartApplication,
    /// An app to stop entirely.
    StopApplication,
    /// An app whose instance count changes (or that is scaled after its start).
    ScaleApplication,
    /// An app whose instances are replaced by a rolling upgrade.
    RestartApplication,
}

impl ActionName {
    /// The name as text.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::StartApplication => "StartApplication",
            ActionName::StopApplication => "StopApplication",
            ActionName::ScaleApplication => "ScaleApplication",
            ActionName::RestartApplication => "RestartApplication",
        }
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentAction {
    /// Start a new app with zero instances.
    Start {
        /// The app.
        app: PathId,
    },
    /// Scale an app to `scale_to`, killing the `sentenced` instances first.
    Scale {
        /// The app.
        app: PathId,
        /// The count to reach.
        scale_to: u32,
        /// Instances to kill first (`DELETE /v2/apps/{id}/tasks?scale=true`).
        sentenced: BTreeSet<InstanceId>,
    },
    /// Replace an app's instances with its target configuration.
    Restart {
        /// The app.
        app: PathId,
    },
    /// Kill all of an app's instances.
    Stop {
        /// The app.
        app: PathId,
    },
}

impl DeploymentAction {
    /// The app the action is about.
    pub fn app(&self) -> &PathId {
        match self {
            DeploymentAction::Start { app }
            | DeploymentAction::Scale { app, .. }
            | DeploymentAction::Restart { app }
            | DeploymentAction::Stop { app } => app,
        }
    }

    /// Marathon's name for it.
    pub fn name(&self) -> ActionName {
        match self {
            DeploymentAction::Start { .. } => ActionName::StartApplication,
            DeploymentAction::Scale { .. } => ActionName::ScaleApplication,
            DeploymentAction::Restart { .. } => ActionName::RestartApplication,
            DeploymentAction::Stop { .. } => ActionName::StopApplication,
        }
    }

    fn view(&self) -> ActionView {
        ActionView { action: self.name(), app: self.app().to_string() }
    }
}

/// Actions that run concurrently.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeploymentStep {
    /// The actions, in app id order.
    pub actions: Vec<DeploymentAction>,
}

impl DeploymentStep {
    fn view(&self) -> StepView {
        StepView { actions: self.actions.iter().map(DeploymentAction::view).collect() }
    }
}

/// A deployment: the steps from `original` to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentPlan {
    id: DeploymentId,
    version: String,
    original: Apps,
    target: Apps,
    steps: Vec<DeploymentStep>,
}

impl DeploymentPlan {
    /// The steps Marathon would take from `original` to `target` (see the module
    /// documentation). `version` is the deployment's timestamp, carried into its views.
    pub fn between(
        original: &Apps,
        target: &Apps,
        id: DeploymentId,
        version: impl Into<String>,
    ) -> Result<Self, PlanError> {
        DeploymentPlan::between_with_kills(original, target, &BTreeMap::new(), id, version)
    }

    /// [`DeploymentPlan::between`], with instances to kill while scaling (`?scale=true` kills):
    /// they ride on the app's `ScaleApplication`; kills for apps that are not scaled are ignored,
    /// as in Marathon.
    pub fn between_with_kills(
        original: &Apps,
        target: &Apps,
        kills: &BTreeMap<PathId, BTreeSet<InstanceId>>,
        id: DeploymentId,
        version: impl Into<String>,
    ) -> Result<Self, PlanError> {
        let original_graph = original.dependency_graph()?;
        let target_graph = target.dependency_graph()?;
        let target_depths = longest_chains(&target_graph)?;
        let mut steps = stop_steps(original, target, &original_graph)?;
        steps.push(start_step(original, target));
        steps.extend(change_steps(original, target, kills, &target_depths));
        steps.retain(|step| !step.actions.is_empty());
        Ok(DeploymentPlan { id, version: version.into(), original: original.clone(), target: target.clone(), steps })
    }

    /// The deployment's id.
    pub fn id(&self) -> &DeploymentId {
        &self.id
    }

    /// The deployment's version (timestamp).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The apps before.
    pub fn original(&self) -> &Apps {
        &self.original
    }

    /// The apps after.
    pub fn target(&self) -> &Apps {
        &self.target
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[DeploymentStep] {
        &self.steps
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The apps some action of this plan touches: what it locks.
    pub fn affected_apps(&self) -> BTreeSet<&PathId> {
        self.steps.iter().flat_map(|step| step.actions.iter().map(DeploymentAction::app)).collect()
    }

    /// The same plan with its original and target app sets cut down to the apps it acts on
    /// (what a stored plan needs: a plan over the whole of a large cluster would otherwise
    /// carry every app twice).
    pub fn trimmed(mut self) -> DeploymentPlan {
        let affected: BTreeSet<PathId> = self.affected_apps().into_iter().cloned().collect();
        self.original.0.retain(|id, _| affected.contains(id));
        self.target.0.retain(|id, _| affected.contains(id));
        self
    }

    /// Whether this plan and `other` touch a common app.
    pub fn conflicts_with(&self, other: &DeploymentPlan) -> bool {
        let mine = self.affected_apps();
        other.affected_apps().iter().any(|app| mine.contains(app))
    }

    /// The `GET /v2/deployments` item for this plan at `current_step` (1-based; 0 before the
    /// first step), with the readiness results of the current actions' apps.
    pub fn info_view(
        &self,
        current_step: usize,
        readiness: &BTreeMap<PathId, Vec<ReadinessCheckResultView>>,
    ) -> DeploymentInfoView {
        let current_actions = current_step
            .checked_sub(1)
            .and_then(|index| self.steps.get(index))
            .map(|step| {
                step.actions
                    .iter()
                    .map(|action| CurrentActionView {
                        action: action.name(),
                        app: action.app().to_string(),
                        readiness_check_results: readiness.get(action.app()).cloned().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        DeploymentInfoView {
            id: self.id.to_string(),
            version: self.version.clone(),
            affected_apps: self.affected_apps().iter().map(ToString::to_string).collect(),
            affected_pods: Vec::new(),
            steps: self.steps.iter().map(DeploymentStep::view).collect(),
            current_actions,
            current_step,
            total_steps: self.steps.len(),
        }
    }

    /// The plan as it appears inside events.
    pub fn plan_view(&self) -> PlanView {
        PlanView {
            id: self.id.to_string(),
            steps: self.steps.iter().map(DeploymentStep::view).collect(),
            version: self.version.clone(),
        }
    }
}

/// Stop steps for removed apps, dependents first: an app's step is the length of the longest
/// chain of removed apps depending on it.
fn stop_steps(
    original: &Apps,
    target: &Apps,
    original_graph: &BTreeMap<&PathId, BTreeSet<&PathId>>,
) -> Result<Vec<DeploymentStep>, PlanError> {
    let removed: BTreeSet<&PathId> = original.0.keys().filter(|id| target.get(id).is_none()).collect();
    let mut dependents: BTreeMap<&PathId, BTreeSet<&PathId>> =
        removed.iter().map(|id| (*id, BTreeSet::new())).collect();
    for (app, dependencies) in original_graph {
        if !removed.contains(app) {
            continue;
        }
        for dependency in dependencies.iter().filter(|d| removed.contains(*d)) {
            dependents.entry(*dependency).or_default().insert(*app);
        }
    }
    let depths = longest_chains(&dependents)?;
    Ok(layered(depths, |app| Some(DeploymentAction::Stop { app: app.clone() })))
}

/// One step starting every added app with zero instances.
fn start_step(original: &Apps, target: &Apps) -> DeploymentStep {
    let actions =
        target.0.keys().filter(|id| original.get(id).is_none()).map(|app| DeploymentAction::Start { app: app.clone() });
    DeploymentStep { actions: actions.collect() }
}

/// Scale and restart steps for added and changed apps, by depth in the target's graph.
fn change_steps(
    original: &Apps,
    target: &Apps,
    kills: &BTreeMap<PathId, BTreeSet<InstanceId>>,
    depths: &BTreeMap<&PathId, usize>,
) -> Vec<DeploymentStep> {
    layered(depths.clone(), |id| {
        let app = target.get(id)?;
        change_action(original.get(id), app, kills.get(id))
    })
}

/// What an added or existing app needs, if anything.
fn change_action(
    before: Option<&AppView>,
    after: &AppView,
    kills: Option<&BTreeSet<InstanceId>>,
) -> Option<DeploymentAction> {
    let scale = || DeploymentAction::Scale {
        app: after.id.clone(),
        scale_to: after.instances,
        sentenced: kills.cloned().unwrap_or_default(),
    };
    let Some(before) = before else {
        return Some(scale());
    };
    let config_changed = before.config_fingerprint != after.config_fingerprint;
    if config_changed && after.instances > 0 {
        Some(DeploymentAction::Restart { app: after.id.clone() })
    } else if config_changed || before.instances != after.instances {
        Some(scale())
    } else {
        None
    }
}

/// Group nodes by depth into steps (smallest depth first), each node's action made by `action`.
fn layered(
    depths: BTreeMap<&PathId, usize>,
    action: impl Fn(&PathId) -> Option<DeploymentAction>,
) -> Vec<DeploymentStep> {
    let mut by_depth: BTreeMap<usize, Vec<DeploymentAction>> = BTreeMap::new();
    for (id, depth) in depths {
        if let Some(action) = action(id) {
            by_depth.entry(depth).or_default().push(action);
        }
    }
    by_depth.into_values().map(|actions| DeploymentStep { actions }).collect()
}

// ---------------------------------------------------------------------------------------------
// Views (Marathon's JSON)
// ---------------------------------------------------------------------------------------------

/// `{action, app}`: one action in `steps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    /// The action's name.
    pub action: ActionName,
    /// The app's id.
    pub app: String,
}

/// `{actions: [...]}`: one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// Its actions.
    pub actions: Vec<ActionView>,
}

/// The last HTTP response of a readiness check, kept when `preserveLastResponse` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponseView {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: String,
}

/// One readiness check result of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheckResultView {
    /// The check's name.
    pub name: String,
    /// The task checked.
    pub task_id: String,
    /// Whether it passed.
    pub ready: bool,
    /// Its last response, if kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_response: Option<HttpResponseView>,
}

/// `{action, app, readinessCheckResults}`: an action of the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentActionView {
    /// The action's name.
    pub action: ActionName,
    /// The app's id.
    pub app: String,
    /// The readiness results of the app's tasks.
    pub readiness_check_results: Vec<ReadinessCheckResultView>,
}

/// An item of `GET /v2/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfoView {
    /// The deployment's id.
    pub id: String,
    /// Its version (timestamp).
    pub version: String,
    /// The apps it touches.
    pub affected_apps: Vec<String>,
    /// The pods it touches (always empty: pods are not modelled).
    pub affected_pods: Vec<String>,
    /// All its steps.
    pub steps: Vec<StepView>,
    /// The actions of the current step.
    pub current_actions: Vec<CurrentActionView>,
    /// The current step, 1-based (0 before the first).
    pub current_step: usize,
    /// How many steps.
    pub total_steps: usize,
}

/// `{id, steps, version}`: the plan inside an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    /// The deployment's id.
    pub id: String,
    /// Its steps.
    pub steps: Vec<StepView>,
    /// Its version.
    pub version: String,
}

/// `deployment_info`, `deployment_step_success` and `deployment_step_failure` payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepEventView {
    /// The plan.
    pub plan: PlanView,
    /// The step the event is about.
    pub current_step: StepView,
    /// `deployment_info`, `deployment_step_success` or `deployment_step_failure`.
    pub event_type: String,
    /// When (ISO 8601, given by the caller).
    pub timestamp: String,
}

/// `deployment_success` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSuccessView {
    /// The deployment's id.
    pub id: String,
    /// The plan.
    pub plan: PlanView,
    /// `deployment_success`.
    pub event_type: String,
    /// When.
    pub timestamp: String,
}

/// `deployment_failed` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentFailedView {
    /// The deployment's id.
    pub id: String,
    /// The plan.
    pub plan: PlanView,
    /// `deployment_failed`.
    pub event_type: String,
    /// When.
    pub timestamp: String,
    /// Why, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event of the deployment's progress; serializes as its payload (which names its type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DeploymentEvent {
    /// `deployment_info`: a step begins.
    Info(StepEventView),
    /// `deployment_step_success`: every action of a step is done.
    StepSuccess(StepEventView),
    /// `deployment_step_failure`: a step was abandoned.
    StepFailure(StepEventView),
    /// `deployment_success`: the last step is done.
    Success(DeploymentSuccessView),
    /// `deployment_failed`: the deployment was cancelled or failed.
    Failed(DeploymentFailedView),
}

impl DeploymentEvent {
    /// The SSE `event:` name.
    pub fn event_type(&self) -> &str {
        match self {
            DeploymentEvent::Info(view) | DeploymentEvent::StepSuccess(view) | DeploymentEvent::StepFailure(view) => {
                &view.event_type
            }
            DeploymentEvent::Success(view) => &view.event_type,
            DeploymentEvent::Failed(view) => &view.event_type,
        }
    }
}

fn step_event(
    kind: fn(StepEventView) -> DeploymentEvent,
    plan: &DeploymentPlan,
    step: &DeploymentStep,
    event_type: &str,
    now: &str,
) -> DeploymentEvent {
    kind(StepEventView {
        plan: plan.plan_view(),
        current_step: step.view(),
        event_type: event_type.to_owned(),
        timestamp: now.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Locks, force and rollback
// ---------------------------------------------------------------------------------------------

/// `{"id": ...}` inside the 409 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    /// A deployment id.
    pub id: String,
}

/// Marathon's 409 body for a change to a locked app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppLockedBody {
    /// [`APP_LOCKED_MESSAGE`].
    pub message: String,
    /// The deployments holding the lock.
    pub deployments: Vec<DeploymentRef>,
}

/// The 409 body naming the deployments that hold the lock.
pub fn app_locked_body<'a>(deployments: impl IntoIterator<Item = &'a DeploymentId>) -> AppLockedBody {
    AppLockedBody {
        message: APP_LOCKED_MESSAGE.to_owned(),
        deployments: deployments.into_iter().map(|id| DeploymentRef { id: id.to_string() }).collect(),
    }
}

/// The running deployments that touch an app `plan` touches, in the order given.
pub fn conflicting<'a>(
    running: impl IntoIterator<Item = &'a DeploymentPlan>,
    plan: &DeploymentPlan,
) -> Vec<&'a DeploymentPlan> {
    running.into_iter().filter(|other| other.conflicts_with(plan)).collect()
}

/// Whether a new deployment may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No conflict: start it.
    Start,
    /// `force`: cancel these (without rollback), then start it.
    CancelThenStart(Vec<DeploymentId>),
    /// Conflicts and no `force`: answer 409 with this body.
    Locked(AppLockedBody),
}

/// Why a deployment cannot even be considered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The running deployments are at the limit (Marathon answers 403 with this message).
    #[error(
        "Max number ({0}) of running deployments is achieved. Wait for existing deployments to complete or cancel one\
         using force=true parameter. You can increase max deployment number by using --max_running_deployments \
         parameter but be advised that this can have negative effects on the performance."
    )]
    TooManyRunningDeployments(usize),
    /// A running deployment already has this id.
    #[error("deployment {0} is already running")]
    DuplicateId(DeploymentId),
}

/// Decide a new deployment against the running ones: Marathon's lock rule, `force`, and the
/// `--max_running_deployments` cap (checked before conflicts, whatever `force` says).
pub fn admit<'a>(
    running: impl IntoIterator<Item = &'a DeploymentPlan>,
    plan: &DeploymentPlan,
    force: bool,
    max_running: usize,
) -> Result<Admission, AdmissionError> {
    let running: Vec<&DeploymentPlan> = running.into_iter().collect();
    if running.len() >= max_running {
        return Err(AdmissionError::TooManyRunningDeployments(max_running));
    }
    if running.iter().any(|other| other.id == plan.id) {
        return Err(AdmissionError::DuplicateId(plan.id.clone()));
    }
    let conflicts: Vec<DeploymentId> = conflicting(running, plan).into_iter().map(|other| other.id.clone()).collect();
    Ok(match (conflicts.is_empty(), force) {
        (true, _) => Admission::Start,
        (false, true) => Admission::CancelThenStart(conflicts),
        (false, false) => Admission::Locked(app_locked_body(&conflicts)),
    })
}

/// `current` with the app changes of `plan` undone: apps it changed or removed get their
/// original definition back, apps it added are removed; apps it did not change keep whatever
/// they are now (another deployment may have changed them since).
pub fn revert(plan: &DeploymentPlan, current: &Apps) -> Result<Apps, PlanError> {
    let ids: BTreeSet<&PathId> = plan.original.0.keys().chain(plan.target.0.keys()).collect();
    let mut apps = current.0.clone();
    for id in ids {
        match (plan.original.get(id), plan.target.get(id)) {
            (before, after) if before == after => {}
            (Some(before), _) => {
                apps.insert(id.clone(), before.clone());
            }
            (None, _) => {
                apps.remove(id);
            }
        }
    }
    Apps::new(apps.into_values())
}

/// The outcome of `DELETE /v2/deployments/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// `force=true`: the deployment is cancelled and nothing else happens (202).
    Cancelled(DeploymentId),
    /// `force=false`: the deployment is cancelled and this rollback deployment, from the
    /// current apps back to its original, is started in its place (forced: it conflicts with
    /// the cancelled one by construction) (200 with the rollback's id and version).
    RolledBack {
        /// The cancelled deployment.
        cancelled: DeploymentId,
        /// The rollback.
        rollback: DeploymentPlan,
    },
}

/// Why a deployment cannot be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No running deployment has this id (Marathon answers 404 with this message).
    #[error("DeploymentPlan {0} does not exist")]
    UnknownDeployment(String),
    /// The rollback plan cannot be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Cancel the running deployment `id`; without `force`, also plan its rollback from `current`
/// (the apps as they are now) under `rollback_id` and `version`.
///
/// The rollback can fail where Marathon's would not: if an app added by this deployment has
/// since become a dependency of another deployment's app, undoing the addition leaves a
/// dependency on nothing ([`PlanError::MissingDependency`]); `force=true` still cancels.
pub fn cancel<'a>(
    running: impl IntoIterator<Item = &'a DeploymentPlan>,
    id: &str,
    force: bool,
    current: &Apps,
    rollback_id: DeploymentId,
    version: impl Into<String>,
) -> Result<Cancellation, CancelError> {
    let Some(plan) = running.into_iter().find(|plan| plan.id.as_str() == id) else {
        return Err(CancelError::UnknownDeployment(id.to_owned()));
    };
    if force {
        return Ok(Cancellation::Cancelled(plan.id.clone()));
    }
    let reverted = revert(plan, current)?;
    let rollback = DeploymentPlan::between(current, &reverted, rollback_id, version)?;
    Ok(Cancellation::RolledBack { cancelled: plan.id.clone(), rollback })
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// What the scheduler sees of the affected apps: their instances (an app without an entry has
/// none) and the latest readiness results of their tasks.
///
/// Each instance's [`super::upgrade::InstanceVersion`] is relative to the action's target:
/// `New` when its configuration fingerprint equals the plan target's for that app. Instances
/// the scheduler was asked to start appear as `Staged` from the next observation on, and
/// those it was asked to kill as `Killing` until they end, or they would be asked for again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// Instances by app.
    pub instances: BTreeMap<PathId, Vec<InstanceView>>,
    /// Readiness results by app, shown in `currentActions`.
    pub readiness: BTreeMap<PathId, Vec<ReadinessCheckResultView>>,
}

/// What one action of the current step needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionNeed {
    /// The action.
    pub action: DeploymentAction,
    /// Starts, kills, and whether it is done.
    pub decision: Decision,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Working on this step (1-based).
    Running {
        /// The current step.
        step: usize,
    },
    /// Every step is done.
    Succeeded,
    /// Cancelled or failed; the reason.
    Failed(String),
}

/// The answer to an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// What each action of the current step needs (empty once the run is over).
    pub needs: Vec<ActionNeed>,
    /// Events to publish, in order.
    pub events: Vec<DeploymentEvent>,
    /// Where the run is now.
    pub state: RunState,
}

/// Why an observation cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The plan names an app its own original/target do not hold (a corrupt stored plan).
    #[error("the plan's action on {0} has no app definition")]
    UnknownApp(PathId),
    /// The observation is malformed.
    #[error(transparent)]
    Instances(#[from] UpgradeError),
}

/// A running deployment: the current step, and what it needs from each observation.
///
/// Level-triggered like [`super::upgrade`]: an observation is the whole truth, so the same
/// observation twice gives the same needs. The one memory a run keeps is, per step, the
/// instances each app had when the step began (a scale action waits for the instances started
/// since then to become available).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRun {
    plan: DeploymentPlan,
    /// 0-based index of the current step; `steps.len()` once succeeded.
    step: usize,
    /// Instances present when the current step was first observed, by app.
    baseline: Option<BTreeMap<PathId, BTreeSet<InstanceId>>>,
    /// The latest readiness results of the current step's apps.
    readiness: BTreeMap<PathId, Vec<ReadinessCheckResultView>>,
    failed: Option<String>,
    /// Resumed after a failover and not observed since: every step the first observation
    /// reaches has an empty baseline (see [`DeploymentRun::resume`]).
    resuming: bool,
}

impl DeploymentRun {
    /// Begin a plan: `deployment_info` for its first step, or `deployment_success` at once if it
    /// has no steps.
    pub fn start(plan: DeploymentPlan, now: &str) -> (Self, Vec<DeploymentEvent>) {
        let run =
            DeploymentRun { plan, step: 0, baseline: None, readiness: BTreeMap::new(), failed: None, resuming: false };
        let event = match run.plan.steps.first() {
            Some(step) => step_event(DeploymentEvent::Info, &run.plan, step, "deployment_info", now),
            None => run.success_event(now),
        };
        (run, vec![event])
    }

    /// Resume a stored plan after a failover: no events (they were published), and the first
    /// step waits for every instance of its apps to be available, since the instances its
    /// actions started before the failover cannot be told from the others.
    pub fn resume(plan: DeploymentPlan) -> Self {
        DeploymentRun { plan, step: 0, baseline: None, readiness: BTreeMap::new(), failed: None, resuming: true }
    }

    /// The plan.
    pub fn plan(&self) -> &DeploymentPlan {
        &self.plan
    }

    /// Where the run is.
    pub fn state(&self) -> RunState {
        if let Some(reason) = &self.failed {
            return RunState::Failed(reason.clone());
        }
        if self.step >= self.plan.steps.len() {
            return RunState::Succeeded;
        }
        RunState::Running { step: self.step + 1 }
    }

    /// Take an observation: say what the current step's actions need, and move through every
    /// step the observation shows done (several steps may complete on one observation).
    pub fn observe(&mut self, observation: &Observation, now: &str) -> Result<RunReport, RunError> {
        let mut events = Vec::new();
        let mut needs = Vec::new();
        let resuming = std::mem::take(&mut self.resuming);
        while self.failed.is_none() {
            let Some(step) = self.plan.steps.get(self.step) else { break };
            let baseline = self
                .baseline
                .get_or_insert_with(|| if resuming { BTreeMap::new() } else { baseline_of(step, observation) });
            needs = step
                .actions
                .iter()
                .map(|action| need_of(&self.plan, action, observation, baseline))
                .collect::<Result<Vec<_>, _>>()?;
            self.readiness = readiness_of(step, observation);
            if !needs.iter().all(|need| need.decision.done) {
                break;
            }
            events.push(step_event(DeploymentEvent::StepSuccess, &self.plan, step, "deployment_step_success", now));
            needs.clear();
            self.step += 1;
            self.baseline = None;
            self.readiness.clear();
            match self.plan.steps.get(self.step) {
                Some(next) => events.push(step_event(DeploymentEvent::Info, &self.plan, next, "deployment_info", now)),
                None => events.push(self.success_event(now)),
            }
        }
        Ok(RunReport { needs, events, state: self.state() })
    }

    /// Cancel the run (a forced deployment or `DELETE /v2/deployments/{id}` took over):
    /// `deployment_failed` with Marathon's cancellation reason. Nothing if already over.
    pub fn cancel(&mut self, now: &str) -> Vec<DeploymentEvent> {
        self.fail_with(CANCELLED_REASON, false, now)
    }

    /// Abandon the run because its current step failed: `deployment_step_failure`, then
    /// `deployment_failed` with `reason`. Nothing if already over.
    pub fn fail(&mut self, reason: &str, now: &str) -> Vec<DeploymentEvent> {
        self.fail_with(reason, true, now)
    }

    fn fail_with(&mut self, reason: &str, step_failed: bool, now: &str) -> Vec<DeploymentEvent> {
        if !matches!(self.state(), RunState::Running { .. }) {
            return Vec::new();
        }
        let mut events = Vec::new();
        if let (true, Some(step)) = (step_failed, self.plan.steps.get(self.step)) {
            events.push(step_event(DeploymentEvent::StepFailure, &self.plan, step, "deployment_step_failure", now));
        }
        events.push(DeploymentEvent::Failed(DeploymentFailedView {
            id: self.plan.id.to_string(),
            plan: self.plan.plan_view(),
            event_type: "deployment_failed".to_owned(),
            timestamp: now.to_owned(),
            reason: Some(reason.to_owned()),
        }));
        self.failed = Some(reason.to_owned());
        events
    }

    /// The `GET /v2/deployments` item for this run: the step it is on (or stopped on, or the
    /// last one once succeeded).
    pub fn info_view(&self) -> DeploymentInfoView {
        let current = (self.step + 1).min(self.plan.steps.len());
        self.plan.info_view(current, &self.readiness)
    }

    fn success_event(&self, now: &str) -> DeploymentEvent {
        DeploymentEvent::Success(DeploymentSuccessView {
            id: self.plan.id.to_string(),
            plan: self.plan.plan_view(),
            event_type: "deployment_success".to_owned(),
            timestamp: now.to_owned(),
        })
    }
}

/// The instances each app of `step` has now.
fn baseline_of(step: &DeploymentStep, observation: &Observation) -> BTreeMap<PathId, BTreeSet<InstanceId>> {
    step.actions
        .iter()
        .map(|action| {
            let ids = instances_of(observation, action.app()).iter().map(|i| i.id.clone()).collect();
            (action.app().clone(), ids)
        })
        .collect()
}

fn readiness_of(step: &DeploymentStep, observation: &Observation) -> BTreeMap<PathId, Vec<ReadinessCheckResultView>> {
    step.actions
        .iter()
        .filter_map(|action| Some((action.app().clone(), observation.readiness.get(action.app())?.clone())))
        .collect()
}

fn instances_of<'a>(observation: &'a Observation, app: &PathId) -> &'a [InstanceView] {
    observation.instances.get(app).map(Vec::as_slice).unwrap_or_default()
}

/// What `action` needs given the observation.
fn need_of(
    plan: &DeploymentPlan,
    action: &DeploymentAction,
    observation: &Observation,
    baseline: &BTreeMap<PathId, BTreeSet<InstanceId>>,
) -> Result<ActionNeed, RunError> {
    let instances = instances_of(observation, action.app());
    let target_app = || plan.target.get(action.app()).ok_or_else(|| RunError::UnknownApp(action.app().clone()));
    let empty = BTreeSet::new();
    let decision = match action {
        DeploymentAction::Start { .. } => {
            target_app()?;
            Decision { start: 0, kill: Vec::new(), done: true }
        }
        DeploymentAction::Scale { app, scale_to, sentenced } => {
            let view = target_app()?;
            let spec = ScaleSpec { scale_to: *scale_to, checks: view.checks(), kill_selection: view.kill_selection };
            scale_step(&spec, instances, sentenced, baseline.get(app).unwrap_or(&empty))?
        }
        DeploymentAction::Restart { .. } => {
            let view = target_app()?;
            let spec = ReplaceSpec {
                instances: view.instances,
                strategy: view.upgrade_strategy,
                checks: view.checks(),
                kill_selection: view.kill_selection,
            };
            replace_step(&spec, instances)?
        }
        DeploymentAction::Stop { app } => {
            let view = plan.original.get(app).ok_or_else(|| RunError::UnknownApp(app.clone()))?;
            let spec = ScaleSpec { scale_to: 0, checks: view.checks(), kill_selection: view.kill_selection };
            scale_step(&spec, instances, &empty, &empty)?
        }
    };
    Ok(ActionNeed { action: action.clone(), decision })
}

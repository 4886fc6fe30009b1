//! What one app's instances need next during a deployment action: the rolling replacement of a
//! `RestartApplication` and the start/kill choices of a `ScaleApplication`, as pure functions of
//! an observation of the app's instances.
//!
//! # The model
//!
//! The caller (the service scheduler) observes the app's instances and calls [`replace_step`]
//! or [`scale_step`]; the answer is a [`Decision`]: how many new instances to start, which
//! instances to kill, and whether the action is done. Both functions are *level-triggered*: they
//! read only the observation (plus, for scaling, the set of instances that existed when the
//! action began), so calling them again after a lost message or a leader change gives the
//! same answer. That puts one duty on the caller: an instance it asked to start must appear in
//! the next observation (as [`InstanceState::Staged`] until it runs), and an instance it asked
//! to kill must appear as [`InstanceState::Killing`] until it is gone; terminal instances
//! (failed, killed, finished) are simply absent.
//!
//! # Rolling replacement (Marathon's `TaskReplaceActor`)
//!
//! With target count `n`, `minHealthy = ceil(n × minimumHealthCapacity)` and
//! `maxCapacity = n + floor(n × maximumOverCapacity)`:
//!
//! - An instance is *available* when it runs, passes its health checks (if the app has any) and,
//!   for a new instance, its readiness checks (if the app has any). Readiness is checked only on
//!   new instances, as in Marathon.
//! - Old instances are killed only while the available count stays at or above `minHealthy`;
//!   an old instance that is not available is killed at once, since it adds nothing to the
//!   capacity to keep and occupies room the new version needs.
//! - New instances are started only while the total (old + new, killing ones included: they
//!   still hold their resources) stays at or below `maxCapacity`, and never beyond `n` new ones.
//! - When `minHealthy == maxCapacity` (`minimumHealthCapacity` 1 and `n × maximumOverCapacity`
//!   below one), no replacement could ever start, so — as Marathon does for apps without
//!   persistent volumes — one instance of temporary over-capacity is allowed while at least
//!   `maxCapacity` instances are available.
//! - The action is done when exactly `n` new instances exist, all available, and no other
//!   instance (old, or being killed) remains. New instances that fail vanish from the
//!   observation and are started again; the action does not finish meanwhile.
//!
//! Corner cases follow: `0`/`0` kills every old instance first and starts the new ones as
//! room appears; `1`/`1` starts all new instances beside the old ones (blue/green-like) and kills
//! an old one per new one that becomes available; `n = 0` kills everything; more old instances
//! than `n` are scaled down first (killing down to `minHealthy`).
//!
//! # Scaling (Marathon's `ScalingProposition` and `TaskStartActor`)
//!
//! Instances the user named (`DELETE /v2/apps/{id}/tasks?scale=true`) are killed first; further
//! victims are chosen by [`kill_order`]: staged (not yet running) before running, unavailable
//! before available, then by the app's [`KillSelection`] on the staged time, then by id. The
//! action is done when the app has exactly the target count, nothing is being killed, and every
//! instance started since the action began is available.
//!
//! # Where this differs from Marathon
//!
//! - Fractions are exact millionths, so `ceil(100 × 0.56)` is 56 (Marathon's doubles give 57).
//! - Marathon decides the immediate kills once, when the action starts, and then swaps one old
//!   instance per new one that becomes healthy; this module re-derives both from every
//!   observation. The capacity rules are the same; unavailable old instances are killed sooner,
//!   and an app whose old instances were partly unhealthy cannot get stuck (Marathon's
//!   `leftCapacity` could stay 0 forever with `1`/`0` and an unhealthy old instance).
//! - Scale-down preference also weighs health (Marathon's `ScalingProposition` has a TODO for
//!   it and looks only at the task condition).
//! - Resident apps (persistent volumes) and constraint-driven kill choices are not modelled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest count of instances an app may ask for. Marathon has no explicit cap; this one
/// keeps every sum in these computations far from overflow and rejects absurd requests.
pub const MAX_INSTANCES: u32 = 1_000_000;

/// Millionths in one whole.
const MILLION: u64 = 1_000_000;

/// Bad input to the instance-level decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// A fraction of the upgrade strategy is not a number between 0 and 1.
    #[error("{field} must be a number between 0 and 1, got {value}")]
    InvalidFraction {
        /// The strategy field (`minimumHealthCapacity` or `maximumOverCapacity`).
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// An instance id is empty.
    #[error("an instance id must not be empty")]
    EmptyInstanceId,
    /// The same instance appears twice in one observation.
    #[error("instance {0} appears more than once in the observation")]
    DuplicateInstance(InstanceId),
    /// A target instance count above [`MAX_INSTANCES`].
    #[error("instances must be at most {MAX_INSTANCES}, got {0}")]
    TooManyInstances(u64),
    /// A task named for a kill is not an instance of the app.
    #[error("unknown task {0}")]
    UnknownInstance(InstanceId),
}

/// An exact fraction between 0 and 1, in millionths: the strategy values are ratios that get
/// multiplied by instance counts and rounded, which must not depend on binary floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Fraction(u32);

impl Fraction {
    /// Zero.
    pub const ZERO: Fraction = Fraction(0);
    /// One whole.
    pub const ONE: Fraction = Fraction(1_000_000);

    /// The fraction nearest to `value` in millionths; `field` names it in the error.
    pub fn from_f64(field: &'static str, value: f64) -> Result<Fraction, UpgradeError> {
        if !value.is_finite() || !(0.0..=1.0).contains(&value) {
            return Err(UpgradeError::InvalidFraction { field, value: value.to_string() });
        }
        // In range by the check above, so the cast neither saturates nor wraps.
        Ok(Fraction((value * MILLION as f64).round() as u32))
    }

    /// The fraction `millionths / 1_000_000`.
    pub fn from_millionths(millionths: u32) -> Result<Fraction, UpgradeError> {
        if u64::from(millionths) > MILLION {
            return Err(UpgradeError::InvalidFraction { field: "fraction", value: format!("{millionths}/1000000") });
        }
        Ok(Fraction(millionths))
    }

    /// The value in millionths.
    pub fn millionths(self) -> u32 {
        self.0
    }

    /// The value as a double (for JSON views).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / MILLION as f64
    }

    /// `ceil(n × self)`.
    pub fn ceil_of(self, n: u32) -> u32 {
        let scaled = u64::from(n) * u64::from(self.0);
        // At most n, since the fraction is at most one.
        scaled.div_ceil(MILLION) as u32
    }

    /// `floor(n × self)`.
    pub fn floor_of(self, n: u32) -> u32 {
        (u64::from(n) * u64::from(self.0) / MILLION) as u32
    }
}

impl TryFrom<u32> for Fraction {
    type Error = UpgradeError;
    fn try_from(millionths: u32) -> Result<Self, Self::Error> {
        Fraction::from_millionths(millionths)
    }
}

impl From<Fraction> for u32 {
    fn from(fraction: Fraction) -> u32 {
        fraction.0
    }
}

/// Marathon's `upgradeStrategy`: how much capacity a replacement keeps and how much it may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    /// The share of `instances` that must stay available while replacing (rounded up).
    pub minimum_health_capacity: Fraction,
    /// The share of `instances` that may run on top of `instances` while replacing (rounded
    /// down).
    pub maximum_over_capacity: Fraction,
}

impl Default for UpgradeStrategy {
    /// Marathon's default for apps without persistent volumes: `1` / `1`.
    fn default() -> Self {
        UpgradeStrategy { minimum_health_capacity: Fraction::ONE, maximum_over_capacity: Fraction::ONE }
    }
}

impl UpgradeStrategy {
    /// A strategy from the JSON doubles, validated.
    pub fn new(minimum_health_capacity: f64, maximum_over_capacity: f64) -> Result<Self, UpgradeError> {
        Ok(UpgradeStrategy {
            minimum_health_capacity: Fraction::from_f64("minimumHealthCapacity", minimum_health_capacity)?,
            maximum_over_capacity: Fraction::from_f64("maximumOverCapacity", maximum_over_capacity)?,
        })
    }
}

/// Marathon's `killSelection` (which instance goes first when scaling down, among equals), as
/// the app model defines it.
pub use super::app::KillSelection;

/// An instance (for apps, the one task of an instance) of an app. Task ids and instance ids
/// are the same thing at this level.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// An instance id; any non-empty string.
    pub fn new(id: impl Into<String>) -> Result<Self, UpgradeError> {
        let id = id.into();
        if id.is_empty() {
            return Err(UpgradeError::EmptyInstanceId);
        }
        Ok(InstanceId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = UpgradeError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        InstanceId::new(id)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an instance runs the app's target configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceVersion {
    /// Launched from the target configuration (the config fingerprint matches).
    New,
    /// Launched from an earlier configuration.
    Old,
}

/// Where an instance is in its life, as far as a deployment cares. Terminal instances are not
/// observed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Asked for, queued for launch, or launched but not running yet (`TASK_STAGING`,
    /// `TASK_STARTING`).
    Staged,
    /// Running (`TASK_RUNNING`).
    Running,
    /// A kill was requested and the instance has not ended yet (`TASK_KILLING`, or any state
    /// with a kill in flight).
    Killing,
}

/// One instance as observed by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Its id.
    pub id: InstanceId,
    /// Old or new configuration.
    pub version: InstanceVersion,
    /// Staged, running or being killed.
    pub state: InstanceState,
    /// Its health checks pass (ignored when the app has none).
    pub healthy: bool,
    /// Its readiness checks pass (ignored when the app has none, and for old instances).
    pub ready: bool,
    /// When it was staged, in milliseconds since the epoch (the kill selection's clock).
    pub staged_at_ms: u64,
}

/// What the app under a deployment action asks of its instances' checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checks {
    /// The app defines health checks: an instance counts only once healthy.
    pub health: bool,
    /// The app defines readiness checks: a new instance counts only once ready.
    pub readiness: bool,
}

impl Checks {
    /// Whether `instance` adds to the app's serving capacity: running, healthy if checked,
    /// and (new instances only) ready if checked.
    pub fn is_available(self, instance: &InstanceView) -> bool {
        let healthy = !self.health || instance.healthy;
        let ready = !self.readiness || instance.version == InstanceVersion::Old || instance.ready;
        instance.state == InstanceState::Running && healthy && ready
    }
}

/// What one action needs next. The kills are listed in the order they should be sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Decision {
    /// How many new instances to start now.
    pub start: u32,
    /// Which instances to kill now.
    pub kill: Vec<InstanceId>,
    /// The action has reached its goal; nothing more is needed.
    pub done: bool,
}

impl Decision {
    /// Nothing to do and not done: waiting on instances to change.
    pub fn is_waiting(&self) -> bool {
        self.start == 0 && self.kill.is_empty() && !self.done
    }
}

/// The inputs of a rolling replacement besides the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaceSpec {
    /// The target instance count `n`.
    pub instances: u32,
    /// The app's upgrade strategy.
    pub strategy: UpgradeStrategy,
    /// Which checks gate availability.
    pub checks: Checks,
    /// Tie-break among old instances of equal standing.
    pub kill_selection: KillSelection,
}

/// The capacity bounds a replacement keeps, given how many instances are available now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityBounds {
    /// Available instances never go below this through our kills.
    pub min_healthy: u32,
    /// Total instances never go above this through our starts.
    pub max_capacity: u32,
}

impl ReplaceSpec {
    /// `ceil(n × minimumHealthCapacity)` and `n + floor(n × maximumOverCapacity)`, with
    /// Marathon's one instance of over-capacity when the two meet and at least that many are
    /// available (otherwise no replacement could ever start).
    pub fn bounds(&self, available: u32) -> CapacityBounds {
        let n = self.instances;
        let min_healthy = self.strategy.minimum_health_capacity.ceil_of(n);
        let mut max_capacity = n + self.strategy.maximum_over_capacity.floor_of(n);
        if min_healthy == max_capacity && max_capacity <= available {
            max_capacity += 1;
        }
        CapacityBounds { min_healthy, max_capacity }
    }
}

/// The next move of a rolling replacement (`RestartApplication`) of one app. See the module
/// documentation for the rules.
pub fn replace_step(spec: &ReplaceSpec, instances: &[InstanceView]) -> Result<Decision, UpgradeError> {
    check_count(spec.instances)?;
    check_unique(instances)?;
    let checks = spec.checks;
    let n = spec.instances;
    let (old_active, new_active) = active_by_version(instances);
    let available = count_u32(instances.iter().filter(|i| checks.is_available(i)));
    let bounds = spec.bounds(available);

    let mut kill = Vec::new();
    let excess_new = new_active.len().saturating_sub(n as usize);
    let new_victims = kill_order(&new_active, checks, spec.kill_selection);
    let mut remaining_available = available;
    for victim in new_victims.into_iter().take(excess_new) {
        if checks.is_available(victim) {
            remaining_available = remaining_available.saturating_sub(1);
        }
        kill.push(victim.id.clone());
    }
    for victim in kill_order(&old_active, checks, spec.kill_selection) {
        if checks.is_available(victim) {
            if remaining_available <= bounds.min_healthy {
                break;
            }
            remaining_available = remaining_available.saturating_sub(1);
        }
        kill.push(victim.id.clone());
    }

    let total = count_u32(instances.iter());
    let new_kept = count_u32(new_active.iter()).min(n);
    let start = (n - new_kept).min(bounds.max_capacity.saturating_sub(total));

    let done = kill.is_empty()
        && start == 0
        && total == n
        && instances.iter().all(|i| i.version == InstanceVersion::New && checks.is_available(i));
    Ok(Decision { start, kill, done })
}

/// The inputs of a scaling action besides the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleSpec {
    /// The instance count to reach.
    pub scale_to: u32,
    /// Which checks gate availability of started instances.
    pub checks: Checks,
    /// Which instance goes first among equals.
    pub kill_selection: KillSelection,
}

/// The next move of a `ScaleApplication` of one app (also `StopApplication`, with
/// `scale_to = 0`).
///
/// `sentenced` are instances the user named for killing (they go first, whatever the count;
/// ids no longer observed are already gone). `baseline` are the instances that existed when the
/// action began: the action waits for every instance *not* in it to become available, as
/// Marathon's `TaskStartActor` waits for the instances it started.
pub fn scale_step(
    spec: &ScaleSpec,
    instances: &[InstanceView],
    sentenced: &BTreeSet<InstanceId>,
    baseline: &BTreeSet<InstanceId>,
) -> Result<Decision, UpgradeError> {
    check_count(spec.scale_to)?;
    check_unique(instances)?;
    let active: Vec<&InstanceView> = instances.iter().filter(|i| i.state != InstanceState::Killing).collect();
    let (named, others): (Vec<&InstanceView>, Vec<&InstanceView>) =
        active.iter().copied().partition(|i| sentenced.contains(&i.id));
    let kill_count = active.len().saturating_sub(spec.scale_to as usize).max(named.len());
    let kill: Vec<InstanceId> = named
        .into_iter()
        .chain(kill_order(&others, spec.checks, spec.kill_selection))
        .take(kill_count)
        .map(|i| i.id.clone())
        .collect();
    let kept = count_u32(active.iter()).saturating_sub(count_u32(kill.iter()));
    let start = spec.scale_to.saturating_sub(kept);
    let nothing_killing = instances.iter().all(|i| i.state != InstanceState::Killing);
    let started_are_available =
        active.iter().filter(|i| !baseline.contains(&i.id)).all(|i| spec.checks.is_available(i));
    let done = kill.is_empty() && start == 0 && nothing_killing && started_are_available;
    Ok(Decision { start, kill, done })
}

/// The result of `DELETE /v2/apps/{id}/tasks?scale=true` (and `POST /v2/tasks/delete?scale=true`)
/// for one app: the new instance count and the instances to kill while scaling to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillAndScale {
    /// The app's instance count after the call.
    pub instances: u32,
    /// The instances the scale action must kill first.
    pub sentenced: BTreeSet<InstanceId>,
}

/// Kill the named instances and lower the app's instance count by as many of them as are
/// active and not already being killed (never below zero), as Marathon's `TaskKiller` does.
/// A name that is not an instance of the app is an error (Marathon answers 404/400).
pub fn kill_and_scale(
    app_instances: u32,
    instances: &[InstanceView],
    named: &BTreeSet<InstanceId>,
) -> Result<KillAndScale, UpgradeError> {
    check_unique(instances)?;
    let by_id: BTreeMap<&InstanceId, &InstanceView> = instances.iter().map(|i| (&i.id, i)).collect();
    if let Some(unknown) = named.iter().find(|id| !by_id.contains_key(id)) {
        return Err(UpgradeError::UnknownInstance(unknown.clone()));
    }
    let newly_killed =
        count_u32(named.iter().filter(|id| by_id.get(id).is_some_and(|i| i.state != InstanceState::Killing)));
    Ok(KillAndScale { instances: app_instances.saturating_sub(newly_killed), sentenced: named.clone() })
}

/// Instances in the order they should be killed: staged before running, unavailable before
/// available, then by the kill selection on the staged time, then by id (so the order is total
/// and does not depend on the order of the observation).
pub fn kill_order<'a>(
    instances: &[&'a InstanceView],
    checks: Checks,
    kill_selection: KillSelection,
) -> Vec<&'a InstanceView> {
    let mut ordered = instances.to_vec();
    ordered.sort_by(|a, b| {
        let rank = |i: &InstanceView| (i.state != InstanceState::Staged, checks.is_available(i));
        let by_age = match kill_selection {
            KillSelection::YoungestFirst => b.staged_at_ms.cmp(&a.staged_at_ms),
            KillSelection::OldestFirst => a.staged_at_ms.cmp(&b.staged_at_ms),
        };
        rank(a).cmp(&rank(b)).then(by_age).then_with(|| a.id.cmp(&b.id))
    });
    ordered
}

/// Old and new instances not being killed.
fn active_by_version(instances: &[InstanceView]) -> (Vec<&InstanceView>, Vec<&InstanceView>) {
    instances.iter().filter(|i| i.state != InstanceState::Killing).partition(|i| i.version == InstanceVersion::Old)
}

fn check_count(count: u32) -> Result<(), UpgradeError> {
    if count > MAX_INSTANCES {
        return Err(UpgradeError::TooManyInstances(u64::from(count)));
    }
    Ok(())
}

fn check_unique(instances: &[InstanceView]) -> Result<(), UpgradeError> {
    let mut seen = BTreeSet::new();
    for instance in instances {
        if !seen.insert(&instance.id) {
            return Err(UpgradeError::DuplicateInstance(instance.id.clone()));
        }
    }
    Ok(())
}

/// A count as `u32`, saturating: observations far beyond [`MAX_INSTANCES`] only make the
/// decisions more conservative (no starts), never wrong arithmetic.
fn count_u32<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).unwrap_or(u32::MAX)
}

//! The launch backoff (Marathon's rate limiter): after an instance fails, new launches of its
//! app wait, longer after each further failure, so a crash-looping app does not churn the
//! cluster.
//!
//! # Rules (Marathon's `RateLimiter`)
//!
//! - Delays are kept per **configuration** ([`ConfigRef`]: run spec id plus the version of its
//!   last configuration change). Scaling keeps the configuration, so it keeps the delay; a new
//!   configuration starts with none, which is how a new version resets the backoff.
//! - The **first failure** starts a delay of `backoffSeconds` (capped at
//!   `maxLaunchDelaySeconds`) counted from the failure; **each further failure** multiplies the
//!   current delay by `backoffFactor` (capped again) and restarts it from that failure. After
//!   the n-th consecutive failure the delay is `backoff × factor^(n−1)`, capped. The product is
//!   computed in nanoseconds and truncated at each step, as Marathon does.
//! - **Progress** (an instance staging, starting or running) restarts the current delay from
//!   now without growing it, so the delay outlives a crash that comes soon after a start.
//! - A delay is **forgotten** once `maxLaunchDelaySeconds` have passed since it last started
//!   (a failure or progress): an app whose instances stay up that long begins again from
//!   `backoffSeconds`. Marathon sweeps every 10 s; here a delay is gone the moment it is
//!   overdue, and [`LaunchDelays::clean_up_overdue`] drops the stored entries.
//! - `DELETE /v2/queue/{app}/delay` and an instance killed because its agent is draining
//!   reset the delay ([`LaunchDelays::reset`]).
//! - Launches are allowed once `now ≥ deadline` (`deadline = start + delay`).
//!
//! Failures are the conditions Marathon rate-limits on: `TASK_FAILED`, `TASK_ERROR`,
//! `TASK_DROPPED`, `TASK_GONE`, `TASK_GONE_BY_OPERATOR` and `TASK_FINISHED` (a service that
//! exits has failed). `TASK_KILLED`, `TASK_KILLING`, `TASK_UNREACHABLE`, `TASK_UNKNOWN` and
//! `TASK_LOST` change nothing (Marathon maps `TASK_LOST` by its reason; Flotilla's agents
//! report `TASK_GONE`/`TASK_UNREACHABLE` instead). Callers feed state *changes* only: a
//! repeated status update is not a second failure.
//!
//! # The `/v2/queue` view
//!
//! [`QueueDelay`]: `timeLeftSeconds` is the whole seconds left (truncated toward zero, never
//! negative) and `overdue` is true when there is no delay or its deadline passed at least a
//! whole second ago — so for the first second after the deadline both are `0`/`false`, as
//! Marathon shows them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::mesos::core::TaskState;

const NANOS_PER_MILLI: u64 = 1_000_000;
const MILLIS_PER_SECOND: u64 = 1_000;

/// An app's backoff settings (`backoffSeconds`, `backoffFactor`, `maxLaunchDelaySeconds`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffStrategy {
    backoff_ns: u64,
    factor: f64,
    max_launch_delay_ns: u64,
}

/// Why a backoff strategy was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum BackoffError {
    #[error("backoffFactor must be a finite number of at least 1 (got {0})")]
    Factor(f64),
    #[error("{field} is too large (got {seconds} s; at most {max} s)")]
    TooLong { field: &'static str, seconds: u64, max: u64 },
}

/// The longest delay a strategy may name, so nanoseconds never overflow (about 584 years fit
/// in a u64; a year is more than any sane backoff).
pub const MAX_BACKOFF_SECONDS: u64 = 365 * 24 * 3600;

impl BackoffStrategy {
    pub fn new(
        backoff_seconds: u64,
        factor: f64,
        max_launch_delay_seconds: u64,
    ) -> Result<BackoffStrategy, BackoffError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(BackoffError::Factor(factor));
        }
        Ok(BackoffStrategy {
            backoff_ns: seconds_to_ns("backoffSeconds", backoff_seconds)?,
            factor,
            max_launch_delay_ns: seconds_to_ns("maxLaunchDelaySeconds", max_launch_delay_seconds)?,
        })
    }

    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The delay a first failure starts.
    fn initial_ns(&self) -> u64 {
        self.backoff_ns.min(self.max_launch_delay_ns)
    }

    /// The delay after one more failure.
    fn increased_ns(&self, current_ns: u64) -> u64 {
        // `as` saturates for floats, so a huge product is simply capped below.
        let multiplied = (current_ns as f64 * self.factor) as u64;
        multiplied.min(self.max_launch_delay_ns)
    }
}

impl Default for BackoffStrategy {
    /// Marathon's defaults: 1 s, ×1.15, at most 300 s.
    fn default() -> BackoffStrategy {
        BackoffStrategy {
            backoff_ns: 1_000 * NANOS_PER_MILLI,
            factor: 1.15,
            max_launch_delay_ns: 300_000 * NANOS_PER_MILLI,
        }
    }
}

fn seconds_to_ns(field: &'static str, seconds: u64) -> Result<u64, BackoffError> {
    if seconds > MAX_BACKOFF_SECONDS {
        return Err(BackoffError::TooLong { field, seconds, max: MAX_BACKOFF_SECONDS });
    }
    Ok(seconds * MILLIS_PER_SECOND * NANOS_PER_MILLI)
}

/// A run spec's configuration: its id and the version of its last configuration change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub run_spec_id: String,
    pub config_version: String,
}

impl ConfigRef {
    pub fn new(run_spec_id: &str, config_version: &str) -> ConfigRef {
        ConfigRef { run_spec_id: run_spec_id.to_owned(), config_version: config_version.to_owned() }
    }
}

/// One configuration's current delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    /// When the delay last (re)started: the last failure or progress.
    pub started_ms: u64,
    pub delay_ns: u64,
    pub max_launch_delay_ns: u64,
}

impl Delay {
    /// When launches may resume (rounded up to the millisecond, so never early).
    pub fn deadline_ms(&self) -> u64 {
        self.started_ms.saturating_add(self.delay_ns.div_ceil(NANOS_PER_MILLI))
    }

    /// When the delay is forgotten: `maxLaunchDelaySeconds` after it last started.
    fn expires_ms(&self) -> u64 {
        self.started_ms.saturating_add(self.max_launch_delay_ns.div_ceil(NANOS_PER_MILLI))
    }

    fn is_forgotten(&self, now_ms: u64) -> bool {
        now_ms > self.expires_ms()
    }
}

/// What an instance's new state means for its configuration's delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceEvent {
    /// It failed: start or grow the delay.
    Failed,
    /// It is launching or running: restart the current delay from now.
    Progressed,
    /// It was killed because its agent is draining: not its fault, reset the delay.
    AgentDraining,
}

impl InstanceEvent {
    /// The event a task state change is, if any (see the module documentation).
    pub fn from_task_state(state: TaskState) -> Option<InstanceEvent> {
        match state {
            TaskState::Failed
            | TaskState::Error
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::GoneByOperator
            | TaskState::Finished => Some(InstanceEvent::Failed),
            TaskState::Staging | TaskState::Starting | TaskState::Running => Some(InstanceEvent::Progressed),
            TaskState::Killing | TaskState::Killed | TaskState::Lost | TaskState::Unreachable | TaskState::Unknown => {
                None
            }
        }
    }
}

/// `/v2/queue`'s `delay` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDelay {
    pub time_left_seconds: u64,
    pub overdue: bool,
}

/// The delays of every configuration (Marathon's `RateLimiter` state), pure: every change
/// takes the time as an argument.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchDelays {
    delays: BTreeMap<ConfigRef, Delay>,
}

impl LaunchDelays {
    pub fn new() -> LaunchDelays {
        LaunchDelays::default()
    }

    /// Applies an instance event of `config`; returns the deadline when a delay is in force
    /// afterwards.
    pub fn on_event(
        &mut self,
        config: &ConfigRef,
        strategy: &BackoffStrategy,
        event: InstanceEvent,
        now_ms: u64,
    ) -> Option<u64> {
        match event {
            InstanceEvent::Failed => Some(self.on_failure(config, strategy, now_ms)),
            InstanceEvent::Progressed => self.on_progress(config, now_ms),
            InstanceEvent::AgentDraining => {
                self.reset(config, now_ms);
                None
            }
        }
    }

    /// An instance of `config` failed: starts the delay at `backoffSeconds`, or grows the
    /// current one by `backoffFactor`; either way from now. Returns the new deadline.
    pub fn on_failure(&mut self, config: &ConfigRef, strategy: &BackoffStrategy, now_ms: u64) -> u64 {
        let delay_ns = match self.current(config, now_ms) {
            Some(current) => strategy.increased_ns(current.delay_ns),
            None => strategy.initial_ns(),
        };
        let delay = Delay { started_ms: now_ms, delay_ns, max_launch_delay_ns: strategy.max_launch_delay_ns };
        self.delays.insert(config.clone(), delay);
        delay.deadline_ms()
    }

    /// An instance of `config` is launching or running: the current delay (if any) restarts
    /// from now at the same length. Returns the new deadline.
    pub fn on_progress(&mut self, config: &ConfigRef, now_ms: u64) -> Option<u64> {
        let current = self.current(config, now_ms)?;
        let restarted = Delay { started_ms: now_ms, ..current };
        self.delays.insert(config.clone(), restarted);
        Some(restarted.deadline_ms())
    }

    /// Drops `config`'s delay (`DELETE /v2/queue/{app}/delay`); returns whether one was in
    /// force. Marathon answers that request 204 whenever the app has instances waiting to
    /// launch, delay or not, and 404 only when it has none: that is the REST layer's check.
    pub fn reset(&mut self, config: &ConfigRef, now_ms: u64) -> bool {
        let had = self.current(config, now_ms).is_some();
        self.delays.remove(config);
        had
    }

    /// Drops every delay of a run spec (it was deleted); returns how many were in force.
    pub fn forget_run_spec(&mut self, run_spec_id: &str, now_ms: u64) -> usize {
        let mut in_force = 0;
        self.delays.retain(|config, delay| {
            let keep = config.run_spec_id != run_spec_id;
            if !keep && !delay.is_forgotten(now_ms) {
                in_force += 1;
            }
            keep
        });
        in_force
    }

    /// Drops the delays forgotten by now; returns their configurations.
    pub fn clean_up_overdue(&mut self, now_ms: u64) -> Vec<ConfigRef> {
        let overdue: Vec<ConfigRef> =
            self.delays.iter().filter(|(_, d)| d.is_forgotten(now_ms)).map(|(c, _)| c.clone()).collect();
        for config in &overdue {
            self.delays.remove(config);
        }
        overdue
    }

    /// `config`'s delay, unless there is none or it is forgotten by now.
    pub fn current(&self, config: &ConfigRef, now_ms: u64) -> Option<Delay> {
        self.delays.get(config).copied().filter(|d| !d.is_forgotten(now_ms))
    }

    /// The deadline to put in a placement demand (`delay_until_ms`).
    pub fn delay_until_ms(&self, config: &ConfigRef, now_ms: u64) -> Option<u64> {
        self.current(config, now_ms).map(|d| d.deadline_ms())
    }

    /// Whether `config` may launch at `now_ms`.
    pub fn launch_allowed(&self, config: &ConfigRef, now_ms: u64) -> bool {
        self.delay_until_ms(config, now_ms).is_none_or(|deadline| deadline <= now_ms)
    }

    /// `/v2/queue`'s `delay` for `config` at `now_ms`.
    pub fn queue_delay(&self, config: &ConfigRef, now_ms: u64) -> QueueDelay {
        queue_delay(self.delay_until_ms(config, now_ms), now_ms)
    }
}

/// `/v2/queue`'s `delay` for a deadline: whole seconds left, truncated toward zero; overdue
/// without a deadline or once it passed at least a whole second ago.
pub fn queue_delay(deadline_ms: Option<u64>, now_ms: u64) -> QueueDelay {
    let Some(deadline) = deadline_ms else {
        return QueueDelay { time_left_seconds: 0, overdue: true };
    };
    let left_ms = i128::from(deadline) - i128::from(now_ms);
    // Integer division truncates toward zero, like `FiniteDuration.toSeconds`.
    let left_seconds = left_ms / i128::from(MILLIS_PER_SECOND);
    QueueDelay { time_left_seconds: u64::try_from(left_seconds.max(0)).unwrap_or(u64::MAX), overdue: left_seconds < 0 }
}

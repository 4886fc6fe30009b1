//! Supervisor flags and the restart-relevant half of a child specification.
//!
//! Defaults follow OTP's `supervisor` module exactly: intensity 1 within 5 s, `one_for_one`,
//! `auto_shutdown = never`; workers shut down with a 5,000 ms timeout, supervisors with
//! `infinity`.

use std::fmt;
use std::time::Duration;

use super::backoff::Backoff;

/// A child's identifier within its supervisor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildId {
    /// A child from a static specification, named by the user.
    Named(String),
    /// An instance started by a dynamic (`simple_one_for_one`) supervisor.
    Dynamic(u64),
}

impl From<&str> for ChildId {
    fn from(id: &str) -> Self {
        ChildId::Named(id.to_owned())
    }
}

impl From<String> for ChildId {
    fn from(id: String) -> Self {
        ChildId::Named(id)
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildId::Named(name) => f.write_str(name),
            ChildId::Dynamic(n) => write!(f, "#{n}"),
        }
    }
}

/// When a terminated child is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (not `normal`, `shutdown` or `{shutdown, _}`).
    Transient,
    /// Never restarted, not even when a sibling's death terminates it.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once; its cleanup does not run.
    BrutalKill,
    /// Asked to stop with reason `shutdown`, killed if it has not exited after this long.
    Timeout(Duration),
    /// Asked to stop, waited for without limit. Required for supervisor children.
    Infinity,
}

/// Whether a child is a worker or a supervisor; decides the shutdown default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChildKind {
    #[default]
    Worker,
    Supervisor,
}

impl ChildKind {
    /// OTP's default: 5,000 ms for a worker, `infinity` for a supervisor.
    pub fn default_shutdown(self) -> Shutdown {
        match self {
            ChildKind::Worker => Shutdown::Timeout(Duration::from_millis(5_000)),
            ChildKind::Supervisor => Shutdown::Infinity,
        }
    }
}

/// The parts of a child specification that restart decisions depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildMeta {
    pub restart: Restart,
    pub shutdown: Shutdown,
    pub kind: ChildKind,
    pub significant: bool,
}

impl ChildMeta {
    /// A permanent child of this kind with OTP's default shutdown.
    pub fn new(kind: ChildKind) -> Self {
        ChildMeta { restart: Restart::Permanent, shutdown: kind.default_shutdown(), kind, significant: false }
    }
}

/// Which children are restarted when one terminates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Only the terminated child.
    #[default]
    OneForOne,
    /// All children: the others are terminated, then all are restarted.
    OneForAll,
    /// The terminated child and every child started after it.
    RestForOne,
    /// Every child is a dynamic instance of one template (OTP's `simple_one_for_one`).
    SimpleOneForOne,
}

/// When a supervisor shuts itself down because significant children ended by themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoShutdown {
    #[default]
    Never,
    AnySignificant,
    AllSignificant,
}

/// A supervisor's flags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupervisorFlags {
    pub strategy: Strategy,
    /// At most this many restarts within `period` (MaxR).
    pub intensity: u32,
    /// The sliding window for `intensity` (MaxT).
    pub period: Duration,
    pub auto_shutdown: AutoShutdown,
    /// Extension beyond OTP: delay restarts exponentially, with jitter.
    pub backoff: Option<Backoff>,
}

impl Default for SupervisorFlags {
    fn default() -> Self {
        SupervisorFlags {
            strategy: Strategy::OneForOne,
            intensity: 1,
            period: Duration::from_secs(5),
            auto_shutdown: AutoShutdown::Never,
            backoff: None,
        }
    }
}

impl SupervisorFlags {
    pub fn strategy(strategy: Strategy) -> Self {
        SupervisorFlags { strategy, ..Self::default() }
    }

    pub fn with_intensity(mut self, intensity: u32, period: Duration) -> Self {
        self.intensity = intensity;
        self.period = period;
        self
    }

    pub fn with_auto_shutdown(mut self, auto_shutdown: AutoShutdown) -> Self {
        self.auto_shutdown = auto_shutdown;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

/// A child specification that OTP would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("duplicate child id {0}")]
    DuplicateId(ChildId),
    #[error("child {0} is significant but the supervisor's auto_shutdown is never")]
    SignificantWithoutAutoShutdown(ChildId),
    #[error("child {0} is significant and permanent; only transient or temporary children may be significant")]
    SignificantPermanent(ChildId),
    #[error("the period of a supervisor must be positive")]
    ZeroPeriod,
    #[error("a simple_one_for_one supervisor has exactly one child template, got {0}")]
    TemplateCount(usize),
}

/// Checks one child against the supervisor's flags.
pub fn validate_child(flags: &SupervisorFlags, id: &ChildId, meta: &ChildMeta) -> Result<(), SpecError> {
    if meta.significant {
        if flags.auto_shutdown == AutoShutdown::Never {
            return Err(SpecError::SignificantWithoutAutoShutdown(id.clone()));
        }
        if meta.restart == Restart::Permanent {
            return Err(SpecError::SignificantPermanent(id.clone()));
        }
    }
    Ok(())
}

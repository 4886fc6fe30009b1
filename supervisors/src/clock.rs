//! The `Clock` seam: every node reads time through one injected clock.
//!
//! [`TokioClock`] follows tokio's clock, so under a runtime started with paused time it is
//! virtual and deterministic (the simulation's clock), and otherwise it is real. [`ManualClock`]
//! is moved by hand, for tests of code that reads time but never sleeps. Both support a skew,
//! which the chaos actor uses to model a node whose clock runs ahead or behind.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::time::Time;

/// A node's source of time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since the clock's origin.
    fn now(&self) -> Time;

    /// Wall-clock time as milliseconds since the Unix epoch, for timestamps shown to users.
    /// Never use it for timeouts or ordering: it can jump.
    fn wall_millis(&self) -> u64;
}

/// A signed offset applied on top of a clock, in nanoseconds.
#[derive(Debug, Default)]
struct Skew(AtomicI64);

impl Skew {
    fn apply(&self, base: Duration) -> Duration {
        let skew = self.0.load(Ordering::Relaxed);
        if skew >= 0 {
            base.saturating_add(Duration::from_nanos(skew.unsigned_abs()))
        } else {
            base.saturating_sub(Duration::from_nanos(skew.unsigned_abs()))
        }
    }

    fn set(&self, nanos: i64) {
        self.0.store(nanos, Ordering::Relaxed);
    }
}

/// tokio's clock: real normally, virtual under `start_paused`.
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin_millis: u64,
    skew: Skew,
}

impl TokioClock {
    /// A clock whose wall time starts at the real current time.
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::with_wall_origin(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX))
    }

    /// A clock whose wall time starts at a fixed instant: simulations use it so that wall
    /// timestamps are reproducible too.
    pub fn with_wall_origin(wall_origin_millis: u64) -> Self {
        TokioClock { origin: tokio::time::Instant::now(), wall_origin_millis, skew: Skew::default() }
    }

    /// Shifts this clock by `nanos` (positive: ahead).
    pub fn set_skew_nanos(&self, nanos: i64) {
        self.skew.set(nanos);
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Time {
        Time::from_duration(self.skew.apply(self.origin.elapsed()))
    }

    fn wall_millis(&self) -> u64 {
        let since = self.now().since_origin().as_millis();
        self.wall_origin_millis.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
    skew: Skew,
    wall_origin_millis: Mutex<u64>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn set_skew_nanos(&self, nanos: i64) {
        self.skew.set(nanos);
    }

    pub fn set_wall_origin_millis(&self, millis: u64) {
        *self.wall_origin_millis.lock().unwrap_or_else(|e| e.into_inner()) = millis;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time::from_duration(self.skew.apply(Duration::from_nanos(self.nanos.load(Ordering::Relaxed))))
    }

    fn wall_millis(&self) -> u64 {
        let origin = *self.wall_origin_millis.lock().unwrap_or_else(|e| e.into_inner());
        origin.saturating_add(u64::try_from(self.now().since_origin().as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_honours_skew() {
        let clock = ManualClock::new();
        assert_eq!(clock.now(), Time::ZERO);
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.now().since_origin(), Duration::from_millis(5));
        clock.set_skew_nanos(-10_000_000);
        assert_eq!(clock.now(), Time::ZERO, "a skew never takes time below the origin");
        clock.set_skew_nanos(1_000_000);
        assert_eq!(clock.now().since_origin(), Duration::from_millis(6));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_is_virtual_under_paused_time() {
        let clock = TokioClock::with_wall_origin(1_000);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now().since_origin(), Duration::from_secs(3600));
        assert_eq!(clock.wall_millis(), 1_000 + 3_600_000);
    }
}

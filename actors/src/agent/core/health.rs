//! Turning a task's probe results into health (Mesos's health checker, Marathon's rules):
//!
//! - The first probe starts `delay_ms` after the task; each next one `interval_ms` after the
//!   previous one ended, so a slow probe never overlaps the next.
//! - Until the first success, failures within `grace_period_ms` of the task's start do not
//!   count: a task gets its grace period to come up. After one success the grace is over.
//! - A success resets the count of failures in a row; a counted failure adds one.
//! - Health is reported when it changes: the first success (healthy), the first counted
//!   failure after a success or before any (unhealthy), a success after failures (healthy).
//! - With `max_consecutive_failures` n > 0, the n-th counted failure in a row kills the task.
//! - An ignored result (an HTTP 1xx with `ignore_1xx`) changes nothing.

use crate::mesos::core::health::HealthCheck;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Passed,
    /// Why it failed (a refused connection, a status, an exit code, a timeout).
    Failed(String),
    Ignored,
}

/// What the agent must do after a probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The task's health changed to this: send a status update carrying it.
    pub report: Option<bool>,
    /// Kill the task, with this message.
    pub kill: Option<String>,
}

/// One task's health, fed with probe results.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    interval_ms: u64,
    grace_until_ms: u64,
    max_consecutive_failures: u32,
    next_probe_ms: u64,
    failures_in_a_row: u32,
    passed_once: bool,
    healthy: Option<bool>,
}

impl HealthTracker {
    /// A tracker for a task that started (or was re-adopted) at `started_ms`.
    pub fn new(check: &HealthCheck, started_ms: u64) -> HealthTracker {
        HealthTracker {
            interval_ms: check.interval_ms,
            grace_until_ms: started_ms.saturating_add(check.grace_period_ms),
            max_consecutive_failures: check.max_consecutive_failures,
            next_probe_ms: started_ms.saturating_add(check.delay_ms),
            failures_in_a_row: 0,
            passed_once: false,
            healthy: None,
        }
    }

    /// When the next probe is due.
    pub fn next_probe_ms(&self) -> u64 {
        self.next_probe_ms
    }

    /// The health last reported (`None` before the first).
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// Takes the result of the probe that ended at `now_ms`.
    pub fn record(&mut self, now_ms: u64, result: ProbeResult) -> Verdict {
        self.next_probe_ms = now_ms.saturating_add(self.interval_ms);
        match result {
            ProbeResult::Ignored => Verdict::default(),
            ProbeResult::Passed => {
                self.failures_in_a_row = 0;
                self.passed_once = true;
                Verdict { report: self.change_to(true), kill: None }
            }
            ProbeResult::Failed(_) if !self.passed_once && now_ms < self.grace_until_ms => Verdict::default(),
            ProbeResult::Failed(cause) => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                let report = self.change_to(false);
                let limit = self.max_consecutive_failures;
                let kill = (limit > 0 && self.failures_in_a_row >= limit).then(|| {
                    format!("Task killed after {} consecutive failed health checks; the last: {cause}", limit)
                });
                Verdict { report, kill }
            }
        }
    }

    fn change_to(&mut self, healthy: bool) -> Option<bool> {
        (self.healthy != Some(healthy)).then(|| {
            self.healthy = Some(healthy);
            healthy
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesos::core::health::Probe;

    fn check(grace_ms: u64, max: u32) -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp { port: 80 },
            delay_ms: 100,
            interval_ms: 1_000,
            timeout_ms: 500,
            grace_period_ms: grace_ms,
            max_consecutive_failures: max,
        }
    }

    fn failed() -> ProbeResult {
        ProbeResult::Failed("connection refused".into())
    }

    #[test]
    fn probes_start_after_the_delay_and_follow_the_interval_from_the_previous_end() {
        let mut tracker = HealthTracker::new(&check(0, 3), 5_000);
        assert_eq!(tracker.next_probe_ms(), 5_100);
        tracker.record(5_400, ProbeResult::Passed);
        assert_eq!(tracker.next_probe_ms(), 6_400);
    }

    #[test]
    fn failures_in_the_grace_period_do_not_count_until_the_first_success() {
        let mut tracker = HealthTracker::new(&check(10_000, 1), 0);
        assert_eq!(tracker.record(5_000, failed()), Verdict::default(), "within the grace period");
        assert_eq!(tracker.healthy(), None);
        assert_eq!(tracker.record(6_000, ProbeResult::Passed).report, Some(true));
        // After a success the grace is over: the next failure counts and, at 1, kills.
        let verdict = tracker.record(7_000, failed());
        assert_eq!(verdict.report, Some(false));
        assert!(verdict.kill.as_deref().is_some_and(|m| m.contains("connection refused")), "{verdict:?}");
    }

    #[test]
    fn failures_after_the_grace_period_count_without_a_success() {
        let mut tracker = HealthTracker::new(&check(1_000, 2), 0);
        assert_eq!(tracker.record(2_000, failed()), Verdict { report: Some(false), kill: None });
        let verdict = tracker.record(3_000, failed());
        assert_eq!(verdict.report, None, "already reported unhealthy");
        assert!(verdict.kill.is_some(), "the second failure in a row kills");
    }

    #[test]
    fn a_success_resets_the_count_and_reports_the_recovery() {
        let mut tracker = HealthTracker::new(&check(0, 3), 0);
        tracker.record(1_000, ProbeResult::Passed);
        tracker.record(2_000, failed());
        tracker.record(3_000, failed());
        assert_eq!(tracker.failures_in_a_row(), 2);
        assert_eq!(tracker.record(4_000, ProbeResult::Passed).report, Some(true));
        assert_eq!(tracker.failures_in_a_row(), 0);
        assert_eq!(tracker.record(5_000, failed()).kill, None, "one failure after the reset");
    }

    #[test]
    fn zero_failures_allowed_never_kills_and_ignored_results_change_nothing() {
        let mut tracker = HealthTracker::new(&check(0, 0), 0);
        for at in 1..50 {
            assert_eq!(tracker.record(at * 1_000, failed()).kill, None);
        }
        let before = tracker.failures_in_a_row();
        assert_eq!(tracker.record(60_000, ProbeResult::Ignored), Verdict::default());
        assert_eq!(tracker.failures_in_a_row(), before);
        assert_eq!(tracker.next_probe_ms(), 61_000, "the next probe still waits an interval");
    }
}

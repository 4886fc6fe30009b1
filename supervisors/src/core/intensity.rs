//! The restart intensity window: at most MaxR restarts within MaxT.

use std::collections::VecDeque;
use std::time::Duration;

use super::time::Time;

/// Restarts within the sliding period, oldest first.
#[derive(Clone, Debug)]
pub struct RestartWindow {
    intensity: u32,
    period: Duration,
    restarts: VecDeque<Time>,
}

impl RestartWindow {
    pub fn new(intensity: u32, period: Duration) -> Self {
        // The deque never holds more than `intensity + 1` entries; cap the eager
        // allocation so a huge MaxR (benchmarks use 100,000) costs nothing up front.
        let capacity = (intensity as usize).saturating_add(1).min(64);
        RestartWindow { intensity, period, restarts: VecDeque::with_capacity(capacity) }
    }

    /// Records a restart at `now`. Returns false when this restart exceeds the intensity,
    /// in which case the supervisor must shut down.
    ///
    /// Like OTP, a restart exactly `period` old still counts; older ones are forgotten.
    pub fn record(&mut self, now: Time) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_since(oldest) > self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity as usize
    }

    /// Restarts currently inside the window.
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn exactly_max_r_restarts_are_allowed_within_the_period() {
        let mut window = RestartWindow::new(3, Duration::from_secs(5));
        assert!(window.record(at(0)));
        assert!(window.record(at(1)));
        assert!(window.record(at(2)));
        assert!(!window.record(at(3)), "the fourth restart within 5 s exceeds MaxR = 3");
    }

    #[test]
    fn zero_intensity_refuses_the_first_restart() {
        let mut window = RestartWindow::new(0, Duration::from_secs(5));
        assert!(!window.record(at(0)));
    }

    #[test]
    fn restarts_older_than_the_period_do_not_count() {
        let mut window = RestartWindow::new(1, Duration::from_secs(5));
        assert!(window.record(at(0)));
        assert!(window.record(at(5_001)));
        assert!(!window.record(at(10_000)), "two restarts within 5 s");
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn a_restart_exactly_one_period_old_still_counts() {
        let mut window = RestartWindow::new(1, Duration::from_secs(5));
        assert!(window.record(at(0)));
        assert!(!window.record(at(5_000)));
    }
}

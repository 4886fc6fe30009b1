//! Failure detection: is a peer still there, judged only from when its heartbeats arrive.
//!
//! # The model
//!
//! A [`FailureDetector`] watches one peer. The shell feeds it every heartbeat it receives
//! ([`FailureDetector::heartbeat`]) and asks, at any time, how suspicious the silence since the
//! last one is ([`FailureDetector::phi`]) and whether the peer still counts as available
//! ([`FailureDetector::is_available`]). Two policies are offered by [`DetectorConfig`]:
//!
//! - **Phi accrual** (Hayashibara et al., 2004, as in Akka and Cassandra). The detector keeps a
//!   bounded window of inter-arrival intervals, models the next interval as a normal
//!   distribution with their mean and standard deviation, and reports
//!   `phi = -log10(P(the heartbeat is still to come after this much silence))`. A phi of 8 means
//!   "were the peer alive, a silence this long happens once in 10^8". The threshold therefore
//!   reads as a false-positive rate rather than a fixed time, and the detector adapts: a peer
//!   on a jittery link is given more slack than one on a steady link, without retuning.
//! - **Timeout**: the peer is lost once `after` has passed without a heartbeat. Simple and
//!   predictable; phi is then 0 before the deadline and `+inf` from it on.
//!
//! # Choices, and why
//!
//! - The normal CDF is approximated by the logistic function Akka uses,
//!   `F(y) ≈ 1 / (1 + e^-(1.5976 y + 0.070566 y^3))` with `y = (t - mean) / std_dev`, so
//!   `phi = log10(1 + e^z)` with `z = 1.5976 y + 0.070566 y^3`. It is evaluated as a softplus
//!   (`max(z, 0) + ln(1 + e^-|z|)`), which never overflows, so a long silence gives a large
//!   finite phi rather than `inf` or NaN. Phi is capped at [`PHI_CAP`] all the same.
//! - The standard deviation is never below `min_std_dev`, so a perfectly regular peer (zero
//!   variance) neither divides by zero nor becomes suspect a microsecond late.
//! - `acceptable_pause` is added to the mean: the slack for a known pause (a GC, a stalled
//!   scheduler) that should not count as failure.
//! - The session start counts as the first heartbeat, and the history is seeded, as in Akka,
//!   with two intervals `first_heartbeat_estimate ± first_heartbeat_estimate / 4`, so the
//!   detector works before real samples arrive. The seeds age out like any other sample.
//! - Intervals are kept as whole nanoseconds with exact integer running sums, so the mean and
//!   variance are exact and the same history always gives the same phi.
//! - [`FailureDetector::suspicion_deadline`] tells the shell when to look again, so it arms one
//!   timer per heartbeat instead of polling. It is found by bisection over whole nanoseconds
//!   on the very function `is_available` uses, so the two agree: `is_available` holds just
//!   before the deadline and fails at it (exactly, up to the float rounding of phi, which moves
//!   the boundary by at most a few nanoseconds; the tests allow 1 ms).
//!
//! # Limits
//!
//! - The history holds at most `max_samples` intervals, itself at most [`MAX_SAMPLES_LIMIT`].
//! - Every configured duration is at most [`MAX_DURATION`], and a recorded interval longer than
//!   that is recorded as [`MAX_DURATION`]: a longer gap says nothing more, and the bound keeps
//!   the integer sums far from overflow.
//!
//! [`FailureDetector::new`] never fails: it clamps an out-of-range configuration into range
//! ([`DetectorConfig::sanitized`]). A shell that reads configuration from a user should call
//! [`DetectorConfig::validate`] first to report the mistake instead.

use std::collections::VecDeque;
use std::time::Duration;

use flotilla_supervisors::Time;
use serde::{Deserialize, Serialize};

/// The default phi threshold: a false-positive rate of about one in 10^8 per check.
pub const DEFAULT_THRESHOLD: f64 = 8.0;
/// The default number of inter-arrival intervals kept.
pub const DEFAULT_MAX_SAMPLES: usize = 200;
/// The default floor of the standard deviation.
pub const DEFAULT_MIN_STD_DEV: Duration = Duration::from_millis(100);
/// The default heartbeat interval of [`DetectorConfig::default`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The smallest threshold accepted: below it a peer would be suspect almost at once.
pub const MIN_THRESHOLD: f64 = 0.01;
/// The largest threshold accepted, kept well below [`PHI_CAP`] so the cap never decides.
pub const MAX_THRESHOLD: f64 = 100.0;
/// Phi never exceeds this (for phi accrual): a probability of 10^-1000 is zero in practice.
pub const PHI_CAP: f64 = 1_000.0;
/// The most intervals any detector keeps.
pub const MAX_SAMPLES_LIMIT: usize = 10_000;
/// The longest configured duration, and the longest interval recorded.
pub const MAX_DURATION: Duration = Duration::from_secs(3_600);
/// The smallest `min_std_dev`, `first_heartbeat_estimate` and timeout: zero would make the
/// model degenerate.
pub const MIN_DURATION: Duration = Duration::from_micros(1);

/// Coefficients of Akka's logistic approximation of the normal CDF.
const LOGISTIC_LINEAR: f64 = 1.5976;
const LOGISTIC_CUBIC: f64 = 0.070566;
/// Standard deviations past the mean at which phi is certainly capped (`z(64) ≈ 18_600`,
/// and `PHI_CAP * ln 10 ≈ 2_303`): the upper end of the deadline search.
const SEARCH_STD_DEVS: f64 = 64.0;

/// How a detector decides that a peer is lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DetectorConfig {
    /// Phi-accrual (Hayashibara et al., as in Akka and Cassandra).
    PhiAccrual {
        /// The peer is unavailable once phi reaches this.
        threshold: f64,
        /// How many inter-arrival intervals are kept.
        max_samples: usize,
        /// The floor of the standard deviation.
        min_std_dev: Duration,
        /// Slack added to the mean interval, for pauses that are not failures.
        acceptable_pause: Duration,
        /// The expected interval before any is measured; normally the heartbeat interval.
        first_heartbeat_estimate: Duration,
    },
    /// Declare the peer lost after `after` without a heartbeat.
    Timeout { after: Duration },
}

impl DetectorConfig {
    /// Phi accrual with the defaults, for a peer that sends a heartbeat every
    /// `heartbeat_interval`.
    pub fn phi_accrual(heartbeat_interval: Duration) -> Self {
        DetectorConfig::PhiAccrual {
            threshold: DEFAULT_THRESHOLD,
            max_samples: DEFAULT_MAX_SAMPLES,
            min_std_dev: DEFAULT_MIN_STD_DEV,
            acceptable_pause: Duration::ZERO,
            first_heartbeat_estimate: heartbeat_interval,
        }
    }

    /// A plain timeout.
    pub fn timeout(after: Duration) -> Self {
        DetectorConfig::Timeout { after }
    }

    /// Whether every value is in range; the first one that is not.
    pub fn validate(&self) -> Result<(), DetectorConfigError> {
        match *self {
            DetectorConfig::PhiAccrual {
                threshold,
                max_samples,
                min_std_dev,
                acceptable_pause,
                first_heartbeat_estimate,
            } => {
                if !(MIN_THRESHOLD..=MAX_THRESHOLD).contains(&threshold) {
                    return Err(DetectorConfigError::Threshold(threshold));
                }
                if !(1..=MAX_SAMPLES_LIMIT).contains(&max_samples) {
                    return Err(DetectorConfigError::MaxSamples(max_samples));
                }
                check_duration("min_std_dev", min_std_dev, MIN_DURATION)?;
                check_duration("acceptable_pause", acceptable_pause, Duration::ZERO)?;
                check_duration("first_heartbeat_estimate", first_heartbeat_estimate, MIN_DURATION)
            }
            DetectorConfig::Timeout { after } => check_duration("after", after, MIN_DURATION),
        }
    }

    /// The configuration with every value clamped into its valid range (a NaN threshold
    /// becomes [`DEFAULT_THRESHOLD`]). A valid configuration is returned unchanged.
    pub fn sanitized(&self) -> Self {
        match *self {
            DetectorConfig::PhiAccrual {
                threshold,
                max_samples,
                min_std_dev,
                acceptable_pause,
                first_heartbeat_estimate,
            } => DetectorConfig::PhiAccrual {
                threshold: if threshold.is_nan() {
                    DEFAULT_THRESHOLD
                } else {
                    threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD)
                },
                max_samples: max_samples.clamp(1, MAX_SAMPLES_LIMIT),
                min_std_dev: min_std_dev.clamp(MIN_DURATION, MAX_DURATION),
                acceptable_pause: acceptable_pause.min(MAX_DURATION),
                first_heartbeat_estimate: first_heartbeat_estimate.clamp(MIN_DURATION, MAX_DURATION),
            },
            DetectorConfig::Timeout { after } => {
                DetectorConfig::Timeout { after: after.clamp(MIN_DURATION, MAX_DURATION) }
            }
        }
    }
}

impl Default for DetectorConfig {
    /// Phi accrual for a peer heartbeating every second.
    fn default() -> Self {
        DetectorConfig::phi_accrual(DEFAULT_HEARTBEAT_INTERVAL)
    }
}

fn check_duration(field: &'static str, value: Duration, min: Duration) -> Result<(), DetectorConfigError> {
    if (min..=MAX_DURATION).contains(&value) { Ok(()) } else { Err(DetectorConfigError::Duration { field, value }) }
}

/// A [`DetectorConfig`] value out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DetectorConfigError {
    #[error("phi threshold {0} is outside [{MIN_THRESHOLD}, {MAX_THRESHOLD}]")]
    Threshold(f64),
    #[error("max_samples {0} is outside [1, {MAX_SAMPLES_LIMIT}]")]
    MaxSamples(usize),
    #[error("{field} = {value:?} is out of range (at most {MAX_DURATION:?}, and non-zero unless it is a pause)")]
    Duration { field: &'static str, value: Duration },
}

/// The failure detector for one peer.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    /// The configuration in force, after [`DetectorConfig::sanitized`].
    config: DetectorConfig,
    last_heartbeat: Time,
    model: Model,
}

/// The state each policy needs.
#[derive(Clone, Debug)]
enum Model {
    Phi(PhiModel),
    Timeout { after: Duration },
}

#[derive(Clone, Debug)]
struct PhiModel {
    threshold: f64,
    min_std_dev_nanos: f64,
    acceptable_pause_nanos: f64,
    history: History,
}

impl FailureDetector {
    /// A detector whose session starts at `now`, which counts as the first heartbeat.
    /// An out-of-range configuration is clamped into range (see [`DetectorConfig::sanitized`]).
    pub fn new(config: DetectorConfig, now: Time) -> Self {
        let config = config.sanitized();
        let model = match config {
            DetectorConfig::PhiAccrual {
                threshold,
                max_samples,
                min_std_dev,
                acceptable_pause,
                first_heartbeat_estimate,
            } => Model::Phi(PhiModel {
                threshold,
                min_std_dev_nanos: min_std_dev.as_nanos() as f64,
                acceptable_pause_nanos: acceptable_pause.as_nanos() as f64,
                history: History::seeded(max_samples, first_heartbeat_estimate),
            }),
            DetectorConfig::Timeout { after } => Model::Timeout { after },
        };
        FailureDetector { config, last_heartbeat: now, model }
    }

    /// Records a heartbeat received at `now`, and the interval since the previous one. A
    /// heartbeat stamped earlier than the previous one (the shell's clock cannot go back, but
    /// a caller may mix clocks) records a zero interval and keeps the later time.
    pub fn heartbeat(&mut self, now: Time) {
        let interval = now.saturating_since(self.last_heartbeat);
        if let Model::Phi(phi) = &mut self.model {
            phi.history.record(interval);
        }
        self.last_heartbeat = self.last_heartbeat.max(now);
    }

    /// How suspicious the silence since the last heartbeat is at `now`. Phi accrual: a value in
    /// `[0, PHI_CAP]`, never NaN. Timeout: 0 before `after` has passed, `+inf` from then on.
    pub fn phi(&self, now: Time) -> f64 {
        self.phi_after(now.saturating_since(self.last_heartbeat))
    }

    /// Whether the peer still counts as available at `now`: phi is below the threshold
    /// (for a timeout, less than `after` has passed).
    pub fn is_available(&self, now: Time) -> bool {
        self.available_after(now.saturating_since(self.last_heartbeat))
    }

    /// The earliest time at which [`FailureDetector::is_available`] turns false if no further
    /// heartbeat arrives. The shell arms one timer for it and re-arms after each heartbeat.
    pub fn suspicion_deadline(&self) -> Time {
        let silence = match &self.model {
            Model::Timeout { after } => *after,
            Model::Phi(phi) => phi.silence_until_suspect(),
        };
        later(self.last_heartbeat, silence)
    }

    /// When the last heartbeat arrived (initially, the session start).
    pub fn last_heartbeat(&self) -> Time {
        self.last_heartbeat
    }

    /// How many intervals the history holds (always 0 for a timeout).
    pub fn sample_count(&self) -> usize {
        match &self.model {
            Model::Phi(phi) => phi.history.len(),
            Model::Timeout { .. } => 0,
        }
    }

    /// The configuration in force, after clamping.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    fn phi_after(&self, silence: Duration) -> f64 {
        match &self.model {
            Model::Phi(phi) => phi.phi(silence),
            Model::Timeout { after } => {
                if silence < *after {
                    0.0
                } else {
                    f64::INFINITY
                }
            }
        }
    }

    fn available_after(&self, silence: Duration) -> bool {
        match &self.model {
            Model::Phi(phi) => phi.available(silence),
            Model::Timeout { after } => silence < *after,
        }
    }
}

impl PhiModel {
    fn available(&self, silence: Duration) -> bool {
        self.phi(silence) < self.threshold
    }

    fn phi(&self, silence: Duration) -> f64 {
        let mean = self.history.mean_nanos() + self.acceptable_pause_nanos;
        let std_dev = self.history.std_dev_nanos().max(self.min_std_dev_nanos);
        let y = (silence.as_nanos() as f64 - mean) / std_dev;
        let z = y * (LOGISTIC_LINEAR + LOGISTIC_CUBIC * y * y);
        let phi = softplus(z) / std::f64::consts::LN_10;
        // Unreachable with a sanitized config, but a NaN must never reach a decision.
        if phi.is_nan() { PHI_CAP } else { phi.min(PHI_CAP) }
    }

    /// The silence after which phi first reaches the threshold: a bisection over whole
    /// nanoseconds (at most 64 steps) keeping `available(lo)` and `!available(hi)`.
    fn silence_until_suspect(&self) -> Duration {
        let mean = self.history.mean_nanos() + self.acceptable_pause_nanos;
        let std_dev = self.history.std_dev_nanos().max(self.min_std_dev_nanos);
        // `as` saturates: a huge bound becomes u64::MAX nanoseconds, which phi also caps.
        let mut hi = (mean + SEARCH_STD_DEVS * std_dev).ceil() as u64;
        if self.available(Duration::from_nanos(hi)) {
            return Duration::from_nanos(hi);
        }
        let mut lo = 0_u64;
        if !self.available(Duration::from_nanos(lo)) {
            return Duration::ZERO;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.available(Duration::from_nanos(mid)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Duration::from_nanos(hi)
    }
}

/// `ln(1 + e^z)` without overflow for any finite `z`.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `time + duration`, saturating instead of overflowing.
fn later(time: Time, duration: Duration) -> Time {
    Time::from_duration(time.since_origin().saturating_add(duration))
}

/// A bounded window of inter-arrival intervals, in nanoseconds, with exact running sums.
///
/// Each interval is at most [`MAX_DURATION`] (3.6e12 ns) and there are at most
/// [`MAX_SAMPLES_LIMIT`] of them, so `sum_of_squares <= 1.3e29` and the variance numerator
/// `n * sum_of_squares <= 1.3e33`, all far inside `u128`.
#[derive(Clone, Debug)]
struct History {
    intervals: VecDeque<u64>,
    limit: usize,
    sum: u128,
    sum_of_squares: u128,
}

impl History {
    /// The history Akka starts from: `estimate ± estimate / 4`.
    fn seeded(limit: usize, estimate: Duration) -> Self {
        let mut history = History { intervals: VecDeque::new(), limit, sum: 0, sum_of_squares: 0 };
        let quarter = estimate / 4;
        history.record(estimate.saturating_sub(quarter));
        history.record(estimate.saturating_add(quarter));
        history
    }

    fn record(&mut self, interval: Duration) {
        let nanos = clamp_nanos(interval);
        if self.intervals.len() >= self.limit
            && let Some(oldest) = self.intervals.pop_front()
        {
            self.sum -= u128::from(oldest);
            self.sum_of_squares -= square(oldest);
        }
        self.intervals.push_back(nanos);
        self.sum += u128::from(nanos);
        self.sum_of_squares += square(nanos);
    }

    fn len(&self) -> usize {
        self.intervals.len()
    }

    fn mean_nanos(&self) -> f64 {
        match self.intervals.len() {
            0 => 0.0,
            n => self.sum as f64 / n as f64,
        }
    }

    /// The population standard deviation, from the exact integer variance.
    fn std_dev_nanos(&self) -> f64 {
        let n = self.intervals.len() as u128;
        if n == 0 {
            return 0.0;
        }
        // n * Σx² - (Σx)² is exactly n² times the variance, and never negative.
        let numerator = (n * self.sum_of_squares).saturating_sub(self.sum * self.sum);
        (numerator as f64).sqrt() / n as f64
    }
}

fn clamp_nanos(interval: Duration) -> u64 {
    // MAX_DURATION in nanoseconds fits in u64, so the conversion cannot fail.
    u64::try_from(interval.min(MAX_DURATION).as_nanos()).unwrap_or(u64::MAX)
}

fn square(nanos: u64) -> u128 {
    u128::from(nanos) * u128::from(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn at(d: Duration) -> Time {
        Time::from_duration(d)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A detector that has seen `intervals` after starting at 0, and the time of its last beat.
    fn fed(config: DetectorConfig, intervals: impl IntoIterator<Item = Duration>) -> (FailureDetector, Time) {
        let mut now = Time::ZERO;
        let mut detector = FailureDetector::new(config, now);
        for interval in intervals {
            now = now + interval;
            detector.heartbeat(now);
        }
        (detector, now)
    }

    #[test]
    fn defaults_are_akka_like_for_a_one_second_heartbeat() {
        let expected = DetectorConfig::PhiAccrual {
            threshold: 8.0,
            max_samples: 200,
            min_std_dev: ms(100),
            acceptable_pause: Duration::ZERO,
            first_heartbeat_estimate: SECOND,
        };
        assert_eq!(DetectorConfig::default(), expected);
        assert_eq!(DetectorConfig::phi_accrual(SECOND), expected);
        assert_eq!(DetectorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn a_fresh_detector_trusts_the_peer_for_about_one_interval() {
        let detector = FailureDetector::new(DetectorConfig::default(), at(SECOND));
        assert_eq!(detector.last_heartbeat(), at(SECOND));
        assert_eq!(detector.sample_count(), 2, "seeded with estimate ± estimate / 4");
        assert!(detector.is_available(at(SECOND)));
        assert!(detector.is_available(at(2 * SECOND)));
        let deadline = detector.suspicion_deadline();
        assert!(deadline > at(2 * SECOND) && deadline < at(4 * SECOND), "{deadline:?}");
    }

    #[test]
    fn regular_heartbeats_keep_phi_low() {
        let (detector, last) = fed(DetectorConfig::default(), std::iter::repeat_n(SECOND, 300));
        assert!(detector.phi(last) < 0.01, "{}", detector.phi(last));
        // On time, phi is log10(2): the next beat is as likely early as late.
        let on_time = detector.phi(last + SECOND);
        assert!((on_time - 2_f64.log10()).abs() < 1e-9, "{on_time}");
        assert!(detector.is_available(last + SECOND));
    }

    #[test]
    fn silence_crosses_the_threshold_a_few_std_devs_after_the_interval() {
        let (detector, last) = fed(DetectorConfig::default(), std::iter::repeat_n(SECOND, 300));
        // Zero variance, so the 100 ms floor applies; phi = 8 at y ≈ 5.22.
        let silence = detector.suspicion_deadline() - last;
        assert!(silence > ms(1_500) && silence < ms(1_550), "{silence:?}");
        assert!(detector.is_available(last + ms(1_400)));
        assert!(!detector.is_available(last + ms(1_600)));
        let mut previous = 0.0;
        for step in 0..=40 {
            let phi = detector.phi(last + ms(50) * step);
            assert!(phi >= previous && phi.is_finite(), "phi must grow with silence: {phi} after {previous}");
            previous = phi;
        }
        assert!(previous > DEFAULT_THRESHOLD);
    }

    #[test]
    fn jittery_heartbeats_raise_the_deadline() {
        let steady = [SECOND; 100];
        let jittery: Vec<Duration> = (0..100).map(|i| if i % 2 == 0 { ms(500) } else { ms(1_500) }).collect();
        let (steady, steady_last) = fed(DetectorConfig::default(), steady);
        let (jittery, jittery_last) = fed(DetectorConfig::default(), jittery);
        let steady_silence = steady.suspicion_deadline() - steady_last;
        let jittery_silence = jittery.suspicion_deadline() - jittery_last;
        // Same mean; the jittery peer's 500 ms std dev buys it about 2 s more slack.
        assert!(jittery_silence > steady_silence + SECOND, "{jittery_silence:?} vs {steady_silence:?}");
        assert!(jittery.is_available(jittery_last + 3 * SECOND));
        assert!(!steady.is_available(steady_last + 3 * SECOND));
    }

    #[test]
    fn acceptable_pause_postpones_suspicion_by_the_pause() {
        let paused = DetectorConfig::PhiAccrual {
            threshold: DEFAULT_THRESHOLD,
            max_samples: DEFAULT_MAX_SAMPLES,
            min_std_dev: DEFAULT_MIN_STD_DEV,
            acceptable_pause: 3 * SECOND,
            first_heartbeat_estimate: SECOND,
        };
        let (plain, last) = fed(DetectorConfig::default(), [SECOND; 50]);
        let (paused, _) = fed(paused, [SECOND; 50]);
        let shift = paused.suspicion_deadline() - plain.suspicion_deadline();
        assert!(shift.abs_diff(3 * SECOND) < Duration::from_micros(1), "{shift:?}");
        assert!(paused.is_available(last + 4 * SECOND));
    }

    #[test]
    fn timeout_has_an_exact_boundary() {
        let config = DetectorConfig::timeout(ms(1_500));
        let (detector, last) = fed(config, [SECOND, SECOND]);
        assert_eq!(detector.sample_count(), 0);
        assert_eq!(detector.suspicion_deadline(), last + ms(1_500));
        let just_before = last + (ms(1_500) - Duration::from_nanos(1));
        assert!(detector.is_available(just_before));
        assert_eq!(detector.phi(just_before), 0.0);
        assert!(!detector.is_available(last + ms(1_500)));
        assert_eq!(detector.phi(last + ms(1_500)), f64::INFINITY);
    }

    #[test]
    fn a_heartbeat_moves_the_timeout_deadline() {
        let mut detector = FailureDetector::new(DetectorConfig::timeout(SECOND), Time::ZERO);
        assert_eq!(detector.suspicion_deadline(), at(SECOND));
        detector.heartbeat(at(ms(700)));
        assert_eq!(detector.suspicion_deadline(), at(ms(1_700)));
        assert!(detector.is_available(at(ms(1_200))));
    }

    #[test]
    fn samples_are_bounded_by_max_samples() {
        let config = DetectorConfig::PhiAccrual {
            threshold: DEFAULT_THRESHOLD,
            max_samples: 10,
            min_std_dev: DEFAULT_MIN_STD_DEV,
            acceptable_pause: Duration::ZERO,
            first_heartbeat_estimate: SECOND,
        };
        let (detector, last) = fed(config, [ms(200); 25]);
        assert_eq!(detector.sample_count(), 10);
        // The seeds (750 ms, 1250 ms) have aged out: the mean is now the real 200 ms.
        let on_time = detector.phi(last + ms(200));
        assert!((on_time - 2_f64.log10()).abs() < 1e-9, "{on_time}");
    }

    #[test]
    fn zero_variance_and_extreme_silence_give_finite_phi() {
        let config = DetectorConfig::PhiAccrual {
            threshold: DEFAULT_THRESHOLD,
            max_samples: 5,
            min_std_dev: Duration::ZERO,
            acceptable_pause: Duration::ZERO,
            first_heartbeat_estimate: Duration::ZERO,
        };
        let (detector, last) = fed(config, [Duration::ZERO; 10]);
        for silence in [Duration::ZERO, Duration::from_nanos(1), SECOND, Duration::MAX] {
            let phi = detector.phi(later(last, silence));
            assert!((0.0..=PHI_CAP).contains(&phi), "{silence:?}: {phi}");
        }
        assert!(!detector.is_available(last + SECOND));
        assert!(detector.suspicion_deadline() >= last);
    }

    #[test]
    fn clocks_at_their_limits_do_not_panic() {
        let end = Time::from_duration(Duration::MAX);
        let mut detector = FailureDetector::new(DetectorConfig::default(), end);
        detector.heartbeat(Time::ZERO);
        assert_eq!(detector.last_heartbeat(), end, "an earlier heartbeat does not move time back");
        assert_eq!(detector.suspicion_deadline(), end);
        assert!(detector.is_available(end));
        let mut timeout = FailureDetector::new(DetectorConfig::timeout(SECOND), end);
        timeout.heartbeat(end);
        assert_eq!(timeout.suspicion_deadline(), end);
    }

    #[test]
    fn validate_reports_and_new_clamps_bad_values() {
        let bad = |threshold, max_samples, min_std_dev| DetectorConfig::PhiAccrual {
            threshold,
            max_samples,
            min_std_dev,
            acceptable_pause: Duration::ZERO,
            first_heartbeat_estimate: SECOND,
        };
        assert!(matches!(bad(f64::NAN, 10, MS).validate(), Err(DetectorConfigError::Threshold(_))));
        assert_eq!(bad(0.0, 10, MS).validate(), Err(DetectorConfigError::Threshold(0.0)));
        assert_eq!(bad(f64::INFINITY, 10, MS).validate(), Err(DetectorConfigError::Threshold(f64::INFINITY)));
        assert_eq!(bad(8.0, 0, MS).validate(), Err(DetectorConfigError::MaxSamples(0)));
        assert_eq!(bad(8.0, MAX_SAMPLES_LIMIT + 1, MS).validate(), Err(DetectorConfigError::MaxSamples(10_001)));
        let zero_std = bad(8.0, 10, Duration::ZERO).validate();
        assert_eq!(zero_std, Err(DetectorConfigError::Duration { field: "min_std_dev", value: Duration::ZERO }));
        let long = DetectorConfig::timeout(MAX_DURATION + MS).validate();
        assert_eq!(long, Err(DetectorConfigError::Duration { field: "after", value: MAX_DURATION + MS }));
        assert!(DetectorConfig::timeout(Duration::ZERO).validate().is_err());

        let clamped = bad(f64::NAN, usize::MAX, Duration::MAX).sanitized();
        assert_eq!(clamped, bad(DEFAULT_THRESHOLD, MAX_SAMPLES_LIMIT, MAX_DURATION));
        assert_eq!(clamped.validate(), Ok(()));
        assert_eq!(DetectorConfig::default().sanitized(), DetectorConfig::default());
        let detector = FailureDetector::new(bad(-1.0, 0, Duration::ZERO), Time::ZERO);
        assert_eq!(detector.config().validate(), Ok(()));
        assert_eq!(detector.sample_count(), 1, "max_samples clamps to 1");
    }

    /// A heartbeat history: intervals between 0 and 5 s, plus a configuration.
    fn history() -> impl Strategy<Value = (DetectorConfig, Vec<Duration>)> {
        let config = (0.5_f64..20.0, 1_usize..50, 1_u64..500, 0_u64..2_000, 1_u64..3_000).prop_map(
            |(threshold, max_samples, min_std_ms, pause_ms, estimate_ms)| DetectorConfig::PhiAccrual {
                threshold,
                max_samples,
                min_std_dev: ms(min_std_ms),
                acceptable_pause: ms(pause_ms),
                first_heartbeat_estimate: ms(estimate_ms),
            },
        );
        let timeout = (1_u64..10_000).prop_map(|after_ms| DetectorConfig::timeout(ms(after_ms)));
        let intervals = proptest::collection::vec((0_u64..5_000_000).prop_map(Duration::from_micros), 0..60);
        (prop_oneof![4 => config, 1 => timeout], intervals)
    }

    proptest! {
        /// The deadline is where `is_available` flips, to within 1 ms either side (the bisection
        /// is exact to the nanosecond; the margin only absorbs float rounding in phi).
        #[test]
        fn the_deadline_matches_is_available((config, intervals) in history()) {
            let (detector, last) = fed(config, intervals);
            let deadline = detector.suspicion_deadline();
            prop_assert!(deadline >= last);
            if deadline >= last + MS {
                prop_assert!(detector.is_available(Time::from_duration(deadline.since_origin() - MS)));
            }
            prop_assert!(!detector.is_available(deadline + MS));
            prop_assert!(!detector.is_available(deadline));
        }

        #[test]
        fn phi_is_never_nan_and_grows_with_silence((config, intervals) in history(), a in 0_u64..u64::MAX, b in 0_u64..u64::MAX) {
            let (detector, last) = fed(config, intervals);
            let (early, late) = (a.min(b), a.max(b));
            let phi_early = detector.phi(later(last, Duration::from_nanos(early)));
            let phi_late = detector.phi(later(last, Duration::from_nanos(late)));
            prop_assert!(!phi_early.is_nan() && !phi_late.is_nan());
            prop_assert!(phi_early >= 0.0 && phi_early <= phi_late, "{} then {}", phi_early, phi_late);
        }
    }
}

//! A task's health check as a framework asks for it and the agent runs it (Mesos's
//! `HealthCheck`): what to probe, and the timing and failure budget that turn probe results
//! into health. Marathon's `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP` and `COMMAND` checks map
//! onto it directly, and so do its legacy `HTTP`, `HTTPS` and `TCP` checks, which Flotilla
//! also runs on the agent rather than from the scheduler.

use serde::{Deserialize, Serialize};

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// `GET path` on the task's host port; healthy on a status in 200–399.
    Http {
        tls: bool,
        port: u16,
        path: String,
        /// A 1xx answer neither passes nor fails the check (Marathon's `ignoreHttp1xx`).
        ignore_1xx: bool,
    },
    /// A TCP connection to the task's host port; healthy once it is accepted.
    Tcp { port: u16 },
    /// `/bin/sh -c value` in the task's sandbox with its environment; healthy on exit 0.
    Command { value: String },
}

/// A health check with its timing, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// The first probe starts this long after the task (Mesos `delay_seconds`).
    pub delay_ms: u64,
    /// The next probe starts this long after the previous one ended.
    pub interval_ms: u64,
    /// A probe that takes longer fails.
    pub timeout_ms: u64,
    /// Failures this soon after the task started do not count, until the first success
    /// (Marathon `gracePeriodSeconds`).
    pub grace_period_ms: u64,
    /// After this many failures in a row the task is killed; 0 never kills (Marathon
    /// `maxConsecutiveFailures`).
    pub max_consecutive_failures: u32,
}

impl HealthCheck {
    /// Why the agent could not run this check, if it could not: a zero interval would probe
    /// without pause, a zero timeout would fail every probe.
    pub fn problem(&self) -> Option<&'static str> {
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            Some("a health check needs an interval and a timeout above 0")
        } else {
            None
        }
    }

    /// Marathon's defaults (grace 300 s, interval 60 s, timeout 20 s, 3 failures) around a
    /// probe, with Mesos's 15 s delay before the first one.
    pub fn marathon_defaults(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            delay_ms: 15_000,
            interval_ms: 60_000,
            timeout_ms: 20_000,
            grace_period_ms: 300_000,
            max_consecutive_failures: 3,
        }
    }
}

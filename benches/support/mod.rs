//! Shared helpers of the benchmarks: runtimes, percentiles and peer programs.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// The runtimes every benchmark runs on: one worker (everything on one core, the cheap
/// case on this machine) and two workers (wakeups may cross cores, ~44 µs each here).
pub fn runtimes() -> Vec<(&'static str, tokio::runtime::Runtime)> {
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    vec![("current_thread", current), ("multi_thread(2)", multi)]
}

/// The sample at index floor(q * (n - 1)) of the sorted samples, as the Erlang peer does.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).floor() as usize]
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Reads `key=value` from a line such as the Erlang peer prints.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs a peer program and returns its last stdout line, or why it could not run.
pub fn run_peer(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} is not available ({e}); run benches/peers/install.sh"))?;
    if !output.status.success() {
        return Err(format!("{program} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().last().map(str::to_owned).ok_or_else(|| format!("{program} printed nothing"))
}

/// Whether `FLOTILLA_BENCH_QUICK` asks for a short smoke run.
pub fn quick() -> bool {
    std::env::var_os("FLOTILLA_BENCH_QUICK").is_some()
}

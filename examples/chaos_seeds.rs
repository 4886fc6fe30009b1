//! Runs the randomized battery (`flotilla::sim::battery`) over many seeds and prints every
//! failing seed with its violations and fault schedule, then a summary: seeds run, seeds
//! failed, and how much faster than real time the simulation ran.
//!
//! Run: `cargo run --release --example chaos_seeds -- [--seeds N] [--from SEED] [--masters M]
//! [--agents A] [--chaos-secs S]` (defaults: 100 seeds from 1, 3 masters, 5 agents, 60 s).
//! The exit code is 1 when any seed failed. With `RUST_LOG` set (e.g. `RUST_LOG=info`) the
//! nodes' logs go to stderr, to follow one seed's story.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flotilla::sim::{self, BatteryConfig, run_seed};

fn main() -> anyhow::Result<ExitCode> {
    let mut seeds = 100u64;
    let mut from = 1u64;
    let mut config = BatteryConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> anyhow::Result<u64> {
            let text = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            text.parse().map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => seeds = value()?,
            "--from" => from = value()?,
            "--masters" => config.masters = usize::try_from(value()?)?,
            "--agents" => config.agents = usize::try_from(value()?)?,
            "--chaos-secs" => config.chaos = Duration::from_secs(value()?),
            other => anyhow::bail!("unknown argument {other}; see the example's documentation"),
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(SimulatedTime)
            .with_ansi(false)
            .init();
    }
    let wall = Instant::now();
    let mut simulated = Duration::ZERO;
    let mut failed = Vec::new();
    for seed in from..from.saturating_add(seeds) {
        *SEED_START.lock().unwrap_or_else(|poison| poison.into_inner()) = None;
        let report = sim::run(run_seed(seed, &config))?;
        simulated += report.simulated;
        if !report.passed() {
            print!("{report}");
            failed.push(seed);
        }
    }
    let elapsed = wall.elapsed().as_secs_f64();
    println!(
        "{seeds} seeds ({} masters, {} agents, {} s of chaos each): {} failed {failed:?}; \
         {:.0} simulated s in {elapsed:.1} s of wall time ({:.0}x real time)",
        config.masters,
        config.agents,
        config.chaos.as_secs(),
        failed.len(),
        simulated.as_secs_f64(),
        simulated.as_secs_f64() / elapsed
    );
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Log lines carry the simulated time since the seed's first log line (at its start), to line
/// up with the fault schedule (the runtime's clock is paused, so `tokio::time::Instant` is
/// virtual). Cleared before each seed.
struct SimulatedTime;

static SEED_START: std::sync::Mutex<Option<tokio::time::Instant>> = std::sync::Mutex::new(None);

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = tokio::time::Instant::now();
        let start = *SEED_START.lock().unwrap_or_else(|poison| poison.into_inner()).get_or_insert(now);
        write!(w, "{:9.3}s", (now - start).as_secs_f64())
    }
}

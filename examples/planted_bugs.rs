//! Checks the checkers (reliability.md §7.8): plants each bug of
//! `flotilla_supervisors::planted::PlantedBug` in turn, runs the randomized battery from seed 1
//! until a seed reports a violation (at most `--max-seeds`), and prints a table: the bug, the
//! seeds it took to be caught, the wall time, and the violation that caught it. A bug not
//! caught within the limit is a checker too weak to trust; the exit code is then 1.
//!
//! Run: `cargo run --release --features planted-bugs --example planted_bugs -- [--bug NAME]
//! [--max-seeds N] [--masters M]` (defaults: every bug, 1,000 seeds, 3 masters).
//!
//! `temporary-child-restarted` lives in the supervisors, below any cluster: the supervisors'
//! own seeded checker catches it (`cargo test -p flotilla-supervisors --features planted-bugs
//! --test supervision_seeds`), so this battery skips it.

use std::process::ExitCode;
use std::time::Instant;

use flotilla::sim::{self, BatteryConfig, run_seed};
use flotilla_supervisors::planted::{PlantedBug, plant};

struct Args {
    bugs: Vec<PlantedBug>,
    max_seeds: u64,
    config: BatteryConfig,
}

fn parse() -> anyhow::Result<Args> {
    let mut parsed = Args { bugs: PlantedBug::ALL.to_vec(), max_seeds: 1_000, config: BatteryConfig::default() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bug" => {
                let bug = PlantedBug::from_name(&value).ok_or_else(|| {
                    let names: Vec<&str> = PlantedBug::ALL.iter().map(|bug| bug.name()).collect();
                    anyhow::anyhow!("no planted bug named {value}; the bugs are {}", names.join(", "))
                })?;
                parsed.bugs = vec![bug];
            }
            "--max-seeds" => parsed.max_seeds = value.parse()?,
            "--masters" => parsed.config.masters = value.parse()?,
            other => anyhow::bail!("unknown argument {other}; see the example's documentation"),
        }
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<ExitCode> {
    let args = parse()?;
    let mut missed = 0;
    println!("| planted bug | caught at seed | seeds run | wall time | first violation |");
    println!("|---|---|---|---|---|");
    for bug in args.bugs {
        if bug == PlantedBug::TemporaryChildRestarted {
            println!("| {} | (supervisors' seeded checker) | - | - | - |", bug.name());
            continue;
        }
        plant(Some(bug));
        let wall = Instant::now();
        let mut caught = None;
        for seed in 1..=args.max_seeds {
            let report = sim::run(run_seed(seed, &args.config))?;
            if let Some(violation) = report.violations.first() {
                caught = Some((seed, violation.clone()));
                break;
            }
        }
        plant(None);
        let elapsed = wall.elapsed().as_secs_f64();
        match caught {
            Some((seed, violation)) => {
                let brief: String = violation.chars().take(160).collect();
                println!("| {} | {seed} | {seed} | {elapsed:.1} s | {} |", bug.name(), brief.replace('|', "/"));
            }
            None => {
                missed += 1;
                println!("| {} | NOT CAUGHT | {} | {elapsed:.1} s | - |", bug.name(), args.max_seeds);
            }
        }
    }
    Ok(if missed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

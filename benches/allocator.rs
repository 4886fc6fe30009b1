//! Allocation rounds in the shape of Mesos's `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers`,
//! beside the Mesos 0.28 figures of MESOS-4694 (`reference/perf.md` §1.1).
//!
//! The shape: `F` frameworks in one role, `A` agents of `cpus:24;mem:4096;disk:4096;
//! ports:[31000-32000]`, each already running 16 one-cpu tasks of framework `i % F`
//! (`cpus:16;mem:2014;disk:1024` and 16 scattered ports). Every round, each framework declines
//! what it was offered in the previous round with a filter that never expires (Mesos:
//! `refuse_seconds = INT_MAX`), so rounds make offers until every (framework, agent) pair is
//! filtered and the live filters grow by up to `A` per round. Mesos runs `2 × F` rounds; so
//! does this benchmark, up to `FLOTILLA_ALLOC_ROUNDS` (default 400, since 2,000 × 2,000 would
//! otherwise hold 4 million filters, about 6 GB). Only `allocate` is timed; turning offers into
//! filters is the scheduler's side, and dropping a round's offers the caller's.
//!
//! Printed per shape: the first round (no filters yet, so the allocator's own work: every
//! agent offered once), repeated 30 times, p50 and min; then every round of the loop, p50,
//! p99, mean and max, and the filters live at its end. The filters are kept indexed by agent
//! and framework across rounds, as the master keeps them, so a round reads only those its
//! walks meet (see `allocator/core/mod.rs`); where every framework of the role is filtered on
//! an agent (2,000 × 200 after 200 rounds), it reads that agent's filters once.
//!
//! Mesos 0.28 took 2.9 s per round at 2,000 agents × 200 frameworks and 28.2 s at 2,000 × 2,000
//! (MESOS-4694, before its fix); those figures are printed beside ours with the ratio
//! (ours / Mesos). They come from another machine and another decade: compare magnitudes.
//!
//! Run: `cargo bench --bench allocator` (`FLOTILLA_BENCH_QUICK=1`: 20 rounds each;
//! `FLOTILLA_ALLOC_ROUNDS=N` caps the rounds; `FLOTILLA_ALLOC_FRAMEWORKS=2000` runs one shape).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flotilla_actors::allocator::{AgentView, AllocSnapshot, Allocation, Filter, FrameworkView, Offer, allocate};
use flotilla_actors::mesos::core::{Ranges, Resources};
use support::{percentile, quick};

/// (agents, frameworks, Mesos 0.28's seconds per round).
const SHAPES: [(usize, usize, f64); 2] = [(2_000, 200, 2.9), (2_000, 2_000, 28.2)];
const DEFAULT_MAX_ROUNDS: usize = 400;
const ROLE: &str = "*";
const TASKS_PER_AGENT: u64 = 16;

fn agent_total() -> Resources {
    Resources::cpus_mem_disk(24.0, 4096.0, 4096.0).with_ranges("ports", Ranges::single(31_000, 32_000))
}

/// 16 tasks' worth: one cpu each and every other port from 31000, so the free ports are as
/// fragmented as Mesos's randomly picked ones.
fn used_per_agent() -> Resources {
    let ports = Ranges::new((0..TASKS_PER_AGENT).map(|i| (31_000 + 2 * i, 31_000 + 2 * i))).expect("valid ports");
    Resources::cpus_mem_disk(16.0, 2014.0, 1024.0).with_ranges("ports", ports)
}

fn framework_name(i: usize) -> String {
    format!("framework-{i:05}")
}

fn snapshot(agents: usize, frameworks: usize) -> AllocSnapshot {
    let mut snapshot = AllocSnapshot::default();
    for i in 0..frameworks {
        let view =
            FrameworkView { roles: BTreeSet::from([ROLE.to_owned()]), suppressed_roles: BTreeSet::new(), active: true };
        snapshot.frameworks.insert(framework_name(i), view);
    }
    for i in 0..agents {
        let name = format!("agent-{i:05}");
        let view = AgentView {
            hostname: format!("{name}.example"),
            total: agent_total(),
            reserved: BTreeMap::new(),
            active: true,
        };
        snapshot.agents.insert(name.clone(), view);
        snapshot.allocations.push(Allocation {
            framework: framework_name(i % frameworks),
            role: ROLE.to_owned(),
            agent: name,
            resources: used_per_agent(),
        });
    }
    snapshot.min_allocatable =
        vec![Resources::new().with_scalar("cpus", 0.01), Resources::new().with_scalar("mem", 32.0)];
    snapshot
}

struct Figures {
    /// Every round of the loop, sorted.
    samples: Vec<Duration>,
    /// The first round (no filters yet) run `FIRST_ROUND_REPEATS` times, sorted.
    first: Vec<Duration>,
    offers: usize,
    filters: usize,
}

/// One sample of a round is at the mercy of whatever else runs on the machine; the first
/// round, where the allocator's own work (no filters yet) is the whole cost, is repeated.
const FIRST_ROUND_REPEATS: usize = 30;

/// Runs the DeclineOffers loop and times every round's `allocate`.
fn decline_offers(agents: usize, frameworks: usize, rounds: usize) -> Figures {
    let mut snapshot = snapshot(agents, frameworks);
    let mut first: Vec<Duration> = (0..FIRST_ROUND_REPEATS)
        .map(|_| {
            let started = Instant::now();
            let round = std::hint::black_box(allocate(&snapshot, 0, 0));
            let elapsed = started.elapsed();
            // Dropping the offers is the caller's cost, after the clock stopped.
            drop(round);
            elapsed
        })
        .collect();
    first.sort();
    let mut samples = Vec::with_capacity(rounds);
    let mut offers = 0;
    for round in 0..rounds {
        let started = Instant::now();
        let made = allocate(&snapshot, round as u64, round as u64);
        samples.push(started.elapsed());
        offers += made.offers.len();
        for offer in made.offers {
            let Offer { framework, agent, resources, .. } = offer;
            snapshot.filters.add(Filter { framework, agent, resources, until_ms: u64::MAX });
        }
    }
    samples.sort();
    Figures { samples, first, offers, filters: snapshot.filters.len() }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let max_rounds = std::env::var("FLOTILLA_ALLOC_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick() {
        20
    } else {
        DEFAULT_MAX_ROUNDS
    });
    // `FLOTILLA_ALLOC_FRAMEWORKS=2000` runs one shape only.
    let only: Option<usize> = std::env::var("FLOTILLA_ALLOC_FRAMEWORKS").ok().and_then(|s| s.parse().ok());
    for (agents, frameworks, mesos_secs) in SHAPES.into_iter().filter(|shape| only.is_none_or(|f| f == shape.1)) {
        let rounds = (2 * frameworks).min(max_rounds);
        let figures = decline_offers(agents, frameworks, rounds);
        let samples = &figures.samples;
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let (p50, p99) = (millis(percentile(samples, 0.50)), millis(percentile(samples, 0.99)));
        let mesos_ms = mesos_secs * 1e3;
        println!(
            "flotilla allocator decline_offers agents={agents} frameworks={frameworks} rounds={rounds} offers={} \
             filters_at_end={} first_round_p50_ms={:.2} first_round_min_ms={:.2} p50_ms={p50:.2} p99_ms={p99:.2} mean_ms={:.2} max_ms={:.2} \
             mesos_0.28_ms={mesos_ms:.0} ratio_to_mesos mean={:.5}x p99={:.5}x",
            figures.offers,
            figures.filters,
            millis(percentile(&figures.first, 0.50)),
            millis(figures.first[0]),
            millis(mean),
            millis(samples[samples.len() - 1]),
            millis(mean) / mesos_ms,
            p99 / mesos_ms,
        );
    }
}

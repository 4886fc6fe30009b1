//! Shared helpers of the benchmarks: runtimes, percentiles, a counting sink actor and peer
//! programs.
#![allow(dead_code)]

pub mod consensus;

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

/// A message to a [`Sink`]: how many items to expect (and where to report when they have all
/// arrived), or one item.
pub enum SinkMsg<T> {
    Expect(u64, oneshot::Sender<Instant>),
    Item(T),
}

/// Counts items and reports the instant the expected number arrived.
pub struct Sink<T>(std::marker::PhantomData<fn(T)>);

impl<T> Sink<T> {
    pub fn new() -> Self {
        Sink(std::marker::PhantomData)
    }
}

impl<T: Send + 'static> Actor for Sink<T> {
    type Msg = SinkMsg<T>;
    type State = (u64, Option<oneshot::Sender<Instant>>);
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok((0, None))
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Expect(n, done) => *s = (n, Some(done)),
            SinkMsg::Item(item) => {
                black_box(&item);
                s.0 = s.0.saturating_sub(1);
                if s.0 == 0
                    && let Some(done) = s.1.take()
                {
                    let _ = done.send(Instant::now());
                }
            }
        }
        Ok(())
    }
}

/// Times rounds of a request-response loop: `warm` untimed rounds, then `n` timed ones.
///
/// `while rounds.start() { ...; rounds.end(); }`, then `rounds.figures()`.
pub struct Rounds {
    warm: usize,
    total: usize,
    done: usize,
    started: Instant,
    round_started: Instant,
    samples: Vec<Duration>,
}

impl Rounds {
    pub fn new(warm: usize, n: usize) -> Self {
        let now = Instant::now();
        Rounds { warm, total: warm + n, done: 0, started: now, round_started: now, samples: Vec::with_capacity(n) }
    }

    /// Starts the next round; false once every round has run.
    pub fn start(&mut self) -> bool {
        let now = Instant::now();
        if self.done == self.warm {
            self.started = now;
        }
        self.round_started = now;
        self.done < self.total
    }

    pub fn end(&mut self) {
        if self.done >= self.warm {
            self.samples.push(self.round_started.elapsed());
        }
        self.done += 1;
    }

    /// p50 and p99 (µs) and the rate of the timed rounds.
    pub fn figures(mut self) -> (f64, f64, f64) {
        let elapsed = self.started.elapsed();
        self.samples.sort();
        let rate = self.samples.len() as f64 / elapsed.as_secs_f64();
        (micros(percentile(&self.samples, 0.50)), micros(percentile(&self.samples, 0.99)), rate)
    }
}

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

//! Restart latency of a supervised worker, side by side with Erlang/OTP.
//!
//! A `one_for_one` supervisor (intensity 100,000 within 1 s) runs one permanent worker.
//! The worker takes a timestamp and crashes on command; the supervisor restarts it; the new
//! worker takes a timestamp when it handles its first message. The latency is the
//! difference, over 2,000 restarts after 200 warm-up ones. `benches/peers/restart_latency.erl`
//! measures the same thing on OTP and runs in the same invocation.
//!
//! Run: `cargo bench --bench restart_latency` (peers: `benches/peers/install.sh` first).

mod support;

use std::time::{Duration, Instant};

use flotilla_supervisors::{
    ChildSpec, ExitReason, Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorSpec, exit_error,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use support::{field, micros, percentile, quick, run_peer, runtimes};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

const WARMUP: usize = 200;

enum Report {
    Crashed(Instant),
    Ready(Instant, ActorRef<Msg>),
}

enum Msg {
    First,
    Crash,
}

struct Crashy;

impl Actor for Crashy {
    type Msg = Msg;
    type State = UnboundedSender<Report>;
    type Arguments = UnboundedSender<Report>;

    async fn pre_start(&self, _: ActorRef<Msg>, probe: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(probe)
    }

    async fn post_start(&self, myself: ActorRef<Msg>, _: &mut Self::State) -> Result<(), ActorProcessingErr> {
        myself.send_message(Msg::First)?;
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<Msg>, msg: Msg, probe: &mut Self::State) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::First => {
                let _ = probe.send(Report::Ready(Instant::now(), myself));
                Ok(())
            }
            Msg::Crash => {
                let _ = probe.send(Report::Crashed(Instant::now()));
                Err(exit_error(ExitReason::Failed("crash on command".into())))
            }
        }
    }
}

async fn measure(restarts: usize) -> Vec<Duration> {
    let node = Node::builder(NodeId::new("bench").unwrap()).start().await.unwrap();
    let (probe, mut reports) = unbounded_channel();
    let flags = SupervisorFlags::strategy(Strategy::OneForOne).with_intensity(100_000, Duration::from_secs(1));
    let spec = SupervisorSpec::new(flags).child(ChildSpec::worker("crashy", move |_| (Crashy, probe.clone())));
    let sup = Supervisor::spawn(node.clone(), spec, None).await.unwrap();

    let mut samples = Vec::with_capacity(restarts);
    let Some(Report::Ready(_, mut worker)) = reports.recv().await else { panic!("worker never ready") };
    for i in 0..WARMUP + restarts {
        worker.send_message(Msg::Crash).unwrap();
        let Some(Report::Crashed(crashed)) = reports.recv().await else { panic!("no crash report") };
        let Some(Report::Ready(ready, next)) = reports.recv().await else { panic!("no restart") };
        if i >= WARMUP {
            samples.push(ready - crashed);
        }
        worker = next;
    }
    sup.shutdown(Duration::from_secs(5)).await.unwrap();
    node.shutdown();
    samples.sort();
    samples
}

fn main() {
    let restarts = if quick() { 200 } else { 2_000 };
    // The peer runs first so that every runtime's line can carry its ratio to OTP.
    let erlang = match run_peer("escript", &["benches/peers/restart_latency.erl", &restarts.to_string()]) {
        Ok(line) => {
            println!("{line}");
            field(&line, "p50_us").zip(field(&line, "p99_us"))
        }
        Err(why) => {
            println!("erlang peer skipped: {why}");
            None
        }
    };
    for (name, runtime) in runtimes() {
        let samples = runtime.block_on(measure(restarts));
        let (p50, p99) = (micros(percentile(&samples, 0.50)), micros(percentile(&samples, 0.99)));
        let (min, max) = (micros(samples[0]), micros(samples[samples.len() - 1]));
        let ratio = erlang
            .map(|(erl_p50, erl_p99)| format!(" ratio_to_erlang p50={:.2}x p99={:.2}x", p50 / erl_p50, p99 / erl_p99))
            .unwrap_or_default();
        println!(
            "flotilla restart_latency runtime={name} n={restarts} p50_us={p50:.1} p99_us={p99:.1} min_us={min:.1} max_us={max:.1}{ratio}"
        );
    }
}

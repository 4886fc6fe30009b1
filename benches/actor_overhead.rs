//! The cost of supervision on the message path: the same actors, bare and under a
//! supervisor, in the same run.
//!
//! - ping-pong: two actors bounce a message 100,000 times; the round-trip time is reported;
//! - throughput: one actor casts 1,000,000 messages to another; messages per second.
//!
//! Each variant runs 5 times, interleaved, and the medians are compared.
//!
//! Run: `cargo bench --bench actor_overhead`.

mod support;

use std::time::{Duration, Instant};

use flotilla_supervisors::{ChildSpec, Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorSpec};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use support::{Sink, median, quick, runtimes};
use tokio::sync::oneshot;

/// Answers every ping with a pong to the sender named in it.
struct Ponger;

impl Actor for Ponger {
    type Msg = ActorRef<PingerMsg>;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, from: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        from.send_message(PingerMsg::Pong)?;
        Ok(())
    }
}

enum PingerMsg {
    Run(u64, ActorRef<ActorRef<PingerMsg>>, oneshot::Sender<Duration>),
    Pong,
}

#[derive(Default)]
struct PingerState {
    left: u64,
    peer: Option<ActorRef<ActorRef<PingerMsg>>>,
    started: Option<Instant>,
    done: Option<oneshot::Sender<Duration>>,
}

struct Pinger;

impl Actor for Pinger {
    type Msg = PingerMsg;
    type State = PingerState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<PingerMsg>, _: ()) -> Result<PingerState, ActorProcessingErr> {
        Ok(PingerState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<PingerMsg>,
        msg: PingerMsg,
        s: &mut PingerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PingerMsg::Run(rounds, peer, done) => {
                *s = PingerState { left: rounds, peer: Some(peer), started: Some(Instant::now()), done: Some(done) };
            }
            PingerMsg::Pong => s.left -= 1,
        }
        if s.left == 0 {
            if let (Some(started), Some(done)) = (s.started.take(), s.done.take()) {
                let _ = done.send(started.elapsed());
            }
        } else if let Some(peer) = &s.peer {
            peer.send_message(myself)?;
        }
        Ok(())
    }
}

type SinkMsg = support::SinkMsg<()>;

/// Casts `n` items to the sink when asked.
struct Source;

impl Actor for Source {
    type Msg = (u64, ActorRef<SinkMsg>);
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, (n, sink): Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        for _ in 0..n {
            sink.send_message(SinkMsg::Item(()))?;
        }
        Ok(())
    }
}

/// The four actors of one variant.
struct Actors {
    pinger: ActorRef<PingerMsg>,
    ponger: ActorRef<ActorRef<PingerMsg>>,
    source: ActorRef<(u64, ActorRef<SinkMsg>)>,
    sink: ActorRef<SinkMsg>,
    stop: Box<dyn FnOnce()>,
}

async fn bare() -> Actors {
    let (pinger, _) = Actor::spawn(None, Pinger, ()).await.unwrap();
    let (ponger, _) = Actor::spawn(None, Ponger, ()).await.unwrap();
    let (source, _) = Actor::spawn(None, Source, ()).await.unwrap();
    let (sink, _) = Actor::spawn(None, Sink::<()>::new(), ()).await.unwrap();
    let cells: Vec<ActorCell> = vec![pinger.get_cell(), ponger.get_cell(), source.get_cell(), sink.get_cell()];
    Actors { pinger, ponger, source, sink, stop: Box::new(move || cells.iter().for_each(|c| c.stop(None))) }
}

async fn supervised(node: &Node) -> Actors {
    let spec = SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForOne))
        .child(ChildSpec::worker("pinger", |_| (Pinger, ())))
        .child(ChildSpec::worker("ponger", |_| (Ponger, ())))
        .child(ChildSpec::worker("source", |_| (Source, ())))
        .child(ChildSpec::worker("sink", |_| (Sink::<()>::new(), ())));
    let sup = Supervisor::spawn(node.clone(), spec, None).await.unwrap();
    let children = sup.which_children().await.unwrap();
    let cell = |i: usize| children[i].actor.clone().unwrap();
    Actors {
        pinger: cell(0).into(),
        ponger: cell(1).into(),
        source: cell(2).into(),
        sink: cell(3).into(),
        stop: Box::new(move || sup.cell().stop(None)),
    }
}

/// Round-trip time in nanoseconds.
async fn ping_pong(actors: &Actors, rounds: u64) -> f64 {
    let (done, elapsed) = oneshot::channel();
    actors.pinger.send_message(PingerMsg::Run(rounds, actors.ponger.clone(), done)).unwrap();
    elapsed.await.unwrap().as_nanos() as f64 / rounds as f64
}

/// Messages per second.
async fn throughput(actors: &Actors, n: u64) -> f64 {
    let (done, finished) = oneshot::channel();
    actors.sink.send_message(SinkMsg::Expect(n, done)).unwrap();
    let started = Instant::now();
    actors.source.send_message((n, actors.sink.clone())).unwrap();
    let finished = finished.await.unwrap();
    n as f64 / (finished - started).as_secs_f64()
}

/// Prints one metric of both variants; "overhead" is positive when the supervised actor
/// does worse, whichever direction is better for the metric.
fn report(runtime: &str, metric: &str, bare: f64, supervised: f64, lower_is_better: bool) {
    let ratio = supervised / bare;
    let overhead = if lower_is_better { ratio - 1.0 } else { 1.0 - ratio };
    println!(
        "actor_overhead runtime={runtime} {metric} bare={bare:.0} supervised={supervised:.0} ratio={ratio:.3} (overhead {:+.1}%)",
        overhead * 100.0
    );
}

fn main() {
    let (rounds, items, runs) = if quick() { (10_000, 100_000, 3) } else { (100_000, 1_000_000, 5) };
    for (name, runtime) in runtimes() {
        let (rtt, tput) = runtime.block_on(async {
            let node = Node::builder(NodeId::new("bench").unwrap()).start().await.unwrap();
            let mut rtt = [Vec::new(), Vec::new()];
            let mut tput = [Vec::new(), Vec::new()];
            for run in 0..runs {
                // Alternate which variant goes first, so neither always runs on a warmer cache.
                let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
                for variant in order {
                    let actors = if variant == 0 { bare().await } else { supervised(&node).await };
                    rtt[variant].push(ping_pong(&actors, rounds).await);
                    tput[variant].push(throughput(&actors, items).await);
                    (actors.stop)();
                }
            }
            node.shutdown();
            (rtt.map(|mut v| median(&mut v)), tput.map(|mut v| median(&mut v)))
        });
        report(name, "ping_pong_rtt_ns", rtt[0], rtt[1], true);
        report(name, "throughput_msgs_per_s", tput[0], tput[1], false);
    }
}

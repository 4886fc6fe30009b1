//! Three nodes talking through the transport, with the same test code over real QUIC on
//! loopback and over SimNet on virtual time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Ask, Ignore, Net, Note, cluster, fast_detection, run, shutdown_all, wait_for};
use flotilla_supervisors::ExitReason;
use flotilla_transport::core::wire::RemoteError;
use flotilla_transport::{
    CallError, Fault, NodeSet, QueueLimits, RemoteDown, RemoteTarget, SendError, TransportConfig,
};

const NODES: [&str; 3] = ["a", "b", "c"];
const NOTES: u64 = 2_000;

/// Every node casts to every other; each receiver sees each sender's notes in order, and
/// calls are answered.
async fn casts_arrive_in_order_and_calls_are_answered(net: Net) {
    let members = cluster(&net, &NODES, TransportConfig::default()).await;
    for sender in &members {
        for receiver in &members {
            if sender.transport.node() == receiver.transport.node() {
                continue;
            }
            let echo = sender.transport.remote::<Note>(receiver.transport.node(), "echo");
            for seq in 0..NOTES {
                echo.cast(&Note { from: sender.transport.node().into(), seq }).unwrap();
            }
        }
    }
    for member in &members {
        let echo = member.echo.clone();
        wait_for("all notes delivered", || echo.notes().len() as u64 == NOTES * 2).await;
        for from in NODES.iter().filter(|n| **n != member.transport.node()) {
            let seqs: Vec<u64> = echo.notes().iter().filter(|n| n.from == *from).map(|n| n.seq).collect();
            assert_eq!(seqs, (0..NOTES).collect::<Vec<_>>(), "notes from {from} at {}", member.transport.node());
        }
    }
    let a = &members[0].transport;
    for peer in ["b", "c"] {
        let answer = a.remote::<Ask>(peer, "echo").call(&Ask(41), Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, 42);
    }
    // One session per pair, whatever order the simultaneous dials arrived in.
    for member in &members {
        for peer in NODES.iter().filter(|n| **n != member.transport.node()) {
            let stats = member.transport.peer_stats(peer).unwrap();
            assert_eq!(
                stats.sessions,
                1,
                "{} has had {} sessions with {peer}",
                member.transport.node(),
                stats.sessions
            );
        }
    }
    shutdown_all(&members).await;
}

#[test]
fn quic_casts_arrive_in_order_and_calls_are_answered() {
    run(Net::quic, false, casts_arrive_in_order_and_calls_are_answered);
}

#[test]
fn sim_casts_arrive_in_order_and_calls_are_answered() {
    run(|| Net::sim(1), true, casts_arrive_in_order_and_calls_are_answered);
}

/// Unknown actors, wrong message types and unanswered calls come back as typed errors.
async fn bad_addresses_get_typed_errors(net: Net) {
    let members = cluster(&net, &NODES[..2], TransportConfig::default()).await;
    let a = &members[0].transport;
    let timeout = Duration::from_secs(5);
    let unknown = a.remote::<Ask>("b", "nobody").call(&Ask(1), timeout).await;
    assert_eq!(unknown, Err(CallError::Remote(RemoteError::UnknownActor { name: "nobody".into() })));
    let unanswered = a.remote::<Ignore>("b", "echo").call(&Ignore, timeout).await;
    assert_eq!(unanswered, Err(CallError::Remote(RemoteError::NoReply)));
    a.remote::<Note>("b", "nobody").cast(&Note { from: "a".into(), seq: 0 }).unwrap();
    let transport = a.clone();
    wait_for("the cast comes back undeliverable", || transport.stats().undeliverable == 1).await;
    assert_eq!(members[1].transport.stats().dead_letters, 1);
    assert_eq!(
        a.remote::<Note>("nowhere", "echo").cast(&Note { from: "a".into(), seq: 0 }),
        Err(SendError::UnknownPeer("nowhere".into()))
    );
    shutdown_all(&members).await;
}

#[test]
fn quic_bad_addresses_get_typed_errors() {
    run(Net::quic, false, bad_addresses_get_typed_errors);
}

#[test]
fn sim_bad_addresses_get_typed_errors() {
    run(|| Net::sim(2), true, bad_addresses_get_typed_errors);
}

type Downs = Arc<Mutex<Vec<RemoteDown>>>;

fn collect(downs: &Downs) -> impl Fn(RemoteDown) + Send + Sync + 'static {
    let downs = Arc::clone(downs);
    move |down| downs.lock().unwrap().push(down)
}

/// Monitors fire with the actor's exit reason, with `noproc` for a name nobody holds, and with
/// `noconnection` when the peer leaves.
async fn monitors_fire_across_nodes(net: Net) {
    let members = cluster(&net, &NODES, fast_detection()).await;
    let a = &members[0].transport;
    let downs: Downs = Arc::default();
    let on_echo = a.monitor("b", "echo", collect(&downs));
    let on_nobody = a.monitor("b", "nobody", collect(&downs));
    let on_c = a.monitor_node("c", collect(&downs));
    let on_c_echo = a.monitor("c", "echo", collect(&downs));
    let check = Arc::clone(&downs);
    wait_for("noproc for the unknown name", || check.lock().unwrap().len() == 1).await;
    assert_eq!(downs.lock().unwrap()[0].monitor, on_nobody);
    assert_eq!(downs.lock().unwrap()[0].reason, ExitReason::NoProc);

    members[1].echo.actor.stop(Some("shutdown".into()));
    wait_for("down for b's echo", || check.lock().unwrap().len() == 2).await;
    let down = downs.lock().unwrap()[1].clone();
    assert_eq!(down.monitor, on_echo);
    assert_eq!(down.target, RemoteTarget::Actor { node: "b".into(), name: "echo".into() });
    assert_eq!(down.reason, ExitReason::Shutdown);

    members[2].transport.shutdown().await;
    wait_for("c's monitors fire", || check.lock().unwrap().len() == 4).await;
    let fired: Vec<_> = downs.lock().unwrap()[2..].iter().map(|d| (d.monitor, d.reason.clone())).collect();
    assert!(fired.contains(&(on_c, ExitReason::NoConnection)), "{fired:?}");
    // c stopped its transport, not its echo actor: the monitor says the connection died.
    assert!(fired.contains(&(on_c_echo, ExitReason::NoConnection)), "{fired:?}");
    shutdown_all(&members[..2]).await;
}

#[test]
fn quic_monitors_fire_across_nodes() {
    run(Net::quic, false, monitors_fire_across_nodes);
}

#[test]
fn sim_monitors_fire_across_nodes() {
    run(|| Net::sim(3), true, monitors_fire_across_nodes);
}

/// A bulk transfer runs on its own stream: messages sent while it is in flight are not
/// queued behind it.
async fn bulk_transfers_do_not_delay_messages(net: Net) {
    let members = cluster(&net, &NODES[..2], TransportConfig::default()).await;
    let (a, b) = (&members[0].transport, &members[1].transport);
    let mut snapshots = b.bulk_channel("snapshots", 4);
    let data = Bytes::from(vec![7u8; 32 << 20]);
    let sender = a.clone();
    let bulk = tokio::spawn({
        let data = data.clone();
        async move { sender.send_bulk("b", "snapshots", data).await }
    });
    tokio::task::yield_now().await;
    a.remote::<Note>("b", "echo").cast(&Note { from: "a".into(), seq: 1 }).unwrap();
    let echo = members[1].echo.clone();
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            transfer = snapshots.recv() => { panic!("the bulk transfer arrived first: {:?}", transfer.map(|t| t.data.len())) }
            () = wait_for("the note", || echo.notes().len() == 1) => {}
        }
        snapshots.recv().await.unwrap()
    })
    .await
    .unwrap();
    bulk.await.unwrap().unwrap();
    assert_eq!(received.from, "a");
    assert_eq!(received.channel, "snapshots");
    assert_eq!(received.data, data);
    shutdown_all(&members).await;
}

#[test]
fn quic_bulk_transfers_do_not_delay_messages() {
    run(Net::quic, false, bulk_transfers_do_not_delay_messages);
}

/// A partition ends the session on both sides (the failure detector fires), monitors report
/// `noconnection`, and the nodes reconnect after the heal.
#[test]
fn sim_partition_fires_monitors_and_heal_reconnects() {
    run(
        || Net::sim(4),
        true,
        |net| async move {
            let members = cluster(&net, &NODES, fast_detection()).await;
            let (a, b) = (&members[0].transport, &members[1].transport);
            let downs: Downs = Arc::default();
            a.monitor("b", "echo", collect(&downs));
            b.monitor_node("a", collect(&downs));
            let simnet = net.simnet().unwrap();
            let cut = simnet
                .inject(Fault::Partition { a: NodeSet::of(["a"]), b: NodeSet::of(["b"]), one_way: false })
                .unwrap();
            let check = Arc::clone(&downs);
            wait_for("both sides notice the partition", || check.lock().unwrap().len() == 2).await;
            assert!(downs.lock().unwrap().iter().all(|d| d.reason == ExitReason::NoConnection));
            assert!(!a.is_connected("b") && !b.is_connected("a"));
            assert!(a.is_connected("c") && b.is_connected("c"), "the partition cuts only a and b");
            simnet.heal(cut);
            let (a2, b2) = (a.clone(), b.clone());
            wait_for("reconnected after the heal", || a2.is_connected("b") && b2.is_connected("a")).await;
            let answer = a.remote::<Ask>("b", "echo").call(&Ask(1), Duration::from_secs(5)).await.unwrap();
            assert_eq!(answer, 2);
        },
    );
}

/// Casts to a peer that cannot be reached queue up to the bound; the next is refused and the
/// depth is visible.
#[test]
fn sim_queue_is_bounded_and_observable() {
    run(
        || Net::sim(5),
        true,
        |net| async move {
            let config =
                TransportConfig { queue: QueueLimits { max_bytes: 1 << 20, max_frames: 100 }, ..fast_detection() };
            let a = common::start_member(&net, "a", config).await;
            a.transport.connect("ghost", flotilla_transport::Address::Sim);
            let ghost = a.transport.remote::<Note>("ghost", "echo");
            for seq in 0..100 {
                ghost.cast(&Note { from: "a".into(), seq }).unwrap();
            }
            let refused = ghost.cast(&Note { from: "a".into(), seq: 100 });
            assert!(matches!(refused, Err(SendError::QueueFull(_))), "{refused:?}");
            let depth = a.transport.peer_stats("ghost").unwrap().queue;
            assert_eq!((depth.frames, depth.rejected), (100, 1));
        },
    );
}

/// With latency, jitter and 5% message loss, the same seed delivers the same notes in the same
/// order.
#[test]
fn sim_same_seed_same_outcome() {
    let outcome = |seed: u64| {
        let result = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&result);
        run(
            move || {
                Net::Sim(flotilla_transport::SimNet::with_latency(
                    seed,
                    Duration::from_micros(200),
                    Duration::from_micros(300),
                ))
            },
            true,
            move |net| async move {
                let members = cluster(&net, &NODES, fast_detection()).await;
                net.simnet()
                    .unwrap()
                    .inject(Fault::Drop {
                        links: flotilla_transport::core::fault::Links { from: NodeSet::All, to: NodeSet::All },
                        probability: 0.05,
                    })
                    .unwrap();
                for seq in 0..200 {
                    let _ = members[0].transport.remote::<Note>("b", "echo").cast(&Note { from: "a".into(), seq });
                    let _ = members[2].transport.remote::<Note>("b", "echo").cast(&Note { from: "c".into(), seq });
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                let seen: Vec<(String, u64)> = members[1].echo.notes().into_iter().map(|n| (n.from, n.seq)).collect();
                *out.lock().unwrap() = seen;
            },
        );
        result.lock().unwrap().clone()
    };
    let first = outcome(9);
    assert!(first.len() < 400 && first.len() > 300, "5% drops: {} of 400 arrived", first.len());
    assert_eq!(first, outcome(9), "the same seed gives the same delivery");
}

/// An enrolled actor that traps exits and records the signals it gets.
mod linked {
    use std::sync::{Arc, Mutex};

    use flotilla_supervisors::{Node, Signal};
    use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

    pub struct Msg(Signal);

    impl From<Signal> for Msg {
        fn from(signal: Signal) -> Self {
            Msg(signal)
        }
    }

    struct Recorder;

    impl Actor for Recorder {
        type Msg = Msg;
        type State = Arc<Mutex<Vec<Signal>>>;
        type Arguments = Arc<Mutex<Vec<Signal>>>;

        async fn pre_start(&self, _: ActorRef<Msg>, seen: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
            Ok(seen)
        }

        async fn handle(
            &self,
            _: ActorRef<Msg>,
            Msg(signal): Msg,
            seen: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            seen.lock().unwrap().push(signal);
            Ok(())
        }
    }

    /// Starts a recorder on `node` (registered as `name`), trapping exits if asked.
    pub async fn start(node: &Node, name: &str, trap: bool) -> (ActorCell, Arc<Mutex<Vec<Signal>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (actor, _) = Actor::spawn(None, Recorder, Arc::clone(&seen)).await.unwrap();
        node.enroll(&actor);
        node.trap_exit(&actor.get_cell(), trap);
        node.register(name, actor.get_cell()).unwrap();
        (actor.get_cell(), seen)
    }

    pub fn exits(seen: &Arc<Mutex<Vec<Signal>>>) -> Vec<flotilla_supervisors::ExitReason> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Signal::Exit { reason, .. } => Some(reason.clone()),
                Signal::Down { .. } => None,
            })
            .collect()
    }
}

/// Links across nodes carry exit signals both ways; a partition sends `noconnection` to both
/// sides while both actors are alive (OTP conformance case 19).
#[test]
fn sim_remote_links_carry_exits_and_a_partition_gives_noconnection() {
    use flotilla_supervisors::stop_with;
    use ractor::ActorStatus;

    run(
        || Net::sim(6),
        true,
        |net| async move {
            let members = cluster(&net, &NODES[..2], fast_detection()).await;
            let (a, b) = (&members[0], &members[1]);
            let links_up = |count: u64| {
                let (ta, tb) = (a.transport.clone(), b.transport.clone());
                move || ta.stats().links_out == count && tb.stats().links_in == count
            };

            // The remote actor exits: the local one gets its reason.
            let (local, local_seen) = linked::start(&a.node, "local-1", true).await;
            let (remote, _) = linked::start(&b.node, "remote-1", true).await;
            a.transport.link(&local, "b", "remote-1");
            wait_for("the first link", links_up(1)).await;
            stop_with(&remote, &ExitReason::ShutdownWith("bye".into()));
            wait_for("the exit reaches a", || linked::exits(&local_seen).len() == 1).await;
            assert_eq!(linked::exits(&local_seen), [ExitReason::ShutdownWith("bye".into())]);

            // The local actor exits: the remote one gets its reason.
            let (local, _) = linked::start(&a.node, "local-2", true).await;
            let (_, remote_seen) = linked::start(&b.node, "remote-2", true).await;
            a.transport.link(&local, "b", "remote-2");
            wait_for("the second link", links_up(1)).await;
            stop_with(&local, &ExitReason::Failed("boom".into()));
            wait_for("the exit reaches b", || linked::exits(&remote_seen).len() == 1).await;
            assert_eq!(linked::exits(&remote_seen), [ExitReason::Failed("boom".into())]);

            // An actor that does not trap exits dies with its remote partner.
            let (doomed, _) = linked::start(&a.node, "local-3", false).await;
            let (remote, _) = linked::start(&b.node, "remote-3", true).await;
            a.transport.link(&doomed, "b", "remote-3");
            wait_for("the third link", links_up(1)).await;
            stop_with(&remote, &ExitReason::Failed("crash".into()));
            wait_for("the unlinked side dies too", || doomed.get_status() == ActorStatus::Stopped).await;

            // Case 19: a partition gives both sides `noconnection`; both actors are alive.
            let (local, local_seen) = linked::start(&a.node, "local-4", true).await;
            let (remote, remote_seen) = linked::start(&b.node, "remote-4", true).await;
            a.transport.link(&local, "b", "remote-4");
            wait_for("the fourth link", links_up(1)).await;
            net.simnet()
                .unwrap()
                .inject(Fault::Partition { a: NodeSet::of(["a"]), b: NodeSet::of(["b"]), one_way: false })
                .unwrap();
            wait_for("noconnection on both sides", || {
                linked::exits(&local_seen).len() == 1 && linked::exits(&remote_seen).len() == 1
            })
            .await;
            assert_eq!(linked::exits(&local_seen), [ExitReason::NoConnection]);
            assert_eq!(linked::exits(&remote_seen), [ExitReason::NoConnection]);
            assert_eq!(remote.get_status(), ActorStatus::Running, "the remote actor is alive");
            assert_eq!(local.get_status(), ActorStatus::Running);
            assert_eq!((a.transport.stats().links_out, b.transport.stats().links_in), (0, 0));
        },
    );
}

/// A clog holds messages without losing them; the heal releases them in order.
#[test]
fn sim_clog_holds_messages_until_the_heal() {
    run(
        || Net::sim(7),
        true,
        |net| async move {
            let members = cluster(&net, &NODES[..2], TransportConfig::default()).await;
            let simnet = net.simnet().unwrap();
            let links = flotilla_transport::core::fault::Links { from: NodeSet::of(["a"]), to: NodeSet::of(["b"]) };
            let clog = simnet.inject(Fault::Clog { links }).unwrap();
            let echo = members[0].transport.remote::<Note>("b", "echo");
            for seq in 0..100 {
                echo.cast(&Note { from: "a".into(), seq }).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(members[1].echo.notes().is_empty(), "a clogged link delivers nothing");
            simnet.heal(clog);
            let received = members[1].echo.clone();
            wait_for("the held notes", || received.notes().len() == 100).await;
            let seqs: Vec<u64> = received.notes().iter().map(|n| n.seq).collect();
            assert_eq!(seqs, (0..100).collect::<Vec<_>>());
        },
    );
}

/// A transport with an impossible failure-detector setting refuses to start, and says why.
#[test]
fn an_invalid_detector_setting_is_refused_at_start() {
    use flotilla_supervisors::{Node, NodeId};
    use flotilla_transport::core::detector::DetectorConfig;
    use flotilla_transport::{Network, PeerIdentity, Role, Transport, TransportError};

    run(
        || Net::sim(8),
        true,
        |net| async move {
            let node = Node::builder(NodeId::new("a").unwrap()).start().await.unwrap();
            let identity = PeerIdentity { cluster: common::cluster_id(), node: "a".into(), role: Role::Master };
            let config = TransportConfig {
                detector: DetectorConfig::Timeout { after: Duration::ZERO },
                ..TransportConfig::default()
            };
            let network = Network::Sim(net.simnet().unwrap().clone());
            let started = Transport::start(&node, identity, config, network, None).await;
            assert!(
                matches!(&started, Err(TransportError::Config(why)) if why.contains("failure detector")),
                "{started:?}"
            );
        },
    );
}

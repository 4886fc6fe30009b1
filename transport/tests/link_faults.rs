//! Link faults on the real QUIC transport: two nodes on loopback, each fault injected on one
//! node only (the other does not know it), its effect seen by the other, then healed.
//!
//! "Nothing arrived" is shown without sleeping: a fault is healed, a marker is cast behind the
//! affected notes on the same ordered link, and once the marker is in, any note that was going
//! to arrive has arrived before it.

mod common;

use std::time::{Duration, Instant};

use common::{Ask, Member, Net, Note, cluster, fast_detection, run, shutdown_all, wait_for};
use flotilla_transport::core::fault::Links;
use flotilla_transport::{Fault, FaultError, NodeSet, TransportConfig};

const MARKER: u64 = u64::MAX;

fn cast_notes(from: &Member, to: &str, seqs: impl IntoIterator<Item = u64>) {
    let echo = from.transport.remote::<Note>(to, "echo");
    for seq in seqs {
        echo.cast(&Note { from: from.transport.node().into(), seq }).unwrap();
    }
}

/// The sequence numbers `at` received from `from`, marker excluded.
fn seqs(at: &Member, from: &str) -> Vec<u64> {
    at.echo.notes().iter().filter(|n| n.from == from && n.seq != MARKER).map(|n| n.seq).collect()
}

async fn wait_for_marker(from: &Member, at: &Member) {
    cast_notes(from, at.transport.node(), [MARKER]);
    let (echo, from) = (at.echo.clone(), from.transport.node().to_owned());
    wait_for("the marker", || echo.notes().iter().any(|n| n.from == from && n.seq == MARKER)).await;
}

fn quic(body: impl AsyncFnOnce(Vec<Member>)) {
    run(Net::quic, false, async |net| body(cluster(&net, &["a", "b"], TransportConfig::default()).await).await);
}

#[test]
fn a_certain_drop_on_the_sender_loses_every_frame_until_healed() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let id = a.transport.inject_fault(Fault::Drop { links: Links::one("a", "b"), probability: 1.0 }).unwrap();
        cast_notes(a, "b", 0..50);
        cast_notes(b, "a", 0..5);
        let echo = a.echo.clone();
        wait_for("b's notes reach a: the way back is open", || echo.notes().len() == 5).await;
        assert!(a.transport.heal_fault(id));
        wait_for_marker(a, b).await;
        assert_eq!(seqs(b, "a"), Vec::<u64>::new(), "dropped notes never arrive");
        cast_notes(a, "b", 50..60);
        let echo = b.echo.clone();
        wait_for("notes after the heal", || echo.notes().len() == 11).await;
        assert_eq!(seqs(b, "a"), (50..60).collect::<Vec<_>>());
        shutdown_all(&members).await;
    });
}

#[test]
fn a_drop_injected_on_the_receiver_alone_loses_incoming_frames() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let links = Links::new(NodeSet::All, NodeSet::one("b"));
        let id = b.transport.inject_fault(Fault::Drop { links, probability: 1.0 }).unwrap();
        assert!(a.transport.active_faults().is_empty(), "the sender knows nothing");
        cast_notes(a, "b", 0..20);
        let receiver = b.transport.clone();
        wait_for("b drops the 20 notes", || receiver.stats().fault_dropped == 20).await;
        b.transport.heal_fault(id);
        wait_for_marker(a, b).await;
        assert_eq!(seqs(b, "a"), Vec::<u64>::new());
        shutdown_all(&members).await;
    });
}

#[test]
fn a_delay_with_jitter_slows_every_frame_and_keeps_their_order() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let (base, jitter) = (Duration::from_millis(300), Duration::from_millis(100));
        a.transport.inject_fault(Fault::Delay { links: Links::one("a", "b"), base, jitter }).unwrap();
        let sent = Instant::now();
        cast_notes(a, "b", 0..100);
        let echo = b.echo.clone();
        wait_for("100 delayed notes", || echo.notes().len() == 100).await;
        assert!(sent.elapsed() >= base, "arrived after {:?}, before the delay of {base:?}", sent.elapsed());
        assert_eq!(seqs(b, "a"), (0..100).collect::<Vec<_>>(), "jitter never reorders a link");
        let answer = b.transport.remote::<Ask>("a", "echo").call(&Ask(1), Duration::from_secs(5)).await;
        assert_eq!(answer, Ok(2), "a call from b is answered (its answer delayed)");
        shutdown_all(&members).await;
    });
}

#[test]
fn a_certain_duplicate_delivers_every_frame_twice() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let id = a.transport.inject_fault(Fault::Duplicate { links: Links::all(), probability: 1.0 }).unwrap();
        cast_notes(a, "b", 0..10);
        let echo = b.echo.clone();
        wait_for("20 copies", || echo.notes().len() == 20).await;
        a.transport.heal_fault(id);
        let mut got = seqs(b, "a");
        got.sort_unstable();
        assert_eq!(got, (0..10).flat_map(|n| [n, n]).collect::<Vec<_>>());
        shutdown_all(&members).await;
    });
}

#[test]
fn a_reorder_lets_later_frames_overtake_but_loses_none() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let window = Duration::from_millis(50);
        a.transport.inject_fault(Fault::Reorder { links: Links::one("a", "b"), probability: 0.5, window }).unwrap();
        // Sent at once: a note held back by the reorder is overtaken by those sent after it.
        cast_notes(a, "b", 0..200);
        let echo = b.echo.clone();
        wait_for("200 notes", || echo.notes().len() == 200).await;
        let got = seqs(b, "a");
        assert_ne!(got, (0..200).collect::<Vec<_>>(), "some note was overtaken");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "none lost, none doubled");
        shutdown_all(&members).await;
    });
}

#[test]
fn a_clog_holds_frames_in_order_until_healed() {
    quic(async |members| {
        let (a, b) = (&members[0], &members[1]);
        let id = a.transport.inject_fault(Fault::Clog { links: Links::one("a", "b") }).unwrap();
        cast_notes(a, "b", 0..30);
        // b→a is open: b's note round-trips through a's echo while a's own notes stay held.
        cast_notes(b, "a", [7]);
        let echo = a.echo.clone();
        wait_for("b's note at a", || echo.notes().len() == 1).await;
        assert!(seqs(b, "a").is_empty(), "a clogged link delivers nothing");
        assert!(a.transport.heal_fault(id));
        let echo = b.echo.clone();
        wait_for("the held notes, after the heal", || echo.notes().len() == 30).await;
        assert_eq!(seqs(b, "a"), (0..30).collect::<Vec<_>>(), "held, not lost, in order");
        shutdown_all(&members).await;
    });
}

#[test]
fn a_partition_ends_the_session_refuses_redials_and_heals() {
    run(Net::quic, false, async |net| {
        let members = cluster(&net, &["a", "b"], fast_detection()).await;
        let (a, b) = (&members[0], &members[1]);
        let partition = Fault::Partition { a: NodeSet::one("a"), b: NodeSet::one("b"), one_way: false };
        let id = a.transport.inject_fault(partition).unwrap();
        let (ta, tb) = (a.transport.clone(), b.transport.clone());
        wait_for("both sides lose the session", || !ta.is_connected("b") && !tb.is_connected("a")).await;
        // Both keep redialling: a refuses b's connections and does not dial b, so the only
        // sessions after this point are the ones the heal lets through.
        let sessions = |t: &flotilla_transport::Transport, peer: &str| t.peer_stats(peer).unwrap().sessions;
        let before = (sessions(&ta, "b"), sessions(&tb, "a"));
        assert!(a.transport.heal_fault(id));
        wait_for("the session is back", || ta.is_connected("b") && tb.is_connected("a")).await;
        assert!(sessions(&ta, "b") > before.0 && sessions(&tb, "a") > before.1);
        shutdown_all(&members).await;
    });
}

#[test]
fn node_faults_are_refused_by_the_link_model() {
    quic(async |members| {
        let kill = Fault::KillActor { node: "a".into(), name: "echo".into() };
        assert_eq!(members[0].transport.inject_fault(kill), Err(FaultError::NotALinkFault));
        let bad = Fault::Drop { links: Links::all(), probability: 2.0 };
        assert_eq!(members[0].transport.inject_fault(bad), Err(FaultError::InvalidProbability(2.0)));
        assert!(members[0].transport.active_faults().is_empty());
        shutdown_all(&members).await;
    });
}

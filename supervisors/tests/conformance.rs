//! The OTP conformance suite: the 20 cases of `reference/otp-supervision.md` §4.5.
//!
//! Each test is named `case_NN_...` after its row. Timing-sensitive cases run on tokio's
//! paused clock, so a 5-second shutdown timeout takes no wall time and the result does not
//! depend on the machine's load.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use flotilla_supervisors::{
    AutoShutdown, CallError, ChildKind, ChildOpError, ChildSpec, ChildStatus, ChildTarget, ExitReason, Restart,
    Shutdown, Signal, StartError, Started, Strategy, Supervisor, SupervisorError, SupervisorFlags, SupervisorSpec,
};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

fn flags(strategy: Strategy) -> SupervisorFlags {
    SupervisorFlags::strategy(strategy).with_intensity(10, Duration::from_secs(5))
}

async fn children(sup: &flotilla_supervisors::SupervisorRef) -> Vec<(String, Option<ActorId>, ChildStatus)> {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id.to_string(), c.actor.map(|a| a.get_id()), c.status))
        .collect()
}

fn actor_of(rows: &[(String, Option<ActorId>, ChildStatus)], name: &str) -> Option<ActorId> {
    rows.iter().find(|r| r.0 == name).and_then(|r| r.1)
}

#[tokio::test(start_paused = true)]
async fn case_01_one_for_one_restarts_only_the_crashed_child() {
    let node = node().await;
    let (probe, mut events) = probe();
    let spec = SupervisorSpec::new(flags(Strategy::OneForOne))
        .child(worker("a", &probe))
        .child(worker("b", &probe))
        .child(worker("c", &probe));
    let w = start_watched(&node, spec).await;
    assert_eq!(events.started_names(3).await, ["a", "b", "c"]);
    let before = children(&w.sup).await;

    send(&w.sup.which_children().await.unwrap()[1].actor.clone().unwrap(), WorkerMsg::Crash);
    assert_eq!(events.next_started().await.0, "b");

    let after = children(&w.sup).await;
    assert_eq!(actor_of(&after, "a"), actor_of(&before, "a"));
    assert_eq!(actor_of(&after, "c"), actor_of(&before, "c"));
    assert_ne!(actor_of(&after, "b"), actor_of(&before, "b"));
    assert!(events.during(Duration::from_secs(1)).await.is_empty(), "nothing else restarted");
}

#[tokio::test(start_paused = true)]
async fn case_02_one_for_all_restarts_all_and_drops_a_temporary_sibling() {
    let node = node().await;
    let (probe, mut events) = probe();
    let spec = SupervisorSpec::new(flags(Strategy::OneForAll))
        .child(worker("a", &probe))
        .child(worker("t", &probe).restart(Restart::Temporary))
        .child(worker("c", &probe));
    let w = start_watched(&node, spec).await;
    events.started_names(3).await;
    let before = children(&w.sup).await;

    send(&w.sup.which_children().await.unwrap()[2].actor.clone().unwrap(), WorkerMsg::Crash);
    assert_eq!(events.started_names(2).await, ["a", "c"]);

    let after = children(&w.sup).await;
    assert_eq!(after.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["a", "c"], "temporary spec is gone");
    assert_ne!(actor_of(&after, "a"), actor_of(&before, "a"));
    assert_ne!(actor_of(&after, "c"), actor_of(&before, "c"));
    assert_eq!(probe.stopped_in_order(), ["t", "a"], "siblings terminated in reverse start order");
}

#[tokio::test(start_paused = true)]
async fn case_03_rest_for_one_restarts_the_crashed_child_and_later_ones_in_order() {
    let node = node().await;
    let (probe, mut events) = probe();
    let mut spec = SupervisorSpec::new(flags(Strategy::RestForOne));
    for name in ["a", "b", "c", "d"] {
        spec = spec.child(worker(name, &probe));
    }
    let w = start_watched(&node, spec).await;
    events.started_names(4).await;
    let before = children(&w.sup).await;

    send(&w.sup.which_children().await.unwrap()[1].actor.clone().unwrap(), WorkerMsg::Crash);
    assert_eq!(events.started_names(3).await, ["b", "c", "d"]);
    assert_eq!(probe.stopped_in_order(), ["d", "c"]);
    assert_eq!(actor_of(&children(&w.sup).await, "a"), actor_of(&before, "a"));
}

async fn crash_and_await_restart(w: &Watched, events: &mut Events, name: &str) {
    let cell = w.sup.which_children().await.unwrap().into_iter().find(|c| c.id.to_string() == name).unwrap().actor;
    send(&cell.unwrap(), WorkerMsg::Crash);
    assert_eq!(events.next_started().await.0, name);
}

#[tokio::test(start_paused = true)]
async fn case_04_intensity_allows_exactly_max_r_restarts_within_max_t() {
    let node = node().await;
    let (probe, mut events) = probe();
    let max_r = SupervisorFlags::default().with_intensity(3, Duration::from_secs(5));
    let mut w = start_watched(&node, SupervisorSpec::new(max_r).child(worker("a", &probe))).await;
    events.next_started().await;

    for _ in 0..3 {
        crash_and_await_restart(&w, &mut events, "a").await;
    }
    // Restarts older than MaxT are forgotten.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..3 {
        crash_and_await_restart(&w, &mut events, "a").await;
    }
    assert!(w.is_alive());
    // The (MaxR+1)-th within MaxT terminates the supervisor with reason shutdown.
    send(&w.sup.which_children().await.unwrap()[0].actor.clone().unwrap(), WorkerMsg::Crash);
    assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn case_04_intensity_zero_gives_up_at_the_first_crash() {
    let node = node().await;
    let (probe, mut events) = probe();
    let none = SupervisorFlags::default().with_intensity(0, Duration::from_secs(5));
    let mut w = start_watched(&node, SupervisorSpec::new(none).child(worker("a", &probe))).await;
    let (_, cell) = events.next_started().await;
    send(&cell, WorkerMsg::Crash);
    assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn case_05_transient_children_restart_only_after_abnormal_exits() {
    let node = node().await;
    let (probe, mut events) = probe();
    let spec = SupervisorSpec::new(flags(Strategy::OneForOne)).child(worker("t", &probe).restart(Restart::Transient));
    let w = start_watched(&node, spec).await;
    let (_, mut cell) = events.next_started().await;

    for reason in [ExitReason::Normal, ExitReason::Shutdown, ExitReason::ShutdownWith("done".into())] {
        send(&cell, WorkerMsg::Exit(reason.clone()));
        wait_stopped(&cell).await;
        let quiet = events.during(Duration::from_secs(1)).await;
        assert!(quiet.iter().all(|e| !matches!(e, Ev::Started(..))), "{reason} must not restart");
        assert_eq!(children(&w.sup).await[0].2, ChildStatus::Stopped);
        cell = w.sup.restart_child("t").await.unwrap().unwrap();
        events.next_started().await;
    }
    send(&cell, WorkerMsg::Crash);
    assert_eq!(events.next_started().await.0, "t");
    let panicking = w.sup.which_children().await.unwrap()[0].actor.clone().unwrap();
    send(&panicking, WorkerMsg::Panic);
    assert_eq!(events.next_started().await.0, "t", "a panic is an abnormal exit");
}

#[tokio::test(start_paused = true)]
async fn case_06_temporary_children_are_never_restarted_and_leave_no_spec() {
    let node = node().await;
    let (probe, mut events) = probe();
    let spec = SupervisorSpec::new(flags(Strategy::OneForOne)).child(worker("tmp", &probe).restart(Restart::Temporary));
    let w = start_watched(&node, spec).await;
    let (_, cell) = events.next_started().await;
    send(&cell, WorkerMsg::Crash);
    wait_stopped(&cell).await;
    assert!(events.during(Duration::from_secs(1)).await.is_empty());
    assert!(children(&w.sup).await.is_empty(), "spec removed after exit");

    let ignoring =
        ChildSpec::new("ign", ChildKind::Worker, |_| async { Ok(Started::Ignore) }).restart(Restart::Temporary);
    assert_eq!(w.sup.start_child(ignoring).await.unwrap().map(|c| c.get_id()), None);
    assert!(children(&w.sup).await.is_empty(), "ignore from a temporary start drops the spec");
}

#[tokio::test(start_paused = true)]
async fn case_07_ignore_from_a_permanent_start_keeps_the_spec_for_restart_child() {
    let node = node().await;
    let (probe, mut events) = probe();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let args = worker_args("lazy", &probe);
    let lazy = ChildSpec::new("lazy", ChildKind::Worker, move |ctx| {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        let args = args.clone();
        async move {
            if first {
                return Ok(Started::Ignore);
            }
            let (actor, _) = Actor::spawn_linked(None, Worker, args, ctx.supervisor).await?;
            Ok(Started::Running(actor.get_cell()))
        }
    });
    let w = start_watched(&node, SupervisorSpec::new(flags(Strategy::OneForOne)).child(lazy)).await;
    assert_eq!(children(&w.sup).await, [("lazy".to_string(), None, ChildStatus::Stopped)]);

    let cell = w.sup.restart_child("lazy").await.unwrap().expect("started now");
    assert_eq!(events.next_started().await.1.get_id(), cell.get_id());
    assert_eq!(children(&w.sup).await[0].2, ChildStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn case_08_shutdown_is_in_reverse_start_order() {
    let node = node().await;
    let (probe, mut events) = probe();
    let names = ["a", "b", "c", "d", "e"];
    let mut spec = SupervisorSpec::new(flags(Strategy::OneForOne));
    for name in names {
        spec = spec.child(worker(name, &probe));
    }
    let w = start_watched(&node, spec).await;
    assert_eq!(events.started_names(5).await, names);
    w.sup.shutdown(BOUND).await.unwrap();
    assert_eq!(probe.stopped_in_order(), ["e", "d", "c", "b", "a"]);
}

fn hanging(name: &str, probe: &Probe, shutdown: Shutdown) -> ChildSpec {
    let args = WorkerArgs { on_stop: OnStop::Hang, ..worker_args(name, probe) };
    worker_from(args).shutdown(shutdown)
}

#[tokio::test(start_paused = true)]
async fn case_09_shutdown_policies() {
    let node = node().await;
    let (probe, mut events) = probe();
    let sleepy = WorkerArgs { on_stop: OnStop::Sleep(Duration::from_secs(30)), ..worker_args("slow", &probe) };
    let spec = SupervisorSpec::new(flags(Strategy::OneForOne))
        .child(hanging("brutal", &probe, Shutdown::BrutalKill))
        .child(hanging("timeout", &probe, Shutdown::Timeout(Duration::from_millis(1_500))))
        .child(worker_from(sleepy).shutdown(Shutdown::Infinity));
    let w = start_watched(&node, spec).await;
    events.started_names(3).await;

    let t0 = Instant::now();
    w.sup.terminate_child(ChildTarget::Id("brutal".into())).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO, "brutal_kill is immediate");

    let t1 = Instant::now();
    w.sup.terminate_child(ChildTarget::Id("timeout".into())).await.unwrap();
    assert_eq!(t1.elapsed(), Duration::from_millis(1_500), "killed when the timeout ran out");

    let t2 = Instant::now();
    let sup = w.sup.clone().with_timeout(Duration::from_secs(120));
    sup.terminate_child(ChildTarget::Id("slow".into())).await.unwrap();
    assert_eq!(t2.elapsed(), Duration::from_secs(30), "infinity waits for the cleanup");
    assert_eq!(probe.stopped_in_order(), ["slow"], "killed children never ran their cleanup");
}

#[tokio::test(start_paused = true)]
async fn case_10_default_shutdown_is_infinity_for_supervisors_and_5000_ms_for_workers() {
    let (probe, mut events) = probe();
    let nested = ChildSpec::supervisor("sup", SupervisorSpec::new(SupervisorFlags::default()));
    assert_eq!(nested.meta.shutdown, Shutdown::Infinity);
    let plain = worker("w", &probe);
    assert_eq!(plain.meta.shutdown, Shutdown::Timeout(Duration::from_millis(5_000)));

    let node = node().await;
    let args = WorkerArgs { on_stop: OnStop::Hang, ..worker_args("w", &probe) };
    let w = start_watched(&node, SupervisorSpec::new(flags(Strategy::OneForOne)).child(worker_from(args))).await;
    events.next_started().await;
    let t0 = Instant::now();
    w.sup.clone().with_timeout(BOUND).terminate_child(ChildTarget::Id("w".into())).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(5_000));
}

fn dynamic_template(probe: &Probe, on_stop: OnStop) -> ChildSpec {
    let probe = probe.clone();
    ChildSpec::worker("template", move |ctx| {
        let name = ctx.args::<String>().cloned().unwrap_or_default();
        (Worker, WorkerArgs { on_stop, ..worker_args(&name, &probe) })
    })
    .restart(Restart::Temporary)
}

#[tokio::test(start_paused = true)]
async fn case_11_simple_one_for_one() {
    let node = node().await;
    let (probe, mut events) = probe();
    let template = dynamic_template(&probe, OnStop::Sleep(Duration::from_secs(1)));
    let w = start_watched(&node, SupervisorSpec::new(flags(Strategy::SimpleOneForOne)).child(template)).await;

    let mut cells = Vec::new();
    for name in ["x", "y", "z"] {
        let cell = w.sup.start_dynamic(Arc::new(name.to_string())).await.unwrap().unwrap();
        assert_eq!(events.next_started().await.0, name, "start_child's arguments reach the child");
        cells.push(cell);
    }
    let simple = Err(SupervisorError::Child(ChildOpError::SimpleOneForOne));
    let id = w.sup.which_children().await.unwrap()[0].id.clone();
    assert_eq!(w.sup.delete_child(id.clone()).await, simple.clone());
    assert_eq!(w.sup.restart_child(id).await.map(|c| c.map(|c| c.get_id())), simple.map(|()| None));

    w.sup.terminate_child(ChildTarget::Actor(cells[0].get_id())).await.unwrap();
    assert_eq!(w.sup.count_children().await.unwrap().active, 2);

    // The two remaining children each take 1 s to clean up; in parallel that is 1 s, not 2.
    let t0 = Instant::now();
    w.sup.shutdown(BOUND).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn case_12_dynamic_children_are_lost_when_the_supervisor_restarts() {
    let node = node().await;
    let (probe, mut events) = probe();
    let inner = SupervisorSpec::new(flags(Strategy::OneForOne)).named("inner").child(worker("static", &probe));
    let outer = SupervisorSpec::new(flags(Strategy::OneForOne)).child(ChildSpec::supervisor("inner", inner));
    let _w = start_watched(&node, outer).await;
    events.next_started().await;

    let inner = flotilla_supervisors::SupervisorRef::from_cell(node.whereis("inner").unwrap());
    inner.start_child(worker("added", &probe)).await.unwrap();
    events.next_started().await;
    assert_eq!(inner.which_children().await.unwrap().len(), 2);

    inner.cell().kill();
    wait_stopped(&inner.cell()).await;
    assert_eq!(events.next_started().await.0, "static");
    let restarted = flotilla_supervisors::SupervisorRef::from_cell(node.whereis("inner").expect("re-registered"));
    let ids: Vec<String> = restarted.which_children().await.unwrap().iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, ["static"]);
}

/// A child whose start succeeds the first `ok_starts` times and fails (or panics) afterwards.
fn flaky(name: &str, probe: &Probe, ok_starts: usize, panics: bool) -> (ChildSpec, Arc<AtomicUsize>) {
    let starts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&starts);
    let args = worker_args(name, probe);
    let spec = ChildSpec::new(name.to_owned(), ChildKind::Worker, move |ctx| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let args = args.clone();
        async move {
            if n >= ok_starts {
                if panics {
                    panic!("start panicked on purpose");
                }
                return Err(StartError("refused on purpose".into()));
            }
            let (actor, _) = Actor::spawn_linked(None, Worker, args, ctx.supervisor).await?;
            Ok(Started::Running(actor.get_cell()))
        }
    });
    (spec, starts)
}

#[tokio::test(start_paused = true)]
async fn case_13_failed_restarts_retry_asynchronously_and_consume_intensity() {
    for panics in [false, true] {
        let node = node().await;
        let (probe, mut events) = probe();
        let (spec, starts) = flaky("f", &probe, 1, panics);
        let max_r = SupervisorFlags::default().with_intensity(3, Duration::from_secs(5));
        let mut w = start_watched(&node, SupervisorSpec::new(max_r).child(spec)).await;
        let (_, cell) = events.next_started().await;
        send(&cell, WorkerMsg::Crash);
        // One restart for the crash, then one per retry: the 4th attempt exceeds MaxR = 3.
        assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
        assert_eq!(starts.load(Ordering::SeqCst), 1 + 3, "initial start plus three counted attempts");
    }
}

#[tokio::test(start_paused = true)]
async fn case_13_the_supervisor_answers_calls_between_retries() {
    let node = node().await;
    let (probe, mut events) = probe();
    let (spec, starts) = flaky("f", &probe, 1, false);
    let lenient = SupervisorFlags::default().with_intensity(1_000_000, Duration::from_secs(5));
    let w = start_watched(&node, SupervisorSpec::new(lenient).child(spec)).await;
    let (_, cell) = events.next_started().await;
    send(&cell, WorkerMsg::Crash);
    for _ in 0..10 {
        let row = &w.sup.which_children().await.expect("answered while retrying")[0];
        assert_eq!(row.status, ChildStatus::Restarting);
    }
    assert!(starts.load(Ordering::SeqCst) > 2, "retries keep going");
    w.sup.terminate_child(ChildTarget::Id("f".into())).await.unwrap();
}

fn significant(name: &str, probe: &Probe, restart: Restart) -> ChildSpec {
    worker(name, probe).restart(restart).significant(true)
}

#[tokio::test(start_paused = true)]
async fn case_14_auto_shutdown_any_significant() {
    let node = node().await;
    let (probe, mut events) = probe();
    let any = flags(Strategy::OneForOne).with_auto_shutdown(AutoShutdown::AnySignificant);
    let spec = SupervisorSpec::new(any)
        .child(significant("s1", &probe, Restart::Transient))
        .child(significant("s2", &probe, Restart::Transient))
        .child(worker("p", &probe));
    let mut w = start_watched(&node, spec).await;
    events.started_names(3).await;

    // Not triggered by terminate_child.
    w.sup.terminate_child(ChildTarget::Id("s1".into())).await.unwrap();
    assert!(events.during(Duration::from_secs(1)).await.iter().all(|e| !matches!(e, Ev::Started(..))));
    assert!(w.is_alive());

    let s2 = w.sup.which_children().await.unwrap()[1].actor.clone().unwrap();
    send(&s2, WorkerMsg::Exit(ExitReason::Normal));
    assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn case_14_auto_shutdown_all_significant_and_sibling_terminations() {
    let node = node().await;
    let (probe, mut events) = probe();
    let all = flags(Strategy::OneForAll).with_auto_shutdown(AutoShutdown::AllSignificant);
    let spec = SupervisorSpec::new(all)
        .child(significant("s1", &probe, Restart::Temporary))
        .child(significant("s2", &probe, Restart::Transient))
        .child(worker("p", &probe));
    let mut w = start_watched(&node, spec).await;
    events.started_names(3).await;

    // A sibling's crash terminates the temporary significant s1: no auto shutdown.
    let p = w.sup.which_children().await.unwrap()[2].actor.clone().unwrap();
    send(&p, WorkerMsg::Crash);
    assert_eq!(events.started_names(2).await, ["s2", "p"]);
    assert!(w.is_alive());

    // The last significant child ending by itself does shut it down.
    let s2 = w.sup.which_children().await.unwrap()[0].actor.clone().unwrap();
    send(&s2, WorkerMsg::Exit(ExitReason::Shutdown));
    assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn case_14_invalid_significant_specs_are_rejected() {
    let node = node().await;
    let (probe, _events) = probe();
    let any = SupervisorFlags::default().with_auto_shutdown(AutoShutdown::AnySignificant);
    let permanent = SupervisorSpec::new(any).child(significant("s", &probe, Restart::Permanent));
    assert!(Supervisor::spawn(node.clone(), permanent, None).await.is_err());
    let never = SupervisorSpec::new(SupervisorFlags::default()).child(significant("s", &probe, Restart::Transient));
    assert!(Supervisor::spawn(node.clone(), never, None).await.is_err());
    let sup = Supervisor::spawn(node, SupervisorSpec::new(SupervisorFlags::default()), None).await.unwrap();
    let rejected = sup.start_child(significant("s", &probe, Restart::Transient)).await;
    assert!(matches!(rejected, Err(SupervisorError::Child(ChildOpError::Spec(_)))));
}

#[tokio::test(start_paused = true)]
async fn case_15_a_crash_loop_escalates_level_by_level() {
    let node = node().await;
    let (probe, mut events) = probe();
    let looping = WorkerArgs { crash_after_start: true, ..worker_args("loop", &probe) };
    let bottom = SupervisorSpec::new(SupervisorFlags::default().with_intensity(2, Duration::from_secs(5)))
        .child(worker_from(looping));
    let middle = SupervisorSpec::new(SupervisorFlags::default().with_intensity(1, Duration::from_secs(5)))
        .child(ChildSpec::supervisor("bottom", bottom));
    let top = SupervisorSpec::new(SupervisorFlags::default().with_intensity(1, Duration::from_secs(5)))
        .child(ChildSpec::supervisor("middle", middle));
    let mut w = start_watched(&node, top).await;

    assert_eq!(w.exit_reason().await, ExitReason::Shutdown);
    // Each level runs (MaxR + 1) incarnations of the level below: (2+1) * (1+1) * (1+1).
    let starts = events.during(Duration::from_secs(1)).await.iter().filter(|e| matches!(e, Ev::Started(..))).count();
    assert_eq!(starts, 12);
}

#[tokio::test(start_paused = true)]
async fn case_16_explicit_kill_is_untrappable_and_becomes_killed() {
    let node = node().await;
    let (probe, mut events) = probe();
    let target = spawn_proc(&node, "target", &probe).await;
    let observer = spawn_proc(&node, "observer", &probe).await;
    node.trap_exit(&target.get_cell(), true);
    node.monitor(&observer.get_cell(), &target.get_cell());
    node.exit(&observer.get_cell(), &target.get_cell(), ExitReason::Kill);
    let (_, down) = events.next_signal().await;
    assert!(matches!(down, Signal::Down { reason: ExitReason::Killed, .. }), "{down:?}");
}

#[tokio::test(start_paused = true)]
async fn case_16_a_linked_kill_is_trappable_and_keeps_its_name() {
    let node = node().await;
    let (probe, mut events) = probe();
    let trapper = spawn_proc(&node, "trapper", &probe).await;
    let plain = spawn_proc(&node, "plain", &probe).await;
    let observer = spawn_proc(&node, "observer", &probe).await;
    let dying = spawn_proc(&node, "dying", &probe).await;
    node.trap_exit(&trapper.get_cell(), true);
    node.link(&trapper.get_cell(), &dying.get_cell());
    node.link(&plain.get_cell(), &dying.get_cell());
    node.monitor(&observer.get_cell(), &plain.get_cell());

    dying.send_message(ProcMsg::Exit(ExitReason::Kill)).unwrap();
    let mut seen = vec![events.next_signal().await, events.next_signal().await];
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(matches!(&seen[0], (who, Signal::Down { reason: ExitReason::Kill, .. }) if who == "observer"), "{seen:?}");
    assert!(matches!(&seen[1], (who, Signal::Exit { reason: ExitReason::Kill, .. }) if who == "trapper"), "{seen:?}");
    assert!(trapper.get_status() == ractor::ActorStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn case_16_normal_from_another_process_is_ignored_unless_trapping() {
    let node = node().await;
    let (probe, mut events) = probe();
    let plain = spawn_proc(&node, "plain", &probe).await;
    let trapper = spawn_proc(&node, "trapper", &probe).await;
    let sender = spawn_proc(&node, "sender", &probe).await;
    node.trap_exit(&trapper.get_cell(), true);
    node.exit(&sender.get_cell(), &plain.get_cell(), ExitReason::Normal);
    node.exit(&sender.get_cell(), &trapper.get_cell(), ExitReason::Normal);
    let (who, signal) = events.next_signal().await;
    assert_eq!(who, "trapper");
    assert_eq!(signal, Signal::Exit { from: sender.get_id(), reason: ExitReason::Normal });
    assert!(events.during(Duration::from_secs(1)).await.is_empty());
    assert_eq!(plain.get_status(), ractor::ActorStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn case_16_linking_to_a_dead_process_gives_noproc() {
    let node = node().await;
    let (probe, mut events) = probe();
    let trapper = spawn_proc(&node, "trapper", &probe).await;
    let gone = spawn_proc(&node, "gone", &probe).await;
    node.trap_exit(&trapper.get_cell(), true);
    gone.stop(None);
    wait_stopped(&gone.get_cell()).await;
    node.link(&trapper.get_cell(), &gone.get_cell());
    assert_eq!(events.next_signal().await.1, Signal::Exit { from: gone.get_id(), reason: ExitReason::NoProc });

    let plain = spawn_proc(&node, "plain", &probe).await;
    node.link(&plain.get_cell(), &gone.get_cell());
    wait_stopped(&plain.get_cell()).await;
}

#[tokio::test(start_paused = true)]
async fn case_17_monitors_stack_demonitor_suppresses_and_dead_targets_give_noproc() {
    let node = node().await;
    let (probe, mut events) = probe();
    let watcher = spawn_proc(&node, "watcher", &probe).await;
    let target = spawn_proc(&node, "target", &probe).await;
    let first = node.monitor(&watcher.get_cell(), &target.get_cell());
    let second = node.monitor(&watcher.get_cell(), &target.get_cell());
    let third = node.monitor(&watcher.get_cell(), &target.get_cell());
    node.demonitor(third);
    target.send_message(ProcMsg::Exit(ExitReason::Failed("bye".into()))).unwrap();

    let mut refs = Vec::new();
    for _ in 0..2 {
        match events.next_signal().await.1 {
            Signal::Down { monitor, reason, from } => {
                assert_eq!((from, reason), (target.get_id(), ExitReason::Failed("bye".into())));
                refs.push(monitor);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    refs.sort();
    assert_eq!(refs, [first, second], "two monitors, two DOWNs; the removed one is silent");
    assert!(events.during(Duration::from_secs(1)).await.is_empty());

    let late = node.monitor(&watcher.get_cell(), &target.get_cell());
    assert_eq!(
        events.next_signal().await.1,
        Signal::Down { monitor: late, from: target.get_id(), reason: ExitReason::NoProc }
    );
}

/// Receives sequence-numbered casts and counts per-sender order violations.
struct Sink;

impl Actor for Sink {
    type Msg = (usize, u64, Option<tokio::sync::oneshot::Sender<usize>>);
    type State = (Vec<u64>, usize);
    type Arguments = usize;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, senders: usize) -> Result<Self::State, ActorProcessingErr> {
        Ok((vec![0; senders], 0))
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (sender, seq, done) = msg;
        if let Some(done) = done {
            let _ = done.send(state.1);
            return Ok(());
        }
        if seq != state.0[sender] {
            state.1 += 1;
        }
        state.0[sender] = seq + 1;
        Ok(())
    }
}

/// Sends `count` numbered casts to the sink when told to.
struct Source;

impl Actor for Source {
    type Msg = ();
    type State = (usize, u64, ActorRef<<Sink as Actor>::Msg>);
    type Arguments = Self::State;

    async fn pre_start(&self, _: ActorRef<()>, args: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<()>, _: (), state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let (index, count, sink) = state;
        for seq in 0..*count {
            sink.send_message((*index, seq, None))?;
            if seq % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        myself.stop(None);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_18_per_pair_ordering_holds_on_the_multi_threaded_runtime() {
    // Repetition on a real two-worker scheduler stands in for shuttle's randomized one:
    // ractor's mailboxes run on tokio, which shuttle cannot drive.
    const ITERATIONS: usize = 300;
    const SENDERS: usize = 4;
    for _ in 0..ITERATIONS {
        let (sink, _) = Actor::spawn(None, Sink, SENDERS).await.unwrap();
        let mut sources = Vec::new();
        for index in 0..SENDERS {
            let (source, _) = Actor::spawn(None, Source, (index, 250, sink.clone())).await.unwrap();
            sources.push(source);
        }
        for source in &sources {
            source.send_message(()).unwrap();
        }
        for source in &sources {
            source.get_cell().wait(Some(BOUND)).await.unwrap();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        sink.send_message((0, 0, Some(tx))).unwrap();
        assert_eq!(rx.await.unwrap(), 0, "per-sender FIFO violated");
        sink.stop(None);
    }
}

// Case 19 (a remote link across a partition gives `noconnection` while the remote process
// lives) needs two nodes and a network, which this crate cannot depend on: it is
// `sim_remote_links_carry_exits_and_a_partition_gives_noconnection` in
// `transport/tests/transport.rs`, over SimNet.

#[tokio::test(start_paused = true)]
async fn case_20_callers_time_out_while_the_supervisor_shuts_a_child_down() {
    let node = node().await;
    let (probe, mut events) = probe();
    let spec = SupervisorSpec::new(flags(Strategy::OneForOne)).child(hanging(
        "stuck",
        &probe,
        Shutdown::Timeout(Duration::from_secs(10)),
    ));
    let w = start_watched(&node, spec).await;
    events.next_started().await;

    let busy = w.sup.clone().with_timeout(BOUND);
    let terminating = tokio::spawn(async move { busy.terminate_child(ChildTarget::Id("stuck".into())).await });
    tokio::task::yield_now().await;

    let impatient = w.sup.clone().with_timeout(Duration::from_secs(1));
    assert_eq!(impatient.which_children().await.unwrap_err(), CallError::Timeout(Duration::from_secs(1)));

    terminating.await.unwrap().unwrap();
    assert_eq!(impatient.which_children().await.unwrap()[0].status, ChildStatus::Stopped);
}

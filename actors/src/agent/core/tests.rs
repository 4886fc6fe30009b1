use std::collections::BTreeMap;

use super::*;
use crate::agent::driver::{TaskCommand, TaskExit};
use crate::mesos::core::{Ranges, Resources, TaskState, TaskStatus, UpdateReason, UpdateSource};
use crate::mesos::protocol::TaskInfo;

fn status(task: &str, state: TaskState, uuid: u128) -> TaskStatus {
    TaskStatus {
        task_id: task.to_owned(),
        agent_id: "a1".to_owned(),
        state,
        source: UpdateSource::Executor,
        reason: None,
        message: String::new(),
        uuid: Some(uuid),
        timestamp_ms: 0,
        healthy: None,
    }
}

#[test]
fn updates_go_one_at_a_time_in_order_until_acknowledged() {
    let mut stream = UpdateStream::new(100, 1000);
    assert_eq!(stream.push(status("t", TaskState::Running, 1), 0).map(|s| s.uuid), Some(Some(1)));
    assert_eq!(stream.push(status("t", TaskState::Finished, 2), 0), None, "waits behind the head");
    // A stale or duplicate acknowledgement changes nothing.
    assert_eq!(stream.acknowledge("t", 2, 10), Acknowledged::Ignored);
    match stream.acknowledge("t", 1, 10) {
        Acknowledged::Head { next: Some(next), drained: false } => assert_eq!(next.uuid, Some(2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(stream.acknowledge("t", 1, 11), Acknowledged::Ignored);
    assert_eq!(stream.acknowledge("t", 2, 12), Acknowledged::Head { next: None, drained: true });
    assert!(!stream.has_pending("t"));
}

#[test]
fn an_unacknowledged_head_is_resent_with_doubling_backoff_up_to_the_maximum() {
    let mut stream = UpdateStream::new(100, 350);
    stream.push(status("t", TaskState::Running, 1), 0);
    let mut sent_at = Vec::new();
    for now in 0..2000 {
        if !stream.due(now).is_empty() {
            sent_at.push(now);
        }
    }
    assert_eq!(&sent_at[..5], &[100, 300, 650, 1000, 1350]);
}

#[test]
fn resend_all_sends_every_head_after_registration_and_restore_keeps_order() {
    let mut stream = UpdateStream::default();
    stream.restore("a", vec![status("a", TaskState::Running, 1), status("a", TaskState::Failed, 2)]);
    stream.push(status("b", TaskState::Running, 3), 0);
    let heads: Vec<_> = stream.resend_all(5).into_iter().map(|s| s.uuid).collect();
    assert_eq!(heads, vec![Some(1), Some(3)]);
    assert_eq!(stream.pending("a").len(), 2);
}

#[test]
fn the_fence_refuses_older_terms_and_reports_new_ones() {
    let mut fence = TermFence::new(3);
    assert_eq!(fence.admit(3), Ok(false));
    assert_eq!(fence.admit(5), Ok(true));
    assert_eq!(fence.admit(4), Err(StaleTerm { command: 4, newest: 5 }));
    assert_eq!(fence.newest(), 5);
}

#[test]
fn exits_map_to_mesos_states() {
    assert_eq!(exit_outcome(&TaskExit::exited(0), false).state, TaskState::Finished);
    let failed = exit_outcome(&TaskExit::exited(3), false);
    assert_eq!((failed.state, failed.reason), (TaskState::Failed, Some(UpdateReason::CommandExecutorFailed)));
    assert_eq!(exit_outcome(&TaskExit::signalled(15), true).state, TaskState::Killed);
    let oom = TaskExit { oom_killed: true, ..TaskExit::signalled(9) };
    for killing in [false, true] {
        let outcome = exit_outcome(&oom, killing);
        assert_eq!((outcome.state, outcome.reason), (TaskState::Failed, Some(UpdateReason::ContainerLimitationMemory)));
    }
}

#[test]
fn the_environment_carries_mesos_variables_and_ports_and_they_win() {
    let task = TaskInfo {
        task_id: "web.1".to_owned(),
        name: "web".to_owned(),
        framework_id: "fw".to_owned(),
        role: "*".to_owned(),
        command: TaskCommand { shell: true, value: "true".to_owned(), arguments: Vec::new() },
        resources: Resources::cpus_mem_disk(0.1, 32.0, 0.0)
            .with_ranges("ports", Ranges::new([(31000, 31001), (31005, 31005)]).unwrap()),
        env: BTreeMap::from([("MESOS_TASK_ID".to_owned(), "fake".to_owned()), ("MINE".to_owned(), "1".to_owned())]),
        labels: BTreeMap::new(),
        kill_grace_ms: 2500,
        health_check: None,
        fetch: Vec::new(),
        discovery: None,
    };
    let at = Placement { agent_id: "a1", hostname: "host1", sandbox: "/sb", agent_endpoint: "a1" };
    let env = task_environment(&task, &at);
    assert_eq!(env["MESOS_TASK_ID"], "web.1");
    assert_eq!(env["MINE"], "1");
    assert_eq!(env["MESOS_SANDBOX"], "/sb");
    assert_eq!(env["HOST"], "host1");
    assert_eq!((env["PORT0"].as_str(), env["PORT2"].as_str(), env["PORT"].as_str()), ("31000", "31005", "31000"));
    assert_eq!(env["PORTS"], "31000,31001,31005");
    assert_eq!(env["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"], "2.5secs");
}

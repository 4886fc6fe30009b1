use std::collections::BTreeMap;

use super::*;
use crate::agent::driver::TaskCommand;
use crate::mesos::core::health::HealthCheck;
use crate::mesos::core::{Resources, RoleResources, TaskState, TaskStatus, UNRESERVED, UpdateReason, UpdateSource};
use crate::mesos::protocol::{
    AgentInfo, Command, FrameworkEvent, FrameworkInfo, OfferInfo, Operation, SchedulerCall, TaskInfo, TaskReport,
};

fn agent_info(id: &str) -> AgentInfo {
    let mut resources = RoleResources::new();
    resources.insert(UNRESERVED.to_owned(), Resources::cpus_mem_disk(4.0, 4096.0, 1000.0));
    AgentInfo {
        id: id.to_owned(),
        hostname: format!("{id}.local"),
        resources,
        attributes: BTreeMap::new(),
        driver: "mock".to_owned(),
        isolation_missing: Vec::new(),
    }
}

fn config() -> MasterConfig {
    MasterConfig { ping_interval_ms: 100, max_missed_pings: 3, reregister_timeout_ms: 500, ..MasterConfig::default() }
}

fn framework() -> FrameworkInfo {
    FrameworkInfo { id: None, name: "test".to_owned(), roles: vec![UNRESERVED.to_owned()], partition_aware: true }
}

fn task(id: &str, cpus: f64) -> TaskInfo {
    TaskInfo {
        task_id: id.to_owned(),
        name: id.to_owned(),
        framework_id: String::new(),
        role: String::new(),
        command: TaskCommand { shell: true, value: "sleep 100".to_owned(), arguments: Vec::new() },
        resources: Resources::cpus_mem_disk(cpus, 64.0, 0.0),
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        kill_grace_ms: 1000,
        health_check: None,
        fetch: Vec::new(),
        discovery: None,
    }
}

fn offers_in(actions: &[Action]) -> Vec<OfferInfo> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToFramework { event: FrameworkEvent::Offers(offers), .. } => Some(offers.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn updates_in(actions: &[Action]) -> Vec<TaskStatus> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToFramework { event: FrameworkEvent::Update(status), .. } => Some(status.clone()),
            _ => None,
        })
        .collect()
}

fn running(task_id: &str, agent: &str, uuid: u128) -> TaskStatus {
    TaskStatus {
        task_id: task_id.to_owned(),
        agent_id: agent.to_owned(),
        state: TaskState::Running,
        source: UpdateSource::Executor,
        reason: None,
        message: String::new(),
        uuid: Some(uuid),
        timestamp_ms: 0,
        healthy: None,
    }
}

/// The framework accepts `offer` to launch `tasks`.
fn launch(core: &mut MasterCore, fw: &str, offer: &OfferInfo, tasks: Vec<TaskInfo>) -> Vec<Action> {
    let operations = vec![Operation::Launch(tasks)];
    core.call(fw, SchedulerCall::Accept { offer_ids: vec![offer.id.clone()], operations, refuse_ms: 0 }, 60)
}

/// A master with one registered agent and one subscribed framework holding an offer.
fn with_offer() -> (MasterCore, String, OfferInfo) {
    let mut core = MasterCore::new(config(), "m1", 1, 0, 0, Vec::new());
    core.register_agent("a1", agent_info("a1"), Vec::new(), 0);
    let (fw, _) = core.subscribe(framework());
    let offers = offers_in(&core.tick(50, 0, 7));
    assert_eq!(offers.len(), 1, "one agent, one framework: one offer");
    (core, fw, offers[0].clone())
}

#[test]
fn an_accepted_offer_launches_stamped_tasks_and_updates_reach_the_framework() {
    let (mut core, fw, offer) = with_offer();
    let actions = launch(&mut core, &fw, &offer, vec![task("t1", 1.0)]);
    let launched: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ToAgent { agent, command: Command::Launch(t) } => Some((agent.clone(), t.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(launched.len(), 1);
    assert_eq!((launched[0].0.as_str(), launched[0].1.framework_id.as_str()), ("a1", fw.as_str()));
    let forwarded = updates_in(&core.agent_update("a1", running("t1", "a1", 9)));
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].uuid, Some(9));
    // A re-sent update is forwarded again (the framework acknowledges by uuid) but recorded once.
    core.agent_update("a1", running("t1", "a1", 9));
    let state = core.state();
    assert_eq!(state.tasks[0].state, TaskState::Running);
    assert_eq!(state.tasks[0].statuses.len(), 2, "staging + running");
    // The rest of the agent goes out again: 3 cpus left.
    let next = offers_in(&core.tick(2000, 0, 7));
    assert_eq!(next[0].resources.scalar("cpus"), 3.0);
}

#[test]
fn an_update_from_another_agent_than_the_tasks_changes_nothing() {
    let (mut core, fw, offer) = with_offer();
    launch(&mut core, &fw, &offer, vec![task("t1", 1.0)]);
    assert!(updates_in(&core.agent_update("intruder", running("t1", "intruder", 1))).is_empty());
    assert_eq!(core.state().tasks[0].state, TaskState::Staging);
}

#[test]
fn invalid_tasks_get_task_error_and_launch_nothing() {
    let (mut core, fw, offer) = with_offer();
    let mut bad_id = task("has space", 1.0);
    bad_id.task_id = "has space".to_owned();
    let mut no_command = task("t2", 1.0);
    no_command.command.value = " ".to_owned();
    let too_big = task("t3", 64.0);
    let mut busy_check = task("t4", 1.0);
    let probe = crate::mesos::core::health::Probe::Tcp { port: 80 };
    busy_check.health_check = Some(HealthCheck { interval_ms: 0, ..HealthCheck::marathon_defaults(probe) });
    let actions = launch(&mut core, &fw, &offer, vec![bad_id, no_command, too_big, busy_check]);
    let errors = updates_in(&actions);
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|s| s.state == TaskState::Error && s.reason == Some(UpdateReason::TaskInvalid)));
    assert!(errors[2].message.contains("resources"), "{}", errors[2].message);
    assert!(errors[3].message.contains("health check"), "{}", errors[3].message);
    assert!(!actions.iter().any(|a| matches!(a, Action::ToAgent { command: Command::Launch(_), .. })));
}

#[test]
fn a_declined_offer_is_filtered_for_refuse_seconds() {
    let (mut core, fw, offer) = with_offer();
    core.call(&fw, SchedulerCall::Decline { offer_ids: vec![offer.id], refuse_ms: 5_000 }, 60);
    assert!(offers_in(&core.tick(2_000, 0, 1)).is_empty(), "filtered");
    assert_eq!(offers_in(&core.tick(5_100, 0, 1)).len(), 1, "the filter expired");
}

#[test]
fn an_agent_missing_pings_becomes_unreachable_its_offers_are_rescinded_and_it_can_come_back() {
    let (mut core, fw, offer) = with_offer();
    launch(&mut core, &fw, &offer, vec![task("t1", 1.0)]);
    core.agent_update("a1", running("t1", "a1", 1));
    let mut actions = Vec::new();
    for now in (100..=500).step_by(100) {
        actions.extend(core.tick(now, now, 1));
    }
    let updates = updates_in(&actions);
    assert!(updates.iter().any(|s| s.task_id == "t1" && s.state == TaskState::Unreachable), "{updates:?}");
    assert!(actions.iter().any(|a| matches!(a, Action::PersistAgent(r) if r.unreachable_since_ms.is_some())));
    assert!(!core.state().agents[0].active);
    let report = TaskReport { task: core.state().tasks[0].task.clone(), status: running("t1", "a1", 1) };
    let back = core.register_agent("a1", agent_info("a1"), vec![report], 600);
    assert!(updates_in(&back).iter().any(|s| s.state == TaskState::Running));
    assert_eq!(core.state().tasks[0].state, TaskState::Running);
}

#[test]
fn a_new_leader_waits_for_known_agents_before_offering_and_answering_reconciliation() {
    let record = AgentRecord { info: agent_info("a1"), reserved: RoleResources::new(), unreachable_since_ms: None };
    let late = AgentRecord { info: agent_info("a2"), reserved: RoleResources::new(), unreachable_since_ms: None };
    let mut core = MasterCore::new(config(), "m2", 2, 0, 0, vec![record, late]);
    let info = FrameworkInfo { id: Some("fw".to_owned()), ..framework() };
    core.subscribe(info);
    let reconcile = core.call("fw", SchedulerCall::Reconcile { task_ids: vec!["t1".to_owned(), "t9".to_owned()] }, 0);
    assert!(updates_in(&reconcile).is_empty(), "deferred while recovering");
    let mut adopted = task("t1", 1.0);
    adopted.framework_id = "fw".to_owned();
    let report = TaskReport { task: adopted, status: running("t1", "a1", 1) };
    let actions = core.register_agent("a1", agent_info("a1"), vec![report], 0);
    assert!(updates_in(&actions).is_empty() && core.is_recovering());
    assert!(offers_in(&core.tick(100, 0, 1)).is_empty(), "no offers while recovering");
    // a2 never comes back: at the deadline it is unreachable, recovery ends, answers go out.
    let actions = core.tick(600, 600, 1);
    assert!(!core.is_recovering());
    let answers = updates_in(&actions);
    let states: BTreeMap<_, _> = answers.iter().map(|s| (s.task_id.as_str(), s.state)).collect();
    assert_eq!(states.get("t1"), Some(&TaskState::Running));
    assert_eq!(states.get("t9"), Some(&TaskState::Unknown));
    assert!(answers.iter().all(|s| s.reason == Some(UpdateReason::Reconciliation) && s.uuid.is_none()));
    assert!(!offers_in(&actions).is_empty(), "a1's free resources are offered");
}

#[test]
fn tasks_the_master_placed_but_the_agent_no_longer_holds_are_lost() {
    let (mut core, fw, offer) = with_offer();
    launch(&mut core, &fw, &offer, vec![task("t1", 1.0)]);
    core.agent_update("a1", running("t1", "a1", 1));
    let actions = core.register_agent("a1", agent_info("a1"), Vec::new(), 100);
    let lost = updates_in(&actions);
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].state, lost[0].reason), (TaskState::Lost, Some(UpdateReason::TaskUnknown)));
    assert!(core.state().tasks.is_empty());
    // The report may have been stale (sent before the launch arrived): the agent is told to
    // kill the task, so that it cannot run on beside its replacement.
    assert!(kills_unknown(&actions, "a1").contains(&"t1".to_owned()));
}

#[test]
fn a_task_reported_running_after_the_master_ended_it_is_killed_not_left_an_orphan() {
    let (mut core, fw, offer) = with_offer();
    launch(&mut core, &fw, &offer, vec![task("t1", 1.0)]);
    core.agent_update("a1", running("t1", "a1", 1));
    core.register_agent("a1", agent_info("a1"), Vec::new(), 100);
    assert_eq!(core.state().completed_tasks[0].state, TaskState::Lost);
    let actions = core.agent_update("a1", running("t1", "a1", 5));
    assert_eq!(kills_unknown(&actions, "a1"), vec!["t1".to_owned()]);
    // A terminal update for it is only acknowledged; an agent not registered here kills nothing
    // (it reports its tasks when it registers).
    let mut killed = running("t1", "a1", 6);
    killed.state = TaskState::Killed;
    assert!(kills_unknown(&core.agent_update("a1", killed), "a1").is_empty());
    assert!(kills_unknown(&core.agent_update("a2", running("t1", "a2", 7)), "a2").is_empty());
}

#[test]
fn a_running_task_the_master_never_knew_is_killed_once_recovery_is_over() {
    let (mut core, _, _) = with_offer();
    // Launched by an earlier leader after the agent's registration report was written.
    let actions = core.agent_update("a1", running("from-an-old-leader", "a1", 3));
    assert_eq!(kills_unknown(&actions, "a1"), vec!["from-an-old-leader".to_owned()]);
    // A new leader still waiting for some agents kills nothing: reports are still to come.
    let known = ["a1", "a2"].map(|id| AgentRecord {
        info: agent_info(id),
        reserved: RoleResources::new(),
        unreachable_since_ms: None,
    });
    let mut recovering = MasterCore::new(config(), "m2", 2, 0, 0, known.to_vec());
    recovering.register_agent("a1", agent_info("a1"), Vec::new(), 0);
    assert!(recovering.is_recovering());
    assert!(kills_unknown(&recovering.agent_update("a1", running("t9", "a1", 4)), "a1").is_empty());
}

fn kills_unknown(actions: &[Action], to: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToAgent { agent, command: Command::KillUnknown { task_ids } } if agent == to => {
                Some(task_ids.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_long_staging_is_reconciled_with_its_agent_and_a_launch_it_never_received_is_dropped() {
    let (mut core, fw, offer) = with_offer();
    launch(&mut core, &fw, &offer, vec![task("t1", 1.0), task("t2", 1.0)]);
    core.agent_update("a1", running("t2", "a1", 5));
    let reconciles = |actions: &[Action]| -> Vec<Vec<String>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToAgent { agent, command: Command::Reconcile { task_ids } } if agent == "a1" => {
                    Some(task_ids.clone())
                }
                _ => None,
            })
            .collect()
    };
    let mut now = 50;
    let mut tick = |core: &mut MasterCore, to: u64| {
        core.pong("a1", 1);
        now = to;
        core.tick(now, 0, 7)
    };
    assert!(reconciles(&tick(&mut core, 5_000)).is_empty(), "a young staging is left alone");
    let asked = reconciles(&tick(&mut core, 10_100));
    assert_eq!(asked, vec![vec!["t1".to_owned()]], "only the long staging, not the running task");
    let dropped = updates_in(&core.never_launched("a1", vec!["t1".to_owned()]));
    assert_eq!(dropped.len(), 1);
    assert_eq!((dropped[0].state, dropped[0].reason), (TaskState::Dropped, Some(UpdateReason::Reconciliation)));
    assert!(updates_in(&core.never_launched("a1", vec!["t1".to_owned()])).is_empty(), "answered once");
    assert!(updates_in(&core.never_launched("a2", vec!["t2".to_owned()])).is_empty(), "only its own agent");
    assert!(reconciles(&tick(&mut core, 12_000)).is_empty(), "nothing staging is left");
}

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flotilla_supervisors::planted::{PlantedBug, planted};
use serde::{Deserialize, Serialize};

use super::discovery::{self, DiscoveryLedger};
use crate::allocator::core::{
    AgentView as AllocAgent, AllocSnapshot, Allocation, Filter, Filters, FrameworkView as AllocFramework, RoleConfig,
    allocate,
};
use crate::discovery::{AgentEntry, FrameworkEntry, TaskEntry, ViewChange};
use crate::mesos::core::{Resources, RoleResources, TaskState, TaskStatus, UNRESERVED, UpdateReason, UpdateSource};
use crate::mesos::protocol::{
    AgentInfo, AgentView, Command, FrameworkEvent, FrameworkInfo, FrameworkView, MasterState, OfferInfo, Operation,
    SchedulerCall, TaskInfo, TaskReport, TaskView,
};

/// The master's settings; defaults are Mesos's (and DC/OS's where it overrides them).
#[derive(Clone, Debug, PartialEq)]
pub struct MasterConfig {
    /// Pings go to every agent this often (`--agent_ping_timeout`, 15 s).
    pub ping_interval_ms: u64,
    /// An agent missing this many pings in a row is unreachable (`--max_agent_ping_timeouts`, 5).
    pub max_missed_pings: u32,
    /// A full allocation round this often (`--allocation_interval`, 1 s).
    pub allocation_interval_ms: u64,
    /// After a change (an agent, declined offers, a revive) a round runs this soon instead.
    pub allocation_batch_ms: u64,
    /// Outstanding offers are rescinded after this long (DC/OS: 2 min; 0 = never).
    pub offer_timeout_ms: u64,
    /// After a failover, agents have this long to re-register before they are marked
    /// unreachable (Mesos: ping timeout × max pings, 75 s).
    pub reregister_timeout_ms: u64,
    pub roles: BTreeMap<String, RoleConfig>,
    /// DC/OS's `cpus:0.01;mem:32` (an offer holds at least one of these).
    pub min_allocatable: Vec<Resources>,
    /// Finished tasks kept for `/master/state`.
    pub completed_tasks_kept: usize,
    /// Statuses kept per task.
    pub statuses_kept: usize,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            ping_interval_ms: 15_000,
            max_missed_pings: 5,
            allocation_interval_ms: 1_000,
            allocation_batch_ms: 20,
            offer_timeout_ms: 120_000,
            reregister_timeout_ms: 75_000,
            roles: BTreeMap::new(),
            min_allocatable: vec![
                Resources::new().with_scalar("cpus", 0.01),
                Resources::new().with_scalar("mem", 32.0),
            ],
            completed_tasks_kept: 1_000,
            statuses_kept: 10,
        }
    }
}

/// A task staging this long on an agent is reconciled with it: a launch normally reaches the
/// agent within milliseconds, and a slow fetch is known to the agent from its first moment.
pub const STAGING_RECONCILE_MS: u64 = 10_000;

/// What the registry keeps about an agent across failovers (Mesos's registry of admitted
/// agents): its info, its dynamic reservations, and when it became unreachable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub info: AgentInfo,
    /// Dynamic reservations by role.
    pub reserved: RoleResources,
    pub unreachable_since_ms: Option<u64>,
}

/// An effect for the actor shell to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send to an agent (the shell stamps the term).
    ToAgent {
        agent: String,
        command: Command,
    },
    ToFramework {
        framework: String,
        event: FrameworkEvent,
    },
    /// Write the agent's record to the registry.
    PersistAgent(AgentRecord),
}

struct Agent {
    record: AgentRecord,
    active: bool,
    registered_ms: u64,
    /// Pings sent since the last pong.
    missed: u32,
}

struct Task {
    info: TaskInfo,
    agent: String,
    state: TaskState,
    statuses: VecDeque<TaskStatus>,
    /// When this master launched or adopted it (its clock), for reconciling long stagings.
    since_ms: u64,
}

struct Framework {
    info: FrameworkInfo,
    active: bool,
    /// Roles for which the framework wants no offers (`SUPPRESS`).
    suppressed: BTreeSet<String>,
}

struct Offer {
    info: OfferInfo,
    created_ms: u64,
}

/// The master state machine.
pub struct MasterCore {
    config: MasterConfig,
    me: String,
    term: u64,
    elected_ms: u64,
    agents: BTreeMap<String, Agent>,
    tasks: BTreeMap<String, Task>,
    completed: VecDeque<TaskView>,
    frameworks: BTreeMap<String, Framework>,
    offers: BTreeMap<String, Offer>,
    filters: Filters,
    /// Agents the registry knows that have not re-registered yet, and the deadline.
    recovering: Option<(BTreeSet<String>, u64)>,
    /// Reconciliations asked for during recovery, answered when it ends.
    deferred: Vec<(String, Vec<String>)>,
    next_ping_ms: u64,
    /// The time of the last tick (this master's clock), stamped on tasks as they arrive.
    now_ms: u64,
    last_round_ms: u64,
    dirty: bool,
    next_id: u64,
    discovery: DiscoveryLedger,
}

/// Mesos accepts task ids of printable characters without `/`; Flotilla also keeps them to
/// what every file system, DNS label and URL takes without escaping surprises.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl MasterCore {
    /// A new leader of `term`; `known_agents` are the registry's agent records, which must
    /// re-register (or time out) before allocation starts.
    pub fn new(
        config: MasterConfig,
        me: &str,
        term: u64,
        now_ms: u64,
        wall_ms: u64,
        known_agents: Vec<AgentRecord>,
    ) -> MasterCore {
        let mut agents = BTreeMap::new();
        for record in known_agents {
            let agent = Agent { record, active: false, registered_ms: 0, missed: 0 };
            agents.insert(agent.record.info.id.clone(), agent);
        }
        let waiting: BTreeSet<String> = agents
            .values()
            .filter(|a| a.record.unreachable_since_ms.is_none())
            .map(|a| a.record.info.id.clone())
            .collect();
        let recovering = (!waiting.is_empty()).then(|| (waiting, now_ms + config.reregister_timeout_ms));
        MasterCore {
            next_ping_ms: now_ms + config.ping_interval_ms,
            now_ms,
            config,
            me: me.to_owned(),
            term,
            elected_ms: wall_ms,
            agents,
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            frameworks: BTreeMap::new(),
            offers: BTreeMap::new(),
            filters: Filters::new(),
            recovering,
            deferred: Vec::new(),
            last_round_ms: now_ms,
            dirty: true,
            next_id: 0,
            discovery: DiscoveryLedger::default(),
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn is_recovering(&self) -> bool {
        self.recovering.is_some()
    }

    fn fresh_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{}-{}-{kind}{}", self.me, self.term, self.next_id)
    }

    // ---- agents -------------------------------------------------------------------------

    /// An agent (re-)registers, reporting the tasks it holds.
    pub fn register_agent(
        &mut self,
        from: &str,
        mut info: AgentInfo,
        reports: Vec<TaskReport>,
        wall_ms: u64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        info.id = from.to_owned(); // the authenticated node id, whatever the message says
        let reserved = self.agents.get(from).map(|a| a.record.reserved.clone()).unwrap_or_default();
        let record = AgentRecord { info, reserved, unreachable_since_ms: None };
        let changed = self.agents.get(from).is_none_or(|a| a.record != record);
        let agent = Agent { record: record.clone(), active: true, registered_ms: wall_ms, missed: 0 };
        self.agents.insert(from.to_owned(), agent);
        self.discovery.agent_changed(from);
        if changed {
            actions.push(Action::PersistAgent(record));
        }
        actions.push(Action::ToAgent { agent: from.to_owned(), command: Command::Registered });
        self.adopt_reports(from, reports, &mut actions);
        if let Some((waiting, _)) = &mut self.recovering {
            waiting.remove(from);
        }
        self.end_recovery_if_done(None, &mut actions);
        self.dirty = true;
        actions
    }

    /// Takes the agent's word for what runs there: its tasks are adopted with their latest
    /// state; tasks this master placed there that the agent does not hold are lost.
    fn adopt_reports(&mut self, agent: &str, reports: Vec<TaskReport>, actions: &mut Vec<Action>) {
        let reported: BTreeSet<String> = reports.iter().map(|r| r.task.task_id.clone()).collect();
        for report in reports {
            let task_id = report.task.task_id.clone();
            self.discovery.task_changed(&task_id);
            let previous = self.tasks.get(&task_id).map(|t| t.state);
            // A terminal task is adopted too: its terminal update is still in the agent's
            // stream and completes it when it arrives (and reaches the framework).
            let state = report.status.state;
            let since_ms = self.now_ms;
            let task = self.tasks.entry(task_id).or_insert_with(|| Task {
                info: report.task.clone(),
                agent: agent.to_owned(),
                state,
                statuses: VecDeque::new(),
                since_ms,
            });
            task.state = state;
            task.agent = agent.to_owned();
            // Back from a partition, or unknown until now (an agent re-registering after
            // this leader's recovery, or reporting a launch its earlier report missed): tell
            // the framework its task runs, so that it can kill one it does not know.
            if previous == Some(TaskState::Unreachable) || (previous.is_none() && self.recovering.is_none()) {
                let mut status = report.status.clone();
                status.uuid = None;
                status.source = UpdateSource::Master;
                status.message = "The agent re-registered".to_owned();
                self.push_status(&status);
                self.to_framework_of(&report.task.framework_id, FrameworkEvent::Update(status), actions);
            }
        }
        let lost: Vec<String> = self
            .tasks
            .iter()
            .filter(|(id, t)| t.agent == agent && !reported.contains(*id) && t.state != TaskState::Staging)
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in &lost {
            self.master_update(
                task_id,
                TaskState::Lost,
                UpdateReason::TaskUnknown,
                "The agent does not hold the task",
                actions,
            );
        }
        // The report may be older than a launch the agent received since (a registration
        // delayed or repeated by the network): the framework now replaces these tasks, so the
        // agent must not run them on. Killing a task it never held does nothing.
        if !lost.is_empty() {
            actions.push(Action::ToAgent { agent: agent.to_owned(), command: Command::KillUnknown { task_ids: lost } });
        }
    }

    pub fn pong(&mut self, from: &str, term: u64) {
        if term == self.term
            && let Some(agent) = self.agents.get_mut(from)
        {
            agent.missed = 0;
        }
    }

    fn mark_unreachable(&mut self, agent_id: &str, wall_ms: u64, actions: &mut Vec<Action>) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        agent.active = false;
        agent.record.unreachable_since_ms = Some(wall_ms);
        self.discovery.agent_changed(agent_id);
        actions.push(Action::PersistAgent(agent.record.clone()));
        let offers: Vec<String> =
            self.offers.iter().filter(|(_, o)| o.info.agent_id == agent_id).map(|(id, _)| id.clone()).collect();
        for offer in offers {
            self.rescind(&offer, actions);
        }
        let tasks: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent == agent_id && !t.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in tasks {
            self.master_update(
                &task_id,
                TaskState::Unreachable,
                UpdateReason::AgentRemoved,
                "The agent is unreachable",
                actions,
            );
        }
    }

    // ---- status updates -----------------------------------------------------------------

    /// An agent's status update: applied to the task table and forwarded to the framework
    /// (which acknowledges it); a re-sent update is forwarded again but changes nothing.
    pub fn agent_update(&mut self, from: &str, mut status: TaskStatus) -> Vec<Action> {
        let mut actions = Vec::new();
        status.agent_id = from.to_owned();
        let Some(task) = self.tasks.get_mut(&status.task_id) else {
            // A task of a framework this master does not know: acknowledge so the agent's
            // stream moves on (the task is reported again on re-registration).
            if let Some(uuid) = status.uuid {
                let command = Command::Acknowledge { task_id: status.task_id.clone(), uuid };
                actions.push(Action::ToAgent { agent: from.to_owned(), command });
            }
            // A live task this master does not hold, on an agent registered with it, once every
            // agent has re-registered: an orphan. Either this master ended it (lost, dropped)
            // and its framework has replaced it, or an earlier leader launched it after the
            // agent's report was written; nothing will ever answer for it, so it must not run.
            let registered = self.agents.get(from).is_some_and(|agent| agent.active);
            if !status.state.is_terminal() && registered && self.recovering.is_none() {
                let command = Command::KillUnknown { task_ids: vec![status.task_id.clone()] };
                actions.push(Action::ToAgent { agent: from.to_owned(), command });
            }
            return actions;
        };
        if task.agent != from {
            return actions;
        }
        let framework = task.info.framework_id.clone();
        let repeated = task.statuses.iter().any(|s| s.uuid.is_some() && s.uuid == status.uuid)
            && !planted(PlantedBug::NonIdempotentStatus);
        if !repeated && !task.state.is_terminal() {
            task.state = status.state;
            self.push_status(&status);
        }
        self.to_framework_of(&framework, FrameworkEvent::Update(status.clone()), &mut actions);
        if status.state.is_terminal() {
            self.complete(&status.task_id);
        }
        actions
    }

    fn push_status(&mut self, status: &TaskStatus) {
        let kept = self.config.statuses_kept;
        self.discovery.task_changed(&status.task_id);
        if let Some(task) = self.tasks.get_mut(&status.task_id) {
            task.statuses.push_back(status.clone());
            while task.statuses.len() > kept {
                task.statuses.pop_front();
            }
        }
    }

    /// A state the master decides (unreachable, lost, error), sent without a uuid.
    fn master_update(
        &mut self,
        task_id: &str,
        state: TaskState,
        reason: UpdateReason,
        message: &str,
        actions: &mut Vec<Action>,
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        task.state = state;
        let framework = task.info.framework_id.clone();
        let partition_aware = self.frameworks.get(&framework).is_some_and(|f| f.info.partition_aware);
        let status = TaskStatus {
            task_id: task_id.to_owned(),
            agent_id: task.agent.clone(),
            state: if state == TaskState::Unreachable && !partition_aware { TaskState::Lost } else { state },
            source: UpdateSource::Master,
            reason: Some(reason),
            message: message.to_owned(),
            uuid: None,
            timestamp_ms: 0,
            healthy: None,
        };
        self.push_status(&status);
        self.to_framework_of(&framework, FrameworkEvent::Update(status), actions);
        if state.is_terminal() {
            self.complete(task_id);
        }
    }

    fn complete(&mut self, task_id: &str) {
        self.discovery.task_changed(task_id);
        if let Some(task) = self.tasks.remove(task_id) {
            self.completed.push_back(view(&task));
            while self.completed.len() > self.config.completed_tasks_kept {
                self.completed.pop_front();
            }
            self.dirty = true;
        }
    }

    fn to_framework_of(&self, framework: &str, event: FrameworkEvent, actions: &mut Vec<Action>) {
        if self.frameworks.get(framework).is_some_and(|f| f.active) {
            actions.push(Action::ToFramework { framework: framework.to_owned(), event });
        }
    }

    // ---- frameworks ---------------------------------------------------------------------

    /// Subscribes (or re-subscribes, keeping its id) a framework.
    pub fn subscribe(&mut self, info: FrameworkInfo) -> (String, Vec<Action>) {
        let id = info.id.clone().unwrap_or_else(|| self.fresh_id("F"));
        let framework = Framework {
            info: FrameworkInfo { id: Some(id.clone()), ..info },
            active: true,
            suppressed: BTreeSet::new(),
        };
        self.frameworks.insert(id.clone(), framework);
        self.discovery.framework_changed(&id);
        self.dirty = true;
        let event = FrameworkEvent::Subscribed { framework_id: id.clone() };
        (id.clone(), vec![Action::ToFramework { framework: id, event }])
    }

    /// A framework's actor is gone: its offers go back, its tasks keep running.
    pub fn disconnect(&mut self, framework: &str) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.active = false;
        }
        self.offers.retain(|_, o| o.info.framework_id != framework);
        self.dirty = true;
    }

    pub fn call(&mut self, framework: &str, call: SchedulerCall, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.frameworks.get(framework).is_some_and(|f| f.active) {
            return actions;
        }
        match call {
            SchedulerCall::Accept { offer_ids, operations, refuse_ms } => {
                self.accept(framework, &offer_ids, operations, refuse_ms, now_ms, &mut actions)
            }
            SchedulerCall::Decline { offer_ids, refuse_ms } => {
                for offer_id in offer_ids {
                    if let Some(offer) = self.take_offer(framework, &offer_id) {
                        self.add_filter(framework, &offer.agent_id, offer.resources, refuse_ms, now_ms);
                    }
                }
            }
            SchedulerCall::Kill { task_id } => self.kill(framework, &task_id, &mut actions),
            SchedulerCall::Acknowledge { agent_id, task_id, uuid } => {
                actions.push(Action::ToAgent { agent: agent_id, command: Command::Acknowledge { task_id, uuid } });
            }
            SchedulerCall::Reconcile { task_ids } => {
                if self.recovering.is_some() {
                    self.deferred.push((framework.to_owned(), task_ids));
                } else {
                    self.reconcile(framework, &task_ids, &mut actions);
                }
            }
            SchedulerCall::Revive { roles } => {
                self.dirty |= self.filters.remove_framework(framework) > 0;
                self.set_suppressed(framework, &roles, false);
            }
            SchedulerCall::Suppress { roles } => self.set_suppressed(framework, &roles, true),
            SchedulerCall::Teardown => {
                let tasks: Vec<String> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.info.framework_id == framework)
                    .map(|(id, _)| id.clone())
                    .collect();
                for task_id in tasks {
                    self.kill(framework, &task_id, &mut actions);
                }
                self.disconnect(framework);
                self.frameworks.remove(framework);
            }
        }
        actions
    }

    fn set_suppressed(&mut self, framework: &str, roles: &[String], suppressed: bool) {
        let Some(f) = self.frameworks.get_mut(framework) else { return };
        let roles: Vec<String> = if roles.is_empty() { f.info.roles.clone() } else { roles.to_vec() };
        for role in roles {
            if suppressed {
                f.suppressed.insert(role);
            } else {
                f.suppressed.remove(&role);
            }
        }
        self.dirty = true;
    }

    fn take_offer(&mut self, framework: &str, offer_id: &str) -> Option<OfferInfo> {
        if self.offers.get(offer_id).is_some_and(|o| o.info.framework_id == framework) {
            self.dirty = true;
            return self.offers.remove(offer_id).map(|o| o.info);
        }
        None
    }

    fn add_filter(&mut self, framework: &str, agent: &str, resources: Resources, refuse_ms: u64, now_ms: u64) {
        // Mesos caps refuse_seconds at 365 days.
        let refuse_ms = refuse_ms.min(365 * 24 * 3600 * 1000);
        if refuse_ms > 0 && !resources.is_empty() {
            let until_ms = now_ms + refuse_ms;
            self.filters.add(Filter { framework: framework.to_owned(), agent: agent.to_owned(), resources, until_ms });
        }
    }

    fn error(&self, framework: &str, message: String, actions: &mut Vec<Action>) {
        self.to_framework_of(framework, FrameworkEvent::Error(message), actions);
    }

    /// Uses offers: every offer must be outstanding, the framework's, and on one agent; the
    /// operations consume the offered resources in order, and whatever is left is declined.
    fn accept(
        &mut self,
        framework: &str,
        offer_ids: &[String],
        operations: Vec<Operation>,
        refuse_ms: u64,
        now_ms: u64,
        actions: &mut Vec<Action>,
    ) {
        let valid = !offer_ids.is_empty()
            && offer_ids.iter().all(|id| self.offers.get(id).is_some_and(|o| o.info.framework_id == framework));
        let agents: BTreeSet<&str> =
            offer_ids.iter().filter_map(|id| self.offers.get(id)).map(|o| o.info.agent_id.as_str()).collect();
        if !valid || agents.len() != 1 {
            let message = "ACCEPT refused: the offers must be outstanding offers of this framework on one agent";
            self.error(framework, message.to_owned(), actions);
            for operation in operations {
                if let Operation::Launch(tasks) = operation {
                    for task in tasks {
                        self.refuse_task(framework, &task, UpdateReason::InvalidOffers, "Invalid offers", actions);
                    }
                }
            }
            return;
        }
        let offers: Vec<OfferInfo> = offer_ids.iter().filter_map(|id| self.take_offer(framework, id)).collect();
        let (agent_id, role) = (offers[0].agent_id.clone(), offers[0].role.clone());
        let mut left = Resources::new();
        for offer in &offers {
            left.add(&offer.resources);
        }
        for operation in operations {
            match operation {
                Operation::Launch(tasks) => {
                    for task in tasks {
                        self.launch(framework, &agent_id, &role, task, &mut left, actions);
                    }
                }
                Operation::Reserve(resources) => self.reserve(&agent_id, &role, &resources, &mut left, true, actions),
                Operation::Unreserve(resources) => {
                    self.reserve(&agent_id, &role, &resources, &mut left, false, actions)
                }
            }
        }
        self.add_filter(framework, &agent_id, left, refuse_ms, now_ms);
    }

    fn launch(
        &mut self,
        framework: &str,
        agent: &str,
        role: &str,
        mut task: TaskInfo,
        left: &mut Resources,
        actions: &mut Vec<Action>,
    ) {
        task.framework_id = framework.to_owned();
        task.role = role.to_owned();
        let problem = if !valid_task_id(&task.task_id) {
            Some(format!("Task id '{}' is invalid: use letters, digits, '-', '_' and '.'", task.task_id))
        } else if self.tasks.contains_key(&task.task_id) {
            Some(format!("Task id '{}' is already in use", task.task_id))
        } else if task.command.value.trim().is_empty() {
            Some("The task has no command".to_owned())
        } else if task.resources.scalar_milli("cpus") == 0 && task.resources.scalar_milli("mem") == 0 {
            Some("The task uses no cpus and no mem".to_owned())
        } else if let Some(problem) = task.health_check.as_ref().and_then(|check| check.problem()) {
            Some(format!("The task's health check is invalid: {problem}"))
        } else if let Err(missing) = left.checked_sub(&task.resources) {
            Some(format!("The task needs resources the offers do not hold: {missing}"))
        } else {
            None
        };
        if let Some(message) = problem {
            self.refuse_task(framework, &task, UpdateReason::TaskInvalid, &message, actions);
            return;
        }
        left.subtract(&task.resources);
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            agent_id: agent.to_owned(),
            state: TaskState::Staging,
            source: UpdateSource::Master,
            reason: None,
            message: String::new(),
            uuid: None,
            timestamp_ms: 0,
            healthy: None,
        };
        let entry = Task {
            info: task.clone(),
            agent: agent.to_owned(),
            state: TaskState::Staging,
            statuses: VecDeque::from([status]),
            since_ms: self.now_ms,
        };
        self.tasks.insert(task.task_id.clone(), entry);
        actions.push(Action::ToAgent { agent: agent.to_owned(), command: Command::Launch(Box::new(task)) });
    }

    /// `TASK_ERROR` (invalid task) or `TASK_DROPPED` (invalid offers) without a task entry.
    fn refuse_task(
        &self,
        framework: &str,
        task: &TaskInfo,
        reason: UpdateReason,
        message: &str,
        actions: &mut Vec<Action>,
    ) {
        let state = if reason == UpdateReason::TaskInvalid { TaskState::Error } else { TaskState::Dropped };
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            agent_id: String::new(),
            state,
            source: UpdateSource::Master,
            reason: Some(reason),
            message: message.to_owned(),
            uuid: None,
            timestamp_ms: 0,
            healthy: None,
        };
        self.to_framework_of(framework, FrameworkEvent::Update(status), actions);
    }

    /// A dynamic reservation (or its release) of offered resources for the offer's role.
    fn reserve(
        &mut self,
        agent_id: &str,
        role: &str,
        resources: &Resources,
        left: &mut Resources,
        reserve: bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        let reserved = agent.record.reserved.entry(role.to_owned()).or_default();
        let ok = role != UNRESERVED && left.contains(resources) && (reserve || reserved.contains(resources));
        if !ok {
            return;
        }
        if reserve {
            reserved.add(resources);
        } else {
            reserved.subtract(resources);
        }
        agent.record.reserved.retain(|_, r| !r.is_empty());
        // The resources change hands: they leave this offer and come back in the next round.
        left.subtract(resources);
        actions.push(Action::PersistAgent(agent.record.clone()));
        self.dirty = true;
    }

    fn kill(&mut self, framework: &str, task_id: &str, actions: &mut Vec<Action>) {
        match self.tasks.get(task_id) {
            Some(task) if task.info.framework_id == framework => {
                let command = Command::Kill { task_id: task_id.to_owned(), grace_ms: None };
                actions.push(Action::ToAgent { agent: task.agent.clone(), command });
            }
            _ => {
                let unknown = self.unknown_status(framework, task_id);
                self.to_framework_of(framework, FrameworkEvent::Update(unknown), actions);
            }
        }
    }

    fn unknown_status(&self, framework: &str, task_id: &str) -> TaskStatus {
        let partition_aware = self.frameworks.get(framework).is_some_and(|f| f.info.partition_aware);
        TaskStatus {
            task_id: task_id.to_owned(),
            agent_id: String::new(),
            state: if partition_aware { TaskState::Unknown } else { TaskState::Lost },
            source: UpdateSource::Master,
            reason: Some(UpdateReason::Reconciliation),
            message: "Reconciliation: task is unknown".to_owned(),
            uuid: None,
            timestamp_ms: 0,
            healthy: None,
        }
    }

    /// Answers with the latest state of each task (all of the framework's when `task_ids` is
    /// empty), reason `REASON_RECONCILIATION`, no uuid (never acknowledged).
    fn reconcile(&self, framework: &str, task_ids: &[String], actions: &mut Vec<Action>) {
        let ids: Vec<String> = if task_ids.is_empty() {
            self.tasks.iter().filter(|(_, t)| t.info.framework_id == framework).map(|(id, _)| id.clone()).collect()
        } else {
            task_ids.to_vec()
        };
        for task_id in ids {
            let status = match self.tasks.get(&task_id) {
                Some(task) if task.info.framework_id == framework => {
                    let mut latest =
                        task.statuses.back().cloned().unwrap_or_else(|| self.unknown_status(framework, &task_id));
                    latest.state = task.state;
                    latest.reason = Some(UpdateReason::Reconciliation);
                    latest.source = UpdateSource::Master;
                    latest.uuid = None;
                    latest
                }
                _ => match self.completed.iter().rev().find(|t| t.task.task_id == task_id) {
                    Some(done) => TaskStatus {
                        reason: Some(UpdateReason::Reconciliation),
                        source: UpdateSource::Master,
                        uuid: None,
                        state: done.state,
                        ..self.unknown_status(framework, &task_id)
                    },
                    None => self.unknown_status(framework, &task_id),
                },
            };
            self.to_framework_of(framework, FrameworkEvent::Update(status), actions);
        }
    }

    fn rescind(&mut self, offer_id: &str, actions: &mut Vec<Action>) {
        if let Some(offer) = self.offers.remove(offer_id) {
            let event = FrameworkEvent::Rescind { offer_id: offer_id.to_owned() };
            self.to_framework_of(&offer.info.framework_id, event, actions);
            self.dirty = true;
        }
    }

    // ---- time ---------------------------------------------------------------------------

    /// Moves time: pings and unreachable agents, the end of recovery, offer timeouts and
    /// expired filters, then an allocation round when one is due.
    pub fn tick(&mut self, now_ms: u64, wall_ms: u64, seed: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.now_ms = now_ms;
        if now_ms >= self.next_ping_ms {
            self.next_ping_ms = now_ms + self.config.ping_interval_ms;
            self.ping(wall_ms, &mut actions);
            self.reconcile_long_stagings(now_ms, &mut actions);
        }
        self.end_recovery_if_done(Some((now_ms, wall_ms)), &mut actions);
        if self.config.offer_timeout_ms > 0 {
            let expired: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now_ms >= o.created_ms + self.config.offer_timeout_ms)
                .map(|(id, _)| id.clone())
                .collect();
            for offer in expired {
                self.rescind(&offer, &mut actions);
            }
        }
        self.dirty |= self.filters.expire(now_ms) > 0;
        let due = now_ms >= self.last_round_ms + self.config.allocation_interval_ms
            || (self.dirty && now_ms >= self.last_round_ms + self.config.allocation_batch_ms);
        if due && self.recovering.is_none() {
            self.allocate(now_ms, seed, &mut actions);
        }
        actions
    }

    /// Asks each active agent about the tasks staging on it for longer than
    /// [`STAGING_RECONCILE_MS`] (every ping interval until they move on).
    fn reconcile_long_stagings(&self, now_ms: u64, actions: &mut Vec<Action>) {
        let mut by_agent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let long = self.tasks.iter().filter(|(_, task)| {
            task.state == TaskState::Staging && now_ms.saturating_sub(task.since_ms) >= STAGING_RECONCILE_MS
        });
        for (task_id, task) in long {
            if self.agents.get(&task.agent).is_some_and(|agent| agent.active) {
                by_agent.entry(task.agent.as_str()).or_default().push(task_id.clone());
            }
        }
        for (agent, task_ids) in by_agent {
            actions.push(Action::ToAgent { agent: agent.to_owned(), command: Command::Reconcile { task_ids } });
        }
    }

    /// An agent's answer to [`Command::Reconcile`]: the launches it never received end as
    /// `TASK_DROPPED`, so the framework replaces them.
    pub fn never_launched(&mut self, from: &str, task_ids: Vec<String>) -> Vec<Action> {
        let mut actions = Vec::new();
        for task_id in task_ids {
            let staging_there =
                self.tasks.get(&task_id).is_some_and(|t| t.agent == from && t.state == TaskState::Staging);
            if staging_there {
                let why = "The agent never received the task's launch";
                self.master_update(&task_id, TaskState::Dropped, UpdateReason::Reconciliation, why, &mut actions);
            }
        }
        actions
    }

    fn ping(&mut self, wall_ms: u64, actions: &mut Vec<Action>) {
        let max = self.config.max_missed_pings;
        let mut unreachable = Vec::new();
        for (id, agent) in &mut self.agents {
            if !agent.active {
                continue;
            }
            if agent.missed >= max {
                unreachable.push(id.clone());
                continue;
            }
            agent.missed += 1;
            actions.push(Action::ToAgent { agent: id.clone(), command: Command::Ping });
        }
        for id in unreachable {
            self.mark_unreachable(&id, wall_ms, actions);
        }
    }

    /// Ends the recovery once every known agent re-registered, or (with the current time)
    /// once the deadline passed: the missing agents are then unreachable.
    fn end_recovery_if_done(&mut self, clock: Option<(u64, u64)>, actions: &mut Vec<Action>) {
        let Some((waiting, deadline)) = &self.recovering else { return };
        let timed_out = clock.is_some_and(|(now_ms, _)| now_ms >= *deadline);
        if !waiting.is_empty() && !timed_out {
            return;
        }
        let wall_ms = clock.map_or(0, |(_, wall)| wall);
        let missing: Vec<String> = waiting.iter().cloned().collect();
        self.recovering = None;
        for id in missing {
            self.mark_unreachable(&id, wall_ms, actions);
        }
        for (framework, task_ids) in std::mem::take(&mut self.deferred) {
            self.reconcile(&framework, &task_ids, actions);
        }
        self.dirty = true;
    }

    fn snapshot(&self) -> AllocSnapshot {
        let agents = self
            .agents
            .iter()
            .map(|(id, agent)| {
                let mut total = Resources::new();
                let mut reserved = agent.record.reserved.clone();
                for (role, resources) in &agent.record.info.resources {
                    total.add(resources);
                    if role != UNRESERVED {
                        reserved.entry(role.clone()).or_default().add(resources);
                    }
                }
                let view =
                    AllocAgent { hostname: agent.record.info.hostname.clone(), total, reserved, active: agent.active };
                (id.clone(), view)
            })
            .collect();
        let frameworks = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let view = AllocFramework {
                    roles: f.info.roles.iter().cloned().collect(),
                    suppressed_roles: f.suppressed.clone(),
                    active: f.active,
                };
                (id.clone(), view)
            })
            .collect();
        let mut allocations: Vec<Allocation> = self
            .tasks
            .values()
            .filter(|t| t.state.is_active())
            .map(|t| Allocation {
                framework: t.info.framework_id.clone(),
                role: t.info.role.clone(),
                agent: t.agent.clone(),
                resources: t.info.resources.clone(),
            })
            .collect();
        allocations.extend(self.offers.values().map(|o| Allocation {
            framework: o.info.framework_id.clone(),
            role: o.info.role.clone(),
            agent: o.info.agent_id.clone(),
            resources: o.info.resources.clone(),
        }));
        AllocSnapshot {
            agents,
            frameworks,
            roles: self.config.roles.clone(),
            allocations,
            // Lent for the round by `allocate`: filters can be many, and a round reads few.
            filters: Filters::new(),
            min_allocatable: self.config.min_allocatable.clone(),
        }
    }

    fn allocate(&mut self, now_ms: u64, seed: u64, actions: &mut Vec<Action>) {
        self.last_round_ms = now_ms;
        self.dirty = false;
        let mut snapshot = self.snapshot();
        snapshot.filters = std::mem::take(&mut self.filters);
        let round = allocate(&snapshot, now_ms, seed);
        self.filters = snapshot.filters;
        let mut by_framework: BTreeMap<String, Vec<OfferInfo>> = BTreeMap::new();
        for offer in round.offers {
            let id = self.fresh_id("O");
            let Some(agent) = self.agents.get(&offer.agent) else { continue };
            let info = OfferInfo {
                id,
                framework_id: offer.framework.clone(),
                agent_id: offer.agent.clone(),
                hostname: agent.record.info.hostname.clone(),
                role: offer.role,
                resources: offer.resources,
                attributes: agent.record.info.attributes.clone(),
            };
            self.offers.insert(info.id.clone(), Offer { info: info.clone(), created_ms: now_ms });
            by_framework.entry(offer.framework).or_default().push(info);
        }
        for (framework, offers) in by_framework {
            actions.push(Action::ToFramework { framework, event: FrameworkEvent::Offers(offers) });
        }
    }

    // ---- discovery ----------------------------------------------------------------------

    /// The discovery entries that changed since the last call; `session_ip` is the address an
    /// agent's transport session comes from (used when its hostname is not an address).
    pub fn discovery_changes(&mut self, session_ip: impl Fn(&str) -> Option<IpAddr>) -> Vec<ViewChange> {
        if !self.discovery.has_changes() {
            return Vec::new();
        }
        let ip_of = |agent: &Agent| discovery::agent_ip(&agent.record.info.hostname, session_ip(&agent.record.info.id));
        let desired_agent = |id: &str| {
            let agent = self.agents.get(id).filter(|a| a.active)?;
            Some(AgentEntry { id: id.to_owned(), hostname: agent.record.info.hostname.clone(), ip: ip_of(agent)? })
        };
        let desired_framework =
            |id: &str| Some(FrameworkEntry { id: id.to_owned(), name: self.frameworks.get(id)?.info.name.clone() });
        let desired_task = |id: &str| {
            let task = self.tasks.get(id).filter(|t| t.state == TaskState::Running)?;
            let agent = self.agents.get(&task.agent).filter(|a| a.active)?;
            let framework = self.frameworks.get(&task.info.framework_id).map(|f| f.info.name.clone());
            Some(TaskEntry {
                id: id.to_owned(),
                name: task.info.name.clone(),
                framework_id: task.info.framework_id.clone(),
                framework: framework.unwrap_or_else(|| task.info.framework_id.clone()),
                agent_id: task.agent.clone(),
                agent_ip: ip_of(agent)?,
                container_ips: Vec::new(),
                healthy: task.statuses.iter().rev().find_map(|s| s.healthy),
                ports: discovery::task_ports(
                    task.info.discovery.as_ref().map(|d| d.ports.as_slice()),
                    &task.info.resources,
                ),
                labels: task.info.labels.clone(),
            })
        };
        let mut ledger = std::mem::take(&mut self.discovery);
        let changes = ledger.flush(desired_agent, desired_framework, desired_task);
        self.discovery = ledger;
        changes
    }

    /// Publishes every entry anew at the next [`discovery_changes`](Self::discovery_changes)
    /// (after the registry's entries were cleared by a new leader).
    pub fn republish_discovery(&mut self) {
        let agents: Vec<String> = self.agents.keys().cloned().collect();
        let frameworks: Vec<String> = self.frameworks.keys().cloned().collect();
        let tasks: Vec<String> = self.tasks.keys().cloned().collect();
        self.discovery.republish(agents, frameworks, tasks);
    }

    // ---- views --------------------------------------------------------------------------

    pub fn state(&self) -> MasterState {
        let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
        let mut fw_used: BTreeMap<&str, Resources> = BTreeMap::new();
        for task in self.tasks.values().filter(|t| t.state.is_active()) {
            used.entry(&task.agent).or_default().add(&task.info.resources);
            fw_used.entry(&task.info.framework_id).or_default().add(&task.info.resources);
        }
        let mut offered: BTreeMap<&str, Resources> = BTreeMap::new();
        let mut fw_offered: BTreeMap<&str, Resources> = BTreeMap::new();
        for offer in self.offers.values() {
            offered.entry(&offer.info.agent_id).or_default().add(&offer.info.resources);
            fw_offered.entry(&offer.info.framework_id).or_default().add(&offer.info.resources);
        }
        MasterState {
            leader: self.me.clone(),
            term: self.term,
            elected_ms: self.elected_ms,
            recovering: self.recovering.is_some(),
            agents: self
                .agents
                .iter()
                .map(|(id, a)| AgentView {
                    info: a.record.info.clone(),
                    active: a.active,
                    registered_ms: a.registered_ms,
                    used: used.get(id.as_str()).cloned().unwrap_or_default(),
                    offered: offered.get(id.as_str()).cloned().unwrap_or_default(),
                })
                .collect(),
            frameworks: self
                .frameworks
                .iter()
                .map(|(id, f)| FrameworkView {
                    id: id.clone(),
                    name: f.info.name.clone(),
                    roles: f.info.roles.clone(),
                    active: f.active,
                    used: fw_used.get(id.as_str()).cloned().unwrap_or_default(),
                    offered: fw_offered.get(id.as_str()).cloned().unwrap_or_default(),
                })
                .collect(),
            tasks: self.tasks.values().map(view).collect(),
            completed_tasks: self.completed.iter().cloned().collect(),
        }
    }
}

fn view(task: &Task) -> TaskView {
    TaskView {
        task: task.info.clone(),
        agent_id: task.agent.clone(),
        state: task.state,
        statuses: task.statuses.iter().cloned().collect(),
    }
}

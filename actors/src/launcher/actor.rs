//! The launcher actor (leader-only). See the module documentation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_transport::{ReplyPort, Role, Sender, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::protocol::{LAUNCHER_FRAMEWORK_ID, LAUNCHER_NAME, LaunchRecord, LauncherReply, LauncherRequest};
use crate::master::actor::MasterMsg;
use crate::master::core::valid_task_id;
use crate::mesos::core::{Resources, UNRESERVED};
use crate::mesos::protocol::{
    DEFAULT_REFUSE_MS, FrameworkEvent, FrameworkInfo, FrameworkSink, OfferInfo, Operation, SchedulerCall, TaskInfo,
};
use crate::registry::actor::{RegistryMsg, list_with, local_request};
use crate::registry::core::{Command, Op, RequestId, Txn};
use crate::registry::protocol::RegistryRequest;

/// Where requests live in the registry.
pub const LAUNCHER_PREFIX: &str = "/launcher/tasks/";

/// How long a registry write may take before the request is refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LauncherArgs {
    pub transport: Transport,
    pub node: Node,
    pub registry: ActorRef<RegistryMsg>,
    pub master: ActorRef<MasterMsg>,
    /// The leader term this launcher runs for: its registry writes are fenced to it.
    pub term: u64,
}

pub enum LauncherMsg {
    Request(Sender, LauncherRequest, ReplyPort<LauncherReply>),
    Event(FrameworkEvent),
}

impl std::fmt::Debug for LauncherMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LauncherMsg::Request(from, request, _) => write!(f, "Request({}, {request:?})", from.node),
            LauncherMsg::Event(event) => write!(f, "Event({event:?})"),
        }
    }
}

pub struct LauncherState {
    transport: Transport,
    node: Node,
    registry: ActorRef<RegistryMsg>,
    master: ActorRef<MasterMsg>,
    term: u64,
    records: BTreeMap<String, LaunchRecord>,
    suppressed: bool,
}

#[derive(Debug, Default)]
pub struct Launcher;

impl Actor for Launcher {
    type Msg = LauncherMsg;
    type State = LauncherState;
    type Arguments = LauncherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LauncherMsg>,
        args: LauncherArgs,
    ) -> Result<LauncherState, ActorProcessingErr> {
        let LauncherArgs { transport, node, registry, master, term } = args;
        let records: BTreeMap<String, LaunchRecord> =
            list_with(&registry, LAUNCHER_PREFIX, WRITE_TIMEOUT, LaunchRecord::decode)
                .await?
                .into_iter()
                .map(|record| (record.task.task_id.clone(), record))
                .collect();
        let relay = myself.clone();
        let sink: FrameworkSink = Arc::new(move |event| relay.send_message(LauncherMsg::Event(event)).map_err(|_| ()));
        let info = FrameworkInfo {
            id: Some(LAUNCHER_FRAMEWORK_ID.to_owned()),
            name: "flotilla-launcher".to_owned(),
            roles: vec![UNRESERVED.to_owned()],
            partition_aware: true,
        };
        ractor::call_t!(master, |reply| MasterMsg::Subscribe { info, sink, reply }, 10_000)?;
        // After a failover the master answers once the agents have re-registered.
        let in_flight: Vec<String> = records
            .values()
            .filter(|r| r.launched && r.latest.as_ref().is_none_or(|s| !s.state.is_terminal()))
            .map(|r| r.task.task_id.clone())
            .collect();
        if !in_flight.is_empty() {
            let call = SchedulerCall::Reconcile { task_ids: in_flight };
            master.send_message(MasterMsg::Call { framework: LAUNCHER_FRAMEWORK_ID.to_owned(), call })?;
        }
        transport.export_call_from::<LauncherRequest, LauncherMsg>(LAUNCHER_NAME, &myself, LauncherMsg::Request);
        info!(tasks = records.len(), "launcher subscribed");
        Ok(LauncherState { transport, node, registry, master, term, records, suppressed: false })
    }

    async fn post_stop(&self, _: ActorRef<LauncherMsg>, state: &mut LauncherState) -> Result<(), ActorProcessingErr> {
        state.transport.unexport(LAUNCHER_NAME);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<LauncherMsg>,
        msg: LauncherMsg,
        state: &mut LauncherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LauncherMsg::Request(from, request, reply) => {
                let answer = if matches!(from.role, Role::Operator | Role::Master) {
                    state.request(request).await
                } else {
                    LauncherReply::Refused(format!("{} may not use the launcher (role {:?})", from.node, from.role))
                };
                reply.send(answer);
            }
            LauncherMsg::Event(FrameworkEvent::Offers(offers)) => state.offers(offers).await,
            LauncherMsg::Event(FrameworkEvent::Update(status)) => {
                if let Some(uuid) = status.uuid {
                    let call = SchedulerCall::Acknowledge {
                        agent_id: status.agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid,
                    };
                    state.call(call);
                }
                if let Some(record) = state.records.get_mut(&status.task_id) {
                    let changed = record.latest.as_ref().is_none_or(|s| s.state != status.state);
                    record.latest = Some(status);
                    if changed {
                        let record = record.clone();
                        if let Err(error) = state.save(&record).await {
                            warn!(task = %record.task.task_id, %error, "cannot record the task's state");
                        }
                    }
                }
            }
            LauncherMsg::Event(FrameworkEvent::Error(message)) => warn!(%message, "the master refused a launcher call"),
            LauncherMsg::Event(_) => {}
        }
        Ok(())
    }
}

impl LauncherState {
    fn call(&self, call: SchedulerCall) {
        let _ = self.master.send_message(MasterMsg::Call { framework: LAUNCHER_FRAMEWORK_ID.to_owned(), call });
    }

    async fn save(&self, record: &LaunchRecord) -> Result<(), String> {
        self.save_all(std::slice::from_ref(record)).await
    }

    /// Writes records in one transaction (one commit for a whole offer's launches).
    async fn save_all(&self, records: &[LaunchRecord]) -> Result<(), String> {
        let success = records
            .iter()
            .map(|record| Op::Put { key: format!("{LAUNCHER_PREFIX}{}", record.task.task_id), value: record.encode() })
            .collect();
        let txn = Txn { compare: Vec::new(), success, failure: Vec::new() };
        let id = Some(RequestId { client: self.node.random_u64(), seq: 1 });
        local_request(
            &self.registry,
            RegistryRequest::Write(Command { id, txn, leader_term: Some(self.term) }),
            WRITE_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    async fn request(&mut self, request: LauncherRequest) -> LauncherReply {
        match request {
            LauncherRequest::Run(task) => self.run(*task).await,
            LauncherRequest::Kill { task_id } => {
                let Some(record) = self.records.get_mut(&task_id) else {
                    return LauncherReply::Refused(format!("no task '{task_id}' was launched by the launcher"));
                };
                record.kill = true;
                let record = record.clone();
                if let Err(error) = self.save(&record).await {
                    return LauncherReply::Refused(format!("cannot record the kill: {error}"));
                }
                self.call(SchedulerCall::Kill { task_id: task_id.clone() });
                LauncherReply::Killing { task_id }
            }
            LauncherRequest::List => LauncherReply::Tasks(self.records.values().cloned().collect()),
        }
    }

    async fn run(&mut self, mut task: TaskInfo) -> LauncherReply {
        if task.task_id.is_empty() {
            task.task_id = format!("{}.{:016x}", task.name, self.node.random_u64());
        }
        task.framework_id = LAUNCHER_FRAMEWORK_ID.to_owned();
        task.role = UNRESERVED.to_owned();
        if let Err(problem) = validate(&task) {
            return LauncherReply::Refused(problem);
        }
        if self.records.contains_key(&task.task_id) {
            return LauncherReply::Refused(format!("task id '{}' is already in use", task.task_id));
        }
        let record = LaunchRecord { task, launched: false, kill: false, latest: None };
        if let Err(error) = self.save(&record).await {
            return LauncherReply::Refused(format!("cannot record the task: {error}"));
        }
        let task_id = record.task.task_id.clone();
        self.records.insert(task_id.clone(), record);
        if self.suppressed {
            self.suppressed = false;
            self.call(SchedulerCall::Revive { roles: Vec::new() });
        }
        LauncherReply::Accepted { task_id }
    }

    /// Fits waiting tasks into each offer, first come first served; the tasks are marked
    /// launched in the registry (one write per offer) before their launch leaves.
    async fn offers(&mut self, offers: Vec<OfferInfo>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut launching = Vec::new();
            for record in self.records.values().filter(|r| !r.launched && !r.kill) {
                let Some(resources) = with_ports(&record.task.resources, &left) else { continue };
                left.subtract(&resources);
                let mut record = record.clone();
                record.launched = true;
                record.task.resources = resources;
                launching.push(record);
            }
            if let Err(error) = self.save_all(&launching).await {
                warn!(%error, "cannot mark tasks launched; they wait for the next offer");
                launching.clear();
            }
            let tasks: Vec<TaskInfo> = launching.iter().map(|r| r.task.clone()).collect();
            for record in launching {
                self.records.insert(record.task.task_id.clone(), record);
            }
            let operations = if tasks.is_empty() { Vec::new() } else { vec![Operation::Launch(tasks)] };
            self.call(SchedulerCall::Accept { offer_ids: vec![offer.id], operations, refuse_ms: DEFAULT_REFUSE_MS });
        }
        if self.records.values().all(|r| r.launched || r.kill) && !self.suppressed {
            self.suppressed = true;
            self.call(SchedulerCall::Suppress { roles: Vec::new() });
        }
    }
}

/// A task's resources as launched from `offered`: the scalars it asks for and, for each
/// port it asks for (a `ports` range of N values stands for "any N ports"), the offer's first
/// free ones. `None` when the offer cannot hold it.
fn with_ports(asked: &Resources, offered: &Resources) -> Option<Resources> {
    let count = asked.ports().count();
    let mut needed = Resources::new();
    for (name, milli) in asked.scalars() {
        needed.add_scalar(name, milli);
    }
    if count > 0 {
        let ports = offered.ports().take(count);
        if ports.count() < count {
            return None;
        }
        needed.add_ranges("ports", &ports);
    }
    offered.contains(&needed).then_some(needed)
}

/// The checks a task gets before it is accepted (the master checks again at launch).
pub fn validate(task: &TaskInfo) -> Result<(), String> {
    if !valid_task_id(&task.task_id) {
        return Err(format!("task id '{}' is invalid: use letters, digits, '-', '_' and '.'", task.task_id));
    }
    if task.command.value.trim().is_empty() {
        return Err("the task has no command".to_owned());
    }
    if task.resources.scalar_milli("cpus") == 0 || task.resources.scalar_milli("mem") == 0 {
        return Err("the task must ask for some cpus and mem (e.g. --cpus 0.1 --mem 32)".to_owned());
    }
    if let Some(problem) = task.health_check.as_ref().and_then(|check| check.problem()) {
        return Err(problem.to_owned());
    }
    Ok(())
}

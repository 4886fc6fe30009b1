//! What masters and agents say to each other over the transport, and what frameworks (the
//! schedulers on the leading master) say to the master.
//!
//! Agents and the master talk in casts, both ways: an agent announces itself to every master
//! ([`AgentMessage::Register`]) and only the leader, which runs the master actor, answers; every
//! command the master sends carries its term, and an agent refuses commands from a term older
//! than the newest it has seen (DESIGN.md §6). Senders are authenticated by the transport
//! session (the certificate's node id and role), never by a name inside the message.

use std::collections::BTreeMap;

use flotilla_transport::{RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

use super::core::health::HealthCheck;
use super::core::{Resources, RoleResources, TaskState, TaskStatus};
use crate::agent::driver::TaskCommand;
use crate::discovery::PortEntry;

/// The name the master actor is exported under on the leading master.
pub const MASTER_NAME: &str = "mesos-master";
/// The name the agent actor is exported under on every agent.
pub const AGENT_NAME: &str = "mesos-agent";

/// An agent as it describes itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's node id (also its Mesos agent id).
    pub id: String,
    pub hostname: String,
    /// Everything it offers, by the role it is statically reserved for (`*`: unreserved).
    pub resources: RoleResources,
    /// Mesos attributes (`rack:r1;zone:a`), matched by placement constraints.
    pub attributes: BTreeMap<String, String>,
    /// What isolation its task driver provides and lacks.
    pub driver: String,
    pub isolation_missing: Vec<String>,
}

/// A task as a framework launches it (Mesos's `TaskInfo` with a command).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: String,
    pub name: String,
    pub framework_id: String,
    /// The role whose resources the task uses.
    pub role: String,
    pub command: TaskCommand,
    pub resources: Resources,
    /// Variables added to the task's environment (besides Mesos's own).
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// SIGTERM, then SIGKILL after this long (Mesos's `KillPolicy.grace_period`).
    pub kill_grace_ms: u64,
    /// Run by the agent; too many failures in a row kill the task.
    pub health_check: Option<HealthCheck>,
    /// Downloaded into the sandbox before the command starts (Mesos's `CommandInfo.uris`).
    pub fetch: Vec<FetchUri>,
    /// How the task is found: its ports with their names and labels (Mesos's `DiscoveryInfo`).
    pub discovery: Option<DiscoveryInfo>,
}

/// An artifact the agent downloads into a task's sandbox before starting it (Mesos's
/// `CommandInfo.URI`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchUri {
    /// `http://`, `https://`, `file://` or an absolute path on the agent.
    pub uri: String,
    /// Unpack an archive (`.tar`, `.tar.gz`, `.tgz`, `.tar.bz2`, `.tar.xz`, `.zip`, ...) into the sandbox.
    pub extract: bool,
    /// Mark the downloaded file executable.
    pub executable: bool,
    /// Keep the download in the agent's cache and reuse it for the same URI.
    pub cache: bool,
    /// The file's name in the sandbox; the URI's last path segment by default.
    pub output_file: Option<String>,
}

/// A task's ports as service discovery publishes them (Mesos's `DiscoveryInfo`): each port is
/// a host port of the task, with its protocol, name and labels (`VIP_0: /web:80`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    pub name: String,
    pub ports: Vec<PortEntry>,
}

/// A task an agent holds, with its latest state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: TaskInfo,
    pub status: TaskStatus,
}

/// From an agent to the master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// Sent to every master until the leader answers [`Command::Registered`]; after a
    /// failover, re-registration carries every task the agent holds, which is how the new
    /// leader learns what runs where.
    Register { info: AgentInfo, tasks: Vec<TaskReport>, newest_term: u64 },
    /// A status update, re-sent until acknowledged.
    Update(TaskStatus),
    /// The answer to [`Command::Ping`].
    Pong { term: u64 },
    /// The answer to [`Command::Reconcile`]: these launches never reached the agent, and it
    /// will refuse them should they still arrive.
    NeverLaunched { task_ids: Vec<String> },
}

impl RemoteMessage for AgentMessage {
    const TAG: u32 = 0x4d41_4731; // "MAG1"
}

/// From the master to an agent, stamped with the master's term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToAgent {
    pub term: u64,
    pub command: Command,
}

impl RemoteMessage for ToAgent {
    const TAG: u32 = 0x4d41_4732; // "MAG2"
}

/// A master's command to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The leader has (re-)registered the agent.
    Registered,
    Launch(Box<TaskInfo>),
    /// Stop a task: SIGTERM, then SIGKILL after `grace_ms` (the task's own grace period when
    /// `None`).
    Kill {
        task_id: String,
        grace_ms: Option<u64>,
    },
    /// A framework acknowledged this update; the agent sends the task's next one.
    Acknowledge {
        task_id: String,
        uuid: u128,
    },
    /// Liveness check; the agent answers [`AgentMessage::Pong`].
    Ping,
    /// The master does not know these tasks (their framework is gone): kill them.
    KillUnknown {
        task_ids: Vec<String>,
    },
    /// These tasks have been staging for long: the agent answers
    /// [`AgentMessage::NeverLaunched`] with those whose launch it never received (a launch
    /// lost with a connection would otherwise hold its instance until the framework's launch
    /// timeout, Marathon's 5 minutes).
    Reconcile {
        task_ids: Vec<String>,
    },
}

impl Command {
    /// The command's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Registered => "Registered",
            Command::Launch(_) => "Launch",
            Command::Kill { .. } => "Kill",
            Command::Acknowledge { .. } => "Acknowledge",
            Command::Ping => "Ping",
            Command::KillUnknown { .. } => "KillUnknown",
            Command::Reconcile { .. } => "Reconcile",
        }
    }
}

/// An operator's question to the leading master (the CLI and the HTTP API ask it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MasterQuery {
    State,
}

/// The name under which an agent serves its tasks' sandbox files, and under which a master
/// relays operators' reads to the agents.
pub const AGENT_FILES_NAME: &str = "agent-files";
pub const FILES_RELAY_NAME: &str = "files";

/// The most a [`ReadFile`] returns at once.
pub const MAX_READ_BYTES: u32 = 1 << 20;

/// Read part of a file of a task's sandbox (`stdout`, `stderr` and their rotations), Mesos's
/// `/files/read`: at `offset`, at most `length` bytes (capped at [`MAX_READ_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFile {
    pub agent_id: String,
    pub task_id: String,
    pub file: String,
    pub offset: u64,
    pub length: u32,
}

impl RemoteMessage for ReadFile {
    const TAG: u32 = 0x4d41_4735; // "MAG5"
}

impl RemoteCall for ReadFile {
    type Reply = FileReply;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileReply {
    /// The bytes from `offset`, and the file's size now.
    Chunk {
        offset: u64,
        data: Vec<u8>,
        size: u64,
    },
    Refused(String),
}

impl RemoteMessage for FileReply {
    const TAG: u32 = 0x4d41_4736; // "MAG6"
}

impl RemoteMessage for MasterQuery {
    const TAG: u32 = 0x4d41_4733; // "MAG3"
}

impl RemoteCall for MasterQuery {
    type Reply = MasterState;
}

/// The leading master's view, the source of `/master/state`, `flotilla node list` and
/// `flotilla task list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MasterState {
    pub leader: String,
    pub term: u64,
    /// Milliseconds since the Unix epoch when this master was elected.
    pub elected_ms: u64,
    /// Still learning from re-registering agents what runs where (after a failover).
    pub recovering: bool,
    pub agents: Vec<AgentView>,
    pub frameworks: Vec<FrameworkView>,
    pub tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub info: AgentInfo,
    /// `true` while it answers pings; unreachable agents stay listed until removed.
    pub active: bool,
    pub registered_ms: u64,
    pub used: Resources,
    pub offered: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub used: Resources,
    pub offered: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub task: TaskInfo,
    pub agent_id: String,
    pub state: TaskState,
    pub statuses: Vec<TaskStatus>,
}

/// A framework as it subscribes (Mesos's `FrameworkInfo`, the parts Flotilla uses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// Set when re-subscribing (after a failover): the framework keeps its id and its tasks.
    pub id: Option<String>,
    pub name: String,
    pub roles: Vec<String>,
    /// `PARTITION_AWARE`: told `TASK_UNREACHABLE`/`TASK_UNKNOWN` rather than `TASK_LOST`.
    pub partition_aware: bool,
}

/// An offer as a framework receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfferInfo {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub role: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
}

/// What the master tells a framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FrameworkEvent {
    Subscribed {
        framework_id: String,
    },
    Offers(Vec<OfferInfo>),
    /// The offer is withdrawn (its agent went away, or it timed out).
    Rescind {
        offer_id: String,
    },
    /// A task's status; acknowledge it with [`SchedulerCall::Acknowledge`] when it has a uuid.
    Update(TaskStatus),
    /// A call was refused.
    Error(String),
}

/// One operation of an `ACCEPT`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    Launch(Vec<TaskInfo>),
    /// Dynamically reserve these (unreserved) offered resources for the offer's role.
    Reserve(Resources),
    /// Give these reserved resources of the offer's role back to the unreserved pool.
    Unreserve(Resources),
}

/// What a framework asks of the master (Mesos's scheduler calls).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SchedulerCall {
    /// Use offers (all on one agent); whatever the operations leave is declined with a filter
    /// of `refuse_ms`.
    Accept {
        offer_ids: Vec<String>,
        operations: Vec<Operation>,
        refuse_ms: u64,
    },
    Decline {
        offer_ids: Vec<String>,
        refuse_ms: u64,
    },
    Kill {
        task_id: String,
    },
    Acknowledge {
        agent_id: String,
        task_id: String,
        uuid: u128,
    },
    /// Ask for the latest state of these tasks (all of the framework's when empty).
    Reconcile {
        task_ids: Vec<String>,
    },
    /// Clear the framework's filters and resume offers (for these roles, or all).
    Revive {
        roles: Vec<String>,
    },
    /// Stop offers for these roles (or all).
    Suppress {
        roles: Vec<String>,
    },
    /// The framework is done: its tasks are killed and it is removed.
    Teardown,
}

/// Where a framework receives its events (a local actor's mailbox, typically); an `Err`
/// means the framework is gone.
pub type FrameworkSink = std::sync::Arc<dyn Fn(FrameworkEvent) -> Result<(), ()> + Send + Sync>;

/// Mesos's default `refuse_seconds` (5 s).
pub const DEFAULT_REFUSE_MS: u64 = 5_000;

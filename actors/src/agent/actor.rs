//! The agent actor: registers with the leading master (and re-registers after a failover,
//! reporting every task it holds), answers pings, runs the master's commands through its task
//! driver, streams status updates until acknowledged, and checkpoints each task so that a
//! restarted agent re-adopts the tasks still running and reports the ones that ended.
//!
//! Each launched task has a watcher (a linked actor that fetches the task's URIs into its
//! sandbox, launches it through the driver, then awaits the driver's `wait`), so the agent
//! itself never blocks on a task — fetches and launches run side by side, each on its
//! watcher; a fetch that fails fails the task (`TASK_FAILED`,
//! `REASON_CONTAINER_LAUNCH_FAILED`) and a kill during the fetch stops it before the command
//! ever starts — and a task with a health check has a health checker
//! (`agent/health.rs`), another linked actor, whose verdicts come back as messages: a change
//! of health becomes a `TASK_RUNNING` update carrying `healthy`, too many failures a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_supervisors::planted::{PlantedBug, planted};
use flotilla_transport::{ReplyPort, Role, Sender, Transport};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::checkpoint::{Checkpoint, TaskRecord};
use super::core::never_launched::NeverLaunched;
use super::core::{Acknowledged, Placement, TermFence, UpdateStream, exit_outcome, task_environment};
use super::driver::{LaunchSpec, LogRotation, StopSignal, TaskDriver, TaskExit, TaskHandle};
use super::fetch::{Fetcher, FetcherConfig};
use super::health::{HealthArgs, HealthChecker, ProbeNow};
use crate::mesos::core::{TaskState, TaskStatus, UpdateReason, UpdateSource};
use crate::mesos::protocol::{
    AGENT_FILES_NAME, AGENT_NAME, AgentInfo, AgentMessage, Command, FetchUri, FileReply, MASTER_NAME, MAX_READ_BYTES,
    ReadFile, TaskInfo, TaskReport, ToAgent,
};

/// How an agent behaves; every duration has Mesos's default unless noted.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// What the agent offers (its `driver` fields are filled from the driver).
    pub info: AgentInfo,
    /// Sandboxes and the checkpoint live here.
    pub work_dir: PathBuf,
    /// The masters' node ids; the agent registers with whichever leads.
    pub masters: Vec<String>,
    /// Registration is re-sent this often until the leader answers.
    pub register_retry: Duration,
    /// Without a ping from the leader for this long, the agent looks for a leader again.
    pub master_timeout: Duration,
    /// First re-send of an unacknowledged status update (doubling up to `status_retry_max`).
    pub status_retry: Duration,
    pub status_retry_max: Duration,
    pub logs: LogRotation,
    /// How often timers are checked.
    pub tick: Duration,
    /// How tasks' URIs are fetched (the cache lives under `work_dir/fetcher-cache`).
    pub fetcher: FetcherConfig,
}

impl AgentConfig {
    pub fn new(info: AgentInfo, work_dir: PathBuf, masters: Vec<String>) -> AgentConfig {
        AgentConfig {
            info,
            masters,
            register_retry: Duration::from_secs(1),
            master_timeout: Duration::from_secs(30),
            status_retry: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            logs: LogRotation::default(),
            tick: Duration::from_millis(250),
            fetcher: FetcherConfig::new(work_dir.join("fetcher-cache")),
            work_dir,
        }
    }
}

pub struct AgentArgs {
    pub config: AgentConfig,
    pub transport: Transport,
    pub driver: Arc<dyn TaskDriver>,
    pub node: Node,
}

pub enum AgentMsg {
    FromMaster(Sender, Box<ToAgent>),
    /// A watcher's launch came back: the task runs under this handle, or did not start.
    Launched {
        task_id: String,
        outcome: Result<TaskHandle, String>,
    },
    Exited {
        task_id: String,
        exit: TaskExit,
    },
    /// The grace period of a kill ran out.
    GraceOver {
        task_id: String,
    },
    /// A task's health changed, or its health check wants it killed (with this message).
    Health {
        task_id: String,
        healthy: bool,
        kill: Option<String>,
    },
    Tick,
    /// The tasks this agent holds (for operators and tests).
    Tasks(RpcReplyPort<Vec<TaskReport>>),
    /// Part of a task's sandbox file (relayed by a master for an operator).
    ReadFile(Sender, ReadFile, ReplyPort<FileReply>),
}

impl std::fmt::Debug for AgentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentMsg::FromMaster(from, m) => write!(f, "FromMaster({}, {:?})", from.node, m.command),
            AgentMsg::Launched { task_id, outcome } => write!(f, "Launched({task_id}, {})", outcome.is_ok()),
            AgentMsg::Exited { task_id, .. } => write!(f, "Exited({task_id})"),
            AgentMsg::GraceOver { task_id } => write!(f, "GraceOver({task_id})"),
            AgentMsg::Health { task_id, healthy, kill } => write!(f, "Health({task_id}, {healthy}, {kill:?})"),
            AgentMsg::Tick => f.write_str("Tick"),
            AgentMsg::Tasks(_) => f.write_str("Tasks"),
            AgentMsg::ReadFile(from, read, _) => write!(f, "ReadFile({}, {read:?})", from.node),
        }
    }
}

/// The registered name of the agent actor in its node.
pub const AGENT_ACTOR: &str = AGENT_NAME;

struct Running {
    record: TaskRecord,
    watcher: Option<ActorRef<()>>,
    checker: Option<ActorRef<ProbeNow>>,
    /// Why the health check killed the task, for its terminal update.
    unhealthy_kill: Option<String>,
    /// Tells a watcher still fetching or launching the task that it was killed.
    cancel: Option<watch::Sender<bool>>,
}

impl Running {
    fn new(record: TaskRecord) -> Running {
        Running { record, watcher: None, checker: None, unhealthy_kill: None, cancel: None }
    }

    /// Its watcher is still launching it (no handle yet).
    fn launching(&self) -> bool {
        self.watcher.is_some() && self.record.handle.is_none()
    }

    fn stop_checker(&mut self) {
        if let Some(checker) = self.checker.take() {
            checker.stop(None);
        }
    }
}

/// Where the agent stands with the masters.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Registration {
    /// Looking for the leader.
    Searching,
    /// Registered with this master in this term.
    Registered { master: String, term: u64 },
}

pub struct AgentState {
    config: AgentConfig,
    transport: Transport,
    driver: Arc<dyn TaskDriver>,
    fetcher: Arc<Fetcher>,
    node: Node,
    myself: ActorRef<AgentMsg>,
    checkpoint: Checkpoint,
    fence: TermFence,
    tasks: BTreeMap<String, Running>,
    /// Launches the master was told never arrived (refused if they come late).
    never_launched: NeverLaunched,
    updates: UpdateStream,
    registration: Registration,
    next_register_ms: u64,
    /// The tasks the last registration reported: a launch that arrives after the report was
    /// written is unknown to the master the report reaches, so the agent reports again.
    reported: BTreeSet<String>,
    last_ping_ms: u64,
    ticker: JoinHandle<()>,
}

#[derive(Debug, Default)]
pub struct Agent;

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, args: AgentArgs) -> Result<AgentState, ActorProcessingErr> {
        let AgentArgs { mut config, transport, driver, node } = args;
        let report = driver.isolation();
        config.info.driver = driver.name().to_owned();
        config.info.isolation_missing = report.missing.clone();
        if !report.missing.is_empty() {
            warn!(driver = driver.name(), missing = ?report.missing, "tasks run without full isolation");
        }
        let checkpoint = Checkpoint::open(&config.work_dir)?;
        let fetcher = Arc::new(Fetcher::start(config.fetcher.clone()));
        let fence = TermFence::new(checkpoint.load_term()?);
        let updates =
            UpdateStream::new(config.status_retry.as_millis() as u64, config.status_retry_max.as_millis() as u64);
        node.register(AGENT_ACTOR, myself.get_cell())?;
        transport.export_from::<ToAgent, AgentMsg>(AGENT_NAME, &myself, |from, message| {
            AgentMsg::FromMaster(from, Box::new(message))
        });
        transport.export_call_from::<ReadFile, AgentMsg>(AGENT_FILES_NAME, &myself, AgentMsg::ReadFile);
        let ticker = myself.send_interval(config.tick, || AgentMsg::Tick);
        let mut state = AgentState {
            config,
            transport,
            driver,
            fetcher,
            node,
            myself: myself.clone(),
            checkpoint,
            fence,
            tasks: BTreeMap::new(),
            never_launched: NeverLaunched::default(),
            updates,
            registration: Registration::Searching,
            next_register_ms: 0,
            reported: BTreeSet::new(),
            last_ping_ms: 0,
            ticker,
        };
        state.recover().await?;
        state.register();
        Ok(state)
    }

    async fn post_stop(&self, myself: ActorRef<AgentMsg>, state: &mut AgentState) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.transport.unexport(AGENT_NAME);
        state.transport.unexport(AGENT_FILES_NAME);
        state.node.unregister(AGENT_ACTOR, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::FromMaster(from, message) => state.on_master_command(from, *message).await,
            AgentMsg::Launched { task_id, outcome } => state.launched(&task_id, outcome).await,
            AgentMsg::Exited { task_id, exit } => state.exited(&task_id, exit),
            AgentMsg::GraceOver { task_id } => state.grace_over(&task_id),
            AgentMsg::Health { task_id, healthy, kill } => state.health(&task_id, healthy, kill),
            AgentMsg::Tick => state.tick(),
            AgentMsg::Tasks(reply) => {
                let _ = reply.send(state.reports());
            }
            AgentMsg::ReadFile(from, read, reply) => {
                let answer = if matches!(from.role, Role::Master | Role::Operator) {
                    state.read_file(&read)
                } else {
                    FileReply::Refused(format!("{} may not read sandboxes (role {:?})", from.node, from.role))
                };
                reply.send(answer);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<AgentMsg>,
        event: SupervisionEvent,
        _: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        // A watcher stops after reporting its task's exit; one that fails (or a failed health
        // checker) takes the agent with it (the supervisor restarts the agent, which re-adopts
        // from the checkpoint and checks again).
        if let SupervisionEvent::ActorFailed(_, error) = event {
            return Err(format!("a task watcher or health checker failed: {error}").into());
        }
        Ok(())
    }
}

impl AgentState {
    fn now_ms(&self) -> u64 {
        self.node.now().since_origin().as_millis() as u64
    }

    fn agent_id(&self) -> &str {
        &self.config.info.id
    }

    /// Re-adopts checkpointed tasks: those still running get a watcher, those that ended get
    /// their terminal update; every process or cgroup of a task without a record is killed.
    async fn recover(&mut self) -> Result<(), ActorProcessingErr> {
        let (records, broken) = self.checkpoint.load_tasks()?;
        for error in broken {
            warn!(%error, "dropping an unreadable task record; its task is reaped as an orphan");
        }
        // A record without a handle is a launch the previous agent process did not see through:
        // its process, if the shim got that far, is reaped with the orphans.
        let keep: BTreeSet<String> = if planted(PlantedBug::RecoveryKillsTasks) {
            BTreeSet::new()
        } else {
            records.iter().filter(|r| r.handle.is_some()).map(|r| r.info.task_id.clone()).collect()
        };
        for orphan in self.driver.reap_orphans(&keep) {
            warn!(task = %orphan, "killed a task the agent has no record of");
            let adoptable = records.iter().any(|r| r.info.task_id == orphan && r.handle.is_some());
            if adoptable {
                self.node.invariant_broken(&format!(
                    "agent recovery killed task {orphan}, whose checkpointed record it should have re-adopted"
                ));
            }
        }
        for record in records {
            let task_id = record.info.task_id.clone();
            self.updates.restore(&task_id, record.pending.clone());
            let terminal = record.latest.state.is_terminal();
            let handle = record.handle.clone();
            self.tasks.insert(task_id.clone(), Running::new(record));
            match handle {
                _ if terminal => {}
                Some(handle) => {
                    let running = self.driver.is_running(&handle);
                    info!(task = %task_id, running, "re-adopting a checkpointed task");
                    // A task that ended while the agent was down is reported by its watcher,
                    // whose wait resolves at once.
                    self.watch(&handle.task_id, Job::Watch(handle.clone())).await?;
                    if running {
                        self.check_health(&task_id).await?;
                    }
                }
                None => {
                    // The agent stopped between accepting the launch and starting the task.
                    let message = "The agent restarted before the task started".to_owned();
                    self.update(&task_id, TaskState::Failed, Some(UpdateReason::AgentRestarted), message);
                }
            }
            if terminal && !self.updates.has_pending(&task_id) {
                self.forget(&task_id);
            }
        }
        Ok(())
    }

    fn reports(&self) -> Vec<TaskReport> {
        self.tasks
            .values()
            .map(|t| TaskReport { task: t.record.info.clone(), status: t.record.latest.clone() })
            .collect()
    }

    /// Announces this agent (with its tasks) to every master; the leader answers.
    fn register(&mut self) {
        let tasks = self.reports();
        self.reported = tasks.iter().map(|report| report.task.task_id.clone()).collect();
        let message =
            AgentMessage::Register { info: self.config.info.clone(), tasks, newest_term: self.fence.newest() };
        for master in &self.config.masters {
            let _ = self.transport.cast(master, MASTER_NAME, &message);
        }
        self.next_register_ms = self.now_ms() + self.config.register_retry.as_millis() as u64;
    }

    fn tick(&mut self) {
        let now = self.now_ms();
        match &self.registration {
            Registration::Searching if now >= self.next_register_ms => self.register(),
            Registration::Registered { master, .. }
                if now.saturating_sub(self.last_ping_ms) > self.config.master_timeout.as_millis() as u64 =>
            {
                warn!(%master, "no ping from the leading master; looking for a leader");
                self.registration = Registration::Searching;
                self.register();
            }
            _ => {}
        }
        if let Registration::Registered { master, .. } = &self.registration {
            let master = master.clone();
            for status in self.updates.due(now) {
                let _ = self.transport.cast(&master, MASTER_NAME, &AgentMessage::Update(status));
            }
        }
    }

    async fn on_master_command(&mut self, from: Sender, message: ToAgent) {
        if from.role != flotilla_transport::Role::Master {
            warn!(node = %from.node, "refused a master command from a node that is not a master");
            return;
        }
        let newest = self.fence.newest();
        let raised = match self.fence.admit(message.term) {
            Ok(raised) => raised,
            Err(stale) => {
                warn!(master = %from.node, %stale, "refused a command from a deposed leader");
                return;
            }
        };
        if message.term < newest {
            self.node.invariant_broken(&format!(
                "agent admitted a {} of term {} after seeing term {newest} (commands of deposed leaders must be refused)",
                message.command.kind(),
                message.term
            ));
        }
        if raised && let Err(error) = self.checkpoint.save_term(message.term) {
            warn!(%error, "cannot persist the newest term; refusing the command");
            return;
        }
        let known_leader = matches!(&self.registration, Registration::Registered { master, term } if *master == from.node && *term == message.term);
        match message.command {
            Command::Registered => self.registered(from.node, message.term),
            Command::Ping if known_leader => {
                self.last_ping_ms = self.now_ms();
                let _ = self.transport.cast(&from.node, MASTER_NAME, &AgentMessage::Pong { term: message.term });
            }
            // A leader this agent has not registered with: it is a new leader, register with
            // it (re-registration reports every task).
            Command::Ping => {
                self.registration = Registration::Searching;
                self.register();
            }
            // A launch of the term this agent already knows comes from that term's one leader,
            // even while the agent looks for it again (its pings came late under load): the
            // task runs and is reported when the agent re-registers. Dropping it instead
            // would leave the leader waiting for a staging task no agent holds.
            Command::Launch(task) if known_leader || !raised => self.launch(*task).await,
            _ if !known_leader => {
                warn!(master = %from.node, "ignored a command from a master this agent is not registered with")
            }
            Command::Launch(task) => self.launch(*task).await,
            Command::Kill { task_id, grace_ms } => self.kill(&task_id, grace_ms),
            Command::Acknowledge { task_id, uuid } => self.acknowledged(&task_id, uuid),
            Command::KillUnknown { task_ids } => {
                for task_id in task_ids {
                    self.kill(&task_id, Some(0));
                }
            }
            Command::Reconcile { task_ids } => self.reconcile(&from.node, task_ids),
        }
    }

    fn registered(&mut self, master: String, term: u64) {
        info!(%master, term, "registered with the leading master");
        self.registration = Registration::Registered { master: master.clone(), term };
        self.last_ping_ms = self.now_ms();
        for status in self.updates.resend_all(self.now_ms()) {
            let _ = self.transport.cast(&master, MASTER_NAME, &AgentMessage::Update(status));
        }
        // Launched while the registration travelled (by this leader, or by the previous one
        // of the same term): without a new report the master would hold these tasks lost, or
        // never know them.
        let unreported = self.tasks.keys().filter(|id| !self.reported.contains(*id)).count();
        if unreported > 0 {
            info!(tasks = unreported, "tasks launched since the registration report; reporting again");
            self.register();
        }
    }

    /// Part of a sandbox file: only plain names (`stdout`, `stderr.1`), only tasks this agent
    /// knows or has checkpointed; `offset` past the end reads nothing and tells the size.
    fn read_file(&self, read: &ReadFile) -> FileReply {
        use std::io::{Read, Seek, SeekFrom};
        let plain = !read.file.is_empty() && !read.file.starts_with('.') && !read.file.contains('/');
        if !plain {
            return FileReply::Refused(format!(
                "'{}' is not a sandbox file name (such as stdout or stderr)",
                read.file
            ));
        }
        let sandbox = self.sandbox(&read.task_id);
        if !sandbox.is_dir() {
            return FileReply::Refused(format!("task '{}' has no sandbox on agent {}", read.task_id, read.agent_id));
        }
        let path = sandbox.join(&read.file);
        let result = (|| -> std::io::Result<FileReply> {
            let mut file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            let offset = read.offset.min(size);
            file.seek(SeekFrom::Start(offset))?;
            let mut data = Vec::new();
            file.take(u64::from(read.length.min(MAX_READ_BYTES))).read_to_end(&mut data)?;
            Ok(FileReply::Chunk { offset, data, size })
        })();
        result.unwrap_or_else(|error| FileReply::Refused(format!("cannot read {}: {error}", path.display())))
    }

    fn sandbox(&self, task_id: &str) -> PathBuf {
        let dir = self.checkpoint.run_dir(task_id);
        let name = dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        self.config.work_dir.join("sandboxes").join(name)
    }

    /// The master's question about tasks it holds as staging here: those this agent never
    /// received are answered as never launched, and refused should their launch still come.
    fn reconcile(&mut self, master: &str, task_ids: Vec<String>) {
        let never: Vec<String> = task_ids.into_iter().filter(|id| !self.tasks.contains_key(id)).collect();
        if never.is_empty() {
            return;
        }
        for task_id in &never {
            self.never_launched.insert(task_id.clone());
        }
        let _ = self.transport.cast(master, MASTER_NAME, &AgentMessage::NeverLaunched { task_ids: never });
    }

    async fn launch(&mut self, task: TaskInfo) {
        let task_id = task.task_id.clone();
        if self.never_launched.contains(&task_id) {
            warn!(task = %task_id, "refused a launch the master was told never arrived (it came late)");
            return;
        }
        if self.tasks.contains_key(&task_id) {
            // A duplicate launch (a retried command): the task's own updates tell its state.
            warn!(task = %task_id, "ignored a second launch of a task this agent holds");
            return;
        }
        debug!(agent = %self.agent_id(), task = %task_id, term = self.fence.newest(), "launching a task");
        let status = self.status(&task_id, TaskState::Staging, None, String::new());
        let record = TaskRecord { info: task, handle: None, latest: status, killing: false, pending: Vec::new() };
        self.tasks.insert(task_id.clone(), Running::new(record));
        let started = match self.prepare(&task_id) {
            Ok(spec) => {
                let fetch = self.tasks[&task_id].record.info.fetch.clone();
                let (cancel, cancelled) = watch::channel(false);
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.cancel = Some(cancel);
                }
                let launch = Launch { spec, fetch, fetcher: Arc::clone(&self.fetcher), cancelled };
                self.watch(&task_id, Job::Launch(Box::new(launch))).await.map_err(|e| e.to_string())
            }
            Err(message) => Err(message),
        };
        if let Err(message) = started {
            self.launch_failed(&task_id, message);
        }
    }

    fn launch_failed(&mut self, task_id: &str, message: String) {
        warn!(task = %task_id, %message, "launch failed");
        self.update(task_id, TaskState::Failed, Some(UpdateReason::ContainerLaunchFailed), message);
    }

    /// The watcher's launch came back. A task killed while it was launching is killed now
    /// that it has a process; its watcher reports the exit.
    async fn launched(&mut self, task_id: &str, outcome: Result<TaskHandle, String>) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        let handle = match outcome {
            Ok(handle) => handle,
            Err(message) => {
                task.watcher = None;
                if task.record.latest.state.is_terminal() {
                    self.forget_if_done(task_id);
                } else {
                    self.launch_failed(task_id, message);
                }
                return;
            }
        };
        task.record.handle = Some(handle.clone());
        if task.record.killing || task.record.latest.state.is_terminal() {
            if let Err(error) = self.driver.signal(&handle, StopSignal::Kill) {
                warn!(task = %task_id, %error, "cannot kill a task killed while it launched");
            }
            return;
        }
        self.update(task_id, TaskState::Running, None, String::new());
        if let Err(error) = self.check_health(task_id).await {
            warn!(task = %task_id, %error, "cannot check the task's health; killing it");
            self.kill(task_id, Some(0));
        }
    }

    /// Prepares the sandbox and checkpoints the task; what the driver launches.
    fn prepare(&mut self, task_id: &str) -> Result<LaunchSpec, String> {
        let sandbox = self.sandbox(task_id);
        let run_dir = self.checkpoint.run_dir(task_id);
        for dir in [&sandbox, &run_dir] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let record = &self.tasks[task_id].record;
        // Checkpointed before the process exists: a restarted agent then knows the task and
        // reaps or reports it, never leaving an orphan.
        self.checkpoint.save_task(record).map_err(|e| e.to_string())?;
        let info = &record.info;
        Ok(LaunchSpec {
            task_id: task_id.to_owned(),
            command: info.command.clone(),
            env: self.environment(info, &sandbox),
            sandbox,
            run_dir,
            cpu_millis: info.resources.scalar_milli("cpus"),
            mem_bytes: info.resources.scalar_milli("mem") / 1000 * 1024 * 1024,
            hostname: self.config.info.hostname.clone(),
            logs: self.config.logs,
        })
    }

    /// The environment a task (and its command health check) runs with.
    fn environment(&self, info: &TaskInfo, sandbox: &std::path::Path) -> BTreeMap<String, String> {
        let sandbox_text = sandbox.display().to_string();
        let placement = Placement {
            agent_id: &self.config.info.id,
            hostname: &self.config.info.hostname,
            sandbox: &sandbox_text,
            agent_endpoint: self.transport.node(),
        };
        task_environment(info, &placement)
    }

    /// Starts the task's health checker, if it has a health check.
    async fn check_health(&mut self, task_id: &str) -> Result<(), ActorProcessingErr> {
        let Some(task) = self.tasks.get(task_id) else { return Ok(()) };
        let Some(check) = task.record.info.health_check.clone() else { return Ok(()) };
        let sandbox = self.sandbox(task_id);
        let args = HealthArgs {
            task_id: task_id.to_owned(),
            check,
            env: self.environment(&task.record.info, &sandbox),
            sandbox,
            agent: self.myself.clone(),
            node: self.node.clone(),
        };
        let (checker, _) = Actor::spawn_linked(None, HealthChecker, args, self.myself.get_cell()).await?;
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.checker = Some(checker);
        }
        Ok(())
    }

    /// A health verdict: the change of health goes to the master as a `TASK_RUNNING` update;
    /// a kill is an ordinary kill whose terminal update says why.
    fn health(&mut self, task_id: &str, healthy: bool, kill: Option<String>) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        if task.record.latest.state != TaskState::Running || task.record.killing {
            return;
        }
        let mut status =
            self.status(task_id, TaskState::Running, Some(UpdateReason::TaskHealthCheckStatusUpdated), String::new());
        status.healthy = Some(healthy);
        self.push_update(status);
        if let Some(message) = kill {
            warn!(task = %task_id, %message, "killing an unhealthy task");
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.unhealthy_kill = Some(message);
            }
            self.kill(task_id, None);
        }
    }

    /// Starts the task's watcher: it launches the task first when asked to, then reports its
    /// exit.
    async fn watch(&mut self, task_id: &str, job: Job) -> Result<(), ActorProcessingErr> {
        let args =
            WatcherArgs { driver: self.driver.clone(), task_id: task_id.to_owned(), job, agent: self.myself.clone() };
        let (watcher, _) = Actor::spawn_linked(None, Watcher, args, self.myself.get_cell()).await?;
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.watcher = Some(watcher);
        }
        Ok(())
    }

    fn kill(&mut self, task_id: &str, grace_ms: Option<u64>) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            // Unknown here: tell the master it is gone so its records converge.
            let status = self.status(
                task_id,
                TaskState::Lost,
                Some(UpdateReason::TaskUnknown),
                "Task unknown to the agent".into(),
            );
            if let Registration::Registered { master, .. } = &self.registration {
                let _ = self.transport.cast(master, MASTER_NAME, &AgentMessage::Update(status));
            }
            return;
        };
        if task.record.latest.state.is_terminal() {
            return;
        }
        task.stop_checker();
        task.record.killing = true;
        let grace = Duration::from_millis(grace_ms.unwrap_or(task.record.info.kill_grace_ms));
        match task.record.handle.clone() {
            None => {
                // Still fetching or launching: the watcher stops the fetch and never starts
                // the command (a launch already under way is killed once it comes back).
                if let Some(cancel) = &task.cancel {
                    cancel.send_replace(true);
                }
                self.update(task_id, TaskState::Killed, Some(UpdateReason::TaskKilledDuringLaunch), String::new());
            }
            Some(handle) => {
                let signal = if grace.is_zero() { StopSignal::Kill } else { StopSignal::Terminate };
                if let Err(error) = self.driver.signal(&handle, signal) {
                    warn!(task = %task_id, %error, "cannot signal the task");
                }
                self.update(task_id, TaskState::Killing, None, String::new());
                let task_id = task_id.to_owned();
                self.myself.send_after(grace, move || AgentMsg::GraceOver { task_id });
            }
        }
    }

    fn grace_over(&mut self, task_id: &str) {
        if let Some(task) = self.tasks.get(task_id)
            && !task.record.latest.state.is_terminal()
            && let Some(handle) = &task.record.handle
        {
            info!(task = %task_id, "grace period over; killing the task's process tree");
            if let Err(error) = self.driver.signal(handle, StopSignal::Kill) {
                warn!(task = %task_id, %error, "cannot kill the task");
            }
        }
    }

    fn exited(&mut self, task_id: &str, exit: TaskExit) {
        let Some(task) = self.tasks.get_mut(task_id) else { return };
        task.watcher = None;
        task.stop_checker();
        if let Some(handle) = &task.record.handle {
            self.driver.cleanup(handle);
        }
        if task.record.latest.state.is_terminal() {
            self.forget_if_done(task_id);
            return;
        }
        let mut outcome = exit_outcome(&exit, task.record.killing);
        let unhealthy = task.unhealthy_kill.take();
        if let Some(message) = &unhealthy {
            outcome.message.clone_from(message);
        }
        info!(task = %task_id, state = %outcome.state, message = %outcome.message, "task ended");
        let mut status = self.status(task_id, outcome.state, outcome.reason, outcome.message);
        status.healthy = unhealthy.map(|_| false);
        self.push_update(status);
    }

    fn status(&self, task_id: &str, state: TaskState, reason: Option<UpdateReason>, message: String) -> TaskStatus {
        TaskStatus {
            task_id: task_id.to_owned(),
            agent_id: self.agent_id().to_owned(),
            state,
            source: UpdateSource::Executor,
            reason,
            message,
            uuid: None,
            timestamp_ms: self.node.clock().wall_millis(),
            healthy: None,
        }
    }

    /// Records a new state: checkpointed, then queued for the master (sent now when it is the
    /// task's head update and the agent is registered).
    fn update(&mut self, task_id: &str, state: TaskState, reason: Option<UpdateReason>, message: String) {
        let status = self.status(task_id, state, reason, message);
        self.push_update(status);
    }

    /// [`AgentState::update`] for a status already made.
    fn push_update(&mut self, mut status: TaskStatus) {
        let task_id = status.task_id.clone();
        let task_id = task_id.as_str();
        status.uuid = Some(((self.node.random_u64() as u128) << 64) | self.node.random_u64() as u128);
        let now = self.now_ms();
        let head = self.updates.push(status.clone(), now);
        let pending = self.updates.pending(task_id);
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.record.latest = status;
            task.record.pending = pending;
            if let Err(error) = self.checkpoint.save_task(&task.record) {
                warn!(task = %task_id, %error, "cannot checkpoint the task's update");
            }
        }
        if let (Some(head), Registration::Registered { master, .. }) = (head, &self.registration) {
            let _ = self.transport.cast(master, MASTER_NAME, &AgentMessage::Update(head));
        }
    }

    fn acknowledged(&mut self, task_id: &str, uuid: u128) {
        let now = self.now_ms();
        let Acknowledged::Head { next, drained } = self.updates.acknowledge(task_id, uuid, now) else { return };
        let terminal = self.tasks.get(task_id).is_none_or(|t| t.record.latest.state.is_terminal());
        if drained && terminal {
            // A task killed while its launch is still in flight is kept until the launch
            // comes back, so that its process is killed and cleaned up, not orphaned.
            if !self.tasks.get(task_id).is_some_and(Running::launching) {
                self.forget(task_id);
            }
            return;
        }
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.record.pending = self.updates.pending(task_id);
            if let Err(error) = self.checkpoint.save_task(&task.record) {
                warn!(task = %task_id, %error, "cannot checkpoint the acknowledgement");
            }
        }
        if let (Some(next), Registration::Registered { master, .. }) = (next, &self.registration) {
            let _ = self.transport.cast(master, MASTER_NAME, &AgentMessage::Update(next));
        }
    }

    /// Forgets a finished task once every update was acknowledged.
    fn forget_if_done(&mut self, task_id: &str) {
        if !self.updates.has_pending(task_id) {
            self.forget(task_id);
        }
    }

    /// Drops a finished task whose every update was acknowledged (its sandbox stays for its
    /// logs).
    fn forget(&mut self, task_id: &str) {
        self.tasks.remove(task_id);
        self.updates.forget(task_id);
        if let Err(error) = self.checkpoint.remove_task(task_id) {
            warn!(task = %task_id, %error, "cannot remove the task's checkpoint");
        }
    }
}

/// Runs a blocking driver call. On a multi-threaded runtime the worker thread hands its other
/// tasks to another thread first (`block_in_place`), so the agent and the other watchers keep
/// running while a launch waits for its command to start; on a single-threaded runtime (the
/// simulations, with the mock driver, whose calls do not block) it just runs.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// What a watcher starts with.
enum Job {
    /// Fetch the task's URIs, launch it, report how that went, then watch it.
    Launch(Box<Launch>),
    /// Watch a task already running (re-adopted after an agent restart).
    Watch(TaskHandle),
}

/// A task to start: its URIs go into its sandbox first, unless it is killed meanwhile.
struct Launch {
    spec: LaunchSpec,
    fetch: Vec<FetchUri>,
    fetcher: Arc<Fetcher>,
    /// Becomes `true` when the task is killed before it started.
    cancelled: watch::Receiver<bool>,
}

impl Launch {
    /// Fetches, then launches through the driver; an error is the task's status message.
    /// Without URIs there is nothing to fetch and the launch is the driver's alone (the
    /// simulations and benchmarks, whose tasks fetch nothing, see no change).
    async fn run(mut self, driver: &dyn TaskDriver) -> Result<TaskHandle, String> {
        if !self.fetch.is_empty() {
            let fetched = tokio::select! {
                fetched = self.fetcher.fetch_all(&self.fetch, &self.spec.sandbox) => fetched.map_err(|e| e.to_string()),
                // A closed channel means the agent is gone: nothing waits for this task.
                _ = self.cancelled.wait_for(|killed| *killed) => Err("killed while fetching its URIs".to_owned()),
            };
            fetched?;
        }
        if *self.cancelled.borrow() {
            return Err("killed before it started".to_owned());
        }
        blocking(|| driver.launch(&self.spec)).map_err(|e| e.to_string())
    }
}

struct WatcherArgs {
    driver: Arc<dyn TaskDriver>,
    task_id: String,
    job: Job,
    agent: ActorRef<AgentMsg>,
}

/// Fetches and launches one task when asked to (a fetch takes as long as its downloads, and
/// the driver's launch blocks until the command has started, so each runs here, beside the
/// others, instead of in the agent), awaits its exit and reports both to the agent, then
/// stops.
struct Watcher;

impl Actor for Watcher {
    type Msg = ();
    type State = Option<WatcherArgs>;
    type Arguments = WatcherArgs;

    async fn pre_start(&self, myself: ActorRef<()>, args: WatcherArgs) -> Result<Self::State, ActorProcessingErr> {
        // The work runs in the first message, so that `pre_start` (and the agent) returns at once.
        myself.send_message(())?;
        Ok(Some(args))
    }

    async fn handle(&self, myself: ActorRef<()>, _: (), state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(WatcherArgs { driver, task_id, job, agent }) = state.take() {
            let handle = match job {
                Job::Watch(handle) => Some(handle),
                Job::Launch(launch) => {
                    let outcome = launch.run(driver.as_ref()).await;
                    let handle = outcome.as_ref().ok().cloned();
                    let _ = agent.send_message(AgentMsg::Launched { task_id: task_id.clone(), outcome });
                    handle
                }
            };
            if let Some(handle) = handle {
                let exit = driver.wait(&handle).await;
                let _ = agent.send_message(AgentMsg::Exited { task_id, exit });
            }
        }
        myself.stop(None);
        Ok(())
    }
}

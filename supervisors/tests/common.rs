//! Test actors and helpers shared by the conformance suite.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_supervisors::exit::exit_reason;
use flotilla_supervisors::{
    ChildSpec, ExitReason, Node, NodeId, Signal, Supervisor, SupervisorRef, SupervisorSpec, exit_error, stop_with,
};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Every wait in these tests is bounded by this much (virtual) time.
pub const BOUND: Duration = Duration::from_secs(60);

pub async fn node() -> Node {
    Node::builder(NodeId::new("test").unwrap()).start().await.expect("node starts")
}

#[derive(Clone, Debug)]
pub enum Ev {
    Started(String, ActorCell),
    Stopped(String),
    Signal(String, Signal),
}

/// Where test actors report what happened to them.
#[derive(Clone)]
pub struct Probe {
    tx: UnboundedSender<Ev>,
    pub stops: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    fn send(&self, ev: Ev) {
        let _ = self.tx.send(ev);
    }

    pub fn stopped_in_order(&self) -> Vec<String> {
        self.stops.lock().unwrap().clone()
    }
}

pub struct Events {
    rx: UnboundedReceiver<Ev>,
}

pub fn probe() -> (Probe, Events) {
    let (tx, rx) = unbounded_channel();
    (Probe { tx, stops: Arc::default() }, Events { rx })
}

impl Events {
    pub async fn next(&mut self) -> Ev {
        tokio::time::timeout(BOUND, self.rx.recv()).await.expect("an event within the bound").expect("probe alive")
    }

    /// The next start, skipping other events.
    pub async fn next_started(&mut self) -> (String, ActorCell) {
        loop {
            if let Ev::Started(name, cell) = self.next().await {
                return (name, cell);
            }
        }
    }

    /// The next `n` starts, by name, in order.
    pub async fn started_names(&mut self, n: usize) -> Vec<String> {
        let mut names = Vec::new();
        while names.len() < n {
            names.push(self.next_started().await.0);
        }
        names
    }

    pub async fn next_signal(&mut self) -> (String, Signal) {
        loop {
            if let Ev::Signal(name, signal) = self.next().await {
                return (name, signal);
            }
        }
    }

    /// Lets `quiet` of virtual time pass and returns what arrived meanwhile.
    pub async fn during(&mut self, quiet: Duration) -> Vec<Ev> {
        tokio::time::sleep(quiet).await;
        self.drain()
    }

    /// What has arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Ev> {
        let mut seen = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            seen.push(ev);
        }
        seen
    }
}

#[derive(Clone, Copy, Debug)]
pub enum OnStop {
    Return,
    /// Cleanup that takes this long.
    Sleep(Duration),
    /// A child that traps exits and never returns from its cleanup.
    Hang,
}

#[derive(Clone)]
pub struct WorkerArgs {
    pub name: String,
    pub probe: Probe,
    pub on_stop: OnStop,
    pub crash_after_start: bool,
}

pub enum WorkerMsg {
    Crash,
    Panic,
    Exit(ExitReason),
    Ping(RpcReplyPort<()>),
}

pub struct Worker;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        args.probe.send(Ev::Started(args.name.clone(), myself.get_cell()));
        Ok(args)
    }

    async fn post_start(&self, _: ActorRef<WorkerMsg>, state: &mut WorkerArgs) -> Result<(), ActorProcessingErr> {
        if state.crash_after_start {
            return Err(exit_error(ExitReason::Failed("crash loop".into())));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Crash => return Err(exit_error(ExitReason::Failed("crash".into()))),
            WorkerMsg::Panic => panic!("worker panicked on purpose"),
            WorkerMsg::Exit(reason) => stop_with(&myself.get_cell(), &reason),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<WorkerMsg>, state: &mut WorkerArgs) -> Result<(), ActorProcessingErr> {
        match state.on_stop {
            OnStop::Return => {}
            OnStop::Sleep(d) => tokio::time::sleep(d).await,
            OnStop::Hang => std::future::pending::<()>().await,
        }
        state.probe.stops.lock().unwrap().push(state.name.clone());
        state.probe.send(Ev::Stopped(state.name.clone()));
        Ok(())
    }
}

pub fn worker_args(name: &str, probe: &Probe) -> WorkerArgs {
    WorkerArgs { name: name.into(), probe: probe.clone(), on_stop: OnStop::Return, crash_after_start: false }
}

pub fn worker(name: &str, probe: &Probe) -> ChildSpec {
    worker_from(worker_args(name, probe))
}

pub fn worker_from(args: WorkerArgs) -> ChildSpec {
    let id = args.name.clone();
    ChildSpec::worker(id, move |_| (Worker, args.clone()))
}

pub fn send(cell: &ActorCell, msg: WorkerMsg) {
    ActorRef::<WorkerMsg>::from(cell.clone()).send_message(msg).expect("worker alive");
}

/// A parent that reports how its children exit, so tests can see a supervisor's own exit.
pub struct Watcher;

impl Actor for Watcher {
    type Msg = ();
    type State = UnboundedSender<(ActorId, ExitReason)>;
    type Arguments = UnboundedSender<(ActorId, ExitReason)>;

    async fn pre_start(&self, _: ActorRef<()>, tx: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((cell, reason)) = exit_reason(&event) {
            let _ = tx.send((cell.get_id(), reason));
        }
        Ok(())
    }
}

pub struct Watched {
    pub sup: SupervisorRef,
    exits: UnboundedReceiver<(ActorId, ExitReason)>,
    _watcher: ActorRef<()>,
}

impl Watched {
    pub async fn exit_reason(&mut self) -> ExitReason {
        let (id, reason) = tokio::time::timeout(BOUND, self.exits.recv()).await.expect("supervisor exits").unwrap();
        assert_eq!(id, self.sup.cell().get_id());
        reason
    }

    pub fn is_alive(&self) -> bool {
        !matches!(self.sup.cell().get_status(), ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping)
    }
}

/// Starts a supervisor under a [`Watcher`].
pub async fn start_watched(node: &Node, spec: SupervisorSpec) -> Watched {
    let (tx, exits) = unbounded_channel();
    let (watcher, _) = Actor::spawn(None, Watcher, tx).await.unwrap();
    let sup = Supervisor::spawn(node.clone(), spec, Some(watcher.get_cell())).await.expect("supervisor starts");
    Watched { sup, exits, _watcher: watcher }
}

/// A plain process that takes part in links and monitors and reports its signals.
pub struct Proc;

pub enum ProcMsg {
    Signal(Signal),
    Exit(ExitReason),
}

impl From<Signal> for ProcMsg {
    fn from(signal: Signal) -> Self {
        ProcMsg::Signal(signal)
    }
}

impl Actor for Proc {
    type Msg = ProcMsg;
    type State = (String, Probe);
    type Arguments = (String, Probe);

    async fn pre_start(&self, _: ActorRef<ProcMsg>, args: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<ProcMsg>,
        msg: ProcMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProcMsg::Signal(signal) => state.1.send(Ev::Signal(state.0.clone(), signal)),
            ProcMsg::Exit(reason) => stop_with(&myself.get_cell(), &reason),
        }
        Ok(())
    }
}

pub async fn spawn_proc(node: &Node, name: &str, probe: &Probe) -> ActorRef<ProcMsg> {
    let (proc, _) = Actor::spawn(None, Proc, (name.to_owned(), probe.clone())).await.unwrap();
    node.enroll(&proc);
    proc
}

/// Waits, within the bound, until `cell` has stopped.
pub async fn wait_stopped(cell: &ActorCell) {
    cell.wait(Some(BOUND)).await.expect("actor stops within the bound");
}

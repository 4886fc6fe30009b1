//! The node context: what every actor of one node shares.
//!
//! A [`Node`] owns the node's identity, its name registry, its clock, its seeded random
//! generator and its table of linked and monitored actors. Many nodes live in one process
//! (tests, simulation), so nothing here is global: two nodes never see each other's names.

use std::sync::{Arc, Mutex};

use ractor::{ActorCell, ActorRef, Message};

use crate::clock::{Clock, TokioClock};
use crate::core::time::Time;
use crate::exit::ExitReason;
use crate::process::{MonitorRef, Processes, Signal};
use crate::registry::{Registry, RegistryError};
use crate::rng::Rng;

/// A node's name, unique within its cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

/// A node id that cannot name a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: use 1 to 63 characters from a-z, 0-9, '-', '_' and '.'")]
pub struct InvalidNodeId(pub String);

impl NodeId {
    /// Node ids become DNS labels and certificate names, so they are restricted to a
    /// conservative alphabet.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidNodeId> {
        let id = id.into();
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
        if id.is_empty() || id.len() > 63 || !id.chars().all(valid_char) {
            return Err(InvalidNodeId(id));
        }
        Ok(NodeId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a node reports an invariant its code saw broken: a simulation collects these as
/// violations of the seed (production nodes only log them).
pub type InvariantSink = Arc<dyn Fn(&NodeId, &str) + Send + Sync>;

struct NodeInner {
    id: NodeId,
    clock: Arc<dyn Clock>,
    invariants: Option<InvariantSink>,
    rng: Mutex<Rng>,
    names: Registry,
    processes: Arc<Processes>,
}

/// A cheap handle to one node's shared context.
#[derive(Clone)]
pub struct Node(Arc<NodeInner>);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.0.id).finish_non_exhaustive()
    }
}

/// Builds a [`Node`]; the defaults are tokio's clock and seed 0.
pub struct NodeBuilder {
    id: NodeId,
    clock: Option<Arc<dyn Clock>>,
    seed: u64,
    invariants: Option<InvariantSink>,
}

impl NodeBuilder {
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Where [`Node::invariant_broken`] reports, besides the log.
    pub fn invariants(mut self, sink: InvariantSink) -> Self {
        self.invariants = Some(sink);
        self
    }

    /// Starts the node's runtime actors (the reaper behind links and monitors).
    pub async fn start(self) -> Result<Node, ractor::SpawnErr> {
        let processes = Arc::new(Processes::default());
        processes.start().await?;
        Ok(Node(Arc::new(NodeInner {
            id: self.id,
            clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
            invariants: self.invariants,
            rng: Mutex::new(Rng::seeded(self.seed)),
            names: Registry::default(),
            processes,
        })))
    }
}

impl Node {
    pub fn builder(id: NodeId) -> NodeBuilder {
        NodeBuilder { id, clock: None, seed: 0, invariants: None }
    }

    pub fn id(&self) -> &NodeId {
        &self.0.id
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    pub fn now(&self) -> Time {
        self.0.clock.now()
    }

    /// The next value of the node's seeded generator.
    pub fn random_u64(&self) -> u64 {
        self.0.rng.lock().unwrap_or_else(|e| e.into_inner()).next_u64()
    }

    /// Reports that an invariant the caller checks locally does not hold: a bug, never an
    /// expected condition. Logged as an error, and a simulation counts it as a violation.
    pub fn invariant_broken(&self, what: &str) {
        tracing::error!(node = %self.0.id, "invariant broken: {what}");
        if let Some(sink) = &self.0.invariants {
            sink(&self.0.id, what);
        }
    }

    /// A generator of its own for a component, derived from the node's seed.
    pub fn fork_rng(&self) -> Rng {
        self.0.rng.lock().unwrap_or_else(|e| e.into_inner()).fork()
    }

    pub fn register(&self, name: impl Into<String>, actor: ActorCell) -> Result<(), RegistryError> {
        self.0.names.register(name, actor)
    }

    pub fn unregister(&self, name: &str, actor: &ActorCell) {
        self.0.names.unregister(name, actor)
    }

    pub fn whereis(&self, name: &str) -> Option<ActorCell> {
        self.0.names.whereis(name)
    }

    /// A typed reference to the actor registered under `name`. The message type is checked
    /// when a message is sent.
    pub fn whereis_ref<M: Message>(&self, name: &str) -> Option<ActorRef<M>> {
        self.whereis(name).map(ActorRef::from)
    }

    pub fn registered(&self) -> Vec<String> {
        self.0.names.names()
    }

    /// Lets `actor` take part in links and monitors, receiving [`Signal`]s as messages.
    pub fn enroll<M: Message + From<Signal>>(&self, actor: &ActorRef<M>) {
        self.0.processes.enroll(actor)
    }

    pub fn trap_exit(&self, actor: &ActorCell, trap: bool) {
        self.0.processes.trap_exit(actor, trap)
    }

    pub fn link(&self, from: &ActorCell, to: &ActorCell) {
        self.0.processes.link(from, to)
    }

    pub fn unlink(&self, from: &ActorCell, to: &ActorCell) {
        self.0.processes.unlink(from, to)
    }

    pub fn monitor(&self, watcher: &ActorCell, target: &ActorCell) -> MonitorRef {
        self.0.processes.monitor(watcher, target)
    }

    pub fn demonitor(&self, monitor: MonitorRef) {
        self.0.processes.demonitor(monitor)
    }

    /// `exit(Target, Reason)` sent by `from`.
    pub fn exit(&self, from: &ActorCell, target: &ActorCell, reason: ExitReason) {
        self.0.processes.exit(from, target, reason)
    }

    /// Stops the node's runtime actors. Application actors are stopped by their supervisors.
    pub fn shutdown(&self) {
        self.0.processes.stop();
    }
}

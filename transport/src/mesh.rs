//! A node's transport: its sessions with peers, the actors it exports, remote calls and
//! monitors. The same code runs over QUIC and over SimNet; only [`crate::link`] differs.
//!
//! Concurrency, in one paragraph: the hot path — casting, calling, replying, dispatching an
//! inbound message to an actor — touches only shared tables and the per-peer send queue,
//! never an actor's mailbox in between. Everything that changes which sessions exist
//! (installing a handshaken connection, losing one, dialing, monitors held for peers) is
//! serialised through one actor, the *endpoint*, so the session rules of
//! [`crate::core::session`] are applied one event at a time. Each session owns four tasks
//! (writer, reader, datagrams, heartbeat) that end with it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use flotilla_supervisors::exit::exit_reason;
use flotilla_supervisors::{Backoff, ExitReason, Node, Rng};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::core::detector::{DetectorConfig, FailureDetector};
use crate::core::fault::{Fault, FaultError, FaultId};
use crate::core::identity::{PeerIdentity, Refusal, Role};
use crate::core::link_stage::LinkStage;
use crate::core::session::{self, Origin, Replaces, Verdict, View};
use crate::core::wire::{self, Borrowed, DEFAULT_MAX_BODY, Envelope, RemoteError};
use crate::link::{Conn, FrameReader, Tx, close_code};
use crate::link_faults::{LinkFaults, next_heal, until_due};
use crate::queue::{Class, PushError, QueueDepth, QueueLimits, SendQueue};
use crate::remote::{RemoteCall, RemoteMessage, RemoteRef, ReplyPort};
use crate::{quic, sim};

/// How a transport behaves; every limit is named here.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// How often each side sends a heartbeat datagram.
    pub heartbeat_interval: Duration,
    /// When a silent peer is declared lost.
    pub detector: DetectorConfig,
    /// Delay between reconnection attempts to a persistent peer.
    pub reconnect: Backoff,
    /// How long a dial or an accepted connection may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// How long a graceful shutdown waits for queued frames to be written.
    pub drain_timeout: Duration,
    pub queue: QueueLimits,
    /// The largest frame body accepted from a peer.
    pub max_frame_body: u32,
    /// The largest bulk transfer accepted from a peer.
    pub max_bulk_bytes: u64,
    /// Outstanding calls this node waits on at once.
    pub max_pending_calls: usize,
    /// Monitors this node holds on remote actors and nodes at once.
    pub max_monitors: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        let heartbeat_interval = Duration::from_millis(500);
        TransportConfig {
            heartbeat_interval,
            detector: DetectorConfig::phi_accrual(heartbeat_interval),
            reconnect: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                reset_after: Duration::from_secs(10),
            },
            handshake_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
            queue: QueueLimits::default(),
            max_frame_body: DEFAULT_MAX_BODY,
            max_bulk_bytes: 1 << 30,
            max_pending_calls: 100_000,
            max_monitors: 100_000,
        }
    }
}

/// Where a peer is dialed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Udp(SocketAddr),
    /// On SimNet a node is reached by its id.
    Sim,
}

/// Why a cast was not queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no session with node {0} and no address to dial it")]
    UnknownPeer(String),
    #[error(transparent)]
    QueueFull(#[from] crate::queue::QueueFull),
    #[error("the message does not encode: {0}")]
    Encode(String),
    #[error("the transport is shut down")]
    Closed,
}

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The session carrying the call was lost; the request may or may not have run.
    #[error("the connection to the node was lost")]
    NoConnection,
    #[error("the remote side refused the call: {0}")]
    Remote(RemoteError),
    #[error("the answer does not decode: {0}")]
    Decode(String),
    #[error("too many calls in flight ({0})")]
    Overloaded(usize),
}

/// A bulk transfer received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkTransfer {
    /// The sending node, as its session authenticated it.
    pub from: String,
    pub from_role: Role,
    pub channel: String,
    pub data: Bytes,
}

/// Where the bulk transfers of a channel go.
#[derive(Clone)]
enum BulkSink {
    Queue(mpsc::Sender<BulkTransfer>),
    Actor(Arc<dyn Fn(BulkTransfer) + Send + Sync>),
}

/// Why a bulk transfer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("no session with node {0}")]
    NotConnected(String),
    #[error("bulk stream failed: {0}")]
    Stream(String),
    #[error("transfer of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: u64 },
}

/// What a monitor watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteTarget {
    Actor { node: String, name: String },
    Node(String),
}

/// A monitor on a remote actor or node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteMonitor(u64);

/// A link between a local actor and a remote one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteLink(u64);

/// A monitor fired. `NoConnection` means the session was lost: the peer may still be alive
/// (a partition looks exactly like a crash from this side), so it is a statement about the
/// connection, not about the remote actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDown {
    pub monitor: RemoteMonitor,
    pub target: RemoteTarget,
    pub reason: ExitReason,
}

/// The state of a session with one peer, for observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    pub node: String,
    pub connected: bool,
    pub boot_id: Option<u64>,
    pub sessions: u64,
    pub queue: QueueDepth,
    pub frames_received: u64,
    /// Last heartbeat round trip.
    pub rtt: Option<Duration>,
    /// Where the current session's peer is (its listening address).
    pub address: Option<Address>,
}

/// Counters over the whole transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections refused at admission (each logged once).
    pub refused: u64,
    /// Casts this node could not deliver to a local actor (each answered `Undeliverable`).
    pub dead_letters: u64,
    /// `Undeliverable` answers received for casts this node sent.
    pub undeliverable: u64,
    /// Messages and calls handed to local actors.
    pub dispatched: u64,
    /// Links from local actors to remote ones, now.
    pub links_out: u64,
    /// Links peers hold on local actors, now.
    pub links_in: u64,
    /// Monitors peers hold on local actors, now (links included).
    pub watched: u64,
    /// Frames lost to this node's link faults (chaos), sent or received.
    pub fault_dropped: u64,
}

type Notifier = Arc<dyn Fn(RemoteDown) + Send + Sync>;

type Handler = Arc<dyn Fn(&Sender, Delivery<'_>) -> Result<(), RemoteError> + Send + Sync>;

/// A handler that decodes a cast of type `T` and hands it to `deliver` (false: the actor is
/// gone). A call to a cast-only type has no one to answer: dropping its port tells the caller.
fn cast_handler<T: RemoteMessage>(deliver: impl Fn(&Sender, T) -> bool + Send + Sync + 'static) -> Handler {
    Arc::new(move |from, delivery| {
        let payload = match delivery {
            Delivery::Cast(payload) => payload,
            Delivery::Call { payload, reply } => {
                drop(reply.port::<()>());
                payload
            }
        };
        let message: T = postcard::from_bytes(payload).map_err(|e| RemoteError::Decode(e.to_string()))?;
        if deliver(from, message) { Ok(()) } else { Err(RemoteError::NoReply) }
    })
}

/// A handler that decodes a request of type `Q` and hands it, with the port its answer goes
/// to, to `deliver` (false: the actor is gone). A cast of a call type gets a port that
/// answers no one.
fn call_handler<Q: RemoteCall>(
    deliver: impl Fn(&Sender, Q, ReplyPort<Q::Reply>) -> bool + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |from, delivery| {
        let (payload, port) = match delivery {
            Delivery::Call { payload, reply } => (payload, reply.port::<Q::Reply>()),
            Delivery::Cast(payload) => (payload, ReplyPort::local().0),
        };
        let request: Q = postcard::from_bytes(payload).map_err(|e| RemoteError::Decode(e.to_string()))?;
        if deliver(from, request, port) { Ok(()) } else { Err(RemoteError::NoReply) }
    })
}

/// An inbound message for an exported actor.
pub(crate) enum Delivery<'a> {
    Cast(&'a [u8]),
    Call { payload: &'a [u8], reply: ReplyTo },
}

/// Who sent a message, as the session's handshake established it (over QUIC: the peer's
/// certificate, checked against the cluster CA and the admission policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    pub node: String,
    pub role: Role,
}

pub(crate) struct ReplyTo {
    shared: Weak<Shared>,
    node: String,
    id: u64,
}

impl ReplyTo {
    fn port<R: serde::Serialize + Send + 'static>(self) -> ReplyPort<R> {
        ReplyPort::remote(self.shared, self.node, self.id)
    }
}

struct Export {
    cell: ActorCell,
    handlers: BTreeMap<u32, Handler>,
}

struct Pending {
    node: String,
    answer: oneshot::Sender<Result<Vec<u8>, RemoteError>>,
}

struct OutMonitor {
    target: RemoteTarget,
    notify: Notifier,
}

impl OutMonitor {
    fn node(&self) -> &str {
        match &self.target {
            RemoteTarget::Actor { node, .. } | RemoteTarget::Node(node) => node,
        }
    }
}

/// One established connection with a peer.
pub(crate) struct Session {
    id: u64,
    /// The peer as its handshake authenticated it.
    sender: Sender,
    boot_id: u64,
    origin: Origin,
    conn: Conn,
    detector: Mutex<FailureDetector>,
    tasks: Mutex<Vec<AbortHandle>>,
    rtt_nanos: AtomicU64,
    drained: Notify,
}

impl Session {
    fn end(&self, code: u32, reason: &str) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.conn.close(code, reason);
    }
}

#[derive(Default)]
struct PeerState {
    session: Option<Arc<Session>>,
    dialing: bool,
    address: Option<Address>,
    /// Redial when the session is lost.
    persistent: bool,
    attempts: u32,
    sessions: u64,
}

/// Everything this node knows about one peer. The send queue outlives sessions: frames
/// queued while a session is being replaced go out on the next one.
pub(crate) struct Peer {
    node: String,
    pub(crate) queue: SendQueue,
    state: Mutex<PeerState>,
    received: AtomicU64,
}

impl Peer {
    fn view(&self) -> View {
        let state = lock(&self.state);
        match &state.session {
            Some(session) => View::Up { boot_id: session.boot_id, origin: session.origin },
            None if state.dialing => View::Dialing,
            None => View::Idle,
        }
    }

    fn session(&self) -> Option<Arc<Session>> {
        lock(&self.state).session.clone()
    }
}

/// The network a transport runs on.
pub enum Network {
    Quic(Box<quic::QuicSetup>),
    Sim(sim::SimNet),
}

pub(crate) enum NetHandle {
    Quic(quic::QuicNet),
    Sim(sim::SimEndpoint),
}

#[derive(Default)]
struct Counters {
    refused: AtomicU64,
    dead_letters: AtomicU64,
    undeliverable: AtomicU64,
    dispatched: AtomicU64,
    links_out: AtomicU64,
    links_in: AtomicU64,
    watched: AtomicU64,
}

/// State shared by the transport handle, the endpoint actor and the session tasks.
pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) local: PeerIdentity,
    pub(crate) boot_id: u64,
    pub(crate) config: TransportConfig,
    net: OnceLock<NetHandle>,
    peers: RwLock<BTreeMap<String, Arc<Peer>>>,
    exports: RwLock<BTreeMap<String, Export>>,
    bulk: RwLock<BTreeMap<String, BulkSink>>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    monitors: Mutex<BTreeMap<u64, OutMonitor>>,
    next_id: AtomicU64,
    endpoint: OnceLock<ActorRef<EndpointMsg>>,
    counters: Counters,
    tasks: Mutex<Vec<AbortHandle>>,
    closing: AtomicBool,
    /// Link faults injected on this node (chaos), applied by the session tasks.
    faults: LinkFaults,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `task` to a set of owned tasks, dropping the handles of those that have finished.
fn keep_task(tasks: &Mutex<Vec<AbortHandle>>, task: AbortHandle) {
    let mut tasks = lock(tasks);
    tasks.retain(|t| !t.is_finished());
    tasks.push(task);
}

impl Shared {
    pub(crate) fn peer(&self, node: &str) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(node).cloned()
    }

    fn peer_or_insert(&self, node: &str) -> Arc<Peer> {
        if let Some(peer) = self.peer(node) {
            return peer;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(peers.entry(node.to_owned()).or_insert_with(|| {
            Arc::new(Peer {
                node: node.to_owned(),
                queue: SendQueue::new(self.config.queue),
                state: Mutex::new(PeerState::default()),
                received: AtomicU64::new(0),
            })
        }))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn endpoint(&self) -> Option<&ActorRef<EndpointMsg>> {
        self.endpoint.get()
    }

    pub(crate) fn net(&self) -> Option<&NetHandle> {
        self.net.get()
    }

    pub(crate) fn count_refusal(&self, who: &str, refusal: &Refusal) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %self.local.node, peer = who, %refusal, "connection refused");
    }

    /// Hands a connection whose handshake completed to the endpoint actor.
    pub(crate) fn handshaken(&self, link: Handshaken) {
        match self.endpoint() {
            Some(endpoint) => {
                if let Err(ractor::MessagingErr::SendErr(EndpointMsg::Install(link))) =
                    endpoint.send_message(EndpointMsg::Install(Box::new(link)))
                {
                    link.conn.close(close_code::GOODBYE, "shutting down");
                }
            }
            None => link.conn.close(close_code::GOODBYE, "shutting down"),
        }
    }

    /// Keeps a network task until the transport ends.
    pub(crate) fn own_task(&self, task: AbortHandle) {
        keep_task(&self.tasks, task);
    }

    fn send_endpoint(&self, msg: EndpointMsg) {
        if let Some(endpoint) = self.endpoint() {
            let _ = endpoint.send_message(msg);
        }
    }

    /// Dispatches one inbound envelope from `peer` on `session`.
    fn dispatch(self: &Arc<Self>, peer: &Arc<Peer>, session: &Session, frame: Borrowed<'_>) {
        let from = &session.sender;
        let session = session.id;
        match frame {
            Borrowed::Cast { to, type_tag, payload } => {
                if let Err(error) = self.deliver(from, to, type_tag, Delivery::Cast(payload)) {
                    self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %self.local.node, from = %peer.node, to, %error, "undeliverable cast");
                    let undeliverable = Envelope::Undeliverable { to: to.to_owned(), type_tag, error };
                    let _ = peer.queue.push(Class::Control, |buf| wire::encode(&undeliverable, buf));
                }
            }
            Borrowed::Call { id, to, type_tag, payload, .. } => {
                let reply = ReplyTo { shared: Arc::downgrade(self), node: peer.node.clone(), id };
                if let Err(error) = self.deliver(from, to, type_tag, Delivery::Call { payload, reply }) {
                    let _ = peer.queue.push(Class::Control, |buf| wire::encode(&Envelope::Fail { id, error }, buf));
                }
            }
            Borrowed::Reply { id, payload } => self.answer(id, Ok(payload.to_vec())),
            Borrowed::Other(Envelope::Fail { id, error }) => self.answer(id, Err(error)),
            Borrowed::Other(Envelope::Undeliverable { to, error, .. }) => {
                self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %self.local.node, peer = %peer.node, to, %error, "cast was undeliverable");
            }
            Borrowed::Other(
                envelope @ (Envelope::Monitor { .. }
                | Envelope::Demonitor { .. }
                | Envelope::Down { .. }
                | Envelope::Link { .. }
                | Envelope::Exit { .. }
                | Envelope::Goodbye { .. }),
            ) => {
                self.send_endpoint(EndpointMsg::Control { node: peer.node.clone(), session, envelope });
            }
            Borrowed::Other(other) => {
                let reason = format!("unexpected {} on the message stream", wire::kind_name(other.kind()));
                self.send_endpoint(EndpointMsg::Lost { node: peer.node.clone(), session, reason });
            }
        }
    }

    fn deliver(&self, from: &Sender, to: &str, tag: u32, delivery: Delivery<'_>) -> Result<(), RemoteError> {
        let handler = {
            let exports = self.exports.read().unwrap_or_else(|e| e.into_inner());
            let export = exports.get(to).ok_or_else(|| RemoteError::UnknownActor { name: to.to_owned() })?;
            if matches!(export.cell.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
                return Err(RemoteError::UnknownActor { name: to.to_owned() });
            }
            let expected = export.handlers.keys().next().copied().unwrap_or_default();
            Arc::clone(export.handlers.get(&tag).ok_or(RemoteError::WrongType { expected, got: tag })?)
        };
        handler(from, delivery)?;
        self.counters.dispatched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn answer(&self, id: u64, outcome: Result<Vec<u8>, RemoteError>) {
        if let Some(pending) = lock(&self.pending).remove(&id) {
            let _ = pending.answer.send(outcome);
        }
    }

    fn fail_calls_to(&self, node: &str) {
        let failed: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.node == node).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        // Dropping the senders wakes the callers with `NoConnection`.
        drop(failed);
    }

    fn fire_monitors_of(&self, node: &str, reason: &ExitReason) {
        let fired: Vec<(u64, OutMonitor)> = {
            let mut monitors = lock(&self.monitors);
            let ids: Vec<u64> = monitors.iter().filter(|(_, m)| m.node() == node).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| monitors.remove(&id).map(|m| (id, m))).collect()
        };
        for (id, monitor) in fired {
            (monitor.notify)(RemoteDown { monitor: RemoteMonitor(id), target: monitor.target, reason: reason.clone() });
        }
    }
}

/// A connection that completed its handshake, waiting to be installed as a session.
pub(crate) struct Handshaken {
    pub(crate) identity: PeerIdentity,
    pub(crate) boot_id: u64,
    pub(crate) origin: Origin,
    pub(crate) conn: Conn,
    pub(crate) tx: Tx,
    pub(crate) reader: FrameReader,
    pub(crate) address: Option<Address>,
}

/// A node's transport. Cheap to clone; every clone is the same transport.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transport({})", self.shared.local)
    }
}

impl Transport {
    /// Starts the transport of `node`: binds the network, starts the endpoint actor (linked
    /// to `supervisor` when given) and begins accepting peers.
    pub async fn start(
        node: &Node,
        identity: PeerIdentity,
        config: TransportConfig,
        network: Network,
        supervisor: Option<ActorCell>,
    ) -> Result<Transport, TransportError> {
        config.detector.validate().map_err(|e| TransportError::Config(format!("failure detector: {e}")))?;
        if identity.node != node.id().as_str() {
            return Err(TransportError::Config(format!(
                "identity names node {} but the node is {}",
                identity.node,
                node.id()
            )));
        }
        let boot_id = boot_id(node);
        let shared = Arc::new(Shared {
            node: node.clone(),
            local: identity,
            boot_id,
            config,
            net: OnceLock::new(),
            peers: RwLock::new(BTreeMap::new()),
            exports: RwLock::new(BTreeMap::new()),
            bulk: RwLock::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            monitors: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            endpoint: OnceLock::new(),
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            // Seeded from the boot id, not drawn from the node's RNG: a transport without
            // faults must leave every seeded simulation's draws exactly as they were.
            faults: LinkFaults::new(Rng::seeded(boot_id.rotate_left(17) ^ 0x6c69_6e6b)),
        });
        let endpoint = Endpoint { shared: Arc::clone(&shared) };
        let (actor, _) = match supervisor {
            Some(parent) => Actor::spawn_linked(None, endpoint, (), parent).await,
            None => Actor::spawn(None, endpoint, ()).await,
        }
        .map_err(|e| TransportError::Config(e.to_string()))?;
        let _ = shared.endpoint.set(actor.clone());
        let started = match network {
            Network::Quic(setup) => quic::start(&shared, *setup).map(NetHandle::Quic),
            Network::Sim(net) => sim::start(&shared, &net).map(NetHandle::Sim),
        };
        let handle = match started {
            Ok(handle) => handle,
            Err(err) => {
                actor.stop(None);
                return Err(err);
            }
        };
        let _ = shared.net.set(handle);
        Ok(Transport { shared })
    }

    pub fn node(&self) -> &str {
        &self.shared.local.node
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.shared.local
    }

    /// This incarnation's boot id: peers use it to tell a restarted node from a stale session.
    pub fn boot_id(&self) -> u64 {
        self.shared.boot_id
    }

    /// The UDP address the QUIC endpoint listens on (`None` on SimNet).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self.shared.net()? {
            NetHandle::Quic(net) => net.endpoint.local_addr().ok(),
            NetHandle::Sim(_) => None,
        }
    }

    /// The endpoint actor, for supervision.
    pub fn actor(&self) -> Option<ActorCell> {
        self.shared.endpoint().map(|a| a.get_cell())
    }

    /// Connects to `node` at `address` and keeps the session up: when it is lost, the
    /// transport redials with jittered exponential backoff until [`Transport::forget`].
    pub fn connect(&self, node: &str, address: Address) {
        let peer = self.shared.peer_or_insert(node);
        {
            let mut state = lock(&peer.state);
            state.address = Some(address);
            state.persistent = true;
        }
        self.shared.send_endpoint(EndpointMsg::Dial { node: node.to_owned() });
    }

    /// Stops redialing `node`; an open session stays until it is lost.
    pub fn forget(&self, node: &str) {
        if let Some(peer) = self.shared.peer(node) {
            lock(&peer.state).persistent = false;
        }
    }

    /// Whether a session with `node` is up.
    pub fn is_connected(&self, node: &str) -> bool {
        self.shared.peer(node).is_some_and(|p| p.session().is_some())
    }

    /// The nodes with a session up.
    pub fn connected(&self) -> Vec<String> {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.values().filter(|p| p.session().is_some()).map(|p| p.node.clone()).collect()
    }

    pub fn peer_stats(&self, node: &str) -> Option<PeerStats> {
        let peer = self.shared.peer(node)?;
        let state = lock(&peer.state);
        let session = state.session.as_ref();
        let rtt = session.map(|s| s.rtt_nanos.load(Ordering::Relaxed)).filter(|n| *n > 0).map(Duration::from_nanos);
        Some(PeerStats {
            node: peer.node.clone(),
            connected: session.is_some(),
            boot_id: session.map(|s| s.boot_id),
            sessions: state.sessions,
            queue: peer.queue.depth(),
            frames_received: peer.received.load(Ordering::Relaxed),
            rtt,
            address: session.and_then(|s| session_address(s)),
        })
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            refused: c.refused.load(Ordering::Relaxed),
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
            undeliverable: c.undeliverable.load(Ordering::Relaxed),
            dispatched: c.dispatched.load(Ordering::Relaxed),
            links_out: c.links_out.load(Ordering::Relaxed),
            links_in: c.links_in.load(Ordering::Relaxed),
            watched: c.watched.load(Ordering::Relaxed),
            fault_dropped: self.shared.faults.dropped(),
        }
    }

    /// Lets peers cast messages of type `T` to `actor` under `name`; `wrap` turns each into
    /// the actor's own message type. A name may accept several message types.
    pub fn export<T, M>(&self, name: &str, actor: &ActorRef<M>, wrap: fn(T) -> M)
    where
        T: RemoteMessage,
        M: ractor::Message,
    {
        let target = actor.clone();
        let handler = cast_handler(move |_, message: T| target.send_message(wrap(message)).is_ok());
        self.add_handler(name, actor.get_cell(), T::TAG, handler);
    }

    /// Like [`Transport::export`], and `wrap` also gets the authenticated [`Sender`]: for
    /// protocols that must not trust a sender's name written in the message itself.
    pub fn export_from<T, M>(&self, name: &str, actor: &ActorRef<M>, wrap: fn(Sender, T) -> M)
    where
        T: RemoteMessage,
        M: ractor::Message,
    {
        let target = actor.clone();
        let handler = cast_handler(move |from, message: T| target.send_message(wrap(from.clone(), message)).is_ok());
        self.add_handler(name, actor.get_cell(), T::TAG, handler);
    }

    /// Lets peers call `actor` under `name` with requests of type `Q`; `wrap` builds the
    /// actor's message from the request and the port its answer goes to.
    pub fn export_call<Q, M>(&self, name: &str, actor: &ActorRef<M>, wrap: fn(Q, ReplyPort<Q::Reply>) -> M)
    where
        Q: RemoteCall,
        M: ractor::Message,
    {
        let target = actor.clone();
        let handler = call_handler(move |_, request: Q, port| target.send_message(wrap(request, port)).is_ok());
        self.add_handler(name, actor.get_cell(), Q::TAG, handler);
    }

    /// Like [`Transport::export_call`], and `wrap` also gets the authenticated [`Sender`].
    pub fn export_call_from<Q, M>(&self, name: &str, actor: &ActorRef<M>, wrap: fn(Sender, Q, ReplyPort<Q::Reply>) -> M)
    where
        Q: RemoteCall,
        M: ractor::Message,
    {
        let target = actor.clone();
        let handler =
            call_handler(move |from, request: Q, port| target.send_message(wrap(from.clone(), request, port)).is_ok());
        self.add_handler(name, actor.get_cell(), Q::TAG, handler);
    }

    fn add_handler(&self, name: &str, cell: ActorCell, tag: u32, handler: Handler) {
        let mut exports = self.shared.exports.write().unwrap_or_else(|e| e.into_inner());
        let export =
            exports.entry(name.to_owned()).or_insert_with(|| Export { cell: cell.clone(), handlers: BTreeMap::new() });
        if export.cell.get_id() != cell.get_id() {
            // A restarted actor takes its name back with a clean set of handlers.
            *export = Export { cell, handlers: BTreeMap::new() };
        }
        export.handlers.insert(tag, handler);
    }

    /// Withdraws `name`: later messages to it are answered `UnknownActor`.
    pub fn unexport(&self, name: &str) {
        self.shared.exports.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// A typed reference to actor `name` on `node`.
    pub fn remote<T: RemoteMessage>(&self, node: &str, name: &str) -> RemoteRef<T> {
        RemoteRef::new(self.clone(), node, name)
    }

    fn known_peer(&self, node: &str) -> Result<Arc<Peer>, SendError> {
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        let peer = self.shared.peer(node).ok_or_else(|| SendError::UnknownPeer(node.to_owned()))?;
        let reachable = {
            let state = lock(&peer.state);
            state.session.is_some() || state.address.is_some()
        };
        if reachable { Ok(peer) } else { Err(SendError::UnknownPeer(node.to_owned())) }
    }

    /// Casts `message` to actor `name` on `node`.
    pub fn cast<T: RemoteMessage>(&self, node: &str, name: &str, message: &T) -> Result<(), SendError> {
        let peer = self.known_peer(node)?;
        with_encoded(message, |payload| {
            peer.queue.push(Class::Bounded, |buf| wire::encode_cast(name, T::TAG, payload, buf)).map_err(push_error)
        })
    }

    /// Calls actor `name` on `node` and waits at most `timeout` for the answer.
    pub async fn call<Q: RemoteCall>(
        &self,
        node: &str,
        name: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<Q::Reply, CallError> {
        let peer = self.known_peer(node)?;
        let id = self.shared.next_id();
        let (answer, answered) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if pending.len() >= self.shared.config.max_pending_calls {
                return Err(CallError::Overloaded(pending.len()));
            }
            pending.insert(id, Pending { node: node.to_owned(), answer });
        }
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let queued = with_encoded(request, |payload| {
            let encode = |buf: &mut Vec<u8>| wire::encode_call(id, name, Q::TAG, timeout_ms, payload, buf);
            peer.queue.push(Class::Bounded, encode).map_err(push_error)
        });
        if let Err(err) = queued {
            lock(&self.shared.pending).remove(&id);
            return Err(err.into());
        }
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(Ok(bytes))) => postcard::from_bytes(&bytes).map_err(|e| CallError::Decode(e.to_string())),
            Ok(Ok(Err(remote))) => Err(CallError::Remote(remote)),
            Ok(Err(_)) => Err(CallError::NoConnection),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Monitors actor `name` on `node`. `notify` runs once, when the actor exits (with its
    /// reason), when it does not exist (`NoProc`), or when the session is lost
    /// (`NoConnection`, which does not prove the actor dead). It must not block.
    pub fn monitor(
        &self,
        node: &str,
        name: &str,
        notify: impl Fn(RemoteDown) + Send + Sync + 'static,
    ) -> RemoteMonitor {
        let target = RemoteTarget::Actor { node: node.to_owned(), name: name.to_owned() };
        let (id, registered) = self.register_monitor(target.clone(), Arc::new(notify));
        if registered && let Some(peer) = self.shared.peer(node) {
            let target = name.to_owned();
            let _ = peer.queue.push(Class::Control, |buf| wire::encode(&Envelope::Monitor { id, target }, buf));
        }
        RemoteMonitor(id)
    }

    /// Monitors the session with `node`: `notify` runs once, with `NoConnection`, when the
    /// session is lost (or at once if there is none).
    pub fn monitor_node(&self, node: &str, notify: impl Fn(RemoteDown) + Send + Sync + 'static) -> RemoteMonitor {
        let (id, _) = self.register_monitor(RemoteTarget::Node(node.to_owned()), Arc::new(notify));
        RemoteMonitor(id)
    }

    /// Registers a monitor if a session is up; otherwise fires it at once with
    /// `NoConnection`. Returns the id and whether it was registered.
    fn register_monitor(&self, target: RemoteTarget, notify: Notifier) -> (u64, bool) {
        let id = self.shared.next_id();
        let monitor = OutMonitor { target, notify };
        let node = monitor.node().to_owned();
        let fire_now = {
            let mut monitors = lock(&self.shared.monitors);
            // Checked under the monitors lock: a session lost after this point fires it.
            if !self.is_connected(&node) || monitors.len() >= self.shared.config.max_monitors {
                Some(monitor)
            } else {
                monitors.insert(id, monitor);
                None
            }
        };
        match fire_now {
            Some(monitor) => {
                let down =
                    RemoteDown { monitor: RemoteMonitor(id), target: monitor.target, reason: ExitReason::NoConnection };
                (monitor.notify)(down);
                (id, false)
            }
            None => (id, true),
        }
    }

    /// Removes a monitor; it does not fire afterwards.
    pub fn demonitor(&self, monitor: RemoteMonitor) {
        let removed = lock(&self.shared.monitors).remove(&monitor.0);
        if let Some(OutMonitor { target: RemoteTarget::Actor { node, .. }, .. }) = removed
            && let Some(peer) = self.shared.peer(&node)
        {
            let _ = peer.queue.push(Class::Control, |buf| wire::encode(&Envelope::Demonitor { id: monitor.0 }, buf));
        }
    }

    /// Links `local` to actor `name` on `node`, as Erlang's `link/1` across nodes: when either
    /// exits, the other receives an exit signal with its reason (delivered by the node's
    /// process table, so `local` must be enrolled with its node, and trapping exits turns the
    /// signal into a message); when the session is lost — or there is none — both sides
    /// receive `noconnection`, though the other actor may well be alive. The signal's sender
    /// is this transport's endpoint actor.
    pub fn link(&self, local: &ActorCell, node: &str, name: &str) -> RemoteLink {
        let id = self.shared.next_id();
        let request = LinkRequest { id, local: local.clone(), node: node.to_owned(), name: name.to_owned() };
        self.shared.send_endpoint(EndpointMsg::Link(request));
        RemoteLink(id)
    }

    /// Removes a link; neither side is signalled through it afterwards.
    pub fn unlink(&self, link: RemoteLink) {
        self.shared.send_endpoint(EndpointMsg::Unlink { id: link.0 });
    }

    /// Receives bulk transfers sent to `channel`; at most `depth` wait unread.
    pub fn bulk_channel(&self, channel: &str, depth: usize) -> mpsc::Receiver<BulkTransfer> {
        let (tx, rx) = mpsc::channel(depth.max(1));
        self.shared.bulk.write().unwrap_or_else(|e| e.into_inner()).insert(channel.to_owned(), BulkSink::Queue(tx));
        rx
    }

    /// Delivers each whole bulk transfer sent to `channel` to `actor`, wrapped by `wrap`
    /// (a transfer cut short is never delivered). Replaces any earlier receiver of `channel`.
    pub fn bulk_to_actor<M: ractor::Message>(&self, channel: &str, actor: &ActorRef<M>, wrap: fn(BulkTransfer) -> M) {
        let actor = actor.clone();
        let sink = BulkSink::Actor(Arc::new(move |transfer| {
            let _ = actor.send_message(wrap(transfer));
        }));
        self.shared.bulk.write().unwrap_or_else(|e| e.into_inner()).insert(channel.to_owned(), sink);
    }

    /// Sends `data` to `channel` on `node` over a stream of its own, so that it never delays
    /// the pair's messages. Completes when the data has been handed to the network.
    pub async fn send_bulk(&self, node: &str, channel: &str, data: Bytes) -> Result<(), BulkError> {
        let len = data.len() as u64;
        if len > self.shared.config.max_bulk_bytes {
            return Err(BulkError::TooLarge { len, max: self.shared.config.max_bulk_bytes });
        }
        let session =
            self.shared.peer(node).and_then(|p| p.session()).ok_or_else(|| BulkError::NotConnected(node.to_owned()))?;
        let mut tx = session.conn.open_bulk().await.map_err(|e| BulkError::Stream(e.to_string()))?;
        let mut header = Vec::new();
        wire::encode(&Envelope::BulkOpen { channel: channel.to_owned(), len }, &mut header)
            .map_err(|e| BulkError::Stream(e.to_string()))?;
        tx.write_all(&header).await.map_err(|e| BulkError::Stream(e.to_string()))?;
        tx.write_all(&data).await.map_err(|e| BulkError::Stream(e.to_string()))?;
        tx.finish();
        Ok(())
    }

    /// Starts sending `data` to `channel` on `node` in the background (the task belongs to
    /// the session and ends with it), for callers that must not wait, such as an actor
    /// streaming a snapshot. Fails at once only if there is no session; a transfer that fails
    /// later is logged and never delivered, so the receiver's protocol must retry.
    pub fn start_bulk(&self, node: &str, channel: &str, data: Bytes) -> Result<(), BulkError> {
        let session =
            self.shared.peer(node).and_then(|p| p.session()).ok_or_else(|| BulkError::NotConnected(node.to_owned()))?;
        let (transport, node, channel) = (self.clone(), node.to_owned(), channel.to_owned());
        let task = tokio::spawn(async move {
            if let Err(error) = transport.send_bulk(&node, &channel, data).await {
                tracing::warn!(peer = %node, channel, %error, "background bulk transfer failed");
            }
        });
        keep_task(&session.tasks, task.abort_handle());
        Ok(())
    }

    /// Injects a link fault on this node's links (see `link_faults`: the node judges the
    /// frames it sends and receives; links between other nodes are untouched). `Fault::Heal`
    /// heals every link fault; node faults are refused with `FaultError::NotALinkFault`.
    pub fn inject_fault(&self, fault: Fault) -> Result<FaultId, FaultError> {
        let id = self.shared.faults.inject(fault.clone())?;
        tracing::info!(node = %self.shared.local.node, %id, ?fault, "link fault injected");
        Ok(id)
    }

    /// Heals one link fault: held frames move on. False if it was not active.
    pub fn heal_fault(&self, id: FaultId) -> bool {
        let healed = self.shared.faults.heal(id);
        if healed {
            tracing::info!(node = %self.shared.local.node, %id, "link fault healed");
        }
        healed
    }

    /// Heals every link fault of this node.
    pub fn heal_all_faults(&self) {
        self.shared.faults.heal_all();
        tracing::info!(node = %self.shared.local.node, "every link fault healed");
    }

    /// The active link faults, in injection order.
    pub fn active_faults(&self) -> Vec<(FaultId, Fault)> {
        self.shared.faults.active()
    }

    /// Closes every session gracefully: queued frames are written (for at most the drain
    /// timeout), peers are told goodbye, and the endpoint stops. The same happens when the
    /// endpoint actor is stopped by its supervisor.
    pub async fn shutdown(&self) {
        match self.shared.endpoint() {
            Some(endpoint) => {
                let bound = self.shared.config.drain_timeout * 2;
                let _ = endpoint.stop_and_wait(Some("shutdown".into()), Some(bound)).await;
            }
            None => close_gracefully(&self.shared).await,
        }
    }

    /// Ends the transport abruptly, as a crash would: no goodbye, no close, nothing drained.
    /// Peers find out through their failure detectors (on SimNet, the links go silent).
    pub fn abort(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Silence the simulated links first, so that nothing torn down below reads as a close.
        if let Some(NetHandle::Sim(endpoint)) = self.shared.net() {
            endpoint.crash();
        }
        if let Some(endpoint) = self.shared.endpoint() {
            endpoint.kill();
        }
        let peers: Vec<Arc<Peer>> =
            self.shared.peers.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for peer in peers {
            if let Some(session) = lock(&peer.state).session.take() {
                for task in lock(&session.tasks).drain(..) {
                    task.abort();
                }
            }
        }
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
        if let Some(NetHandle::Quic(net)) = self.shared.net() {
            // Dropping the socket without a close: peers hear nothing, as after a crash.
            net.endpoint.set_server_config(None);
        }
    }
}

/// Says goodbye on every session, waits (bounded) for the queues to drain, then closes the
/// sessions and the network.
async fn close_gracefully(shared: &Shared) {
    if shared.closing.swap(true, Ordering::SeqCst) {
        return;
    }
    let sessions: Vec<(Arc<Peer>, Arc<Session>)> = {
        let peers = shared.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.values().filter_map(|p| p.session().map(|s| (Arc::clone(p), s))).collect()
    };
    let drained = futures::future::join_all(sessions.iter().map(|(peer, session)| {
        // Registered before the goodbye is queued, so the writer's wake-up cannot be missed.
        let mut drained = Box::pin(session.drained.notified());
        drained.as_mut().enable();
        let goodbye = Envelope::Goodbye { reason: "shutdown".into() };
        let _ = peer.queue.push(Class::Control, |buf| wire::encode(&goodbye, buf));
        drained
    }));
    let _ = tokio::time::timeout(shared.config.drain_timeout, drained).await;
    for (_, session) in &sessions {
        session.end(close_code::GOODBYE, "shutdown");
    }
    for task in lock(&shared.tasks).drain(..) {
        task.abort();
    }
    match shared.net() {
        Some(NetHandle::Quic(net)) => {
            net.endpoint.close(quinn::VarInt::from_u32(close_code::GOODBYE), b"shutdown");
            let _ = tokio::time::timeout(shared.config.drain_timeout, net.endpoint.wait_idle()).await;
        }
        Some(NetHandle::Sim(endpoint)) => endpoint.close(),
        None => {}
    }
}

thread_local! {
    /// Where outgoing messages are serialised before they are framed, reused so that a cast
    /// allocates nothing in the common case.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serialises `message` into this thread's scratch buffer and hands the bytes to `send`.
fn with_encoded<T: serde::Serialize>(
    message: &T,
    send: impl FnOnce(&[u8]) -> Result<(), SendError>,
) -> Result<(), SendError> {
    SCRATCH.with(|scratch| {
        // A re-entrant use (a `Serialize` impl that casts) gets a fresh buffer instead.
        let mut owned;
        let mut borrowed = scratch.try_borrow_mut();
        let buf: &mut Vec<u8> = match borrowed.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => {
                owned = Vec::new();
                &mut owned
            }
        };
        buf.clear();
        let encoded = postcard::to_io(message, &mut *buf).map(|_| ()).map_err(|e| SendError::Encode(e.to_string()));
        encoded.and_then(|()| send(buf))
    })
}

fn push_error<E: std::fmt::Display>(err: PushError<E>) -> SendError {
    match err {
        PushError::Full(full) => SendError::QueueFull(full),
        PushError::Encode(err) => SendError::Encode(err.to_string()),
    }
}

/// A boot id unique to this incarnation: the wall clock in nanoseconds mixed with the node's
/// seeded RNG, so that two incarnations started within the same clock tick still differ.
fn boot_id(node: &Node) -> u64 {
    let wall = node.clock().wall_millis().wrapping_mul(1_000_003);
    wall ^ node.random_u64() | 1
}

/// Errors starting a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid transport configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("node {0} is already on this simulated network")]
    DuplicateNode(String),
}

/// Messages of the endpoint actor.
pub(crate) enum EndpointMsg {
    Install(Box<Handshaken>),
    Link(LinkRequest),
    Unlink { id: u64 },
    Dial { node: String },
    DialFailed { node: String, error: String },
    Lost { node: String, session: u64, reason: String },
    Control { node: String, session: u64, envelope: Envelope },
}

pub(crate) struct LinkRequest {
    id: u64,
    local: ActorCell,
    node: String,
    name: String,
}

/// A local actor linked to a remote one.
struct OutLink {
    node: String,
    local: ActorCell,
}

/// The endpoint actor: the one place where sessions begin and end.
struct Endpoint {
    shared: Arc<Shared>,
}

/// Monitors peers hold on this node's actors.
#[derive(Default)]
struct EndpointState {
    rng: Option<Rng>,
    /// Watched local actor → the peers' monitors on it: (node, monitor id).
    watched: BTreeMap<ActorId, Vec<(String, u64)>>,
    /// (node, monitor id) → the watched actor.
    by_monitor: BTreeMap<(String, u64), ActorId>,
    /// Links from local actors to remote ones, by link id.
    out_links: BTreeMap<u64, OutLink>,
    /// Local actor → its links to remote actors.
    links_by_actor: BTreeMap<ActorId, Vec<u64>>,
    /// Local actors that peers linked to: (node, link id) → the actor.
    in_links: BTreeMap<(String, u64), ActorCell>,
}

impl Actor for Endpoint {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok(EndpointState { rng: Some(self.shared.node.fork_rng()), ..EndpointState::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EndpointMsg::Install(link) => self.install(&myself, state, *link),
            EndpointMsg::Link(request) => self.link_out(&myself, state, request),
            EndpointMsg::Unlink { id } => {
                if let Some(link) = self.forget_out_link(state, id) {
                    self.push_control(&link.node, Envelope::Demonitor { id });
                }
            }
            EndpointMsg::Dial { node } => self.dial(&node),
            EndpointMsg::DialFailed { node, error } => {
                tracing::debug!(node = %self.shared.local.node, peer = node, error, "dial failed");
                if let Some(peer) = self.shared.peer(&node) {
                    lock(&peer.state).dialing = false;
                    self.schedule_redial(&myself, state, &peer);
                }
            }
            EndpointMsg::Lost { node, session, reason } => self.lost(&myself, state, &node, session, &reason),
            EndpointMsg::Control { node, session, envelope } => {
                self.control(&myself, state, &node, session, envelope);
            }
        }
        self.publish_gauges(state);
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<Self::Msg>, _: &mut Self::State) -> Result<(), ActorProcessingErr> {
        close_gracefully(&self.shared).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((cell, reason)) = exit_reason(&event) {
            let id = cell.get_id();
            for (node, monitor) in state.watched.remove(&id).unwrap_or_default() {
                state.by_monitor.remove(&(node.clone(), monitor));
                state.in_links.remove(&(node.clone(), monitor));
                self.send_down(&node, monitor, &reason);
            }
            for link in state.links_by_actor.remove(&id).unwrap_or_default() {
                if let Some(out) = state.out_links.remove(&link) {
                    self.push_control(&out.node, Envelope::Exit { id: link, reason: reason.to_stop_reason() });
                }
            }
        }
        self.publish_gauges(state);
        Ok(())
    }
}

impl Endpoint {
    fn me(&self) -> &str {
        &self.shared.local.node
    }

    fn install(&self, myself: &ActorRef<EndpointMsg>, state: &mut EndpointState, link: Handshaken) {
        let node = link.identity.node.clone();
        if link.origin == Origin::Accepted && !self.shared.faults.reachable(&node, self.me()) {
            tracing::debug!(node = %self.me(), peer = node, "connection refused: a chaos partition cuts the link");
            link.conn.close(close_code::REFUSED, "partitioned");
            return;
        }
        let peer = self.shared.peer_or_insert(&node);
        let view = peer.view();
        let verdict = match link.origin {
            Origin::Accepted => session::judge_incoming(self.me(), &node, view, link.boot_id),
            Origin::Dialed => Verdict::Accept { replaces: session::replaced_by_dial(view, link.boot_id) },
        };
        let replaces = match verdict {
            Verdict::Refuse(reason) => {
                tracing::debug!(node = %self.me(), peer = node, reason = reason.as_str(), "duplicate connection refused");
                link.conn.close(close_code::REFUSED, reason.as_str());
                return;
            }
            Verdict::Accept { replaces } => replaces,
        };
        // Taken in its own statement, so the state lock is released before the old session's
        // effects run.
        let old = lock(&peer.state).session.take();
        if let Some(old) = old {
            let why = match replaces {
                Replaces::StaleIncarnation => "the peer restarted",
                _ => "replaced by a newer connection",
            };
            old.end(close_code::REPLACED, why);
            self.session_ended(myself, state, &peer, why);
        }
        let dialed_address = link.address.clone();
        let session = self.open_session(&peer, link);
        let mut peer_state = lock(&peer.state);
        if session.origin == Origin::Dialed {
            peer_state.dialing = false;
        }
        if let Some(address) = dialed_address.or_else(|| session_address(&session)) {
            peer_state.address.get_or_insert(address);
        }
        peer_state.attempts = 0;
        peer_state.sessions += 1;
        peer_state.session = Some(session);
        tracing::debug!(node = %self.me(), peer = node, "session up");
    }

    fn open_session(&self, peer: &Arc<Peer>, link: Handshaken) -> Arc<Session> {
        let now = self.shared.node.now();
        let session = Arc::new(Session {
            id: self.shared.next_id(),
            sender: Sender { node: link.identity.node.clone(), role: link.identity.role },
            boot_id: link.boot_id,
            origin: link.origin,
            conn: link.conn,
            detector: Mutex::new(FailureDetector::new(self.shared.config.detector.clone(), now)),
            tasks: Mutex::new(Vec::new()),
            rtt_nanos: AtomicU64::new(0),
            drained: Notify::new(),
        });
        let welcome = (link.origin == Origin::Accepted).then(|| Envelope::Welcome {
            cluster: self.shared.local.cluster.as_str().to_owned(),
            node: self.shared.local.node.clone(),
            role: self.shared.local.role,
            boot_id: self.shared.boot_id,
        });
        let tasks = vec![
            tokio::spawn(write_loop(
                Arc::clone(&self.shared),
                Arc::clone(peer),
                Arc::clone(&session),
                link.tx,
                welcome,
            ))
            .abort_handle(),
            tokio::spawn(read_loop(Arc::clone(&self.shared), Arc::clone(peer), Arc::clone(&session), link.reader))
                .abort_handle(),
            tokio::spawn(datagram_loop(Arc::clone(&self.shared), Arc::clone(peer), Arc::clone(&session)))
                .abort_handle(),
            tokio::spawn(heartbeat_loop(Arc::clone(&self.shared), Arc::clone(peer), Arc::clone(&session)))
                .abort_handle(),
            tokio::spawn(bulk_loop(Arc::clone(&self.shared), Arc::clone(peer), Arc::clone(&session))).abort_handle(),
        ];
        *lock(&session.tasks) = tasks;
        session
    }

    /// Everything tied to a session that ended: monitors fire, calls fail, peers' monitors
    /// on local actors are dropped.
    fn session_ended(&self, myself: &ActorRef<EndpointMsg>, state: &mut EndpointState, peer: &Peer, why: &str) {
        tracing::info!(node = %self.me(), peer = %peer.node, why, "session ended");
        self.shared.fire_monitors_of(&peer.node, &ExitReason::NoConnection);
        self.shared.fail_calls_to(&peer.node);
        let broken: Vec<u64> = state.out_links.iter().filter(|(_, l)| l.node == peer.node).map(|(id, _)| *id).collect();
        for id in broken {
            if let Some(link) = self.forget_out_link(state, id) {
                self.exit_local(myself, &link.local, ExitReason::NoConnection);
            }
        }
        let linked: Vec<(String, u64)> = state.in_links.keys().filter(|(n, _)| *n == peer.node).cloned().collect();
        for key in linked {
            if let Some(target) = state.in_links.remove(&key) {
                self.exit_local(myself, &target, ExitReason::NoConnection);
            }
        }
        let held: Vec<(String, u64)> = state.by_monitor.keys().filter(|(n, _)| *n == peer.node).cloned().collect();
        for key in held {
            if let Some(actor) = state.by_monitor.remove(&key)
                && let Some(watchers) = state.watched.get_mut(&actor)
            {
                watchers.retain(|w| *w != key);
            }
        }
    }

    fn lost(&self, myself: &ActorRef<EndpointMsg>, state: &mut EndpointState, node: &str, session: u64, why: &str) {
        let Some(peer) = self.shared.peer(node) else { return };
        let ended = {
            let mut peer_state = lock(&peer.state);
            match &peer_state.session {
                Some(current) if current.id == session => peer_state.session.take(),
                _ => None,
            }
        };
        let Some(ended) = ended else { return };
        ended.end(close_code::LOST, why);
        self.session_ended(myself, state, &peer, why);
        self.schedule_redial(myself, state, &peer);
    }

    fn schedule_redial(&self, myself: &ActorRef<EndpointMsg>, state: &mut EndpointState, peer: &Peer) {
        if self.shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let delay = {
            let mut peer_state = lock(&peer.state);
            if !peer_state.persistent || peer_state.session.is_some() || peer_state.dialing {
                return;
            }
            let random = state.rng.as_mut().map(Rng::next_u64).unwrap_or_default();
            let delay = self.shared.config.reconnect.delay(peer_state.attempts, random);
            peer_state.attempts = peer_state.attempts.saturating_add(1);
            delay
        };
        let node = peer.node.clone();
        myself.send_after(delay, move || EndpointMsg::Dial { node });
    }

    fn dial(&self, node: &str) {
        if self.shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let Some(peer) = self.shared.peer(node) else { return };
        let address = {
            let mut peer_state = lock(&peer.state);
            if peer_state.session.is_some() || peer_state.dialing {
                return;
            }
            let Some(address) = peer_state.address.clone() else { return };
            peer_state.dialing = true;
            address
        };
        let shared = Arc::clone(&self.shared);
        let node = node.to_owned();
        let task = tokio::spawn(async move {
            let outcome = match shared.net() {
                _ if !shared.faults.reachable(&shared.local.node, &node) => {
                    Err("a chaos partition cuts the link".to_owned())
                }
                Some(NetHandle::Quic(endpoint)) => quic::dial(&shared, endpoint, &node, &address).await,
                Some(NetHandle::Sim(endpoint)) => sim::dial(&shared, endpoint, &node).await,
                None => Err("the network is not started".to_owned()),
            };
            match outcome {
                Ok(link) => shared.handshaken(link),
                Err(error) => shared.send_endpoint(EndpointMsg::DialFailed { node, error }),
            }
        });
        self.shared.own_task(task.abort_handle());
    }

    fn control(
        &self,
        myself: &ActorRef<EndpointMsg>,
        state: &mut EndpointState,
        node: &str,
        session: u64,
        envelope: Envelope,
    ) {
        match envelope {
            Envelope::Monitor { id, target } => {
                self.watch(myself, state, node, id, &target);
            }
            Envelope::Link { id, target } => {
                if let Some(cell) = self.watch(myself, state, node, id, &target) {
                    state.in_links.insert((node.to_owned(), id), cell);
                }
            }
            Envelope::Demonitor { id } => {
                state.in_links.remove(&(node.to_owned(), id));
                self.unwatch(state, node, id);
            }
            Envelope::Exit { id, reason } => {
                if let Some(target) = state.in_links.remove(&(node.to_owned(), id)) {
                    self.unwatch(state, node, id);
                    self.exit_local(myself, &target, ExitReason::from_stop_reason(Some(&reason)));
                }
            }
            Envelope::Down { id, reason } if state.out_links.contains_key(&id) => {
                if let Some(link) = self.forget_out_link(state, id) {
                    self.exit_local(myself, &link.local, ExitReason::from_stop_reason(Some(&reason)));
                }
            }
            Envelope::Down { id, reason } => {
                let monitor = lock(&self.shared.monitors).remove(&id);
                if let Some(monitor) = monitor {
                    let reason = ExitReason::from_stop_reason(Some(&reason));
                    (monitor.notify)(RemoteDown { monitor: RemoteMonitor(id), target: monitor.target, reason });
                }
            }
            Envelope::Goodbye { reason } => {
                self.lost(myself, state, node, session, &format!("the peer said goodbye ({reason})"));
            }
            _ => {}
        }
    }

    fn publish_gauges(&self, state: &EndpointState) {
        let c = &self.shared.counters;
        c.links_out.store(state.out_links.len() as u64, Ordering::Relaxed);
        c.links_in.store(state.in_links.len() as u64, Ordering::Relaxed);
        c.watched.store(state.by_monitor.len() as u64, Ordering::Relaxed);
    }

    /// A local actor links to a remote one.
    fn link_out(&self, myself: &ActorRef<EndpointMsg>, state: &mut EndpointState, request: LinkRequest) {
        let LinkRequest { id, local, node, name } = request;
        let connected = self.shared.peer(&node).is_some_and(|p| p.session().is_some());
        if !connected {
            return self.exit_local(myself, &local, ExitReason::NoConnection);
        }
        myself.get_cell().monitor(local.clone());
        state.links_by_actor.entry(local.get_id()).or_default().push(id);
        state.out_links.insert(id, OutLink { node: node.clone(), local });
        self.push_control(&node, Envelope::Link { id, target: name });
    }

    fn forget_out_link(&self, state: &mut EndpointState, id: u64) -> Option<OutLink> {
        let link = state.out_links.remove(&id)?;
        if let Some(ids) = state.links_by_actor.get_mut(&link.local.get_id()) {
            ids.retain(|l| *l != id);
        }
        Some(link)
    }

    /// Delivers an exit signal that came through a link. As over a local link, `kill` arrives
    /// as the trappable `killed`.
    fn exit_local(&self, myself: &ActorRef<EndpointMsg>, target: &ActorCell, reason: ExitReason) {
        let reason = if reason == ExitReason::Kill { ExitReason::Killed } else { reason };
        self.shared.node.exit(&myself.get_cell(), target, reason);
    }

    fn push_control(&self, node: &str, envelope: Envelope) {
        if let Some(peer) = self.shared.peer(node) {
            let _ = peer.queue.push(Class::Control, |buf| wire::encode(&envelope, buf));
        }
    }

    fn unwatch(&self, state: &mut EndpointState, node: &str, id: u64) {
        if let Some(actor) = state.by_monitor.remove(&(node.to_owned(), id))
            && let Some(watchers) = state.watched.get_mut(&actor)
        {
            watchers.retain(|(n, m)| !(n == node && *m == id));
        }
    }

    /// A peer monitors local actor `target`; returns the actor if it is alive.
    fn watch(
        &self,
        myself: &ActorRef<EndpointMsg>,
        state: &mut EndpointState,
        node: &str,
        id: u64,
        target: &str,
    ) -> Option<ActorCell> {
        let cell = {
            let exports = self.shared.exports.read().unwrap_or_else(|e| e.into_inner());
            exports.get(target).map(|e| e.cell.clone())
        }
        .or_else(|| self.shared.node.whereis(target));
        let Some(cell) = cell.filter(|c| !matches!(c.get_status(), ActorStatus::Stopping | ActorStatus::Stopped))
        else {
            self.send_down(node, id, &ExitReason::NoProc);
            return None;
        };
        myself.get_cell().monitor(cell.clone());
        state.watched.entry(cell.get_id()).or_default().push((node.to_owned(), id));
        state.by_monitor.insert((node.to_owned(), id), cell.get_id());
        // The actor may have stopped before the monitor was in place.
        if matches!(cell.get_status(), ActorStatus::Stopped) {
            self.unwatch(state, node, id);
            self.send_down(node, id, &ExitReason::NoProc);
            return None;
        }
        Some(cell)
    }

    fn send_down(&self, node: &str, id: u64, reason: &ExitReason) {
        self.push_control(node, Envelope::Down { id, reason: reason.to_stop_reason() });
    }
}

fn session_address(session: &Session) -> Option<Address> {
    match &session.conn {
        // An endpoint uses one socket to dial and to listen, so a peer's source address is
        // where it listens.
        Conn::Quic(conn) => Some(Address::Udp(conn.remote_address())),
        Conn::Sim(_) => Some(Address::Sim),
    }
}

/// Writes the peer's queue to the session's ordered stream, one batch per write. While a
/// link fault acts on the link to the peer (or frames it delayed or held still wait), each
/// frame goes through the link's stage first, and the writer also wakes when one is due or
/// a fault is healed.
async fn write_loop(shared: Arc<Shared>, peer: Arc<Peer>, session: Arc<Session>, mut tx: Tx, first: Option<Envelope>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    if let Some(welcome) = first
        && (wire::encode(&welcome, &mut batch).is_err() || tx.write_all(&batch).await.is_err())
    {
        return lost(&shared, &peer, &session, "could not send welcome");
    }
    let faults = &shared.faults;
    let mut stage = LinkStage::new(shared.local.node.clone(), peer.node.clone());
    let mut heals = faults.heals();
    loop {
        let due = stage.next_due();
        // Biased: polled in a fixed order, so a simulation stays deterministic.
        tokio::select! {
            biased;
            taken = peer.queue.take(std::mem::take(&mut batch)) => {
                batch = taken;
                if !stage.is_empty() || faults.affects(&shared.local.node, &peer.node) {
                    faults.offer_frames(&mut stage, &batch);
                    batch.clear();
                }
            }
            () = until_due(faults, due) => {}
            () = next_heal(&mut heals) => faults.release(&mut stage),
        }
        for frame in stage.take_due(faults.now()) {
            batch.extend_from_slice(&frame);
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = tx.write_all(&batch).await {
            return lost(&shared, &peer, &session, &format!("write failed: {err}"));
        }
        batch.clear();
        if shared.closing.load(Ordering::Relaxed) && peer.queue.depth().frames == 0 {
            tx.finish();
            session.drained.notify_waiters();
        }
    }
}

/// Reads frames from the session's ordered stream and dispatches them. While a link fault
/// acts on the link from the peer (or frames it delayed or held still wait), each frame goes
/// through the link's stage before it is dispatched; only dispatched frames count as signs of
/// life, so a partition or a clog of incoming frames lets the failure detector fire.
async fn read_loop(shared: Arc<Shared>, peer: Arc<Peer>, session: Arc<Session>, mut reader: FrameReader) {
    let faults = &shared.faults;
    let mut stage = LinkStage::new(peer.node.clone(), shared.local.node.clone());
    let mut heals = faults.heals();
    loop {
        let staged = !stage.is_empty() || faults.affects(&peer.node, &shared.local.node);
        let outcome = if staged {
            stage_incoming(&shared, &peer, &session, &mut reader, &mut stage)
        } else {
            dispatch_buffered(&shared, &peer, &session, &mut reader)
        };
        let frames = match outcome {
            Ok(frames) => frames,
            Err(err) => return lost(&shared, &peer, &session, &format!("corrupt frame: {err}")),
        };
        if frames > 0 {
            peer.received.fetch_add(frames, Ordering::Relaxed);
            lock(&session.detector).heartbeat(shared.node.now());
        }
        let due = stage.next_due();
        tokio::select! {
            biased;
            filled = reader.fill() => if let Err(err) = filled {
                return lost(&shared, &peer, &session, &err.to_string());
            },
            () = until_due(faults, due) => {}
            () = next_heal(&mut heals) => faults.release(&mut stage),
        }
    }
}

/// Dispatches every whole frame buffered; returns how many.
fn dispatch_buffered(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    session: &Session,
    reader: &mut FrameReader,
) -> Result<u64, wire::WireError> {
    let mut frames = 0u64;
    while let Some(frame) = reader.buffered_borrowed()? {
        frames += 1;
        shared.dispatch(peer, session, frame);
    }
    Ok(frames)
}

/// Routes every whole frame buffered through the incoming stage, then dispatches the frames
/// due; returns how many were dispatched.
fn stage_incoming(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    session: &Session,
    reader: &mut FrameReader,
    stage: &mut LinkStage,
) -> Result<u64, wire::WireError> {
    while let Some(frame) = reader.buffered_raw()? {
        shared.faults.offer(stage, frame);
    }
    let mut frames = 0u64;
    for raw in stage.take_due(shared.faults.now()) {
        // The frame decoded once already (its header); a copy that fails now is a bug, never
        // a reason to drop the session.
        if let Ok(Some((frame, _))) = wire::decode_borrowed(&raw, shared.config.max_frame_body) {
            frames += 1;
            shared.dispatch(peer, session, frame);
        }
    }
    Ok(frames)
}

/// Answers heartbeats and measures round trips.
async fn datagram_loop(shared: Arc<Shared>, peer: Arc<Peer>, session: Arc<Session>) {
    while let Some(datagram) = session.conn.read_datagram().await {
        if !shared.faults.datagram_passes(&peer.node, &shared.local.node) {
            continue;
        }
        match wire::decode_datagram(&datagram, shared.config.max_frame_body) {
            Ok(Envelope::Ping { seq, sent_nanos }) => {
                lock(&session.detector).heartbeat(shared.node.now());
                let mut pong = Vec::with_capacity(32);
                if wire::encode(&Envelope::Pong { seq, sent_nanos }, &mut pong).is_ok()
                    && shared.faults.datagram_passes(&shared.local.node, &peer.node)
                {
                    session.conn.send_datagram(Bytes::from(pong));
                }
            }
            Ok(Envelope::Pong { sent_nanos, .. }) => {
                let now = shared.node.now().since_origin().as_nanos() as u64;
                session.rtt_nanos.store(now.saturating_sub(sent_nanos).max(1), Ordering::Relaxed);
                lock(&session.detector).heartbeat(shared.node.now());
            }
            Ok(other) => {
                tracing::debug!(peer = %peer.node, kind = wire::kind_name(other.kind()), "unexpected datagram ignored");
            }
            Err(err) => tracing::debug!(peer = %peer.node, %err, "corrupt datagram ignored"),
        }
    }
}

/// Sends heartbeats and asks the failure detector about the peer.
async fn heartbeat_loop(shared: Arc<Shared>, peer: Arc<Peer>, session: Arc<Session>) {
    let mut seq = 0u64;
    loop {
        tokio::time::sleep(shared.config.heartbeat_interval).await;
        let now = shared.node.now();
        let (available, phi) = {
            let detector = lock(&session.detector);
            (detector.is_available(now), detector.phi(now))
        };
        if !available {
            return lost(&shared, &peer, &session, &format!("failure detector: no heartbeat (phi {phi:.1})"));
        }
        seq += 1;
        let mut ping = Vec::with_capacity(32);
        let sent_nanos = now.since_origin().as_nanos() as u64;
        if wire::encode(&Envelope::Ping { seq, sent_nanos }, &mut ping).is_ok()
            && shared.faults.datagram_passes(&shared.local.node, &peer.node)
        {
            session.conn.send_datagram(Bytes::from(ping));
        }
    }
}

/// Accepts the peer's bulk streams and hands each transfer to its channel.
async fn bulk_loop(shared: Arc<Shared>, peer: Arc<Peer>, session: Arc<Session>) {
    while let Some(rx) = session.conn.accept_bulk().await {
        let mut reader = FrameReader::new(rx, shared.config.max_frame_body);
        let (channel, len) = match reader.next().await {
            Ok(Envelope::BulkOpen { channel, len }) => (channel, len),
            Ok(other) => {
                tracing::warn!(peer = %peer.node, kind = wire::kind_name(other.kind()), "bulk stream without preamble");
                continue;
            }
            Err(err) => {
                tracing::warn!(peer = %peer.node, %err, "bulk stream failed");
                continue;
            }
        };
        if len > shared.config.max_bulk_bytes {
            tracing::warn!(peer = %peer.node, len, "bulk transfer over the limit refused");
            continue;
        }
        let Some(sink) = shared.bulk.read().unwrap_or_else(|e| e.into_inner()).get(&channel).cloned() else {
            tracing::warn!(peer = %peer.node, channel, "bulk transfer to an unknown channel dropped");
            continue;
        };
        // Read concurrently so one slow transfer does not hold up the next.
        let from = peer.node.clone();
        let from_role = session.sender.role;
        let task = tokio::spawn(async move {
            match reader.read_body(len as usize).await {
                Ok(data) => {
                    let transfer = BulkTransfer { from, from_role, channel, data: Bytes::from(data) };
                    match sink {
                        BulkSink::Queue(queue) => {
                            let _ = queue.send(transfer).await;
                        }
                        BulkSink::Actor(deliver) => deliver(transfer),
                    }
                }
                Err(err) => tracing::warn!(peer = from, %err, "bulk transfer cut short"),
            }
        });
        keep_task(&session.tasks, task.abort_handle());
    }
}

fn lost(shared: &Shared, peer: &Peer, session: &Session, reason: &str) {
    shared.send_endpoint(EndpointMsg::Lost { node: peer.node.clone(), session: session.id, reason: reason.to_owned() });
}

//! SimNet: an in-memory network for whole clusters in one process, on the node's virtual
//! clock, seeded and deterministic, with the project's fault vocabulary.
//!
//! A connection is a set of directed *pipes*. Each frame written to a pipe asks the link
//! model ([`NetModel`]) what happens to it — delivered after some delay, dropped, duplicated,
//! held by a clog — and a carrier task per pipe delivers frames in time order (ties in send
//! order). Faults are deliberately harsher than QUIC on the message stream: a real stream
//! never drops or reorders a frame, but SimNet may, when a fault says so, because protocols
//! above must survive lost messages anyway. Without faults, a pipe is FIFO and lossless.
//!
//! Timing: dials to a node that is partitioned away or dead wait the full handshake timeout
//! (in virtual time), as a dial into silence does. A crashed node's pipes go silent without
//! an end-of-stream, as a crashed process's QUIC connections do; its peers find out through
//! their failure detectors.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use flotilla_supervisors::{Rng, Time};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::core::fault::{Fault, FaultError, FaultId, NetModel, Route};
use crate::core::identity::{PeerIdentity, Refusal};
use crate::core::session::Origin;
use crate::core::wire::{self, Envelope};
use crate::link::{Conn, FrameReader, Rx, Tx};
use crate::mesh::{Address, Handshaken, Shared, TransportError};

/// The simulated network. Cheap to clone; clones are the same network.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<NetInner>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNet").field("nodes", &self.lock().nodes.keys().collect::<Vec<_>>()).finish()
    }
}

struct NetInner {
    origin: Instant,
    state: Mutex<NetState>,
}

struct NetState {
    model: NetModel,
    rng: Rng,
    nodes: BTreeMap<String, SimNode>,
    /// Pipes with frames held by a clog, re-routed on every heal.
    pipes: Vec<Weak<Pipe>>,
    /// Receiving ends of crashed nodes' pipes, kept open so that nobody sees an end of stream.
    silenced: Vec<mpsc::UnboundedSender<Bytes>>,
    trace: Trace,
}

/// A digest of every frame the network has delivered: when, from where, to where, what.
/// Two runs of one simulation with one seed deliver the same frames at the same virtual
/// times in the same order, so equal digests show a run was reproduced, and different ones
/// that something (a hash map's order, an unseeded random draw, the real clock) leaked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Frames delivered so far.
    pub frames: u64,
    /// FNV-1a over the frames in delivery order.
    pub digest: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { frames: 0, digest: FNV_OFFSET }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Trace {
    fn record(&mut self, at: Time, from: &str, to: &str, frame: &[u8]) {
        let nanos = at.since_origin().as_nanos().to_le_bytes();
        let parts: [&[u8]; 6] = [&nanos, from.as_bytes(), &[0], to.as_bytes(), &[0], frame];
        for byte in parts.into_iter().flatten() {
            self.digest = (self.digest ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
        self.frames += 1;
    }
}

struct SimNode {
    identity: PeerIdentity,
    alive: Arc<AtomicBool>,
    incoming: mpsc::UnboundedSender<Incoming>,
}

struct Incoming {
    identity: PeerIdentity,
    conn: SimConn,
    tx: PipeTx,
    rx: PipeRx,
}

impl SimNet {
    /// A healthy network without latency.
    pub fn new(seed: u64) -> Self {
        Self::with_latency(seed, std::time::Duration::ZERO, std::time::Duration::ZERO)
    }

    /// A healthy network where each frame takes `base` plus up to `jitter` (FIFO per pipe).
    pub fn with_latency(seed: u64, base: std::time::Duration, jitter: std::time::Duration) -> Self {
        let state = NetState {
            model: NetModel::new(base, jitter),
            rng: Rng::seeded(seed),
            nodes: BTreeMap::new(),
            pipes: Vec::new(),
            silenced: Vec::new(),
            trace: Trace::default(),
        };
        SimNet { inner: Arc::new(NetInner { origin: Instant::now(), state: Mutex::new(state) }) }
    }

    /// Injects a link fault; `Fault::Heal` heals everything.
    pub fn inject(&self, fault: Fault) -> Result<FaultId, FaultError> {
        let heals = matches!(fault, Fault::Heal);
        let id = self.lock().model.inject(fault)?;
        if heals {
            self.release_held();
        }
        Ok(id)
    }

    /// Heals one fault.
    pub fn heal(&self, id: FaultId) -> bool {
        let healed = self.lock().model.heal(id);
        self.release_held();
        healed
    }

    pub fn heal_all(&self) {
        self.lock().model.heal_all();
        self.release_held();
    }

    pub fn active_faults(&self) -> Vec<(FaultId, Fault)> {
        self.lock().model.active()
    }

    /// The nodes registered and alive.
    /// The digest of every frame delivered so far (see [`Trace`]).
    pub fn trace(&self) -> Trace {
        self.lock().trace
    }

    pub fn nodes(&self) -> Vec<String> {
        self.lock().nodes.iter().filter(|(_, n)| n.alive.load(Ordering::Relaxed)).map(|(id, _)| id.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Time {
        Time::from_duration(Instant::now().saturating_duration_since(self.inner.origin))
    }

    fn instant(&self, at: Time) -> Instant {
        self.inner.origin + at.since_origin()
    }

    fn route(&self, from: &str, to: &str) -> Route {
        let now = self.now();
        let mut state = self.lock();
        let NetState { model, rng, .. } = &mut *state;
        model.route(from, to, now, rng)
    }

    fn reachable(&self, from: &str, to: &str) -> bool {
        let state = self.lock();
        state.model.reachable(from, to) && state.nodes.get(to).is_some_and(|n| n.alive.load(Ordering::Relaxed))
    }

    fn release_held(&self) {
        let pipes: Vec<Arc<Pipe>> = {
            let mut state = self.lock();
            state.pipes.retain(|p| p.strong_count() > 0);
            state.pipes.iter().filter_map(Weak::upgrade).collect()
        };
        for pipe in pipes {
            pipe.release(self);
        }
    }

    /// Opens a pipe from `from` to `to` and starts its carrier.
    fn pipe(&self, from: &str, to: &str, framing: Framing) -> (PipeTx, PipeRx) {
        let (out, delivered) = mpsc::unbounded_channel();
        let (from_alive, to_alive) = {
            let state = self.lock();
            let alive = |id: &str| state.nodes.get(id).map(|n| Arc::clone(&n.alive));
            (alive(from), alive(to))
        };
        let pipe = Arc::new(Pipe {
            from: from.to_owned(),
            to: to.to_owned(),
            framing,
            queue: Mutex::new(PipeQueue::default()),
            ready: Notify::new(),
            from_alive: from_alive.unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
            to_alive: to_alive.unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
        });
        self.lock().pipes.push(Arc::downgrade(&pipe));
        tokio::spawn(carry(self.clone(), Arc::clone(&pipe), out));
        (PipeTx { net: self.clone(), pipe }, PipeRx { delivered, pending: Bytes::new() })
    }
}

/// How a pipe cuts what is written into routed units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Each frame is routed on its own (message streams, datagrams).
    Frames,
    /// Chunks of a byte stream, routed whole and never dropped or reordered: a bulk stream
    /// is reliable; a partition or a crash stalls it.
    Stream,
}

#[derive(Default)]
struct PipeQueue {
    /// Frames in flight, by delivery time, ties in send order.
    scheduled: BTreeMap<(Time, u64), Bytes>,
    /// Frames held by a clog, in send order.
    held: Vec<Bytes>,
    seq: u64,
    finished: bool,
}

struct Pipe {
    from: String,
    to: String,
    framing: Framing,
    queue: Mutex<PipeQueue>,
    ready: Notify,
    from_alive: Arc<AtomicBool>,
    to_alive: Arc<AtomicBool>,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, net: &SimNet, unit: Bytes) {
        if !self.from_alive.load(Ordering::Relaxed) {
            return;
        }
        let mut queue = self.lock();
        // Once something is held, everything after it waits behind it (a clog keeps order).
        if !queue.held.is_empty() {
            queue.held.push(unit);
            return;
        }
        self.route_one(net, &mut queue, unit);
        drop(queue);
        self.ready.notify_one();
    }

    fn route_one(&self, net: &SimNet, queue: &mut PipeQueue, unit: Bytes) {
        let route = net.route(&self.from, &self.to);
        let route = match (self.framing, route) {
            (Framing::Stream, Route::Deliver { at }) => Route::Deliver { at: at.into_iter().take(1).collect() },
            (Framing::Stream, Route::Drop) if net.lock().model.reachable(&self.from, &self.to) => {
                Route::Deliver { at: vec![net.now()] }
            }
            (_, route) => route,
        };
        match route {
            Route::Drop => {}
            Route::Hold => queue.held.push(unit),
            Route::Deliver { at } => {
                for at in at {
                    queue.seq += 1;
                    let seq = queue.seq;
                    queue.scheduled.insert((at, seq), unit.clone());
                }
            }
        }
    }

    /// Re-routes held frames after a heal.
    fn release(&self, net: &SimNet) {
        let mut queue = self.lock();
        let held = std::mem::take(&mut queue.held);
        for unit in held {
            if !queue.held.is_empty() {
                queue.held.push(unit);
            } else {
                self.route_one(net, &mut queue, unit);
            }
        }
        drop(queue);
        self.ready.notify_one();
    }
}

/// Delivers a pipe's frames when they are due.
async fn carry(net: SimNet, pipe: Arc<Pipe>, out: mpsc::UnboundedSender<Bytes>) {
    loop {
        let ready = pipe.ready.notified();
        let next = {
            let mut queue = pipe.lock();
            let now = net.now();
            match queue.scheduled.first_key_value().map(|(key, _)| *key) {
                Some(key) if key.0 <= now => Next::Deliver(queue.scheduled.remove(&key).unwrap_or_default()),
                Some((at, _)) => Next::WaitUntil(at),
                None if queue.finished && queue.held.is_empty() => Next::Finish,
                None => Next::Wait,
            }
        };
        if !pipe.from_alive.load(Ordering::Relaxed) || !pipe.to_alive.load(Ordering::Relaxed) {
            // A crashed end: the pipe goes silent, and its receiver never sees an end.
            net.lock().silenced.push(out);
            return;
        }
        match next {
            Next::Deliver(unit) => {
                let now = net.now();
                net.lock().trace.record(now, &pipe.from, &pipe.to, &unit);
                let _ = out.send(unit);
            }
            Next::WaitUntil(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(net.instant(at)) => {}
                    _ = ready => {}
                }
            }
            Next::Wait => ready.await,
            Next::Finish => return,
        }
    }
}

enum Next {
    Deliver(Bytes),
    WaitUntil(Time),
    Wait,
    Finish,
}

/// The sending end of a pipe.
pub(crate) struct PipeTx {
    net: SimNet,
    pipe: Arc<Pipe>,
}

impl PipeTx {
    /// Routes each complete frame of `buf` (or the whole chunk, on a stream pipe).
    pub(crate) fn write_frames(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.pipe.lock().finished {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"));
        }
        if self.pipe.framing == Framing::Stream {
            self.pipe.send(&self.net, Bytes::copy_from_slice(buf));
            return Ok(());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let len = match wire::frame_len(rest, u32::MAX) {
                Ok(Some(len)) if len <= rest.len() => len,
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "a partial frame was written")),
            };
            self.pipe.send(&self.net, Bytes::copy_from_slice(&rest[..len]));
            rest = &rest[len..];
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) {
        self.pipe.lock().finished = true;
        self.pipe.ready.notify_one();
    }
}

impl Drop for PipeTx {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The receiving end of a pipe.
pub(crate) struct PipeRx {
    delivered: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
}

impl PipeRx {
    pub(crate) async fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if self.pending.is_empty() {
            match self.delivered.recv().await {
                Some(unit) => self.pending = unit,
                None => return Ok(0),
            }
        }
        let unit = std::mem::take(&mut self.pending);
        buf.extend_from_slice(&unit);
        Ok(unit.len())
    }
}

/// One side of a simulated connection.
#[derive(Clone)]
pub(crate) struct SimConn {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    net: SimNet,
    local: String,
    peer: String,
    datagrams_out: Mutex<Option<PipeTx>>,
    datagrams_in: tokio::sync::Mutex<PipeRx>,
    bulk_out: mpsc::UnboundedSender<PipeRx>,
    bulk_in: tokio::sync::Mutex<mpsc::UnboundedReceiver<PipeRx>>,
    closed: AtomicBool,
}

impl SimConn {
    pub(crate) fn send_datagram(&self, frame: Bytes) {
        if let Some(tx) = self.inner.datagrams_out.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = tx.write_frames(&frame);
        }
    }

    pub(crate) async fn read_datagram(&self) -> Option<Bytes> {
        let mut rx = self.inner.datagrams_in.lock().await;
        let mut buf = Vec::new();
        match rx.read_into(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(Bytes::from(buf)),
        }
    }

    pub(crate) fn open_bulk(&self) -> io::Result<PipeTx> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed"));
        }
        let (tx, rx) = self.inner.net.pipe(&self.inner.local, &self.inner.peer, Framing::Stream);
        self.inner.bulk_out.send(rx).map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "peer gone"))?;
        Ok(tx)
    }

    pub(crate) async fn accept_bulk(&self) -> Option<PipeRx> {
        self.inner.bulk_in.lock().await.recv().await
    }

    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.datagrams_out.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A node's place on the network.
pub(crate) struct SimEndpoint {
    net: SimNet,
    node: String,
    alive: Arc<AtomicBool>,
}

impl SimEndpoint {
    pub(crate) fn close(&self) {
        let mut state = self.net.lock();
        if state.nodes.get(&self.node).is_some_and(|n| Arc::ptr_eq(&n.alive, &self.alive)) {
            state.nodes.remove(&self.node);
        }
    }

    /// The node dies: every pipe to or from it goes silent.
    pub(crate) fn crash(&self) {
        self.alive.store(false, Ordering::Relaxed);
        self.close();
    }
}

/// Registers the node and starts accepting its connections.
pub(crate) fn start(shared: &Arc<Shared>, net: &SimNet) -> Result<SimEndpoint, TransportError> {
    let node = shared.local.node.clone();
    let alive = Arc::new(AtomicBool::new(true));
    let (incoming, mut accepted) = mpsc::unbounded_channel();
    {
        let mut state = net.lock();
        if state.nodes.get(&node).is_some_and(|n| n.alive.load(Ordering::Relaxed)) {
            return Err(TransportError::DuplicateNode(node));
        }
        let entry = SimNode { identity: shared.local.clone(), alive: Arc::clone(&alive), incoming };
        state.nodes.insert(node.clone(), entry);
    }
    let weak = Arc::downgrade(shared);
    let task = tokio::spawn(async move {
        while let Some(incoming) = accepted.recv().await {
            let Some(shared) = weak.upgrade() else { return };
            let handshake = tokio::spawn({
                let shared = Arc::clone(&shared);
                async move { accept(&shared, incoming).await }
            });
            shared.own_task(handshake.abort_handle());
        }
    });
    shared.own_task(task.abort_handle());
    Ok(SimEndpoint { net: net.clone(), node, alive })
}

async fn accept(shared: &Arc<Shared>, incoming: Incoming) {
    let Incoming { identity, conn, tx, rx } = incoming;
    let mut reader = FrameReader::new(Rx::Sim(rx), shared.config.max_frame_body);
    let hello = tokio::time::timeout(shared.config.handshake_timeout, reader.next()).await;
    let boot_id = match hello {
        Ok(Ok(Envelope::Hello { node, boot_id, .. })) if node == identity.node => boot_id,
        Ok(Ok(_)) => return shared.count_refusal(&identity.node, &Refusal::HelloMismatch("bad hello".into())),
        Ok(Err(err)) => return shared.count_refusal(&identity.node, &Refusal::Protocol(err.to_string())),
        Err(_) => return shared.count_refusal(&identity.node, &Refusal::Protocol("no hello in time".into())),
    };
    shared.handshaken(Handshaken {
        identity,
        boot_id,
        origin: Origin::Accepted,
        conn: Conn::Sim(conn),
        tx: Tx::Sim(tx),
        reader,
        address: None,
    });
}

/// Dials `node`: builds the connection's pipes, sends hello, waits for welcome.
pub(crate) async fn dial(shared: &Shared, endpoint: &SimEndpoint, node: &str) -> Result<Handshaken, String> {
    let net = &endpoint.net;
    let me = &shared.local.node;
    let timeout = shared.config.handshake_timeout;
    let target = {
        let state = net.lock();
        state.nodes.get(node).map(|n| (n.identity.clone(), n.incoming.clone()))
    };
    let Some((identity, incoming)) = target.filter(|_| net.reachable(me, node)) else {
        // A dial into a partition or to a dead node hears nothing until it gives up.
        tokio::time::sleep(timeout).await;
        return Err(format!("no answer from {node} within {timeout:?}"));
    };
    let (mine, theirs) = connection(net, me, node);
    let (mut to_peer, to_peer_rx) = net.pipe(me, node, Framing::Frames);
    let (from_peer_tx, from_peer) = net.pipe(node, me, Framing::Frames);
    let offer = Incoming { identity: shared.local.clone(), conn: theirs, tx: from_peer_tx, rx: to_peer_rx };
    incoming.send(offer).map_err(|_| format!("{node} is not accepting"))?;
    let hello = Envelope::Hello {
        cluster: shared.local.cluster.as_str().to_owned(),
        node: me.clone(),
        role: shared.local.role,
        boot_id: shared.boot_id,
    };
    let mut frame = Vec::new();
    wire::encode(&hello, &mut frame).map_err(|e| e.to_string())?;
    to_peer.write_frames(&frame).map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(Rx::Sim(from_peer), shared.config.max_frame_body);
    match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Envelope::Welcome { boot_id, .. })) => Ok(Handshaken {
            identity,
            boot_id,
            origin: Origin::Dialed,
            conn: Conn::Sim(mine),
            tx: Tx::Sim(to_peer),
            reader,
            address: Some(Address::Sim),
        }),
        Ok(Ok(other)) => Err(format!("expected welcome, got {}", wire::kind_name(other.kind()))),
        Ok(Err(err)) => Err(format!("refused: {err}")),
        Err(_) => Err(format!("no welcome from {node} within {timeout:?}")),
    }
}

/// The two sides of a connection's datagram and bulk plumbing.
fn connection(net: &SimNet, a: &str, b: &str) -> (SimConn, SimConn) {
    let (a_to_b, b_from_a) = net.pipe(a, b, Framing::Frames);
    let (b_to_a, a_from_b) = net.pipe(b, a, Framing::Frames);
    let (a_bulk_out, b_bulk_in) = mpsc::unbounded_channel();
    let (b_bulk_out, a_bulk_in) = mpsc::unbounded_channel();
    let side = |local: &str, peer: &str, out: PipeTx, inbound: PipeRx, bulk_out, bulk_in| SimConn {
        inner: Arc::new(ConnInner {
            net: net.clone(),
            local: local.to_owned(),
            peer: peer.to_owned(),
            datagrams_out: Mutex::new(Some(out)),
            datagrams_in: tokio::sync::Mutex::new(inbound),
            bulk_out,
            bulk_in: tokio::sync::Mutex::new(bulk_in),
            closed: AtomicBool::new(false),
        }),
    };
    (side(a, b, a_to_b, a_from_b, a_bulk_out, a_bulk_in), side(b, a, b_to_a, b_from_a, b_bulk_out, b_bulk_in))
}

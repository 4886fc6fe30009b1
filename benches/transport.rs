//! Flotilla's transport side by side with raw quinn and with TCP + rustls, on one machine,
//! in one process, on the same tokio runtime (`reference/perf.md` §3.3).
//!
//! Three contenders, each between two endpoints on 127.0.0.1 with the same certificates
//! (one cluster CA, mutual TLS 1.3, *ring*):
//!
//! - **flotilla**: two `Transport`s over QUIC; the receivers are ractor actors exported as
//!   `sink` (casts) and `echo` (calls). This is the full layer: framing, addressing, the
//!   bounded per-peer queue, dispatch to an actor's mailbox. A cast is an 80-byte frame.
//! - **quinn**: raw quinn with the transport's own quinn configs (`tls::server_config` and
//!   `tls::client_config`, `QuicTuning::default()`): one connection, one bidi stream per
//!   scenario, frames of a 4-byte length and a 64-byte payload (68 bytes).
//! - **tcp+rustls**: tokio-rustls on a `TCP_NODELAY` socket, the same framing (the reference).
//!
//! A fourth row, **quinn-actor**, is a diagnostic for the one-way scenario only: raw quinn
//! whose reader hands every payload to a ractor actor, as the transport must. The gap between
//! it and `quinn` is what delivering into an actor mailbox costs by itself.
//!
//! Scenarios, each after a warm-up on the same connection:
//!
//! - one-way: N messages of 64 bytes as fast as possible; msg/s until the receiver counted N.
//!   Flotilla casts one at a time (`QueueFull` → `yield_now` and retry, counted); the raw
//!   writers batch frames into one `write_all` per 64 KiB, as the transport's queue batches.
//! - sequential RTT: 64-byte request, 64-byte answer, back to back (a `call` to an echo actor;
//!   ping-pong on one long-lived bidi stream or socket for the raw contenders).
//! - paced RTT at 10 k req/s: a clock thread ticks every 100 µs (absolute deadlines) and each
//!   tick issues one request (open loop: requests overlap if answers are late); RTT is measured
//!   from the moment the request is issued inside the runtime. "tick wake" is how long the
//!   idle runtime took to see a tick (not part of the RTT).
//!
//! Every contender runs on both runtimes of `support` (current_thread, multi_thread(2)), on a
//! worker (spawned), 3 repetitions with the order of contenders rotated; the medians are
//! compared and checked against the goals.
//!
//! Run: `cargo bench --bench transport` (`FLOTILLA_BENCH_QUICK=1` for a smoke run). For
//! profiling, `FLOTILLA_BENCH_TRANSPORT=flotilla,current_thread,oneway` keeps only the named
//! contenders, runtimes and scenarios; `FLOTILLA_BENCH_PACE=spin` paces by spinning in the
//! runtime instead of a sleeping clock thread (the runtime never idles).

mod support;

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_supervisors::{Node, NodeId};
use flotilla_transport::identity::{ClusterCa, NodeCredentials};
use flotilla_transport::quic::QuicSetup;
use flotilla_transport::tls::{self, QuicTuning};
use flotilla_transport::{
    Address, AdmissionPolicy, ClusterId, Network, RemoteCall, RemoteMessage, ReplyPort, Role, SendError, Transport,
    TransportConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, version::TLS13};
use support::{Rounds, Sink, median, micros, percentile, quick, runtimes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const PAYLOAD: usize = 64;
/// A raw frame: a little-endian u32 length, then the payload.
const RAW_FRAME: usize = 4 + PAYLOAD;
/// The raw writers' batch: one `write_all` per 64 KiB of frames.
const RAW_BATCH: usize = 64 * 1024;
const PACE: Duration = Duration::from_micros(100);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Goals (`reference/perf.md` §3.3)
// ---------------------------------------------------------------------------------------------

const GOAL_MSGS_PER_S: f64 = 500_000.0;
const GOAL_RATIO: f64 = 0.9;
const GOAL_PACED_P50_US: f64 = 50.0;

/// A 64-byte opaque payload, encoded as postcard bytes (a 1-byte length, then one copy of
/// the 64 bytes), the way the transport encodes its own payloads. (A derived `[u8; N]` or
/// `Vec<u8>` goes through serde one element at a time: measured here that cost 17 % of the
/// CPU of the one-way run, all of it outside the transport.)
#[derive(Clone)]
struct Msg64([u8; PAYLOAD]);

impl serde::Serialize for Msg64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Msg64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes64;
        impl serde::de::Visitor<'_> for Bytes64 {
            type Value = Msg64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{PAYLOAD} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Msg64, E> {
                bytes.try_into().map(Msg64).map_err(|_| E::invalid_length(bytes.len(), &self))
            }
        }
        deserializer.deserialize_bytes(Bytes64)
    }
}

impl RemoteMessage for Msg64 {
    const TAG: u32 = 64;
}

impl RemoteCall for Msg64 {
    type Reply = Msg64;
}

fn msg64() -> Msg64 {
    Msg64(std::array::from_fn(|i| i as u8))
}

// ---------------------------------------------------------------------------------------------
// Sizes and results
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Sizes {
    reps: usize,
    oneway: u64,
    oneway_warm: u64,
    seq: usize,
    seq_warm: usize,
    paced: usize,
    paced_warm: usize,
}

impl Sizes {
    fn get() -> Sizes {
        if quick() {
            Sizes {
                reps: 1,
                oneway: 50_000,
                oneway_warm: 5_000,
                seq: 1_000,
                seq_warm: 100,
                paced: 1_000,
                paced_warm: 100,
            }
        } else {
            Sizes {
                reps: 3,
                oneway: 2_000_000,
                oneway_warm: 100_000,
                seq: 20_000,
                seq_warm: 1_000,
                paced: 20_000,
                paced_warm: 1_000,
            }
        }
        .only(&std::env::var("FLOTILLA_BENCH_TRANSPORT").unwrap_or_default())
    }

    /// Keeps only the scenarios named in `filter` (`oneway`, `seq`, `paced`), if it names any.
    fn only(mut self, filter: &str) -> Sizes {
        let named = |name: &str| filter.split(',').any(|w| w == name);
        if ["oneway", "seq", "paced"].iter().any(|s| named(s)) {
            if !named("oneway") {
                self.oneway = 0;
            }
            if !named("seq") {
                self.seq = 0;
            }
            if !named("paced") {
                self.paced = 0;
            }
        }
        self
    }
}

/// A figure's name and how to read it.
type Field = (&'static str, fn(&Figures) -> f64);

/// What one contender measured in one repetition.
#[derive(Clone, Copy, Default)]
struct Figures {
    oneway_msgs_per_s: f64,
    /// Casts refused with `QueueFull` and retried (flotilla only).
    retries: f64,
    seq_p50_us: f64,
    seq_p99_us: f64,
    seq_per_s: f64,
    paced_p50_us: f64,
    paced_p99_us: f64,
    /// The request rate the clock thread achieved.
    paced_per_s: f64,
    /// How long the idle runtime took to see a tick of the clock thread (p50).
    paced_wake_p50_us: f64,
    /// Calls that failed (flotilla only; they are left out of the percentiles).
    errors: f64,
}

impl Figures {
    fn fields() -> [Field; 10] {
        [
            ("oneway_msgs_per_s", |f| f.oneway_msgs_per_s),
            ("retries", |f| f.retries),
            ("seq_p50_us", |f| f.seq_p50_us),
            ("seq_p99_us", |f| f.seq_p99_us),
            ("seq_per_s", |f| f.seq_per_s),
            ("paced_p50_us", |f| f.paced_p50_us),
            ("paced_p99_us", |f| f.paced_p99_us),
            ("paced_per_s", |f| f.paced_per_s),
            ("paced_wake_p50_us", |f| f.paced_wake_p50_us),
            ("errors", |f| f.errors),
        ]
    }

    /// The median of every field over the repetitions.
    fn median_of(runs: &[Figures]) -> Figures {
        let m = |get: fn(&Figures) -> f64| median(&mut runs.iter().map(get).collect::<Vec<_>>());
        Figures {
            oneway_msgs_per_s: m(|f| f.oneway_msgs_per_s),
            retries: m(|f| f.retries),
            seq_p50_us: m(|f| f.seq_p50_us),
            seq_p99_us: m(|f| f.seq_p99_us),
            seq_per_s: m(|f| f.seq_per_s),
            paced_p50_us: m(|f| f.paced_p50_us),
            paced_p99_us: m(|f| f.paced_p99_us),
            paced_per_s: m(|f| f.paced_per_s),
            paced_wake_p50_us: m(|f| f.paced_wake_p50_us),
            errors: m(|f| f.errors),
        }
    }
}

/// What the paced scenario measured.
struct Paced {
    rtts: Vec<Duration>,
    /// From the clock thread's tick to the runtime seeing it, per request.
    wake_p50_us: f64,
    /// From the first to the last measured request.
    issued_for: Duration,
    errors: u64,
}

impl Paced {
    fn new(rtts: Vec<Duration>, wakes: &[Duration], issued_for: Duration, errors: u64) -> Paced {
        let mut wakes = wakes.to_vec();
        wakes.sort();
        Paced { rtts, wake_p50_us: micros(percentile(&wakes, 0.5)), issued_for, errors }
    }

    fn record(self, f: &mut Figures) {
        let requests = self.rtts.len() + self.errors as usize;
        (f.paced_p50_us, f.paced_p99_us, _) = latency(self.rtts, self.issued_for);
        f.paced_per_s = (requests - 1) as f64 / self.issued_for.as_secs_f64();
        f.paced_wake_p50_us = self.wake_p50_us;
        f.errors = self.errors as f64;
    }
}

/// p50, p99 (µs) and the rate of the measured samples.
fn latency(mut samples: Vec<Duration>, elapsed: Duration) -> (f64, f64, f64) {
    samples.sort();
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    (micros(percentile(&samples, 0.50)), micros(percentile(&samples, 0.99)), rate)
}

// ---------------------------------------------------------------------------------------------
// Certificates: one CA, one node certificate per side, shared by all contenders
// ---------------------------------------------------------------------------------------------

struct Pki {
    cluster: ClusterId,
    ca: CertificateDer<'static>,
    /// The dialing / client side.
    a: NodeCredentials,
    /// The accepting / server side.
    b: NodeCredentials,
}

impl Pki {
    fn generate() -> Pki {
        let cluster = ClusterId::new("bench").unwrap();
        let ca = ClusterCa::generate(&cluster).unwrap();
        let a = ca.issue("a", Role::Master).unwrap();
        let b = ca.issue("b", Role::Agent).unwrap();
        Pki { cluster, ca: ca.cert_der().clone(), a, b }
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The pacing clock: `count` ticks, one every `interval` on absolute deadlines (a late tick
/// does not push the later ones back).
///
/// By default a clock thread sleeps between ticks and wakes the runtime through a channel:
/// tokio's timer has 1 ms granularity, too coarse for 100 µs, and a sleeping clock leaves the
/// runtime idle between requests, as real traffic at this rate would. With
/// `FLOTILLA_BENCH_PACE=spin` the issuing task spins on `yield_now` instead, so the runtime
/// never parks (a diagnostic: it shows what idling between requests costs).
enum Ticks {
    Thread(mpsc::UnboundedReceiver<Instant>),
    Spin { start: Instant, next: u32, count: u32, interval: Duration },
}

impl Ticks {
    fn new(count: usize, interval: Duration) -> Ticks {
        if std::env::var("FLOTILLA_BENCH_PACE").is_ok_and(|v| v == "spin") {
            return Ticks::Spin { start: Instant::now(), next: 0, count: count as u32, interval };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..count {
                let deadline = start + interval * i as u32;
                let now = Instant::now();
                if deadline > now {
                    std::thread::sleep(deadline - now);
                }
                if tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        Ticks::Thread(rx)
    }

    /// Waits for the next tick; returns how long the runtime took to see it after the clock
    /// thread sent it (the cost of waking an idle runtime), or `None` after the last tick.
    async fn next(&mut self) -> Option<Duration> {
        match self {
            Ticks::Thread(rx) => rx.recv().await.map(|sent| sent.elapsed()),
            Ticks::Spin { start, next, count, interval } => {
                if *next == *count {
                    return None;
                }
                let deadline = *start + *interval * *next;
                *next += 1;
                while Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
                Some(Duration::ZERO)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Contender 1: Flotilla's transport
// ---------------------------------------------------------------------------------------------

type SinkMsg = support::SinkMsg<Msg64>;

type EchoMsg = (Msg64, ReplyPort<Msg64>);

/// Answers every call with its request.
struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<EchoMsg>, (msg, port): EchoMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        port.send(msg);
        Ok(())
    }
}

fn echo_wrap(msg: Msg64, port: ReplyPort<Msg64>) -> EchoMsg {
    (msg, port)
}

struct FlotillaPair {
    nodes: [Node; 2],
    a: Transport,
    b: Transport,
    sink: ActorRef<SinkMsg>,
    echo: ActorRef<EchoMsg>,
}

async fn start_transport(pki: &Pki, creds: &NodeCredentials) -> (Node, Transport) {
    let node = Node::builder(NodeId::new(creds.identity.node.clone()).unwrap()).start().await.unwrap();
    let setup = QuicSetup {
        bind: localhost(),
        credentials: creds.clone(),
        ca: pki.ca.clone(),
        policy: AdmissionPolicy::cluster(pki.cluster.clone()),
        tuning: QuicTuning::default(),
    };
    let transport =
        Transport::start(&node, creds.identity.clone(), TransportConfig::default(), Network::Quic(setup.into()), None)
            .await
            .unwrap();
    (node, transport)
}

impl FlotillaPair {
    async fn start(pki: &Pki) -> FlotillaPair {
        let (node_a, a) = start_transport(pki, &pki.a).await;
        let (node_b, b) = start_transport(pki, &pki.b).await;
        let (sink, _) = Actor::spawn(None, Sink::<Msg64>::new(), ()).await.unwrap();
        let (echo, _) = Actor::spawn(None, Echo, ()).await.unwrap();
        b.export::<Msg64, SinkMsg>("sink", &sink, SinkMsg::Item);
        b.export_call::<Msg64, EchoMsg>("echo", &echo, echo_wrap);
        a.connect("b", Address::Udp(b.local_addr().unwrap()));
        let started = Instant::now();
        while !(a.is_connected("b") && b.is_connected("a")) {
            assert!(started.elapsed() < Duration::from_secs(10), "no session between a and b within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        FlotillaPair { nodes: [node_a, node_b], a, b, sink, echo }
    }

    async fn close(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        self.sink.stop(None);
        self.echo.stop(None);
        for node in &self.nodes {
            node.shutdown();
        }
    }

    /// Casts `n` messages to the sink; returns (msg/s, casts retried after `QueueFull`).
    async fn oneway(&self, n: u64) -> (f64, u64) {
        let (done, counted) = oneshot::channel();
        self.sink.send_message(SinkMsg::Expect(n, done)).unwrap();
        let msg = msg64();
        let mut retries = 0;
        let started = Instant::now();
        let mut sent = 0;
        while sent < n {
            match self.a.cast("b", "sink", &msg) {
                Ok(()) => sent += 1,
                Err(SendError::QueueFull(_)) => {
                    retries += 1;
                    tokio::task::yield_now().await;
                }
                Err(err) => panic!("cast failed: {err}"),
            }
        }
        let counted = tokio::time::timeout(BOUND, counted).await.expect("the sink never counted all").unwrap();
        (n as f64 / (counted - started).as_secs_f64(), retries)
    }

    async fn sequential(&self, warm: usize, n: usize) -> (f64, f64, f64) {
        let msg = msg64();
        let mut rounds = Rounds::new(warm, n);
        while rounds.start() {
            black_box(self.a.call("b", "echo", &msg, CALL_TIMEOUT).await.expect("call failed"));
            rounds.end();
        }
        rounds.figures()
    }

    /// Returns (p50 µs, p99 µs, achieved req/s, failed calls).
    async fn paced(&self, warm: usize, n: usize) -> Paced {
        let mut ticks = Ticks::new(warm + n, PACE);
        let mut calls = Vec::with_capacity(warm + n);
        let mut first = None;
        let mut last = Instant::now();
        let mut wakes = Vec::with_capacity(warm + n);
        while let Some(wake) = ticks.next().await {
            wakes.push(wake);
            if calls.len() == warm {
                first = Some(Instant::now());
            }
            last = Instant::now();
            let a = self.a.clone();
            calls.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let reply = a.call("b", "echo", &msg64(), CALL_TIMEOUT).await;
                let rtt = t0.elapsed();
                reply.map(black_box).map(|_| rtt).ok()
            }));
        }
        let mut samples = Vec::with_capacity(n);
        let mut errors = 0;
        for (i, call) in calls.into_iter().enumerate() {
            match call.await.unwrap() {
                Some(rtt) if i >= warm => samples.push(rtt),
                Some(_) => {}
                None => errors += 1,
            }
        }
        Paced::new(samples, &wakes[warm..], last - first.unwrap_or(last), errors)
    }
}

async fn measure_flotilla(pki: &Pki, sizes: Sizes) -> Figures {
    let pair = FlotillaPair::start(pki).await;
    let mut f = Figures::default();
    if sizes.oneway > 0 {
        pair.oneway(sizes.oneway_warm).await;
        let (oneway, retries) = pair.oneway(sizes.oneway).await;
        (f.oneway_msgs_per_s, f.retries) = (oneway, retries as f64);
    }
    if sizes.seq > 0 {
        (f.seq_p50_us, f.seq_p99_us, f.seq_per_s) = pair.sequential(sizes.seq_warm, sizes.seq).await;
    }
    if sizes.paced > 0 {
        pair.paced(sizes.paced_warm, sizes.paced).await.record(&mut f);
    }
    pair.close().await;
    f
}

// ---------------------------------------------------------------------------------------------
// Contenders 2 and 3: raw quinn and TCP + rustls, the same framing over a byte stream
// ---------------------------------------------------------------------------------------------

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// One end of a bidirectional byte stream.
struct Link {
    rx: Reader,
    tx: Writer,
}

enum RawNet {
    Quic {
        client_ep: quinn::Endpoint,
        server_ep: quinn::Endpoint,
        client: quinn::Connection,
        server: quinn::Connection,
    },
    Tcp {
        listener: TcpListener,
        acceptor: TlsAcceptor,
        connector: TlsConnector,
    },
}

impl RawNet {
    /// Two quinn endpoints with the transport's own TLS and transport configs.
    async fn quic(pki: &Pki) -> RawNet {
        let tuning = QuicTuning::default();
        let server_ep =
            quinn::Endpoint::server(tls::server_config(&pki.b, &pki.ca, &tuning).unwrap(), localhost()).unwrap();
        let mut client_ep = quinn::Endpoint::client(localhost()).unwrap();
        client_ep.set_default_client_config(tls::client_config(&pki.a, &pki.ca, &tuning).unwrap());
        let accepting = server_ep.clone();
        let accepted = tokio::spawn(async move { accepting.accept().await.unwrap().await.unwrap() });
        let client = client_ep.connect(server_ep.local_addr().unwrap(), tls::SERVER_NAME).unwrap().await.unwrap();
        let server = accepted.await.unwrap();
        RawNet::Quic { client_ep, server_ep, client, server }
    }

    /// TLS 1.3 with client authentication over TCP, the same certificates and provider.
    async fn tcp(pki: &Pki) -> RawNet {
        let provider = tls::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(pki.b.cert_chain.clone(), pki.b.key())
            .unwrap();
        server.alpn_protocols = vec![tls::ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(pki.a.cert_chain.clone(), pki.a.key())
            .unwrap();
        client.alpn_protocols = vec![tls::ALPN.to_vec()];
        let listener = TcpListener::bind(localhost()).await.unwrap();
        RawNet::Tcp {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }

    /// A fresh (client, server) pair of links: a new bidi stream on the one QUIC connection,
    /// or a new TLS connection.
    async fn link(&self) -> (Link, Link) {
        match self {
            RawNet::Quic { client, server, .. } => {
                let (mut tx, rx) = client.open_bi().await.unwrap();
                // A stream is announced to the peer by its first byte.
                tx.write_all(&[0xA5]).await.unwrap();
                let (stx, mut srx) = server.accept_bi().await.unwrap();
                let mut first = [0u8; 1];
                srx.read_exact(&mut first).await.unwrap();
                (Link { rx: Box::new(rx), tx: Box::new(tx) }, Link { rx: Box::new(srx), tx: Box::new(stx) })
            }
            RawNet::Tcp { listener, acceptor, connector } => {
                let addr = listener.local_addr().unwrap();
                let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
                let (dialed, (accepted, _)) = (dialed.unwrap(), accepted.unwrap());
                dialed.set_nodelay(true).unwrap();
                accepted.set_nodelay(true).unwrap();
                let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
                let (client, server) = tokio::join!(connector.connect(name, dialed), acceptor.accept(accepted));
                let (crx, ctx) = tokio::io::split(client.unwrap());
                let (srx, stx) = tokio::io::split(server.unwrap());
                (Link { rx: Box::new(crx), tx: Box::new(ctx) }, Link { rx: Box::new(srx), tx: Box::new(stx) })
            }
        }
    }

    async fn close(self) {
        if let RawNet::Quic { client_ep, server_ep, client, server } = self {
            client.close(0u32.into(), b"done");
            server.close(0u32.into(), b"done");
            client_ep.close(0u32.into(), b"done");
            server_ep.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(Duration::from_secs(2), client_ep.wait_idle()).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), server_ep.wait_idle()).await;
        }
    }
}

fn raw_frame() -> [u8; RAW_FRAME] {
    let mut frame = [0u8; RAW_FRAME];
    frame[..4].copy_from_slice(&(PAYLOAD as u32).to_le_bytes());
    for (i, byte) in frame[4..].iter_mut().enumerate() {
        *byte = i as u8;
    }
    frame
}

/// Reads frames until `n` have arrived, handing each payload to `each`; returns the instant
/// the last one arrived.
async fn count_frames(mut rx: Reader, n: u64, mut each: impl FnMut(&[u8])) -> (Reader, Instant) {
    let mut buf = vec![0u8; RAW_BATCH + RAW_FRAME];
    let (mut have, mut count) = (0, 0);
    loop {
        let read = rx.read(&mut buf[have..]).await.unwrap();
        assert!(read > 0, "the stream ended after {count} of {n} frames");
        have += read;
        let mut at = 0;
        while let Some(header) = buf[at..have].first_chunk::<4>() {
            let end = at + 4 + u32::from_le_bytes(*header) as usize;
            if end > have {
                break;
            }
            each(&buf[at + 4..end]);
            at = end;
            count += 1;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if count >= n {
            return (rx, Instant::now());
        }
    }
}

/// Writes `n` frames, one `write_all` per 64 KiB batch; returns msg/s until all were counted,
/// by the reader itself or, given `sink`, by an actor the reader hands every payload to.
async fn raw_oneway(client: Writer, server: Reader, n: u64, sink: Option<&ActorRef<SinkMsg>>) -> (Writer, Reader, f64) {
    let (done, counted_by_sink) = oneshot::channel();
    let counter = match sink {
        Some(sink) => {
            sink.send_message(SinkMsg::Expect(n, done)).unwrap();
            let sink = sink.clone();
            tokio::spawn(count_frames(server, n, move |payload| {
                let msg = Msg64(payload.try_into().expect("a 64-byte payload"));
                sink.send_message(SinkMsg::Item(msg)).unwrap();
            }))
        }
        None => tokio::spawn(count_frames(server, n, |payload| {
            black_box(payload);
        })),
    };
    let mut tx = client;
    let frame = raw_frame();
    let mut batch = Vec::with_capacity(RAW_BATCH + RAW_FRAME);
    let started = Instant::now();
    for _ in 0..n {
        batch.extend_from_slice(&frame);
        if batch.len() >= RAW_BATCH {
            tx.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    tx.write_all(&batch).await.unwrap();
    tx.flush().await.unwrap();
    let (rx, mut counted) = tokio::time::timeout(BOUND, counter).await.expect("the reader never counted all").unwrap();
    if sink.is_some() {
        counted = tokio::time::timeout(BOUND, counted_by_sink).await.expect("the sink never counted all").unwrap();
    }
    (tx, rx, n as f64 / (counted - started).as_secs_f64())
}

/// Answers `n` frames with themselves, one at a time.
fn spawn_echo(mut server: Link, n: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut frame = [0u8; RAW_FRAME];
        for _ in 0..n {
            server.rx.read_exact(&mut frame).await.unwrap();
            server.tx.write_all(&frame).await.unwrap();
            server.tx.flush().await.unwrap();
        }
    })
}

async fn raw_sequential(mut client: Link, server: Link, warm: usize, n: usize) -> (f64, f64, f64) {
    let echo = spawn_echo(server, warm + n);
    let frame = raw_frame();
    let mut answer = [0u8; RAW_FRAME];
    let mut rounds = Rounds::new(warm, n);
    while rounds.start() {
        client.tx.write_all(&frame).await.unwrap();
        client.tx.flush().await.unwrap();
        client.rx.read_exact(&mut answer).await.unwrap();
        black_box(&answer);
        rounds.end();
    }
    echo.await.unwrap();
    rounds.figures()
}

/// Requests on the clock's ticks from a writer task; a reader task matches each answer to
/// the oldest request in flight (the echo keeps the order of one stream).
async fn raw_paced(client: Link, server: Link, warm: usize, n: usize) -> Paced {
    let total = warm + n;
    let echo = spawn_echo(server, total);
    let in_flight: Arc<Mutex<VecDeque<Instant>>> = Arc::new(Mutex::new(VecDeque::with_capacity(64)));
    let Link { mut rx, mut tx } = client;
    let queue = Arc::clone(&in_flight);
    let reader = tokio::spawn(async move {
        let mut answer = [0u8; RAW_FRAME];
        let mut samples = Vec::with_capacity(total);
        for _ in 0..total {
            rx.read_exact(&mut answer).await.unwrap();
            let now = Instant::now();
            let t0 = queue.lock().unwrap().pop_front().expect("an answer without a request");
            samples.push(now - t0);
        }
        samples
    });
    let mut ticks = Ticks::new(total, PACE);
    let frame = raw_frame();
    let (mut issued, mut first, mut last) = (0, None, Instant::now());
    let mut wakes = Vec::with_capacity(total);
    while let Some(wake) = ticks.next().await {
        wakes.push(wake);
        let t0 = Instant::now();
        if issued == warm {
            first = Some(t0);
        }
        last = t0;
        issued += 1;
        in_flight.lock().unwrap().push_back(t0);
        tx.write_all(&frame).await.unwrap();
        tx.flush().await.unwrap();
    }
    let samples = tokio::time::timeout(BOUND, reader).await.expect("answers missing").unwrap();
    echo.await.unwrap();
    Paced::new(samples[warm..].to_vec(), &wakes[warm..], last - first.unwrap_or(last), 0)
}

/// `sink`: hand every one-way payload to a ractor actor (the diagnostic `quinn→actor` row,
/// which runs the one-way scenario only).
async fn measure_raw(net: RawNet, sizes: Sizes, to_actor: bool) -> Figures {
    let mut f = Figures::default();
    if sizes.oneway > 0 {
        let sink = if to_actor { Some(Actor::spawn(None, Sink::<Msg64>::new(), ()).await.unwrap().0) } else { None };
        let (client, server) = net.link().await;
        let (tx, rx, _) = raw_oneway(client.tx, server.rx, sizes.oneway_warm, sink.as_ref()).await;
        (_, _, f.oneway_msgs_per_s) = raw_oneway(tx, rx, sizes.oneway, sink.as_ref()).await;
        if let Some(sink) = sink {
            sink.stop(None);
        }
    }
    if sizes.seq > 0 && !to_actor {
        let (client, server) = net.link().await;
        (f.seq_p50_us, f.seq_p99_us, f.seq_per_s) = raw_sequential(client, server, sizes.seq_warm, sizes.seq).await;
    }
    if sizes.paced > 0 && !to_actor {
        let (client, server) = net.link().await;
        raw_paced(client, server, sizes.paced_warm, sizes.paced).await.record(&mut f);
    }
    net.close().await;
    f
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Flotilla,
    Quinn,
    TcpRustls,
    /// Diagnostic: raw quinn whose reader hands every payload to a ractor actor, as the
    /// transport does; one-way only. The gap between it and `quinn` is the cost of actor
    /// delivery alone, which no framing layer can avoid.
    QuinnActor,
}

const CONTENDERS: [Contender; 4] = [Contender::Flotilla, Contender::Quinn, Contender::TcpRustls, Contender::QuinnActor];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Flotilla => "flotilla",
            Contender::Quinn => "quinn",
            Contender::TcpRustls => "tcp+rustls",
            Contender::QuinnActor => "quinn-actor",
        }
    }

    async fn measure(self, pki: Arc<Pki>, sizes: Sizes) -> Figures {
        match self {
            Contender::Flotilla => measure_flotilla(&pki, sizes).await,
            Contender::Quinn => measure_raw(RawNet::quic(&pki).await, sizes, false).await,
            Contender::TcpRustls => measure_raw(RawNet::tcp(&pki).await, sizes, false).await,
            Contender::QuinnActor => measure_raw(RawNet::quic(&pki).await, sizes, true).await,
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

fn report(runtime: &str, medians: &[(Contender, Figures)]) {
    let get = |c: Contender| medians.iter().find(|(k, _)| *k == c).map(|(_, f)| *f);
    println!();
    println!("runtime {runtime} (medians)");
    println!(
        "| contender | one-way 64 B msg/s | seq RTT p50 / p99 µs | seq calls/s | paced 10k/s RTT p50 / p99 µs | paced rate/s | tick wake p50 µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (contender, f) in medians {
        let oneway = match contender {
            Contender::Flotilla => format!("{:.0} ({:.0} retries)", f.oneway_msgs_per_s, f.retries),
            _ => format!("{:.0}", f.oneway_msgs_per_s),
        };
        if *contender == Contender::QuinnActor {
            println!("| {} (diagnostic) | {oneway} | — | — | — | — | — |", contender.name());
            continue;
        }
        println!(
            "| {} | {oneway} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} | {:.0} | {:.1} |",
            contender.name(),
            f.seq_p50_us,
            f.seq_p99_us,
            f.seq_per_s,
            f.paced_p50_us,
            f.paced_p99_us,
            f.paced_per_s,
            f.paced_wake_p50_us
        );
    }
    let (Some(ours), Some(quinn), Some(tcp)) =
        (get(Contender::Flotilla), get(Contender::Quinn), get(Contender::TcpRustls))
    else {
        return;
    };
    // Ratios are "ours ÷ peer" as speed: above 1 means flotilla does better. For latencies
    // that is peer RTT ÷ our RTT.
    let ratio_line = |peer: &str, p: &Figures| {
        println!(
            "ratio flotilla/{peer} runtime={runtime} oneway={:.2}x seq_rate={:.2}x seq_p50_speed={:.2}x paced_p50_speed={:.2}x paced_p99_speed={:.2}x",
            ours.oneway_msgs_per_s / p.oneway_msgs_per_s,
            ours.seq_per_s / p.seq_per_s,
            p.seq_p50_us / ours.seq_p50_us,
            p.paced_p50_us / ours.paced_p50_us,
            p.paced_p99_us / ours.paced_p99_us,
        );
    };
    ratio_line("quinn", &quinn);
    ratio_line("tcp+rustls", &tcp);
    if let Some(actor) = get(Contender::QuinnActor) {
        println!(
            "ratio flotilla/quinn-actor runtime={runtime} oneway={:.2}x (quinn-actor/quinn oneway={:.2}x)",
            ours.oneway_msgs_per_s / actor.oneway_msgs_per_s,
            actor.oneway_msgs_per_s / quinn.oneway_msgs_per_s,
        );
    }
    let oneway_ratio = ours.oneway_msgs_per_s / quinn.oneway_msgs_per_s;
    let rtt_ratio = quinn.paced_p50_us / ours.paced_p50_us;
    println!(
        "goal runtime={runtime} oneway>=500k: {} ({:.0} msg/s); oneway>=0.9x quinn: {} ({oneway_ratio:.2}x); paced p50<=50us: {} ({:.1} us); paced p50>=0.9x quinn: {} ({rtt_ratio:.2}x)",
        verdict(ours.oneway_msgs_per_s >= GOAL_MSGS_PER_S),
        ours.oneway_msgs_per_s,
        verdict(oneway_ratio >= GOAL_RATIO),
        verdict(ours.paced_p50_us <= GOAL_PACED_P50_US),
        ours.paced_p50_us,
        verdict(rtt_ratio >= GOAL_RATIO),
    );
}

fn main() {
    tls::install_default_provider();
    let sizes = Sizes::get();
    let pki = Arc::new(Pki::generate());
    println!(
        "transport: one-way {} msgs (+{} warm-up), sequential {} calls, paced {} calls at {:.0}/s, {} repetitions",
        sizes.oneway,
        sizes.oneway_warm,
        sizes.seq,
        sizes.paced,
        1.0 / PACE.as_secs_f64(),
        sizes.reps
    );
    // What a cast of `Msg64` puts on the stream: postcard bytes (length, then the 64 bytes)
    // inside the transport's frame.
    let payload: Vec<u8> = std::iter::once(PAYLOAD as u8).chain(msg64().0).collect();
    let mut frame = Vec::new();
    flotilla_transport::core::wire::encode_cast("sink", Msg64::TAG, &payload, &mut frame).unwrap();
    println!("frame bytes per 64-byte message: flotilla cast {}, raw {RAW_FRAME}", frame.len());
    // `FLOTILLA_BENCH_TRANSPORT=flotilla,current_thread,seq` keeps only the named contenders,
    // runtimes and scenarios (for profiling one of them); the verdicts need the first three.
    let only = std::env::var("FLOTILLA_BENCH_TRANSPORT").unwrap_or_default();
    let named = |name: &str| only.split(',').any(|w| w == name);
    let mut contenders: Vec<Contender> = CONTENDERS.into_iter().filter(|c| named(c.name())).collect();
    if contenders.is_empty() {
        contenders = CONTENDERS.to_vec();
    }
    let mut runtimes = runtimes();
    if runtimes.iter().any(|(name, _)| named(name)) {
        runtimes.retain(|(name, _)| named(name));
    }
    for (name, runtime) in runtimes {
        let mut runs: Vec<(Contender, Vec<Figures>)> = contenders.iter().map(|c| (*c, Vec::new())).collect();
        for rep in 0..sizes.reps {
            // Rotate the order so no contender always runs first (or last) in a round.
            for k in 0..contenders.len() {
                let contender = contenders[(rep + k) % contenders.len()];
                let pki = Arc::clone(&pki);
                // On a worker, as actors run; block_on's own thread would be a third thread.
                let figures =
                    runtime.block_on(async move { tokio::spawn(contender.measure(pki, sizes)).await.unwrap() });
                let fields: Vec<String> =
                    Figures::fields().iter().map(|(key, get)| format!("{key}={:.1}", get(&figures))).collect();
                println!("transport runtime={name} rep={rep} contender={} {}", contender.name(), fields.join(" "));
                if let Some((_, list)) = runs.iter_mut().find(|(c, _)| *c == contender) {
                    list.push(figures);
                }
            }
        }
        let medians: Vec<(Contender, Figures)> = runs.iter().map(|(c, list)| (*c, Figures::median_of(list))).collect();
        report(name, &medians);
    }
}

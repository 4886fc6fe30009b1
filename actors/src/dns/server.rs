//! The DNS server's network shell: UDP on `threads` sockets read by the fast path ([`udp`]),
//! whose unusual queries come back here for the full path, and TCP on hickory-server; both
//! answer from the shared [`Index`] and forward names outside the served zones.
//!
//! - Answers come from [`resolve`] under a read lock of the index, held only while the answer
//!   is computed (never across an `.await`). The actor applies the feed's changes to the same
//!   index in place under the write lock ([`SharedIndex::update`]), so a change costs what it
//!   touches rather than a copy of the whole index, and is visible to the next query; the
//!   update also bumps a generation that makes the fast path drop its prepared responses.
//! - UDP answers larger than the client's limit (512 bytes, or its EDNS payload size) are cut
//!   with the TC bit set by hickory's encoder; TCP carries the whole answer.
//! - Out-of-zone questions are forwarded as received (same id, same EDNS) to each upstream in
//!   turn, each within the forward timeout; a truncated UDP reply is asked again over TCP.
//!   When every upstream fails the answer is SERVFAIL. With no upstreams forwarding is off:
//!   out-of-zone questions are REFUSED and RA is clear.
//! - Malformed packets never reach this handler as a panic: a UDP packet shorter than a
//!   header is dropped, one whose body does not parse is answered FORMERR (as hickory does
//!   for TCP); a request with no or several questions, or another opcode, is answered FORMERR
//!   or NOTIMP here.
//!
//! [`udp`]: super::udp

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData as HickoryRData, Record};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::core::answer::{Answer, QType, RData, Rcode, Resolution, Rr, resolve};
use super::core::wire::{MAX_UDP_PAYLOAD, PLAIN_UDP_LIMIT};
use super::core::{DnsConfig, Index};
use super::udp::{DeferredQuery, UdpLoops, bind_udp};

/// The index as the actor and the servers share it, with a generation that counts its changes.
pub struct SharedIndex {
    index: RwLock<Index>,
    generation: AtomicU64,
}

impl SharedIndex {
    pub fn new(index: Index) -> Self {
        SharedIndex { index: RwLock::new(index), generation: AtomicU64::new(0) }
    }

    /// The index for reading.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A poisoned lock means the actor panicked mid-update; its restart rebuilds the index,
        // and until then the last state is still the best answer there is.
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the index, then bumps the generation: whoever keeps answers made from it sees
    /// the new generation no earlier than the change itself.
    pub fn update<R>(&self, change: impl FnOnce(&mut Index) -> R) -> R {
        let result = {
            let mut index = self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            change(&mut index)
        };
        self.generation.fetch_add(1, Ordering::Release);
        result
    }

    /// How many updates the index has had.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The step between the seeds of successive queries (2^64 / golden ratio: successive seeds
/// spread over the whole range).
pub(super) const SEED_STEP: u64 = 0x9e37_79b9_7f4a_7c15;
/// How long an idle TCP connection is kept.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Outgoing responses buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Counters of what the server did, read by the actor's status. Each UDP thread counts in
/// its own (aligned apart, so the threads do not contend for one cache line).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Stats {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub queries: u64,
    pub answered: u64,
    pub nxdomain: u64,
    pub forwarded: u64,
    pub forward_failures: u64,
    pub refused: u64,
    pub malformed: u64,
}

impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;

    fn add(self, other: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            queries: self.queries + other.queries,
            answered: self.answered + other.answered,
            nxdomain: self.nxdomain + other.nxdomain,
            forwarded: self.forwarded + other.forwarded,
            forward_failures: self.forward_failures + other.forward_failures,
            refused: self.refused + other.refused,
            malformed: self.malformed + other.malformed,
        }
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            queries: get(&self.queries),
            answered: get(&self.answered),
            nxdomain: get(&self.nxdomain),
            forwarded: get(&self.forwarded),
            forward_failures: get(&self.forward_failures),
            refused: get(&self.refused),
            malformed: get(&self.malformed),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Answers requests from the index, forwarding the rest: the full path.
#[derive(Clone)]
pub struct Handler {
    index: Arc<SharedIndex>,
    config: Arc<DnsConfig>,
    upstreams: Arc<Vec<SocketAddr>>,
    timeout: Duration,
    /// Orders each answer's records differently (a counter stepped per query).
    seed: Arc<AtomicU64>,
    stats: Arc<Stats>,
}

impl Handler {
    pub fn new(
        index: Arc<SharedIndex>,
        config: Arc<DnsConfig>,
        upstreams: Vec<SocketAddr>,
        stats: Arc<Stats>,
        seed: u64,
    ) -> Self {
        let timeout = Duration::from_millis(config.forward_timeout_ms.max(1));
        Handler { index, config, upstreams: Arc::new(upstreams), timeout, seed: Arc::new(AtomicU64::new(seed)), stats }
    }

    fn forwarding(&self) -> bool {
        !self.upstreams.is_empty()
    }

    fn resolve(&self, name: &str, qtype: QType, qclass: u16) -> Resolution {
        let seed = self.seed.fetch_add(SEED_STEP, Ordering::Relaxed);
        let index = self.index.read();
        resolve(&index, &self.config, name, qtype, qclass, seed)
    }

    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        metadata: Metadata,
        sections: [Vec<Record>; 3],
    ) -> ResponseInfo {
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let [answers, authority, additional] = &sections;
        let response = builder.build(metadata, answers.iter(), authority.iter(), std::iter::empty(), additional.iter());
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "DNS response not sent");
                failed(request)
            }
        }
    }

    async fn send_code<R: ResponseHandler>(&self, request: &Request, handle: R, code: ResponseCode) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        metadata.recursion_available = self.forwarding();
        self.send(request, handle, metadata, [Vec::new(), Vec::new(), Vec::new()]).await
    }

    async fn send_answer<R: ResponseHandler>(&self, request: &Request, handle: R, answer: Answer) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer.authoritative;
        metadata.recursion_available = self.forwarding();
        metadata.response_code = match answer.rcode {
            Rcode::NoError => ResponseCode::NoError,
            Rcode::NxDomain => ResponseCode::NXDomain,
            Rcode::Refused => ResponseCode::Refused,
        };
        let sections = [records(&answer.answers), records(&answer.authority), records(&answer.additional)];
        self.send(request, handle, metadata, sections).await
    }

    async fn send_forwarded<R: ResponseHandler>(&self, request: &Request, handle: R) -> ResponseInfo {
        if !self.forwarding() {
            bump(&self.stats.refused);
            return self.send_code(request, handle, ResponseCode::Refused).await;
        }
        bump(&self.stats.forwarded);
        let Some(reply) = forward(&self.upstreams, self.timeout, request.as_slice(), request.metadata.id).await else {
            bump(&self.stats.forward_failures);
            return self.send_code(request, handle, ResponseCode::ServFail).await;
        };
        let mut metadata = reply.metadata;
        metadata.id = request.metadata.id;
        // The reply is re-encoded for this client: its size limit, not the upstream's, decides
        // truncation.
        metadata.truncation = false;
        let Message { answers, authorities, additionals, .. } = reply;
        self.send(request, handle, metadata, [answers, authorities, additionals]).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, handle: R) -> ResponseInfo {
        bump(&self.stats.queries);
        if request.metadata.op_code != OpCode::Query {
            return self.send_code(request, handle, ResponseCode::NotImp).await;
        }
        let Ok(info) = request.request_info() else {
            bump(&self.stats.malformed);
            return self.send_code(request, handle, ResponseCode::FormErr).await;
        };
        let name = info.query.name().to_string();
        let qtype = QType::from_code(u16::from(info.query.query_type()));
        let qclass = u16::from(info.query.query_class());
        match self.resolve(&name, qtype, qclass) {
            Resolution::Answer(answer) => {
                bump(&self.stats.answered);
                if answer.rcode == Rcode::NxDomain {
                    bump(&self.stats.nxdomain);
                }
                self.send_answer(request, handle, answer).await
            }
            Resolution::Forward => self.send_forwarded(request, handle).await,
        }
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
}

/// EDNS in the response when the request had it: the payload size both sides accept.
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(edns)
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(format!("{text}.")).ok()
}

/// The core's records in hickory's form; a name hickory refuses (none the index makes) is left out.
fn records(rrs: &[Rr]) -> Vec<Record> {
    rrs.iter().filter_map(record).collect()
}

fn record(rr: &Rr) -> Option<Record> {
    let data = match &rr.data {
        RData::A(ip) => HickoryRData::A(A(*ip)),
        RData::Aaaa(ip) => HickoryRData::AAAA(AAAA(*ip)),
        RData::Srv { priority, weight, port, target } => {
            HickoryRData::SRV(SRV::new(*priority, *weight, *port, name(target)?))
        }
        RData::Ns(target) => HickoryRData::NS(NS(name(target)?)),
        RData::Soa { mname, rname, serial, refresh, retry, expire, minimum } => HickoryRData::SOA(SOA::new(
            name(mname)?,
            name(rname)?,
            *serial,
            i32::try_from(*refresh).unwrap_or(i32::MAX),
            i32::try_from(*retry).unwrap_or(i32::MAX),
            i32::try_from(*expire).unwrap_or(i32::MAX),
            *minimum,
        )),
    };
    Some(Record::from_rdata(name(&rr.name)?, rr.ttl, data))
}

/// The first reply of `upstreams` in turn, each given `timeout`.
async fn forward(upstreams: &[SocketAddr], timeout: Duration, query: &[u8], id: u16) -> Option<Message> {
    for upstream in upstreams {
        match tokio::time::timeout(timeout, ask_upstream(*upstream, query, id)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(error)) => debug!(%upstream, %error, "upstream failed"),
            Err(_) => debug!(%upstream, "upstream timed out"),
        }
    }
    None
}

async fn ask_upstream(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the reply to this query (a late reply, garbage) is ignored.
        let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
        if reply.metadata.id != id {
            continue;
        }
        if reply.metadata.truncation {
            return ask_upstream_tcp(upstream, query).await;
        }
        return Ok(reply);
    }
}

async fn ask_upstream_tcp(upstream: SocketAddr, query: &[u8]) -> io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let reply_len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut reply).await?;
    Message::from_vec(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The sockets a running server is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// How many times a free port for UDP is taken before TCP finds the same port free too.
const BIND_ATTEMPTS: usize = 16;
/// Queries the fast path hands to the full path and that wait for it; beyond this they are
/// dropped, as a UDP server drops what it cannot keep up with, and the client asks again.
const DEFERRED_QUEUE: usize = 1024;

/// Binds `threads` UDP sockets and a TCP listener on `listen` (the same port for all, also
/// when `listen` asks for port 0).
pub async fn bind(listen: SocketAddr, threads: usize) -> io::Result<(Vec<std::net::UdpSocket>, TcpListener, Bound)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = bind_udp(listen, threads)?;
        let udp_addr = udp[0].local_addr()?;
        match TcpListener::bind(udp_addr).await {
            Ok(tcp) => {
                let tcp_addr = tcp.local_addr()?;
                return Ok((udp, tcp, Bound { udp: udp_addr, tcp: tcp_addr }));
            }
            // With a fixed port there is nothing to retry.
            Err(error) if listen.port() != 0 => return Err(error),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no port free for both UDP and TCP")))
}

/// A running server: the UDP threads, the full path for the queries they hand over, and
/// hickory-server on TCP. Dropping it stops everything (the threads are joined); [`stop`]
/// also gives TCP connections a grace period.
///
/// [`stop`]: DnsServer::stop
pub struct DnsServer {
    udp: UdpLoops,
    /// The one task that answers deferred UDP queries (and its own per-query tasks).
    deferred: JoinSet<()>,
    tcp: Server<Handler>,
    stats: Arc<Stats>,
}

impl DnsServer {
    /// Starts serving bound sockets; the UDP threads answer what they can and hand the rest
    /// to `handler`, which also serves TCP. `seed` orders records.
    pub fn start(
        handler: Handler,
        udp: Vec<std::net::UdpSocket>,
        tcp: TcpListener,
        seed: u64,
    ) -> io::Result<DnsServer> {
        let (defer, deferred_queries) = mpsc::channel(DEFERRED_QUEUE);
        let udp = UdpLoops::start(udp, &handler.index, &handler.config, handler.forwarding(), defer, seed)?;
        let reply_socket = udp.reply_socket().ok_or_else(|| io::Error::other("no UDP socket to serve"))?;
        let mut deferred = JoinSet::new();
        deferred.spawn(answer_deferred(handler.clone(), reply_socket, deferred_queries));
        let stats = Arc::clone(&handler.stats);
        let mut tcp_server = Server::new(handler);
        tcp_server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        Ok(DnsServer { udp, deferred, tcp: tcp_server, stats })
    }

    /// What the server has done so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot() + self.udp.stats()
    }

    /// Stops the UDP threads and the full path at once, and TCP within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.udp.stop();
        self.deferred.shutdown().await;
        if tokio::time::timeout(grace, self.tcp.shutdown_gracefully()).await.is_err() {
            warn!("DNS server did not stop within {grace:?}; its TCP tasks are aborted");
        }
    }
}

/// Answers the queries the UDP threads defer, each in its own task so a slow upstream does
/// not hold up the others; ends when the threads are gone.
async fn answer_deferred(
    handler: Handler,
    socket: Arc<std::net::UdpSocket>,
    mut queries: mpsc::Receiver<DeferredQuery>,
) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            query = queries.recv() => match query {
                Some(query) => {
                    in_flight.spawn(answer_in_full(handler.clone(), Arc::clone(&socket), query));
                }
                None => break,
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The full path for one UDP query, as hickory-server handles a UDP request: too short for a
/// header is dropped, an unreadable body is answered FORMERR, responses are ignored (answering
/// them would let a forged source bounce packets between servers), the rest goes to [`Handler`].
pub async fn answer_in_full(handler: Handler, socket: Arc<std::net::UdpSocket>, query: DeferredQuery) {
    let mut decoder = BinDecoder::new(&query.packet);
    let Ok(header) = Header::read(&mut decoder) else { return };
    let responder = UdpResponder { socket, client: query.client };
    let request = match Request::from_bytes(query.packet, query.client, Protocol::Udp) {
        Ok(request) => request,
        Err(error) => {
            debug!(%error, "malformed DNS query");
            let mut metadata = Metadata::response_from_request(&header.metadata);
            metadata.response_code = ResponseCode::FormErr;
            let _ = responder.send(&header_only(metadata));
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return;
    }
    handler.handle_request::<_, TokioTime>(&request, responder).await;
}

/// A response without sections.
fn header_only(metadata: Metadata) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12);
    let header = Header { metadata, counts: HeaderCounts::default() };
    // Twelve bytes into a vector: nothing can fail.
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// Encodes a response for UDP: cut (TC set) at the client's EDNS payload size, or 512 bytes
/// without EDNS. A response that cannot be encoded becomes SERVFAIL, as in hickory-server.
pub fn encode_for_udp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> (ResponseInfo, Vec<u8>) {
    let limit = response.edns().map_or(PLAIN_UDP_LIMIT as u16, Edns::max_payload);
    let mut metadata = Metadata::new(response.metadata().id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let mut bytes = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(limit);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => (info, bytes),
        Err(error) => {
            warn!(%error, "DNS response not encodable");
            let info = ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() });
            (info, header_only(metadata))
        }
    }
}

/// Sends the full path's responses to one UDP client from the server's socket. That socket
/// is in blocking mode for its thread, so sends here ask the kernel not to wait: a response
/// that does not fit in the send buffer now is dropped, as a congested network would.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<std::net::UdpSocket>,
    client: SocketAddr,
}

impl UdpResponder {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let to = SockaddrStorage::from(self.client);
        sendto(self.socket.as_raw_fd(), bytes, &to, MsgFlags::MSG_DONTWAIT).map_err(|error| {
            debug!(%error, client = %self.client, "DNS response not sent");
            io::Error::from(error)
        })?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode_for_udp(response);
        self.send(&bytes)?;
        Ok(info)
    }
}

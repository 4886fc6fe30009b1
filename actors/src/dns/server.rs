//! The DNS server's network shell: hickory-server on one UDP socket and one TCP listener,
//! answering from the shared [`Index`] and forwarding names outside the served zones.
//!
//! - Answers come from [`resolve`] under a read lock of the index, held only while the answer
//!   is computed (never across an `.await`). The actor applies the feed's changes to the same
//!   index in place under the write lock, so a change costs what it touches rather than a
//!   copy of the whole index, and is visible to the next query.
//! - UDP answers larger than the client's limit (512 bytes, or its EDNS payload size) are cut
//!   with the TC bit set by hickory's encoder; TCP carries the whole answer.
//! - Out-of-zone questions are forwarded as received (same id, same EDNS) to each upstream in
//!   turn, each within the forward timeout; a truncated UDP reply is asked again over TCP.
//!   When every upstream fails the answer is SERVFAIL. With no upstreams forwarding is off:
//!   out-of-zone questions are REFUSED and RA is clear.
//! - Malformed packets never reach this handler as a panic: hickory answers FORMERR when the
//!   header is readable and drops the packet otherwise; a request with no or several
//!   questions, or another opcode, is answered FORMERR or NOTIMP here.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData as HickoryRData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::debug;

use super::core::answer::{Answer, QType, RData, Rcode, Resolution, Rr, resolve};
use super::core::{DnsConfig, Index};

/// The index as the actor and the server share it.
pub type SharedIndex = Arc<RwLock<Index>>;

/// How long an idle TCP connection is kept.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest UDP payload this server offers or accepts in EDNS (the 2020 flag day value
/// avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Outgoing responses buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Counters of what the server did, read by the actor's status.
#[derive(Debug, Default)]
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

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Answers requests from the index, forwarding the rest.
pub struct Handler {
    index: SharedIndex,
    config: Arc<DnsConfig>,
    upstreams: Arc<Vec<SocketAddr>>,
    timeout: Duration,
    /// Orders each answer's records differently (a counter stepped per query).
    seed: AtomicU64,
    stats: Arc<Stats>,
}

impl Handler {
    pub fn new(
        index: SharedIndex,
        config: Arc<DnsConfig>,
        upstreams: Vec<SocketAddr>,
        stats: Arc<Stats>,
        seed: u64,
    ) -> Self {
        let timeout = Duration::from_millis(config.forward_timeout_ms.max(1));
        Handler { index, config, upstreams: Arc::new(upstreams), timeout, seed: AtomicU64::new(seed), stats }
    }

    fn forwarding(&self) -> bool {
        !self.upstreams.is_empty()
    }

    fn resolve(&self, name: &str, qtype: QType, qclass: u16) -> Resolution {
        let seed = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        // A poisoned lock means the actor panicked mid-update; its restart rebuilds the index,
        // and until then the last state is still the best answer there is.
        let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let qtype = qtype_of(info.query.query_type());
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

fn qtype_of(record_type: RecordType) -> QType {
    match record_type {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::SRV => QType::Srv,
        RecordType::SOA => QType::Soa,
        RecordType::NS => QType::Ns,
        RecordType::ANY => QType::Any,
        other => QType::Other(u16::from(other)),
    }
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

/// Binds UDP and TCP on `listen` (the same port for both, also when `listen` asks for port 0).
pub async fn bind(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener, Bound)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(listen).await?;
        let udp_addr = udp.local_addr()?;
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

/// Starts serving `handler` on bound sockets; the returned server stops with
/// [`Server::shutdown_gracefully`] (or when dropped, which aborts its tasks).
pub fn serve(handler: Handler, udp: UdpSocket, tcp: TcpListener) -> Server<Handler> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    server
}

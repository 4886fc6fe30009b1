//! The UDP fast path's shell: `threads` sockets bound to the same address (SO_REUSEPORT lets
//! the kernel spread clients over them), each read by its own OS thread in batches: one
//! blocking `recvmmsg` takes up to [`BATCH`] datagrams, one `sendmmsg` sends their replies.
//!
//! - A thread answers plain queries ([`parse_plain_query`]) from its own cache of
//!   [`Prepared`] responses, so a hit takes no lock and allocates nothing; a miss resolves
//!   under the index's read lock and prepares the response for next time.
//! - Whatever the fast path does not answer — unusual packets, names to forward, responses
//!   that may need truncation — is deferred: handed over a bounded channel to the full path
//!   ([`answer_in_full`]), which answers it on the same socket exactly as before.
//! - The cache is dropped whenever the index's generation moves ([`SharedIndex::update`]), so
//!   a changed name is never answered stale; it holds at most [`CACHE_CAPACITY`] responses
//!   and starts over when full.
//! - Batches because both system calls cost more than answering a query from the cache: under
//!   load a batch of `n` queries costs two system calls instead of `2n`. `recvmmsg` waits with
//!   `MSG_WAITFORONE`, so it returns as soon as one datagram is there (taking only those
//!   already queued behind it): a lone query is answered at once, as before. Replies are
//!   written into a buffer per datagram allocated once per thread; a reply `sendmmsg` fails
//!   to send is logged (debug) and skipped, and the rest of the batch is sent again.
//! - Blocking threads rather than tokio tasks because a batch then costs two system calls
//!   and no scheduler work; they stop when [`UdpLoops`] is stopped or dropped: a flag, then
//!   `shutdown(SHUT_RD)` on each socket, which wakes a blocked `recvmmsg`, then a join.
//!
//! [`answer_in_full`]: super::server::answer_in_full

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrStorage, recvmmsg, sendmmsg,
    setsockopt, sockopt,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::core::DnsConfig;
use super::core::answer::{QType, Resolution, resolve};
use super::core::wire::{
    HEADER_LEN, MAX_KEY_LEN, PLAIN_UDP_LIMIT, PlainQuery, Prepared, cache_key, parse_plain_query, prepare, qname_text,
    write_reply,
};
use super::server::{SEED_STEP, SharedIndex, Stats, StatsSnapshot};

/// Prepared responses one thread keeps (about 150 bytes each).
pub const CACHE_CAPACITY: usize = 131_072;
/// The socket receive buffer asked for: a burst of queries waits there while the thread is
/// off the CPU. The default (208 KiB, about 180 queries) overflowed under dnsperf's 500
/// queries in flight, dropping queries that NSD (which asks for 1 MiB too) kept.
const RECEIVE_QUEUE_BYTES: usize = 1 << 20;
/// Room for any UDP datagram, so a large one reaches the full path whole.
const RECEIVE_BUFFER: usize = 65_536;
/// Datagrams one `recvmmsg` takes at most, and replies one `sendmmsg` sends. 32 already
/// spreads the two system calls over 32 queries; more would hold the first reply of a full
/// batch longer for little gain.
pub const BATCH: usize = 32;
/// Three response code bits of the flags the fast path counts.
const RCODE_NXDOMAIN: u16 = 3;

/// A query the fast path leaves to the full path.
#[derive(Debug)]
pub struct DeferredQuery {
    pub packet: Vec<u8>,
    pub client: SocketAddr,
}

/// `count` UDP sockets on `listen` (SO_REUSEPORT when more than one; the later ones take the
/// port the first got when `listen` asks for port 0).
pub fn bind_udp(listen: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let reuse_port = count > 1;
    let first = udp_socket(listen, reuse_port)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(udp_socket(bound, reuse_port)?);
    }
    Ok(sockets)
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = nix::sys::socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max, and the default is all that is
    // left then.
    if let Err(error) = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_QUEUE_BYTES) {
        debug!(%error, "DNS UDP receive buffer left at the default");
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(UdpSocket::from(fd))
}

/// The running UDP threads.
pub struct UdpLoops {
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<Arc<UdpSocket>>,
    stats: Vec<Arc<Stats>>,
    stop: Arc<AtomicBool>,
}

impl UdpLoops {
    /// Starts one thread per socket. `recursion_available` is whether the server forwards
    /// (the RA bit of its answers); deferred queries go to `defer`.
    pub fn start(
        sockets: Vec<UdpSocket>,
        index: &Arc<SharedIndex>,
        config: &Arc<DnsConfig>,
        recursion_available: bool,
        defer: mpsc::Sender<DeferredQuery>,
        seed: u64,
    ) -> io::Result<UdpLoops> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = UdpLoops { threads: Vec::new(), sockets: Vec::new(), stats: Vec::new(), stop };
        for (number, socket) in sockets.into_iter().enumerate() {
            let socket = Arc::new(socket);
            let stats = Arc::new(Stats::default());
            let fast = FastPath {
                socket: Arc::clone(&socket),
                index: Arc::clone(index),
                config: Arc::clone(config),
                recursion_available,
                defer: defer.clone(),
                stats: Arc::clone(&stats),
                stop: Arc::clone(&loops.stop),
                cache: Cache::default(),
                // Threads start apart so their rotations differ.
                seed: seed.wrapping_add((number as u64).wrapping_mul(SEED_STEP.rotate_left(17))),
            };
            loops.sockets.push(socket);
            loops.stats.push(stats);
            // On error `loops` is dropped, which stops the threads already started.
            let thread = std::thread::Builder::new().name(format!("dns-udp-{number}")).spawn(move || fast.run())?;
            loops.threads.push(thread);
        }
        Ok(loops)
    }

    /// The first socket, from which the full path sends its UDP responses.
    pub fn reply_socket(&self) -> Option<Arc<UdpSocket>> {
        self.sockets.first().cloned()
    }

    /// What the threads have answered.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.iter().fold(StatsSnapshot::default(), |sum, stats| sum + stats.snapshot())
    }

    /// Stops the threads and waits for them; their sockets close with the last reference.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for socket in &self.sockets {
            // Linux wakes a blocked receive on an unconnected UDP socket even though it
            // reports ENOTCONN; the thread then sees the flag.
            let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a DNS UDP thread panicked");
            }
        }
        self.sockets.clear();
    }
}

impl Drop for UdpLoops {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One thread's prepared responses, valid for one generation of the index.
#[derive(Default)]
struct Cache {
    generation: u64,
    entries: HashMap<Box<[u8]>, Prepared>,
}

impl Cache {
    /// Forgets everything when the index changed since the responses were prepared.
    fn follow(&mut self, generation: u64) {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
        }
    }

    fn insert(&mut self, key: &[u8], prepared: Prepared) {
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(key.into(), prepared);
    }
}

/// One thread's socket and what it answers from.
struct FastPath {
    socket: Arc<UdpSocket>,
    index: Arc<SharedIndex>,
    config: Arc<DnsConfig>,
    recursion_available: bool,
    defer: mpsc::Sender<DeferredQuery>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    cache: Cache,
    /// Stepped per query: orders records like the full path's seed.
    seed: u64,
}

impl FastPath {
    fn run(mut self) {
        let mut batch = Batch::new();
        let fd = self.socket.as_raw_fd();
        while !self.stop.load(Ordering::Acquire) {
            let received = match batch.receive(fd) {
                Ok(received) => received,
                Err(Errno::EINTR) => continue,
                Err(error) => {
                    if !self.stop.load(Ordering::Acquire) {
                        warn!(%error, "DNS UDP receive failed");
                    }
                    continue;
                }
            };
            // After `shutdown` the receive returns empty datagrams from no one: stop before
            // reading them.
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Every datagram of the batch had arrived by now, so an index change finished
            // before any of them arrived is seen.
            self.cache.follow(self.index.generation());
            let mut replies = 0;
            let mut nxdomain = 0;
            for slot in 0..received {
                let Some(client) = batch.clients[slot] else { continue };
                let packet = &batch.packets[slot * RECEIVE_BUFFER..][..batch.lens[slot]];
                let out = &mut batch.replies[replies * PLAIN_UDP_LIMIT..][..PLAIN_UDP_LIMIT];
                if let Some((len, rcode)) = self.answer(packet, &client, out) {
                    batch.reply_lens[replies] = len;
                    batch.reply_to[replies] = Some(client);
                    replies += 1;
                    nxdomain += u64::from(rcode == RCODE_NXDOMAIN);
                }
            }
            add(&self.stats.queries, replies as u64);
            add(&self.stats.answered, replies as u64);
            add(&self.stats.nxdomain, nxdomain);
            batch.send(fd, replies);
        }
    }

    /// Writes the reply to `packet` from `client` into `out` when the fast path answers it,
    /// returning its length and response code; defers it to the full path otherwise.
    fn answer(&mut self, packet: &[u8], client: &SockaddrStorage, out: &mut [u8]) -> Option<(usize, u16)> {
        let client = socket_addr(client)?;
        // Port 0 cannot be answered (hickory-server drops these too).
        if client.port() == 0 {
            return None;
        }
        let Some(query) = parse_plain_query(packet) else { return self.defer(packet, client) };
        self.seed = self.seed.wrapping_add(SEED_STEP);
        let mut key_buffer = [0u8; MAX_KEY_LEN];
        let key_len = cache_key(packet, &query, &mut key_buffer);
        let key = &key_buffer[..key_len];
        if !self.cache.entries.contains_key(key) {
            let Some(prepared) = self.prepare(packet, &query) else { return self.defer(packet, client) };
            self.cache.insert(key, prepared);
        }
        let prepared = self.cache.entries.get(key)?;
        let Some(len) = write_reply(packet, &query, prepared, self.seed, out) else {
            return self.defer(packet, client);
        };
        Some((len, prepared.rcode()))
    }

    /// The response to `query` from the index, when the fast path can serve it.
    fn prepare(&self, packet: &[u8], query: &PlainQuery) -> Option<Prepared> {
        let name = qname_text(packet, query);
        let qtype = QType::from_code(query.qtype);
        let resolution = resolve(&self.index.read(), &self.config, &name, qtype, query.qclass, self.seed);
        let Resolution::Answer(answer) = resolution else { return None };
        prepare(&answer, &packet[HEADER_LEN..HEADER_LEN + query.name_len], self.recursion_available)
    }

    /// Hands the query to the full path (nothing for the fast path to send).
    fn defer<T>(&self, packet: &[u8], client: SocketAddr) -> Option<T> {
        let query = DeferredQuery { packet: packet.to_vec(), client };
        if self.defer.try_send(query).is_err() {
            debug!(%client, "full path busy: DNS query dropped");
        }
        None
    }
}

fn add(counter: &AtomicU64, count: u64) {
    if count > 0 {
        counter.fetch_add(count, Ordering::Relaxed);
    }
}

/// The client's address, when it is an IP one.
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// One thread's buffers for a batch of datagrams and their replies, allocated once (the
/// kernel's headers hold pointers, so a batch never leaves its thread).
pub(super) struct Batch {
    /// [`BATCH`] slots of [`RECEIVE_BUFFER`] bytes, one per datagram.
    packets: Vec<u8>,
    lens: [usize; BATCH],
    clients: [Option<SockaddrStorage>; BATCH],
    receive_headers: MultiHeaders<SockaddrStorage>,
    /// [`BATCH`] slots of [`PLAIN_UDP_LIMIT`] bytes, one per reply.
    replies: Vec<u8>,
    reply_lens: [usize; BATCH],
    reply_to: [Option<SockaddrStorage>; BATCH],
    send_headers: MultiHeaders<SockaddrStorage>,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            // Zeroed allocations: the kernel maps pages in as datagrams first touch them.
            packets: vec![0; BATCH * RECEIVE_BUFFER],
            lens: [0; BATCH],
            clients: [None; BATCH],
            receive_headers: MultiHeaders::preallocate(BATCH, None),
            replies: vec![0; BATCH * PLAIN_UDP_LIMIT],
            reply_lens: [0; BATCH],
            reply_to: [None; BATCH],
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Waits for at least one datagram and takes it with those queued behind it, up to
    /// [`BATCH`]: how many.
    fn receive(&mut self, fd: RawFd) -> nix::Result<usize> {
        let mut slots = self.packets.chunks_exact_mut(RECEIVE_BUFFER);
        let mut buffers: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let received = recvmmsg(fd, &mut self.receive_headers, &mut buffers, MsgFlags::MSG_WAITFORONE, None)?;
        let mut count = 0;
        for datagram in received {
            self.lens[count] = datagram.bytes;
            self.clients[count] = datagram.address;
            count += 1;
        }
        Ok(count)
    }

    /// Writes `reply` for `client` into the next free reply slot (tests).
    #[cfg(test)]
    pub(super) fn push_reply(&mut self, count: usize, reply: &[u8], client: SockaddrStorage) {
        self.replies[count * PLAIN_UDP_LIMIT..][..reply.len()].copy_from_slice(reply);
        self.reply_lens[count] = reply.len();
        self.reply_to[count] = Some(client);
    }

    /// Sends the first `count` replies, with as few `sendmmsg` calls as the kernel allows: it
    /// stops at a reply it cannot send (and reports the error on the next call), so each call
    /// starts where the last one stopped, and a reply that fails first is logged and skipped.
    pub(super) fn send(&mut self, fd: RawFd, count: usize) {
        let mut slots = self.replies.chunks_exact(PLAIN_UDP_LIMIT);
        let replies: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|slot| {
            let reply = slots.next().unwrap_or_default();
            [IoSlice::new(&reply[..self.reply_lens[slot].min(reply.len())])]
        });
        let mut next = 0;
        while next < count {
            let no_control: [ControlMessage<'_>; 0] = [];
            let result = sendmmsg(
                fd,
                &mut self.send_headers,
                &replies[next..count],
                &self.reply_to[next..count],
                no_control,
                MsgFlags::empty(),
            );
            let error = match result {
                Ok(sent) => match sent.count() {
                    // Never for a non-empty batch; skipping the first keeps the loop finite.
                    0 => Errno::EIO,
                    sent => {
                        next += sent;
                        continue;
                    }
                },
                Err(Errno::EINTR) => continue,
                Err(error) => error,
            };
            if let Some(client) = &self.reply_to[next] {
                debug!(%error, %client, "DNS response not sent");
            }
            next += 1;
        }
    }
}

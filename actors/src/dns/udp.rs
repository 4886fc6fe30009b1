//! The UDP fast path's shell: `threads` sockets bound to the same address (SO_REUSEPORT lets
//! the kernel spread clients over them), each read by its own OS thread with blocking
//! `recv_from`/`send_to`.
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
//! - Blocking threads rather than tokio tasks because a query then costs two system calls
//!   and no scheduler work; they stop when [`UdpLoops`] is stopped or dropped: a flag, then
//!   `shutdown(SHUT_RD)` on each socket, which wakes a blocked `recv_from`, then a join.
//!
//! [`answer_in_full`]: super::server::answer_in_full

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, setsockopt, sockopt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::core::DnsConfig;
use super::core::answer::{QType, Resolution, resolve};
use super::core::wire::{
    HEADER_LEN, MAX_KEY_LEN, PLAIN_UDP_LIMIT, PlainQuery, Prepared, cache_key, parse_plain_query, prepare, qname_text,
    write_reply,
};
use super::server::{SEED_STEP, SharedIndex, Stats, StatsSnapshot, bump};

/// Prepared responses one thread keeps (about 150 bytes each).
pub const CACHE_CAPACITY: usize = 131_072;
/// The socket receive buffer asked for: a burst of queries waits there while the thread is
/// off the CPU. The default (208 KiB, about 180 queries) overflowed under dnsperf's 500
/// queries in flight, dropping queries that NSD (which asks for 1 MiB too) kept.
const RECEIVE_QUEUE_BYTES: usize = 1 << 20;
/// Room for any UDP datagram, so a large one reaches the full path whole.
const RECEIVE_BUFFER: usize = 65_536;
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
        let mut packet = vec![0u8; RECEIVE_BUFFER];
        while !self.stop.load(Ordering::Acquire) {
            match self.socket.recv_from(&mut packet) {
                Ok((len, client)) => {
                    if !self.stop.load(Ordering::Acquire) {
                        self.answer(&packet[..len], client);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if !self.stop.load(Ordering::Acquire) {
                        warn!(%error, "DNS UDP receive failed");
                    }
                }
            }
        }
    }

    fn answer(&mut self, packet: &[u8], client: SocketAddr) {
        // Port 0 cannot be answered (hickory-server drops these too).
        if client.port() == 0 {
            return;
        }
        let Some(query) = parse_plain_query(packet) else { return self.defer(packet, client) };
        self.seed = self.seed.wrapping_add(SEED_STEP);
        self.cache.follow(self.index.generation());
        let mut key_buffer = [0u8; MAX_KEY_LEN];
        let key_len = cache_key(packet, &query, &mut key_buffer);
        let key = &key_buffer[..key_len];
        if !self.cache.entries.contains_key(key) {
            let Some(prepared) = self.prepare(packet, &query) else { return self.defer(packet, client) };
            self.cache.insert(key, prepared);
        }
        let Some(prepared) = self.cache.entries.get(key) else { return };
        let mut reply = [0u8; PLAIN_UDP_LIMIT];
        let Some(len) = write_reply(packet, &query, prepared, self.seed, &mut reply) else {
            return self.defer(packet, client);
        };
        bump(&self.stats.queries);
        bump(&self.stats.answered);
        if prepared.rcode() == RCODE_NXDOMAIN {
            bump(&self.stats.nxdomain);
        }
        if let Err(error) = self.socket.send_to(&reply[..len], client) {
            debug!(%error, %client, "DNS response not sent");
        }
    }

    /// The response to `query` from the index, when the fast path can serve it.
    fn prepare(&self, packet: &[u8], query: &PlainQuery) -> Option<Prepared> {
        let name = qname_text(packet, query);
        let qtype = QType::from_code(query.qtype);
        let resolution = resolve(&self.index.read(), &self.config, &name, qtype, query.qclass, self.seed);
        let Resolution::Answer(answer) = resolution else { return None };
        prepare(&answer, &packet[HEADER_LEN..HEADER_LEN + query.name_len], self.recursion_available)
    }

    fn defer(&self, packet: &[u8], client: SocketAddr) {
        let query = DeferredQuery { packet: packet.to_vec(), client };
        if self.defer.try_send(query).is_err() {
            debug!(%client, "full path busy: DNS query dropped");
        }
    }
}

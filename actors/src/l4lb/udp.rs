//! A UDP VIP's proxy: datagrams from each client address go to one backend through a session
//! (a connected socket of its own), and the backend's replies go back to the client from the
//! VIP's address. A session ends after the idle timeout without a datagram either way, or
//! when its backend has been removed and the drain timeout has passed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_supervisors::Rng;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::pool::{ActiveGuard, Pool};
use super::tcp::{ProxySettings, stopped};

/// The largest datagram carried (the UDP maximum over IPv4).
const MAX_DATAGRAM: usize = 65_507;

/// A client's session, as the receiving loop sees it.
struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the proxy's start of the client's last datagram.
    last_seen: Arc<AtomicU64>,
    /// Set by the session's task when it ends, so a datagram that arrives before the task is
    /// reaped opens a new session instead of vanishing into a closed one.
    ended: Arc<AtomicBool>,
}

/// What a session's task shares with the receiving loop.
struct SessionTask {
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    guard: ActiveGuard,
    last_seen: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    epoch: Instant,
    settings: ProxySettings,
}

/// Receives until `stop` turns true, then retires every backend and lets the sessions drain.
pub(crate) async fn serve(
    socket: UdpSocket,
    pool: Arc<Pool>,
    settings: ProxySettings,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = Arc::new(socket);
    let epoch = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut tasks: JoinSet<SocketAddr> = JoinSet::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                // A client whose session was already replaced keeps the new one.
                if let Ok(client) = ended
                    && sessions.get(&client).is_some_and(|s| s.ended.load(Ordering::Acquire))
                {
                    sessions.remove(&client);
                }
            }
            received = listener.recv_from(&mut buffer) => {
                let (len, client) = match received {
                    Ok(received) => received,
                    // ICMP errors from earlier sends surface here on some systems; nothing to do.
                    Err(error) => { debug!(%error, "receive failed"); continue; }
                };
                let Some(session) = session_for(client, &mut sessions, &mut tasks, &listener, &pool, settings, &mut rng, epoch).await else {
                    continue;
                };
                session.last_seen.store(millis_since(epoch), Ordering::Relaxed);
                if let Err(error) = session.upstream.send(&buffer[..len]).await {
                    debug!(%client, %error, "datagram to the backend failed");
                }
            }
        }
    }
    drop(listener);
    pool.retire_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The client's live session, or a new one to a backend picked by the policy.
#[allow(clippy::too_many_arguments)]
async fn session_for<'a>(
    client: SocketAddr,
    sessions: &'a mut HashMap<SocketAddr, Session>,
    tasks: &mut JoinSet<SocketAddr>,
    listener: &Arc<UdpSocket>,
    pool: &Pool,
    settings: ProxySettings,
    rng: &mut Rng,
    epoch: Instant,
) -> Option<&'a Session> {
    let live = sessions.get(&client).is_some_and(|s| !s.ended.load(Ordering::Acquire));
    if !live {
        if tasks.len() >= settings.max_connections {
            debug!(%client, limit = settings.max_connections, "datagram dropped: the VIP's session limit is reached");
            return None;
        }
        let guard = pool.choose(rng.next_u64(), &[])?;
        let upstream = match connect(guard.slot().addr()).await {
            Ok(upstream) => Arc::new(upstream),
            Err(error) => {
                warn!(backend = %guard.slot().backend, %error, "cannot open a UDP session");
                return None;
            }
        };
        let (last_seen, ended) = (Arc::new(AtomicU64::new(millis_since(epoch))), Arc::new(AtomicBool::new(false)));
        let task = SessionTask {
            listener: Arc::clone(listener),
            upstream: Arc::clone(&upstream),
            client,
            guard,
            last_seen: Arc::clone(&last_seen),
            ended: Arc::clone(&ended),
            epoch,
            settings,
        };
        tasks.spawn(task.run());
        sessions.insert(client, Session { upstream, last_seen, ended });
    }
    sessions.get(&client)
}

/// A socket on an ephemeral port, connected to the backend so only its replies reach it.
async fn connect(backend: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = if backend.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(backend).await?;
    Ok(socket)
}

impl SessionTask {
    /// Carries replies back until the session is idle or drained; returns the client address.
    async fn run(self) -> SocketAddr {
        let slot = Arc::clone(self.guard.slot());
        tokio::select! {
            () = self.replies() => {}
            () = slot.drained(self.settings.drain_timeout) => {}
        }
        self.ended.store(true, Ordering::Release);
        self.client
    }

    async fn replies(&self) {
        let idle = self.settings.udp_idle_timeout;
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let last = Duration::from_millis(self.last_seen.load(Ordering::Relaxed));
            let deadline = self.epoch + last + idle;
            match tokio::time::timeout_at(deadline, self.upstream.recv(&mut buffer)).await {
                Ok(Ok(len)) => {
                    self.last_seen.store(millis_since(self.epoch), Ordering::Relaxed);
                    if let Err(error) = self.listener.send_to(&buffer[..len], self.client).await {
                        debug!(client = %self.client, %error, "reply to the client failed");
                    }
                }
                // The backend's port is closed (ICMP port unreachable): the session is over.
                Ok(Err(error)) => {
                    debug!(backend = %self.guard.slot().backend, %error, "UDP session ended");
                    return;
                }
                // The client may have sent since the deadline was computed; look again.
                Err(_)
                    if Instant::now()
                        < self.epoch + Duration::from_millis(self.last_seen.load(Ordering::Relaxed)) + idle => {}
                Err(_) => return,
            }
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

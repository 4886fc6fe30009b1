//! A TCP VIP's proxy: a listener on the VIP's address whose connections each go to a backend
//! picked by the policy.
//!
//! The proxy is one task run by the load balancer actor (in the actor's `JoinSet`, so it ends
//! with the actor and its end is seen); it owns its connections' tasks in a `JoinSet` of its
//! own, so stopping it can never leave a connection behind.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::core::Backend;
use super::pool::{ActiveGuard, Pool, next_random};

/// How many backends one new connection tries before it is closed.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How long the accept loop pauses after an accept error (out of file descriptors, most
/// likely), so it does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// The settings a proxy works with, from `L4lbConfig`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProxySettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) udp_idle_timeout: Duration,
    pub(crate) zero_copy: bool,
    pub(crate) max_connections: usize,
}

/// Accepts until `stop` turns true, then stops listening, retires every backend and waits for
/// the connections to drain (each ends by itself, or at the drain timeout).
pub(crate) async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    settings: ProxySettings,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) if connections.len() >= settings.max_connections => {
                    debug!(limit = settings.max_connections, "connection refused: the VIP's connection limit is reached");
                    drop(client);
                }
                Ok((client, _)) => {
                    connections.spawn(proxy(client, Arc::clone(&pool), settings, rng.next_u64()));
                }
                Err(error) => {
                    warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    pool.retire_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves when the actor asks the proxy to stop, or is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not be held across an await (it is not `Send`).
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One client connection: a backend, then the relay until either side ends or the backend
/// has been drained.
async fn proxy(client: TcpStream, pool: Arc<Pool>, settings: ProxySettings, random: u64) {
    let Some((guard, upstream)) = connect(&pool, settings.connect_timeout, random).await else {
        return;
    };
    // Small writes (requests, acknowledgements) must not wait for Nagle's timer on either hop.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let slot = Arc::clone(guard.slot());
    tokio::select! {
        result = super::relay::relay(client, upstream, settings.zero_copy) => {
            if let Err(error) = result {
                debug!(backend = %slot.backend, %error, "connection ended with an error");
            }
        }
        () = slot.drained(settings.drain_timeout) => {
            debug!(backend = %slot.backend, "connection closed: its backend was removed and the drain timeout passed");
        }
    }
    drop(guard);
}

/// Connects to a backend, trying up to [`MAX_CONNECT_ATTEMPTS`] different ones; `None` when
/// none answered (the client's connection is then closed).
async fn connect(pool: &Pool, timeout: Duration, mut random: u64) -> Option<(ActiveGuard, TcpStream)> {
    let mut tried: Vec<Backend> = Vec::new();
    while tried.len() < MAX_CONNECT_ATTEMPTS {
        let Some(guard) = pool.choose(random, &tried) else {
            debug!(tried = tried.len(), "no backend left to try");
            return None;
        };
        random = next_random(random);
        let backend = guard.slot().backend;
        match tokio::time::timeout(timeout, TcpStream::connect(guard.slot().addr())).await {
            Ok(Ok(upstream)) => return Some((guard, upstream)),
            Ok(Err(error)) => debug!(%backend, %error, "backend refused; trying another"),
            Err(_) => debug!(%backend, ?timeout, "backend did not answer in time; trying another"),
        }
        tried.push(backend);
    }
    None
}

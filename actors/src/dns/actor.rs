//! The DNS actor: owns the index and the server. It applies the discovery feed's updates
//! ([`DnsMsg::View`]) to the index the server reads, so a change is served by the next query
//! after the message is handled (each update also makes the UDP threads drop the responses
//! they prepared); the server runs from `pre_start` to `post_stop` (its UDP threads are
//! joined there, or when the state is dropped), so a restart by the supervisor rebinds the
//! sockets and waits for the feed's next `Reset`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{ChildKind, ChildSpec, Node, StartContext, Started};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tracing::{info, warn};

use super::core::resolv::parse_resolv_conf;
use super::core::{DnsConfig, Index, http_api};
use super::server::{Bound, DnsServer, Handler, SharedIndex, Stats, StatsSnapshot, bind};
use crate::discovery::ViewUpdate;

/// The DNS actor's name in the node's registry (the discovery feed sends it [`DnsMsg::View`]).
pub const DNS_ACTOR: &str = "dns";
/// Where upstream resolvers come from when none are configured.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long a stopping server may take to finish the queries in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The DNS actor's messages.
pub enum DnsMsg {
    /// An update of the cluster view, from the discovery feed.
    View(ViewUpdate),
    /// Where the server listens and what it has done.
    Status(RpcReplyPort<DnsStatus>),
    /// A Mesos-DNS HTTP API `GET` (`/v1/hosts/...`), answered as status and JSON body.
    Http { path: String, reply: RpcReplyPort<(u16, Value)> },
}

/// What [`DnsMsg::Status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsStatus {
    /// The bound UDP and TCP addresses.
    pub bound: Bound,
    /// The upstreams out-of-zone names are forwarded to (empty: forwarding is off).
    pub upstreams: Vec<SocketAddr>,
    /// The registry revision of the last view update applied.
    pub revision: u64,
    /// How many names have records.
    pub names: usize,
    pub stats: StatsSnapshot,
}

/// What the actor starts with.
pub struct DnsArgs {
    pub node: Node,
    pub config: DnsConfig,
}

/// The DNS actor.
#[derive(Debug, Default)]
pub struct Dns;

pub struct DnsState {
    node: Node,
    config: Arc<DnsConfig>,
    index: Arc<SharedIndex>,
    /// `None` once stopped.
    server: Option<DnsServer>,
    bound: Bound,
    upstreams: Vec<SocketAddr>,
}

/// The configured upstreams, or resolv.conf's without this server's own address.
fn upstreams(config: &DnsConfig, bound: Bound) -> Vec<SocketAddr> {
    if let Some(upstreams) = &config.upstreams {
        return upstreams.clone();
    }
    match std::fs::read_to_string(RESOLV_CONF) {
        Ok(text) => parse_resolv_conf(&text, &[bound.udp, config.listen]),
        Err(error) => {
            warn!(%error, path = RESOLV_CONF, "no upstream resolvers: forwarding is off");
            Vec::new()
        }
    }
}

impl Actor for Dns {
    type Msg = DnsMsg;
    type State = DnsState;
    type Arguments = DnsArgs;

    async fn pre_start(&self, myself: ActorRef<DnsMsg>, args: DnsArgs) -> Result<DnsState, ActorProcessingErr> {
        let DnsArgs { node, config } = args;
        let config = Arc::new(config);
        let index = Arc::new(SharedIndex::new(Index::new(&config)));
        let threads = config.threads.max(1);
        let (udp, tcp, bound) = bind(config.listen, threads).await?;
        let upstreams = upstreams(&config, bound);
        let stats = Arc::new(Stats::default());
        let handler =
            Handler::new(Arc::clone(&index), Arc::clone(&config), upstreams.clone(), stats, node.random_u64());
        let server = DnsServer::start(handler, udp, tcp, node.random_u64())?;
        node.register(DNS_ACTOR, myself.get_cell())?;
        info!(udp = %bound.udp, tcp = %bound.tcp, threads, upstreams = upstreams.len(), domain = %config.domain, "DNS server listening");
        Ok(DnsState { node, config, index, server: Some(server), bound, upstreams })
    }

    async fn post_stop(&self, myself: ActorRef<DnsMsg>, state: &mut DnsState) -> Result<(), ActorProcessingErr> {
        state.node.unregister(DNS_ACTOR, &myself.get_cell());
        if let Some(server) = state.server.take() {
            server.stop(SHUTDOWN_GRACE).await;
        }
        Ok(())
    }

    async fn handle(&self, _: ActorRef<DnsMsg>, msg: DnsMsg, state: &mut DnsState) -> Result<(), ActorProcessingErr> {
        match msg {
            DnsMsg::View(update) => state.apply(&update),
            DnsMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            DnsMsg::Http { path, reply } => {
                let _ = reply.send(http_api(&state.index.read(), &state.config, &path));
            }
        }
        Ok(())
    }
}

impl DnsState {
    fn apply(&mut self, update: &ViewUpdate) {
        self.index.update(|index| index.apply_update(update));
    }

    fn status(&self) -> DnsStatus {
        let index = self.index.read();
        DnsStatus {
            bound: self.bound,
            upstreams: self.upstreams.clone(),
            revision: index.revision(),
            names: index.name_count(),
            stats: self.server.as_ref().map(DnsServer::stats).unwrap_or_default(),
        }
    }
}

/// The DNS server as a child of the node's discovery subtree, subscribed to the node's feed
/// (started before it); not started (OTP's `ignore`)
/// when `config.enabled` is false.
pub fn dns_child(config: DnsConfig) -> ChildSpec {
    ChildSpec::new(DNS_ACTOR, ChildKind::Worker, move |ctx: StartContext| {
        let config = config.clone();
        async move {
            if !config.enabled {
                return Ok(Started::Ignore);
            }
            let args = DnsArgs { node: ctx.node.clone(), config };
            let (actor, _) = Actor::spawn_linked(None, Dns, args, ctx.supervisor.clone()).await?;
            let dns = actor.clone();
            crate::discovery::feed::subscribe(
                &ctx,
                Arc::new(move |update| dns.send_message(DnsMsg::View(update)).map_err(|_| ())),
            );
            Ok(Started::Running(actor.get_cell()))
        }
    })
}

//! Clients of a running cluster: a QUIC transport under an operator's certificate, connected
//! to the masters, and a registry client on top. Used by `flotilla registry ...`, the
//! benchmarks and the multi-process tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_actors::launcher::protocol::{LAUNCHER_NAME, LauncherReply, LauncherRequest};
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse};
use flotilla_actors::marathon::protocol::{MARATHON_NAME, MarathonCall};
use flotilla_actors::mesos::protocol::{FILES_RELAY_NAME, FileReply, MASTER_NAME, MasterQuery, MasterState, ReadFile};
use flotilla_actors::registry::client::RegistryClient;
use flotilla_supervisors::{Node, NodeId};
use flotilla_transport::core::wire::RemoteError;
use flotilla_transport::identity::{NodeCredentials, load_ca_cert};
use flotilla_transport::quic::QuicSetup;
use flotilla_transport::tls::QuicTuning;
use flotilla_transport::{Address, AdmissionPolicy, CallError, Network, RemoteCall, Transport, TransportConfig};

use crate::node::{TransportPlan, entropy_seed};

/// How long a call waits before asking a just-elected leader again for an actor it has not
/// started yet.
const LEADER_RETRY: Duration = Duration::from_millis(200);

/// How long one master is given to answer a request for the leading master's state.
const STATE_ATTEMPT: Duration = Duration::from_secs(2);

/// A QUIC transport plan for node `name` with the credentials in `pki_dir`, listening on
/// `listen`, keeping sessions with `peers`.
pub fn quic_plan(
    pki_dir: &Path,
    name: &str,
    listen: SocketAddr,
    peers: Vec<(String, Address)>,
) -> anyhow::Result<TransportPlan> {
    let credentials = NodeCredentials::load(pki_dir, name)
        .with_context(|| format!("loading {name}'s certificate from {}", pki_dir.display()))?;
    let ca = load_ca_cert(pki_dir).with_context(|| format!("loading ca.crt from {}", pki_dir.display()))?;
    let identity = credentials.identity.clone();
    let policy = AdmissionPolicy::cluster(identity.cluster.clone());
    let network = move || {
        let setup = QuicSetup {
            bind: listen,
            credentials: credentials.clone(),
            ca: ca.clone(),
            policy: policy.clone(),
            tuning: QuicTuning::default(),
        };
        Ok(Network::Quic(Box::new(setup)))
    };
    Ok(TransportPlan { identity, config: TransportConfig::default(), network: Arc::new(network), peers })
}

/// No master answered a client command in time: the outcome of a write or a membership change
/// is unknown (the binary exits with status 3).
#[derive(Debug)]
pub struct NoAnswer(pub String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// A connected client: keep it alive as long as the registry client is used.
pub struct ClusterClient {
    pub node: Node,
    pub transport: Transport,
    pub registry: RegistryClient,
}

impl ClusterClient {
    /// Connects as `name` (credentials in `pki_dir`) to `masters`.
    pub async fn connect(pki_dir: &Path, name: &str, masters: &[(String, SocketAddr)]) -> anyhow::Result<Self> {
        let peers = masters.iter().map(|(id, address)| (id.clone(), Address::Udp(*address))).collect();
        let listen = if masters.iter().all(|(_, address)| address.ip().is_loopback()) {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let plan = quic_plan(pki_dir, name, listen, peers)?;
        let node = Node::builder(NodeId::new(name)?).seed(entropy_seed()).start().await?;
        let network = (plan.network)()?;
        let transport = Transport::start(&node, plan.identity, plan.config, network, None)
            .await
            .context("starting the client's transport")?;
        for (peer, address) in &plan.peers {
            transport.connect(peer, address.clone());
        }
        let ids = masters.iter().map(|(id, _)| id.clone()).collect();
        let registry = RegistryClient::new(transport.clone(), ids, node.random_u64());
        Ok(ClusterClient { node, transport, registry })
    }

    pub async fn close(self) {
        self.transport.shutdown().await;
        self.node.shutdown();
    }
}

impl ClusterClient {
    /// The leading master's state: asked of every master at once until one (the leader, which
    /// runs the master actor) answers, until `deadline`. Not in turn: a call to a master that
    /// is down waits out its whole attempt (the transport keeps it for a reconnection), and
    /// a dead master listed before the leader would delay every answer by that much.
    pub async fn master_state(&self, deadline: Duration) -> anyhow::Result<MasterState> {
        let until = tokio::time::Instant::now() + deadline;
        let mut last = String::from("no master listed");
        loop {
            let asks: Vec<_> = self
                .registry
                .masters()
                .iter()
                .map(|master| {
                    Box::pin(async move {
                        let ask = self.transport.call(master, MASTER_NAME, &MasterQuery::State, STATE_ATTEMPT);
                        ask.await.map_err(|error| format!("{master}: {error}"))
                    })
                })
                .collect();
            if !asks.is_empty() {
                match futures::future::select_ok(asks).await {
                    Ok((state, _)) => return Ok(state),
                    Err(error) => last = error,
                }
            }
            if tokio::time::Instant::now() >= until {
                bail!("no leading master answered within {deadline:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a request to the launcher on the leading master.
    pub async fn launcher(&self, request: &LauncherRequest, deadline: Duration) -> anyhow::Result<LauncherReply> {
        self.call_leader(LAUNCHER_NAME, "the launcher", request, deadline).await
    }

    /// A Marathon REST request answered by the service scheduler on the leading master.
    pub async fn marathon(&self, request: RestRequest, deadline: Duration) -> anyhow::Result<RestResponse> {
        self.call_leader(MARATHON_NAME, "the service scheduler", &MarathonCall(request), deadline).await
    }

    /// Calls the leader-only actor `name` on the leading master. A leader just elected answers
    /// its state before its leader-only actors have started (the call finds no such actor):
    /// the call is tried again until `deadline`, as a user retrying by hand would.
    async fn call_leader<Q: RemoteCall>(
        &self,
        name: &str,
        what: &str,
        request: &Q,
        deadline: Duration,
    ) -> anyhow::Result<Q::Reply> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let leader = self.master_state(left).await?.leader;
            match self.transport.call(&leader, name, request, left).await {
                Err(CallError::Remote(RemoteError::UnknownActor { .. }))
                    if tokio::time::Instant::now() + LEADER_RETRY < until =>
                {
                    tokio::time::sleep(LEADER_RETRY).await;
                }
                answer => return answer.with_context(|| format!("asking {what} on {leader}")),
            }
        }
    }

    /// Part of a task's sandbox file, read through `master`'s files relay: the bytes and the
    /// file's size.
    pub async fn read_file(&self, master: &str, read: &ReadFile, deadline: Duration) -> anyhow::Result<(Vec<u8>, u64)> {
        match self.transport.call(master, FILES_RELAY_NAME, read, deadline).await {
            Ok(FileReply::Chunk { data, size, .. }) => Ok((data, size)),
            Ok(FileReply::Refused(reason)) => bail!("refused: {reason}"),
            Err(error) => Err(anyhow::Error::new(NoAnswer(format!("reading through {master}: {error}")))),
        }
    }
}

//! A small cluster of transports for tests, over QUIC on loopback or over SimNet, so the
//! same test body runs on both.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_supervisors::{Node, NodeId};
use flotilla_transport::identity::ClusterCa;
use flotilla_transport::quic::QuicSetup;
use flotilla_transport::tls::{self, QuicTuning};
use flotilla_transport::{
    Address, AdmissionPolicy, ClusterId, Network, RemoteCall, RemoteMessage, ReplyPort, Role, SimNet, Transport,
    TransportConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

/// Which network a cluster runs on.
#[derive(Clone)]
pub enum Net {
    Quic(Arc<ClusterCa>),
    Sim(SimNet),
}

impl Net {
    pub fn quic() -> Self {
        tls::install_default_provider();
        Net::Quic(Arc::new(ClusterCa::generate(&cluster_id()).expect("CA")))
    }

    pub fn sim(seed: u64) -> Self {
        Net::Sim(SimNet::new(seed))
    }

    pub fn simnet(&self) -> Option<&SimNet> {
        match self {
            Net::Sim(net) => Some(net),
            Net::Quic(_) => None,
        }
    }
}

pub fn cluster_id() -> ClusterId {
    ClusterId::new("test").unwrap()
}

/// One node of a test cluster.
pub struct Member {
    pub node: Node,
    pub transport: Transport,
    pub echo: Echo,
}

pub async fn start_member(net: &Net, id: &str, config: TransportConfig) -> Member {
    start_member_with(net, id, config, AdmissionPolicy::cluster(cluster_id())).await
}

/// A member whose QUIC endpoint admits peers by `policy`.
pub async fn start_member_with(net: &Net, id: &str, config: TransportConfig, policy: AdmissionPolicy) -> Member {
    let node = Node::builder(NodeId::new(id).unwrap()).seed(id.len() as u64 * 7919).start().await.unwrap();
    let (network, identity) = match net {
        Net::Quic(ca) => {
            let credentials = ca.issue(id, Role::Master).unwrap();
            let identity = credentials.identity.clone();
            let setup = QuicSetup {
                bind: "127.0.0.1:0".parse().unwrap(),
                credentials,
                ca: ca.cert_der().clone(),
                policy,
                tuning: QuicTuning::default(),
            };
            (Network::Quic(Box::new(setup)), identity)
        }
        Net::Sim(sim) => {
            let identity =
                flotilla_transport::PeerIdentity { cluster: cluster_id(), node: id.into(), role: Role::Master };
            (Network::Sim(sim.clone()), identity)
        }
    };
    let transport = Transport::start(&node, identity, config, network, None).await.unwrap();
    let echo = Echo::start(&transport).await;
    Member { node, transport, echo }
}

pub fn address(member: &Member) -> Address {
    match member.transport.local_addr() {
        Some(addr) => Address::Udp(addr),
        None => Address::Sim,
    }
}

/// Starts `ids` and connects every node to every other (so every pair dials both ways at once).
pub async fn cluster(net: &Net, ids: &[&str], config: TransportConfig) -> Vec<Member> {
    let mut members = Vec::new();
    for id in ids {
        members.push(start_member(net, id, config.clone()).await);
    }
    for a in &members {
        for b in &members {
            if a.transport.node() != b.transport.node() {
                a.transport.connect(b.transport.node(), address(b));
            }
        }
    }
    for a in &members {
        for b in &members {
            if a.transport.node() != b.transport.node() {
                let (t, peer) = (a.transport.clone(), b.transport.node().to_owned());
                wait_for(&format!("{} connected to {peer}", t.node()), || t.is_connected(&peer)).await;
            }
        }
    }
    members
}

/// Closes every member's transport gracefully.
pub async fn shutdown_all(members: &[Member]) {
    for member in members {
        member.transport.shutdown().await;
    }
}

/// Waits until `condition` holds, checking every millisecond, for at most 20 s (of virtual
/// time on SimNet). Panics with `what` if it never does.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `body` on QUIC (real time) or on SimNet (paused, virtual time).
pub fn run<F, Fut>(net: impl FnOnce() -> Net, paused: bool, body: F)
where
    F: FnOnce(Net) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if paused {
        builder.start_paused(true);
    }
    let runtime = builder.build().unwrap();
    runtime.block_on(async move { body(net()).await });
}

/// A note cast between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub from: String,
    pub seq: u64,
}

impl RemoteMessage for Note {
    const TAG: u32 = 1;
}

/// A question: the answer is `0 + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask(pub u64);

impl RemoteMessage for Ask {
    const TAG: u32 = 2;
}

impl RemoteCall for Ask {
    type Reply = u64;
}

/// A request the echo actor never answers (it drops the port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignore;

impl RemoteMessage for Ignore {
    const TAG: u32 = 3;
}

impl RemoteCall for Ignore {
    type Reply = ();
}

pub enum EchoMsg {
    Note(Note),
    Ask(Ask, ReplyPort<u64>),
    Ignore(Ignore, ReplyPort<()>),
}

/// An exported actor that records every note it gets and answers every ask.
#[derive(Clone)]
pub struct Echo {
    pub actor: ActorRef<EchoMsg>,
    pub notes: Arc<Mutex<Vec<Note>>>,
}

struct EchoActor;

impl Actor for EchoActor {
    type Msg = EchoMsg;
    type State = Arc<Mutex<Vec<Note>>>;
    type Arguments = Arc<Mutex<Vec<Note>>>;

    async fn pre_start(&self, _: ActorRef<EchoMsg>, notes: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(notes)
    }

    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        msg: EchoMsg,
        notes: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EchoMsg::Note(note) => notes.lock().unwrap().push(note),
            EchoMsg::Ask(Ask(n), reply) => {
                reply.send(n + 1);
            }
            EchoMsg::Ignore(_, reply) => drop(reply),
        }
        Ok(())
    }
}

impl Echo {
    pub async fn start(transport: &Transport) -> Echo {
        let notes = Arc::new(Mutex::new(Vec::new()));
        let (actor, _) = Actor::spawn(None, EchoActor, Arc::clone(&notes)).await.unwrap();
        transport.export::<Note, EchoMsg>("echo", &actor, EchoMsg::Note);
        transport.export_call::<Ask, EchoMsg>("echo", &actor, EchoMsg::Ask);
        transport.export_call::<Ignore, EchoMsg>("echo", &actor, EchoMsg::Ignore);
        Echo { actor, notes }
    }

    pub fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }
}

/// A quick failure detector for tests that lose peers on purpose.
pub fn fast_detection() -> TransportConfig {
    let heartbeat = Duration::from_millis(100);
    TransportConfig {
        heartbeat_interval: heartbeat,
        detector: flotilla_transport::core::detector::DetectorConfig::Timeout { after: Duration::from_millis(600) },
        handshake_timeout: Duration::from_secs(1),
        ..TransportConfig::default()
    }
}

//! The registry of three masters (control-plane subtrees on SimNet with simulated disks, on
//! virtual time) seen by clients on other nodes: writes through any master, linearizable reads,
//! watches, the leader-only subtree following the leadership, and a seeded battery of
//! partitions and crashes whose client history must be linearizable and lose no acknowledged
//! write. A failing seed is printed; `FLOTILLA_REGISTRY_SEEDS=N` runs more.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::control_plane::leadership::{LeaderContext, LeaderTree};
use flotilla_actors::control_plane::{ControlPlanePlan, control_plane_spec};
use flotilla_actors::election::core::{MembershipChange, MembershipError, PeerId, RaftConfig};
use flotilla_actors::registry::actor::RegistryConfig;
use flotilla_actors::registry::actor::RegistryMsg;
use flotilla_actors::registry::client::{ClientError, RegistryClient};
use flotilla_actors::registry::core::{Command, EventKind, RegistryError, Txn};
use flotilla_actors::registry::protocol::{
    REGISTRY_NAME, RegistryFailure, RegistryReply, RegistryRequest, WatchBody, WatchNotice,
};
use flotilla_actors::storage::{RaftStorage, SimDisk};
use flotilla_supervisors::{
    ChildSpec, Node, Rng, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec,
};
use flotilla_transport::{Address, Fault, NodeSet, ReplyPort, Role, SimNet, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

mod common;
use common::{SharedDisk, start_transport, wait_until};

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const LONG: Duration = Duration::from_secs(30);

/// Snapshots every 64 entries, so that the tests compact the log and stream snapshots.
const SNAPSHOT_EVERY: u64 = 64;

/// Which masters ran their leader-only subtree, and in which term, as the subtree saw it.
type LeaderLog = Arc<Mutex<Vec<(String, u64, bool)>>>;

/// A worker of the leader-only subtree that records when it starts and stops.
struct Marker;

impl Actor for Marker {
    type Msg = ();
    type State = (LeaderLog, String, u64);
    type Arguments = (LeaderLog, String, u64);

    async fn pre_start(&self, _: ActorRef<()>, args: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        args.0.lock().unwrap().push((args.1.clone(), args.2, true));
        Ok(args)
    }

    async fn post_stop(&self, _: ActorRef<()>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.0.lock().unwrap().push((state.1.clone(), state.2, false));
        Ok(())
    }
}

fn leader_tree(log: LeaderLog, me: &str) -> LeaderTree {
    let me = me.to_owned();
    Arc::new(move |context: LeaderContext| {
        let (log, me) = (Arc::clone(&log), me.clone());
        let marker = ChildSpec::worker("marker", move |_| (Marker, (Arc::clone(&log), me.clone(), context.term.0)));
        SupervisorSpec::new(SupervisorFlags::strategy(Strategy::OneForAll)).child(marker)
    })
}

struct Master {
    id: &'static str,
    transport: Transport,
    root: SupervisorRef,
    node: Node,
}

async fn start_master(net: &SimNet, id: &'static str, seed: u64, disk: &SharedDisk, log: &LeaderLog) -> Master {
    start_master_as(net, id, false, seed, disk, log).await
}

/// A master of the cluster of [`MASTERS`]; with `joining`, one more master that joins it (it
/// dials them; they reach it over its sessions).
async fn start_master_as(
    net: &SimNet,
    id: &'static str,
    joining: bool,
    seed: u64,
    disk: &SharedDisk,
    log: &LeaderLog,
) -> Master {
    let (node, transport) = start_transport(net, id, Role::Master, seed).await;
    for peer in MASTERS.iter().filter(|peer| **peer != id) {
        transport.connect(peer, Address::Sim);
    }
    let current = transport.clone();
    let disk = disk.clone();
    let plan = ControlPlanePlan {
        me: PeerId::from(id),
        peers: MASTERS.iter().filter(|peer| **peer != id).map(|peer| PeerId::from(*peer)).collect(),
        joining,
        raft: RaftConfig::default(),
        registry: RegistryConfig { snapshot_every: SNAPSHOT_EVERY, ..RegistryConfig::default() },
        tick_interval: Duration::from_millis(10),
        storage: Arc::new(move || Ok(Box::new(disk.clone()) as Box<dyn RaftStorage + Send>)),
        transport: Arc::new(move || Some(current.clone())),
        leader_tree: leader_tree(Arc::clone(log), id),
    };
    let root = Supervisor::spawn(node.clone(), control_plane_spec(plan), None).await.unwrap();
    Master { id, transport, root, node }
}

impl Master {
    /// Power loss: every actor stops at once and the disk keeps only what was synced.
    fn crash(self, disk: &SharedDisk) {
        self.transport.abort();
        self.root.cell().kill();
        self.node.shutdown();
        disk.0.lock().unwrap().crash();
    }
}

struct Cluster {
    net: SimNet,
    masters: Vec<Option<Master>>,
    disks: Vec<SharedDisk>,
    log: LeaderLog,
    seed: u64,
}

impl Cluster {
    async fn start(seed: u64) -> Cluster {
        let net = SimNet::new(seed);
        let log = LeaderLog::default();
        let mut cluster = Cluster { net, masters: Vec::new(), disks: Vec::new(), log, seed };
        for (i, id) in MASTERS.iter().enumerate() {
            let disk = SharedDisk(Arc::new(Mutex::new(SimDisk::new(Rng::seeded(seed ^ i as u64)))));
            let master = start_master(&cluster.net, id, seed.wrapping_add(i as u64), &disk, &cluster.log).await;
            cluster.masters.push(Some(master));
            cluster.disks.push(disk);
        }
        cluster
    }

    async fn client(&self, id: &str, masters: &[&str]) -> (Transport, RegistryClient) {
        self.client_as(id, Role::Agent, masters).await
    }

    async fn client_as(&self, id: &str, role: Role, masters: &[&str]) -> (Transport, RegistryClient) {
        let (_, transport) = start_transport(&self.net, id, role, self.seed ^ 0xc11e).await;
        for master in MASTERS {
            transport.connect(master, Address::Sim);
        }
        let masters = masters.iter().map(|m| (*m).to_owned()).collect();
        // Client ids scope request ids: each client needs its own (production clients draw
        // a random one).
        let client_id =
            id.bytes().fold(self.seed.rotate_left(17), |hash, byte| hash.wrapping_mul(31) ^ u64::from(byte));
        let client = RegistryClient::new(transport.clone(), masters, client_id);
        (transport, client)
    }

    async fn crash(&mut self, index: usize) {
        if let Some(master) = self.masters[index].take() {
            master.crash(&self.disks[index]);
        }
    }

    async fn restart(&mut self, index: usize) {
        let seed = self.seed.wrapping_add(100 + index as u64);
        let master = start_master(&self.net, MASTERS[index], seed, &self.disks[index], &self.log).await;
        self.masters[index] = Some(master);
    }

    /// The leader all running masters agree on, asked of each master's registry in its own
    /// process (no client session in the way).
    async fn agreed_leader_locally(&self) -> Option<String> {
        let mut leaders = Vec::new();
        for master in self.masters.iter().flatten() {
            let registry = master.node.whereis_ref::<RegistryMsg>(REGISTRY_NAME)?;
            let (port, answer) = ReplyPort::local();
            registry.send_message(RegistryMsg::Request(RegistryRequest::Status, port)).ok()?;
            match tokio::time::timeout(Duration::from_secs(1), answer).await {
                Ok(Ok(RegistryReply::Status(status))) => leaders.push(status.leader?),
                _ => return None,
            }
        }
        let first = leaders.first()?.clone();
        leaders.iter().all(|leader| *leader == first).then_some(first)
    }

    /// The leader all running masters agree on, asked through `client`.
    async fn agreed_leader(&self, client: &RegistryClient) -> Option<String> {
        let mut leaders = Vec::new();
        for master in self.masters.iter().flatten() {
            let status = client.status_of(master.id).await.ok()?;
            leaders.push(status.leader?);
        }
        let first = leaders.first()?.clone();
        leaders.iter().all(|leader| *leader == first).then_some(first)
    }
}

/// Collects the watch notices sent to it.
struct SinkActor;

impl Actor for SinkActor {
    type Msg = WatchNotice;
    type State = Arc<Mutex<Vec<WatchNotice>>>;
    type Arguments = Arc<Mutex<Vec<WatchNotice>>>;

    async fn pre_start(&self, _: ActorRef<WatchNotice>, seen: Self::State) -> Result<Self::State, ActorProcessingErr> {
        Ok(seen)
    }

    async fn handle(
        &self,
        _: ActorRef<WatchNotice>,
        notice: WatchNotice,
        seen: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        seen.lock().unwrap().push(notice);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn any_master_takes_writes_reads_and_watches_and_only_the_leader_runs_the_leader_subtree() {
    let cluster = Cluster::start(1).await;
    let (transport, mut any) = cluster.client("c1", &MASTERS).await;
    let leader = wait_until("a leader", LONG, async || cluster.agreed_leader(&any).await).await;
    let followers: Vec<&str> = MASTERS.iter().copied().filter(|m| *m != leader).collect();

    // A watch from revision 0 on a follower, streamed to an actor on the client's node.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, _) = Actor::spawn(None, SinkActor, Arc::clone(&seen)).await.unwrap();
    transport.export::<WatchNotice, WatchNotice>("sink", &sink, |notice| notice);
    let mut watcher = RegistryClient::new(transport.clone(), vec![followers[1].to_owned()], 77);
    watcher.watch("/apps/", 0, "sink", LONG).await.expect("watch");

    // A write through a follower is forwarded, committed and acknowledged.
    let mut via_follower = RegistryClient::new(transport.clone(), vec![followers[0].to_owned()], 78);
    let first = via_follower.put("/apps/web", b"v1", LONG).await.expect("write through a follower");
    assert_eq!(first.revision, 1);
    // A linearizable read on the other follower sees it at once.
    let mut other = RegistryClient::new(transport.clone(), vec![followers[1].to_owned()], 79);
    let (revision, kv) = other.get("/apps/web", LONG).await.expect("read");
    assert_eq!((revision, kv.map(|kv| kv.value)), (1, Some(b"v1".to_vec())));

    // Compare-and-set: a stale revision fails and changes nothing; the current one succeeds.
    let stale = any.write(Txn::cas("/apps/web", 0, b"v2".to_vec()), LONG).await.expect("cas");
    assert!(!stale.succeeded);
    let fresh = any.write(Txn::cas("/apps/web", 1, b"v2".to_vec()), LONG).await.expect("cas");
    assert!(fresh.succeeded);
    any.write(Txn::delete("/apps/web"), LONG).await.expect("delete");
    assert_eq!(any.get("/apps/web", LONG).await.expect("read").1, None);

    // An invalid command is refused with the reason, and changes nothing.
    let refused = any.put("", b"x", LONG).await;
    assert!(matches!(refused, Err(ClientError::Refused(_))), "{refused:?}");

    // The watcher saw put, put, delete in revision order.
    let events = wait_until("all events", LONG, async || {
        let events: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|notice| match &notice.body {
                WatchBody::Events(events) => events.clone(),
                _ => Vec::new(),
            })
            .collect();
        (events.len() == 3).then_some(events)
    })
    .await;
    let kinds: Vec<(u64, EventKind)> = events.iter().map(|e| (e.revision, e.kind)).collect();
    assert_eq!(kinds, vec![(1, EventKind::Put), (2, EventKind::Put), (3, EventKind::Delete)]);

    // Exactly one master runs the leader-only subtree: the leader, in its term.
    let log = cluster.log.lock().unwrap().clone();
    let running: Vec<&(String, u64, bool)> = log.iter().filter(|(_, _, started)| *started).collect();
    assert_eq!(running.len(), 1, "{log:?}");
    assert_eq!(running[0].0, leader);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_partitioned_leader_loses_its_subtree_and_a_new_leader_takes_writes() {
    let cluster = Cluster::start(2).await;
    let (_transport, mut client) = cluster.client("c1", &MASTERS).await;
    let old = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    client.put("/k", b"before", LONG).await.expect("write");

    let cut = cluster
        .net
        .inject(Fault::Partition { a: NodeSet::one(old.as_str()), b: NodeSet::All, one_way: false })
        .unwrap();
    let started = tokio::time::Instant::now();
    client.put("/k", b"during", LONG).await.expect("a write while the old leader is cut off");
    assert!(started.elapsed() < Duration::from_secs(5), "failover took {:?}", started.elapsed());
    wait_until("the old leader stops its subtree", LONG, async || {
        let log = cluster.log.lock().unwrap();
        log.iter().any(|(node, _, started)| *node == old && !started).then_some(())
    })
    .await;
    cluster.net.heal(cut);
    let (_, kv) = client.get("/k", LONG).await.expect("read");
    assert_eq!(kv.map(|kv| kv.value), Some(b"during".to_vec()));
}

/// Writes `value` to `key` from `node`'s own leader-only subtree, fenced to `term`.
async fn fenced_put(cluster: &Cluster, node: &str, term: u64, key: &str, value: &[u8]) -> RegistryReply {
    let master = cluster.masters.iter().flatten().find(|master| master.id == node).expect("a running master");
    let registry = master.node.whereis_ref::<RegistryMsg>(REGISTRY_NAME).expect("its registry");
    let command = Command { id: None, txn: Txn::put(key, value.to_vec()), leader_term: Some(term) };
    let (port, answer) = ReplyPort::local();
    registry.send_message(RegistryMsg::Request(RegistryRequest::Write(command), port)).expect("sent");
    tokio::time::timeout(LONG, answer).await.expect("answered in time").expect("answered")
}

fn leader_term(cluster: &Cluster, node: &str) -> u64 {
    let log = cluster.log.lock().unwrap();
    log.iter().rev().find(|(id, _, started)| id == node && *started).map(|(_, term, _)| *term).expect("it led")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deposed_leaders_fenced_write_is_refused_and_its_successors_write_stands() {
    let cluster = Cluster::start(4).await;
    let (_transport, mut client) = cluster.client("c1", &MASTERS).await;
    let old = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    let old_term = wait_until("its subtree starts", LONG, async || {
        let log = cluster.log.lock().unwrap();
        log.iter().find(|(id, _, started)| *id == old && *started).map(|(_, term, _)| *term)
    })
    .await;
    let written = fenced_put(&cluster, &old, old_term, "/app", b"v1").await;
    assert!(matches!(written, RegistryReply::Written(_)), "the leader's own term: {written:?}");

    let cut = cluster
        .net
        .inject(Fault::Partition { a: NodeSet::one(old.as_str()), b: NodeSet::All, one_way: false })
        .unwrap();
    client.put("/app", b"v2", LONG).await.expect("the new leader acknowledges");
    cluster.net.heal(cut);
    let new = wait_until("the old leader follows", LONG, async || {
        cluster.agreed_leader_locally().await.filter(|leader| *leader != old)
    })
    .await;

    let stale = fenced_put(&cluster, &old, old_term, "/app", b"v1 again").await;
    assert!(
        matches!(stale, RegistryReply::Failed(RegistryFailure::Rejected(RegistryError::StaleLeader { fenced, .. })) if fenced == old_term),
        "the deposed leader's write must be refused: {stale:?}"
    );
    let (_, kv) = client.get("/app", LONG).await.expect("read");
    assert_eq!(kv.map(|kv| kv.value), Some(b"v2".to_vec()), "the acknowledged write stands");
    let newer = fenced_put(&cluster, &new, leader_term(&cluster, &new), "/app", b"v3").await;
    assert!(matches!(newer, RegistryReply::Written(_)), "the new leader's fenced write: {newer:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_follower_cut_off_while_the_log_is_compacted_catches_up_from_a_snapshot() {
    let cluster = Cluster::start(3).await;
    let (transport, mut client) = cluster.client("c1", &MASTERS).await;
    let leader = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    let lagging = MASTERS.iter().copied().find(|m| *m != leader).unwrap();
    let behind = client.status_of(lagging).await.expect("status").applied;
    let cut =
        cluster.net.inject(Fault::Partition { a: NodeSet::one(lagging), b: NodeSet::All, one_way: false }).unwrap();
    // Three snapshots' worth of writes: the leader compacts past everything `lagging` has.
    for i in 0..3 * SNAPSHOT_EVERY {
        client.put(&format!("/k/{i}"), format!("{i}").as_bytes(), LONG).await.expect("write");
    }
    let before = client.status_of(&leader).await.expect("status");
    cluster.net.heal(cut);
    let caught_up = wait_until("the cut-off follower catches up", LONG, async || {
        let status = client.status_of(lagging).await.ok()?;
        (status.revision == before.revision).then_some(status)
    })
    .await;
    // The leader had compacted the entries the follower lacked: only a snapshot could bring it
    // here.
    assert!(before.snapshot > behind, "the leader compacted past {behind}: {before:?}");
    assert!(caught_up.snapshot >= before.snapshot, "it installed a snapshot: {caught_up:?}");
    // Its state is the leader's: a read through it alone sees the last write.
    let mut via = RegistryClient::new(transport.clone(), vec![lagging.to_owned()], 4242);
    let last = format!("/k/{}", 3 * SNAPSHOT_EVERY - 1);
    assert_eq!(
        via.get(&last, LONG).await.expect("read").1.map(|kv| kv.value),
        Some(format!("{}", 3 * SNAPSHOT_EVERY - 1).into_bytes())
    );
}

// --- Membership --------------------------------------------------------------------------------

/// The leader that every master of `ids` agrees on, asked through `client`.
async fn leader_among(client: &RegistryClient, ids: &[&str]) -> Option<String> {
    let mut leaders = Vec::new();
    for id in ids {
        leaders.push(client.status_of(id).await.ok()?.leader?);
    }
    let first = leaders.first()?.clone();
    leaders.iter().all(|leader| *leader == first).then_some(first)
}

fn voters(ids: &[&str]) -> Vec<String> {
    let mut voters: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    voters.sort();
    voters
}

fn refusal(outcome: &Result<Vec<String>, ClientError>) -> Option<&MembershipError> {
    match outcome {
        Err(ClientError::Refused(RegistryFailure::Membership(error))) => Some(error),
        _ => None,
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_joining_master_is_added_catches_up_and_the_leader_is_removed_without_losing_a_write() {
    let mut cluster = Cluster::start(6).await;
    let (transport, mut client) = cluster.client_as("operator", Role::Operator, &MASTERS).await;
    transport.connect("m4", Address::Sim);
    let leader = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    assert_eq!(client.members(LONG).await.expect("members"), voters(&MASTERS));

    // Refusals: not an operator, nothing to change, or not a node id.
    let (_agent_transport, mut agent) = cluster.client("agent", &MASTERS).await;
    assert_eq!(agent.members(LONG).await.expect("anyone may list"), voters(&MASTERS));
    let forbidden = agent.change_membership(MembershipChange::Remove(PeerId::from("m1")), LONG).await;
    assert!(matches!(forbidden, Err(ClientError::Refused(RegistryFailure::Forbidden(_)))), "{forbidden:?}");
    let already = client.change_membership(MembershipChange::Add(PeerId::from("m1")), LONG).await;
    assert_eq!(refusal(&already), Some(&MembershipError::AlreadyVoter(PeerId::from("m1"))), "{already:?}");
    let absent = client.change_membership(MembershipChange::Remove(PeerId::from("m9")), LONG).await;
    assert_eq!(refusal(&absent), Some(&MembershipError::NotVoter(PeerId::from("m9"))), "{absent:?}");
    let invalid = client.change_membership(MembershipChange::Add(PeerId::from("Not An Id")), LONG).await;
    assert!(matches!(invalid, Err(ClientError::Refused(RegistryFailure::Rejected(_)))), "{invalid:?}");

    // Writes beyond a snapshot: the leader compacts the log before m4 exists.
    let mut acknowledged = Vec::new();
    for i in 0..2 * SNAPSHOT_EVERY {
        let key = format!("/before/{i}");
        client.put(&key, key.as_bytes(), LONG).await.expect("write");
        acknowledged.push(key);
    }

    // m4 starts as a joiner: outside the configuration it never campaigns (and the leader
    // does not replicate to it until it is added).
    let disk = SharedDisk(Arc::new(Mutex::new(SimDisk::new(Rng::seeded(64)))));
    let m4 = start_master_as(&cluster.net, "m4", true, 640, &disk, &cluster.log).await;
    cluster.masters.push(Some(m4));
    cluster.disks.push(disk);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let joiner = client.status_of("m4").await.expect("m4 answers");
    assert_eq!((joiner.term, joiner.is_leader, joiner.voters.clone()), (0, false, voters(&MASTERS)), "{joiner:?}");

    let added = client.change_membership(MembershipChange::Add(PeerId::from("m4")), LONG).await;
    assert_eq!(added.expect("add m4"), voters(&["m1", "m2", "m3", "m4"]));
    // It caught up from the leader's snapshot (the entries it needed were compacted).
    let target = client.status_of(&leader).await.expect("status").revision;
    let caught_up = wait_until("m4 catches up", LONG, async || {
        let status = client.status_of("m4").await.ok()?;
        (status.revision >= target).then_some(status)
    })
    .await;
    assert!(caught_up.snapshot > 0, "m4 installed a snapshot: {caught_up:?}");
    assert_eq!(caught_up.voters, voters(&["m1", "m2", "m3", "m4"]));

    // Writes continue, also through the new master.
    let mut via_m4 = RegistryClient::new(transport.clone(), vec!["m4".to_owned()], 4444);
    for i in 0..10 {
        let key = format!("/with-m4/{i}");
        via_m4.put(&key, key.as_bytes(), LONG).await.expect("write through m4");
        acknowledged.push(key);
    }
    assert_eq!(via_m4.members(LONG).await.expect("members"), voters(&["m1", "m2", "m3", "m4"]));

    // Remove the leader, asked twice at once: one change at a time, so one is refused.
    let mut twice = RegistryClient::new(transport.clone(), vec![leader.clone()], 5555);
    let mut once = RegistryClient::new(transport.clone(), vec![leader.clone()], 5556);
    let remove = || MembershipChange::Remove(PeerId::from(leader.as_str()));
    let (first, second) = tokio::join!(once.change_membership(remove(), LONG), twice.change_membership(remove(), LONG));
    let remaining: Vec<&str> = ["m1", "m2", "m3", "m4"].into_iter().filter(|id| *id != leader).collect();
    let (done, refused) = if first.is_ok() { (first, second) } else { (second, first) };
    assert_eq!(done.expect("the leader is removed"), voters(&remaining));
    assert!(matches!(refusal(&refused), Some(MembershipError::ChangePending { .. })), "{refused:?}");

    // The others elect a new leader; writes go on and nothing acknowledged is lost.
    let new_leader =
        wait_until("a new leader", LONG, async || leader_among(&client, &remaining).await.filter(|new| *new != leader))
            .await;
    let old = client.status_of(&leader).await.expect("the removed master still answers");
    assert!(!old.is_leader, "{old:?}");
    let mut survivors =
        RegistryClient::new(transport.clone(), remaining.iter().map(|id| (*id).to_owned()).collect(), 6666);
    for i in 0..10 {
        let key = format!("/after/{i}");
        survivors.put(&key, key.as_bytes(), LONG).await.expect("write after removing the leader");
        acknowledged.push(key);
    }
    assert_eq!(survivors.members(LONG).await.expect("members"), voters(&remaining));
    for id in &remaining {
        let mut via = RegistryClient::new(transport.clone(), vec![(*id).to_owned()], 7000 + id.len() as u64);
        for key in &acknowledged {
            let (_, kv) = via.get(key, LONG).await.unwrap_or_else(|e| panic!("read {key} via {id}: {e}"));
            assert_eq!(kv.map(|kv| kv.value), Some(key.as_bytes().to_vec()), "{key} via {id}");
        }
    }

    // The removed leader's subtree stopped; the new leader runs one.
    let log = cluster.log.lock().unwrap().clone();
    assert!(log.iter().any(|(node, _, started)| *node == leader && !started), "{log:?}");
    assert!(log.iter().any(|(node, _, started)| *node == new_leader && *started), "{log:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_membership_change_whose_leader_is_cut_off_is_superseded_and_changes_nothing() {
    let cluster = Cluster::start(7).await;
    let (transport, client) = cluster.client_as("operator", Role::Operator, &MASTERS).await;
    let leader = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    let followers: Vec<&str> = MASTERS.iter().copied().filter(|id| *id != leader).collect();
    // The leader is cut off from the other masters (not from the client): it appends the
    // change but cannot commit it; the others elect a new leader, whose log replaces the
    // entry once the partition heals.
    let cut = cluster
        .net
        .inject(Fault::Partition {
            a: NodeSet::one(leader.as_str()),
            b: NodeSet::of(followers.clone()),
            one_way: false,
        })
        .unwrap();
    let mut direct = RegistryClient::new(transport.clone(), vec![leader.clone()], 8888);
    direct.attempt_timeout = LONG;
    let change = direct.change_membership(MembershipChange::Remove(PeerId::from(followers[0])), LONG);
    let heal = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.net.heal(cut);
    };
    let (outcome, ()) = tokio::join!(change, heal);
    assert!(matches!(outcome, Err(ClientError::Refused(RegistryFailure::Superseded { .. }))), "{outcome:?}");
    let mut any = RegistryClient::new(transport.clone(), MASTERS.iter().map(|id| (*id).to_owned()).collect(), 8889);
    assert_eq!(any.members(LONG).await.expect("members"), voters(&MASTERS));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_leader_whose_disk_fills_up_acknowledges_nothing_more_and_the_others_carry_on() {
    let cluster = Cluster::start(4).await;
    let (transport, mut client) = cluster.client("c1", &MASTERS).await;
    let leader = wait_until("a leader", LONG, async || cluster.agreed_leader(&client).await).await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let key = format!("/before/{i}");
        client.put(&key, key.as_bytes(), LONG).await.expect("write");
        acknowledged.push(key);
    }
    // The leader's disk is full from now on: every persist fails with StorageError::Full, so
    // its election actor fails (and fails again after each restart) and acknowledges nothing.
    let full = MASTERS.iter().position(|m| *m == leader).unwrap();
    let used = cluster.disks[full].0.lock().unwrap().len();
    cluster.disks[full].0.lock().unwrap().set_capacity(Some(used));
    let others: Vec<&str> = MASTERS.iter().copied().filter(|m| *m != leader).collect();
    let mut rest = RegistryClient::new(transport.clone(), others.iter().map(|m| (*m).to_owned()).collect(), 99);
    for i in 0..10 {
        let key = format!("/after/{i}");
        rest.put(&key, key.as_bytes(), LONG).await.expect("the other two masters take writes");
        acknowledged.push(key);
    }
    let new_leader = wait_until("a new leader", LONG, async || {
        let status = rest.status_of(others[0]).await.ok()?;
        status.leader.filter(|leader| *leader != MASTERS[full])
    })
    .await;
    assert_ne!(new_leader, leader);
    // Every acknowledged write is there, read through each of the other two.
    for master in &others {
        let mut via = RegistryClient::new(transport.clone(), vec![(*master).to_owned()], 100 + master.len() as u64);
        for key in &acknowledged {
            let (_, kv) = via.get(key, LONG).await.expect("read");
            assert_eq!(kv.map(|kv| kv.value), Some(key.as_bytes().to_vec()), "{key} via {master}");
        }
    }
    // The full disk holds no partial batch: what it stored still loads.
    let mut disk = cluster.disks[full].0.lock().unwrap();
    disk.set_capacity(None);
    assert!(RaftStorage::load(&mut *disk).is_ok());
}

// --- The seeded battery ----------------------------------------------------------------------

/// A register per key: the sequential specification the client history must match.
#[derive(Clone, Debug, Default)]
struct Registers(BTreeMap<String, Vec<u8>>);

#[derive(Clone, Debug)]
enum Op {
    Put(String, Vec<u8>),
    Get(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Ret {
    Written,
    Value(Option<Vec<u8>>),
}

impl SequentialSpec for Registers {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Put(key, value) => {
                self.0.insert(key.clone(), value.clone());
                Ret::Written
            }
            Op::Get(key) => Ret::Value(self.0.get(key).cloned()),
        }
    }
}

type History = Arc<Mutex<(LinearizabilityTester<u64, Registers>, Vec<(String, Vec<u8>)>)>>;

/// One client: random puts (unique values) and gets on two keys until `stop`. An operation
/// whose outcome is unknown (no master answered in time) stays in flight in the history, and
/// the client continues as a new thread.
async fn client_loop(
    mut client: RegistryClient,
    first_thread: u64,
    mut rng: Rng,
    history: History,
    stop: Arc<Mutex<bool>>,
) {
    let mut thread = first_thread;
    let mut n = 0u64;
    while !*stop.lock().unwrap() {
        n += 1;
        let key = format!("/k{}", rng.below(2));
        let op = if rng.below(2) == 0 { Op::Put(key, format!("{thread}-{n}").into_bytes()) } else { Op::Get(key) };
        history.lock().unwrap().0.on_invoke(thread, op.clone()).expect("one op per thread");
        let outcome = match &op {
            Op::Put(key, value) => client.put(key, value, Duration::from_secs(3)).await.map(|_| Ret::Written),
            Op::Get(key) => {
                client.get(key, Duration::from_secs(3)).await.map(|(_, kv)| Ret::Value(kv.map(|kv| kv.value)))
            }
        };
        match outcome {
            Ok(ret) => {
                let mut history = history.lock().unwrap();
                if let (Op::Put(key, value), Ret::Written) = (&op, &ret) {
                    history.1.push((key.clone(), value.clone()));
                }
                history.0.on_return(thread, ret).expect("in flight");
            }
            // Unknown outcome: leave it in flight and carry on under a fresh thread id.
            Err(_) => thread += 1000,
        }
        tokio::time::sleep(Duration::from_millis(10 + rng.below(40))).await;
    }
}

async fn battery(seed: u64) -> Result<(), String> {
    let mut cluster = Cluster::start(seed).await;
    let mut rng = Rng::seeded(seed);
    let (_probe_transport, probe) = cluster.client("probe", &MASTERS).await;
    wait_until("a first leader", LONG, async || cluster.agreed_leader(&probe).await).await;

    let history: History = Arc::new(Mutex::new((LinearizabilityTester::new(Registers::default()), Vec::new())));
    let stop = Arc::new(Mutex::new(false));
    let mut clients = Vec::new();
    for c in 0..3u64 {
        let (_, client) = cluster.client(&format!("c{c}"), &MASTERS).await;
        let task =
            client_loop(client, c, Rng::seeded(seed ^ ((c + 1) * 7919)), Arc::clone(&history), Arc::clone(&stop));
        clients.push(tokio::spawn(task));
    }

    // Chaos phase: partitions of one master, and crashes that lose unsynced writes.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        let victim = usize::try_from(rng.below(3)).unwrap();
        if rng.below(2) == 0 {
            let cut = cluster
                .net
                .inject(Fault::Partition { a: NodeSet::one(MASTERS[victim]), b: NodeSet::All, one_way: false })
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
            cluster.net.heal(cut);
        } else {
            cluster.crash(victim).await;
            tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
            cluster.restart(victim).await;
        }
    }

    // Heal: a leader within 10 s of simulated time, then stop the clients.
    cluster.net.heal_all();
    let healed = tokio::time::Instant::now();
    wait_until("a leader after healing", Duration::from_secs(10), async || cluster.agreed_leader_locally().await).await;
    let elected_after = healed.elapsed();
    *stop.lock().unwrap() = true;
    for client in clients {
        client.await.map_err(|e| e.to_string())?;
    }

    // No acknowledged write lost: a final linearizable read of each key (recorded in the
    // history, so the tester checks it against every acknowledged put).
    let (reader_transport, mut reader) = cluster.client("reader", &MASTERS).await;
    for key in ["/k0", "/k1"] {
        let thread = 9_999_000 + key.len() as u64 + u64::from(key.as_bytes()[2]);
        history.lock().unwrap().0.on_invoke(thread, Op::Get(key.to_owned())).expect("fresh thread");
        let (_, kv) = reader.get(key, LONG).await.map_err(|e| format!("final read of {key}: {e}"))?;
        history.lock().unwrap().0.on_return(thread, Ret::Value(kv.map(|kv| kv.value))).expect("in flight");
    }
    // Every acknowledged write is in every master's history within 10 s: each master streams
    // its whole history (a watch from revision 0) to an audit sink on the reader's node.
    let acknowledged = history.lock().unwrap().1.clone();
    for master in MASTERS {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sink, _) = Actor::spawn(None, SinkActor, Arc::clone(&seen)).await.map_err(|e| e.to_string())?;
        let name = format!("audit-{master}");
        reader_transport.export::<WatchNotice, WatchNotice>(&name, &sink, |notice| notice);
        let mut auditor = RegistryClient::new(reader_transport.clone(), vec![master.to_owned()], seed ^ 0xa0d1);
        auditor.watch("/", 0, &name, LONG).await.map_err(|e| format!("watch on {master}: {e}"))?;
        let puts_seen = || -> Vec<(String, Vec<u8>)> {
            seen.lock()
                .unwrap()
                .iter()
                .flat_map(|notice| match &notice.body {
                    WatchBody::Events(events) => events.clone(),
                    _ => Vec::new(),
                })
                .filter(|event| event.kind == EventKind::Put)
                .map(|event| (event.kv.key, event.kv.value))
                .collect()
        };
        let missing = || -> Vec<(String, Vec<u8>)> {
            let puts = puts_seen();
            acknowledged.iter().filter(|write| !puts.contains(write)).cloned().collect()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !missing().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                let status = probe.status_of(master).await;
                let lost: Vec<String> =
                    missing().iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))).collect();
                return Err(format!("{master} lacks acknowledged writes {lost:?} after 10 s; its status: {status:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sink.stop(None);
    }

    let history = history.lock().unwrap();
    // The tester searches recursively, one frame per operation: give it a deep stack.
    let tester = history.0.clone();
    let consistent = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || tester.is_consistent())
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the linearizability check panicked".to_owned())?;
    if !consistent {
        return Err(format!("history of {} operations is not linearizable", history.0.len()));
    }
    if history.1.is_empty() {
        return Err("no write was acknowledged at all".to_owned());
    }
    println!(
        "seed {seed}: {} ops, {} acknowledged writes, leader {elected_after:?} after healing",
        history.0.len(),
        history.1.len()
    );
    Ok(())
}

/// `FLOTILLA_REGISTRY_SEED=s` runs seed `s` alone; `FLOTILLA_REGISTRY_SEEDS=n` runs 1..=n.
fn seeds() -> std::ops::RangeInclusive<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|n| n.parse::<u64>().ok());
    match (var("FLOTILLA_REGISTRY_SEED"), var("FLOTILLA_REGISTRY_SEEDS")) {
        (Some(seed), _) => seed..=seed,
        (None, count) => 1..=count.unwrap_or(4),
    }
}

#[test]
fn seeded_partitions_and_crashes_keep_the_history_linearizable_and_lose_no_acknowledged_write() {
    for seed in seeds() {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        if let Err(failure) = runtime.block_on(battery(seed)) {
            panic!("seed {seed} failed: {failure} (rerun it alone with FLOTILLA_REGISTRY_SEED={seed})");
        }
    }
}

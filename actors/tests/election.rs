//! The election actor on a 3-master SimNet cluster with simulated disks, on paused (virtual)
//! time: election, replication in order, failover under a partition, and catch-up after healing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::election::actor::{
    DEFAULT_TICK_INTERVAL, Election, ElectionArgs, ElectionEvent, ElectionMsg, Status,
};
use flotilla_actors::election::core::{Entry, EntryKind, MembershipError, PeerId, RaftConfig, Role};
use flotilla_actors::storage::SimDisk;
use flotilla_supervisors::{Node, NodeId, Rng};
use flotilla_transport::{
    Address, ClusterId, Fault, NodeSet, PeerIdentity, Role as NodeRole, SimNet, Transport, TransportConfig,
};
use ractor::{Actor, ActorRef};

const IDS: [&str; 3] = ["m1", "m2", "m3"];

struct Master {
    id: &'static str,
    transport: Transport,
    actor: ActorRef<ElectionMsg>,
    applied: Arc<Mutex<Vec<Entry>>>,
}

impl Master {
    async fn status(&self) -> Status {
        ractor::call!(self.actor, ElectionMsg::Status).expect("status")
    }

    /// The commands applied so far (no-ops left out).
    fn commands(&self) -> Vec<Vec<u8>> {
        let applied = self.applied.lock().unwrap();
        applied.iter().filter(|e| e.kind == EntryKind::Command).map(|e| e.data.clone()).collect()
    }

    fn applied(&self) -> Vec<Entry> {
        self.applied.lock().unwrap().clone()
    }
}

async fn start_master(net: &SimNet, id: &'static str, seed: u64) -> Master {
    let node = Node::builder(NodeId::new(id).unwrap()).seed(seed).start().await.unwrap();
    let identity = PeerIdentity { cluster: ClusterId::new("test").unwrap(), node: id.into(), role: NodeRole::Master };
    let transport = Transport::start(
        &node,
        identity,
        TransportConfig::default(),
        flotilla_transport::Network::Sim(net.clone()),
        None,
    )
    .await
    .unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&applied);
    let args = ElectionArgs {
        transport: transport.clone(),
        me: PeerId::from(id),
        peers: IDS.iter().filter(|p| **p != id).map(|p| PeerId::from(*p)).collect::<BTreeSet<_>>(),
        joining: false,
        config: RaftConfig::default(),
        storage: Box::new(SimDisk::new(Rng::seeded(seed))),
        node,
        events: Box::new(move |event| {
            if let ElectionEvent::Committed(entries) = event {
                sink.lock().unwrap().extend(entries);
            }
        }),
        tick_interval: DEFAULT_TICK_INTERVAL,
    };
    let (actor, _) = Actor::spawn(None, Election, args).await.unwrap();
    Master { id, transport, actor, applied }
}

async fn cluster(net: &SimNet) -> Vec<Master> {
    let mut masters = Vec::new();
    for (i, id) in IDS.iter().enumerate() {
        masters.push(start_master(net, id, 11 + i as u64).await);
    }
    for a in &masters {
        for b in &masters {
            if a.id != b.id {
                a.transport.connect(b.id, Address::Sim);
            }
        }
    }
    masters
}

/// Polls `check` every 5 ms of virtual time for at most 20 s; panics with `what` otherwise.
async fn wait_until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    flotilla_supervisors::wait_until(what, Duration::from_secs(20), check).await
}

/// The single leader among `masters` that all of them agree on, if there is one.
async fn agreed_leader(masters: &[&Master]) -> Option<(usize, Status)> {
    let mut statuses = Vec::new();
    for m in masters {
        statuses.push(m.status().await);
    }
    let leaders: Vec<usize> = (0..statuses.len()).filter(|i| statuses[*i].role == Role::Leader).collect();
    let [leader] = leaders[..] else { return None };
    let name = PeerId::from(masters[leader].id);
    statuses.iter().all(|s| s.leader.as_ref() == Some(&name) && s.term == statuses[leader].term).then(|| {
        let status = statuses[leader].clone();
        (leader, status)
    })
}

async fn propose(master: &Master, data: &[u8]) {
    let result = ractor::call!(master.actor, ElectionMsg::Propose, data.to_vec()).expect("propose call");
    result.expect("the leader accepts the proposal");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn elects_replicates_fails_over_and_catches_up() {
    let net = SimNet::new(7);
    let masters = cluster(&net).await;
    let all: Vec<&Master> = masters.iter().collect();

    // A leader is elected and recognized by all.
    let started = tokio::time::Instant::now();
    let (leader, first) = wait_until("a leader", async || agreed_leader(&all).await).await;
    assert!(started.elapsed() < Duration::from_secs(5), "election took {:?}", started.elapsed());

    // Proposals commit and apply in the same order everywhere.
    for cmd in [b"a", b"b", b"c"] {
        propose(&masters[leader], cmd).await;
    }
    let expected: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
    wait_until("a, b, c applied everywhere", async || masters.iter().all(|m| m.commands() == expected).then_some(()))
        .await;
    assert!(masters.iter().all(|m| m.applied() == masters[0].applied()));

    // Cut the leader off: the other two elect a new leader in a higher term.
    let old = &masters[leader];
    let fault = net.inject(Fault::Partition { a: NodeSet::one(old.id), b: NodeSet::All, one_way: false }).unwrap();
    let rest: Vec<&Master> = masters.iter().filter(|m| m.id != old.id).collect();
    let (new_leader, second) = wait_until("a new leader among the rest", async || agreed_leader(&rest).await).await;
    assert!(second.term > first.term, "{second:?} after {first:?}");
    propose(rest[new_leader], b"d").await;
    let expected: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()];
    wait_until("d applied on the majority", async || rest.iter().all(|m| m.commands() == expected).then_some(())).await;
    assert_ne!(old.commands(), expected, "the isolated old leader cannot commit d");

    // Heal: the old leader steps down, follows the new one and catches up.
    assert!(net.heal(fault));
    wait_until("the old leader follows and catches up", async || {
        let status = old.status().await;
        (status.role == Role::Follower
            && status.term >= second.term
            && old.applied() == rest[0].applied()
            && rest[0].applied() == rest[1].applied()
            && old.commands() == expected)
            .then_some(())
    })
    .await;
    let (_, last) = wait_until("one leader for all three", async || agreed_leader(&all).await).await;
    assert!(last.term >= second.term);

    for m in &masters {
        m.actor.stop(None);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_follower_is_removed_through_the_actor_and_the_rest_commit_without_it() {
    let net = SimNet::new(9);
    let masters = cluster(&net).await;
    let all: Vec<&Master> = masters.iter().collect();
    let (leader, _) = wait_until("a leader", async || agreed_leader(&all).await).await;
    propose(&masters[leader], b"a").await;
    let removed = masters.iter().find(|m| m.id != masters[leader].id).unwrap();
    let rest: Vec<&Master> = masters.iter().filter(|m| m.id != removed.id).collect();
    let voters: BTreeSet<PeerId> = rest.iter().map(|m| PeerId::from(m.id)).collect();

    // Two changes at once are refused; one is accepted, and in effect on the leader at once.
    let everyone_and_more: BTreeSet<PeerId> = IDS.iter().chain(&["m4", "m5"]).map(|id| PeerId::from(*id)).collect();
    let refused = ractor::call!(masters[leader].actor, ElectionMsg::ChangeMembership, everyone_and_more).expect("call");
    assert_eq!(refused, Err(MembershipError::NotSingleChange { added: 2, removed: 0 }));
    let (index, _) = ractor::call!(masters[leader].actor, ElectionMsg::ChangeMembership, voters.clone())
        .expect("call")
        .expect("the leader accepts one change");
    assert_eq!(masters[leader].status().await.voters, voters);

    // Committed on the two that remain; from then on they commit without the third.
    wait_until("the change commits", async || {
        let mut done = true;
        for m in &rest {
            let status = m.status().await;
            done &= status.commit >= index && status.voters == voters;
        }
        done.then_some(())
    })
    .await;
    let cut = net.inject(Fault::Partition { a: NodeSet::one(removed.id), b: NodeSet::All, one_way: false }).unwrap();
    let (leader, _) = wait_until("a leader of the two", async || agreed_leader(&rest).await).await;
    propose(rest[leader], b"b").await;
    let expected = vec![b"a".to_vec(), b"b".to_vec()];
    wait_until("b applied on the two", async || rest.iter().all(|m| m.commands() == expected).then_some(())).await;
    net.heal(cut);
    for m in &masters {
        m.actor.stop(None);
    }
}

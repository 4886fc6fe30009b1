//! A deterministic cluster simulator for the Raft core: nodes on a virtual clock, a seeded
//! network that drops, duplicates and reorders messages, partitions, crashes and restarts from
//! the persisted state, log compaction (a node snapshots its state machine, the list of
//! entries it applied, with the configuration there) and snapshots sent to followers that
//! need compacted entries, and membership changes: one spare node starts as a joiner, and the
//! leader adds a non-voter or removes a voter (itself included) one at a time, so the
//! configuration moves between `size` and `size + 1` voters drawn from all `size + 1` nodes.
//! The safety invariants are checked after every step; liveness after the faults heal (every
//! voter of the leader's configuration applies fresh commands). A failure names its seed;
//! `FLOTILLA_RAFT_SEEDS=<n>` runs more seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use flotilla_supervisors::{Rng, Time};

use super::*;

/// Messages in flight beyond this are dropped, like a full send queue.
const MAX_IN_FLIGHT: usize = 4096;
/// Commands proposed during the chaos phase.
const MAX_CHAOS_PROPOSALS: u64 = 300;
/// Commands proposed once the faults heal; every one must commit everywhere.
const LIVENESS_COMMANDS: u64 = 5;
/// How long after healing a leader must have committed every liveness command on every node.
const LIVENESS_BOUND: Duration = Duration::from_secs(10);

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// A hash of an entry and, through `previous`, of the whole log prefix before it.
fn chain_hash(previous: u64, entry: &Entry) -> u64 {
    let mut hash = fnv(previous, &entry.term.0.to_le_bytes());
    hash = fnv(hash, &entry.index.0.to_le_bytes());
    hash = fnv(hash, &[entry.kind as u8]);
    fnv(hash, &entry.data)
}

struct SimNode {
    id: PeerId,
    /// Started outside the configuration (the spare), and restarted the same way.
    joining: bool,
    /// `None` while crashed.
    raft: Option<Raft>,
    rng: Rng,
    disk_hard_state: HardState,
    /// The stored snapshot: where it ends, its configuration, and the state machine through
    /// it (every entry applied, from index 1).
    disk_snapshot: Option<(SnapshotMeta, BTreeSet<PeerId>, Vec<Entry>)>,
    /// The log after the snapshot (from index 1 without one).
    disk_log: Vec<Entry>,
    /// `chains[i]` is the chain hash of `disk_log[i]`; `base_chain` that of the snapshot's
    /// last entry (0 without a snapshot).
    chains: Vec<u64>,
    base_chain: u64,
    /// The in-memory state machine: restored from the snapshot (or empty) after a restart.
    applied: Vec<Entry>,
    /// A snapshot received from a leader, until the core installs it.
    received: Option<(SnapshotMeta, Vec<Entry>)>,
}

impl SimNode {
    fn snapshot_end(&self) -> Index {
        self.disk_snapshot.as_ref().map_or(Index(0), |(meta, _, _)| meta.index)
    }
}

struct InFlight {
    from: usize,
    to: usize,
    message: Message,
    /// The state machine an `InstallSnapshot` carries (the bulk transfer of a real shell).
    snapshot: Option<Vec<Entry>>,
}

struct Sim {
    config: RaftConfig,
    nodes: Vec<SimNode>,
    /// The bootstrap voters (every node but the spare).
    bootstrap: BTreeSet<PeerId>,
    /// Configuration entries appended so far; once there is one, a message from a node
    /// outside the receiver's configuration may be refused.
    membership_changes: u64,
    /// Of those, the ones where the leader removed itself.
    self_removals: u64,
    /// Snapshots installed from a leader.
    installs: u64,
    now: Time,
    rng: Rng,
    queue: Vec<InFlight>,
    /// Directed links that are down.
    cut: BTreeSet<(usize, usize)>,
    faults: bool,
    drop_percent: u64,
    duplicate_percent: u64,
    proposals: u64,
    /// Election safety: the one leader seen for each term.
    leaders: BTreeMap<Term, PeerId>,
    /// Log matching: the chain hash every log has for a given (index, term).
    chains: BTreeMap<(Index, Term), u64>,
    /// State-machine safety and leader completeness: the entry applied at each index, with the
    /// lowest term of a node that applied it (the entry was committed in that term or earlier).
    applied: BTreeMap<Index, (Entry, Term)>,
    digest: u64,
}

impl Sim {
    /// `size` voters, and with `spare` one more node that starts as a joiner and membership
    /// changes among the chaos.
    fn new(seed: u64, size: usize) -> Sim {
        Sim::build(seed, size, true)
    }

    fn build(seed: u64, size: usize, spare: bool) -> Sim {
        let mut rng = Rng::seeded(seed);
        let config = RaftConfig {
            pre_vote: rng.below(4) != 0,
            check_quorum: rng.below(4) != 0,
            max_entries_per_append: 1 + rng.below(4) as usize,
            max_inflight_appends: 1 + rng.below(4) as usize,
            // A transfer here is one message: retry a lost one well within the liveness bound.
            snapshot_timeout: Duration::from_secs(1),
            ..RaftConfig::default()
        };
        let names: Vec<PeerId> = (0..size + usize::from(spare)).map(|n| PeerId(format!("n{n}"))).collect();
        let bootstrap: BTreeSet<PeerId> = names.iter().take(size).cloned().collect();
        let nodes = names
            .iter()
            .map(|name| {
                let mut node_rng = rng.fork();
                let joining = !bootstrap.contains(name);
                let raft =
                    start_node(name, joining, &bootstrap, &config, Persisted::default(), Time::ZERO, &mut node_rng)
                        .expect("valid node");
                SimNode {
                    id: name.clone(),
                    joining,
                    raft: Some(raft),
                    rng: node_rng,
                    disk_hard_state: HardState::default(),
                    disk_snapshot: None,
                    disk_log: Vec::new(),
                    chains: Vec::new(),
                    base_chain: 0,
                    applied: Vec::new(),
                    received: None,
                }
            })
            .collect();
        Sim {
            config,
            nodes,
            bootstrap,
            membership_changes: 0,
            self_removals: 0,
            installs: 0,
            now: Time::ZERO,
            rng,
            queue: Vec::new(),
            cut: BTreeSet::new(),
            faults: true,
            drop_percent: 10,
            duplicate_percent: 5,
            proposals: 0,
            leaders: BTreeMap::new(),
            chains: BTreeMap::new(),
            applied: BTreeMap::new(),
            digest: 0xCBF2_9CE4_8422_2325,
        }
    }

    /// One random event, then the invariants.
    fn chaos_step(&mut self) -> Result<(), String> {
        match self.rng.below(1000) {
            0..350 => self.advance(),
            350..900 => {
                for _ in 0..1 + self.rng.below(3) {
                    self.deliver_one()?;
                }
            }
            900..945 => self.propose_somewhere()?,
            945..955 => self.change_membership(),
            955..960 => self.compact_one(),
            960..975 => self.change_partition(),
            975..982 => self.crash(),
            _ => self.restart_one()?,
        }
        self.check()
    }

    fn advance(&mut self) {
        self.now = self.now + Duration::from_millis(1 + self.rng.below(20));
        self.digest = fnv(self.digest, &[0xA5]);
        for index in 0..self.nodes.len() {
            let now = self.now;
            let node = &mut self.nodes[index];
            if let Some(raft) = node.raft.as_mut() {
                raft.tick(now, &mut node.rng);
            }
            self.process_ready(index);
        }
    }

    fn deliver_one(&mut self) -> Result<(), String> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let pick = self.rng.below(self.queue.len() as u64) as usize;
        let in_flight = self.queue.swap_remove(pick);
        if self.faults && self.rng.below(100) < self.drop_percent {
            return Ok(());
        }
        if self.faults && self.rng.below(100) < self.duplicate_percent && self.queue.len() < MAX_IN_FLIGHT {
            let copy = InFlight {
                from: in_flight.from,
                to: in_flight.to,
                message: in_flight.message.clone(),
                snapshot: in_flight.snapshot.clone(),
            };
            self.queue.push(copy);
        }
        if self.cut.contains(&(in_flight.from, in_flight.to)) {
            return Ok(());
        }
        let from = self.nodes[in_flight.from].id.clone();
        let now = self.now;
        let node = &mut self.nodes[in_flight.to];
        let Some(raft) = node.raft.as_mut() else { return Ok(()) };
        self.digest = fnv(self.digest, &[in_flight.from as u8, in_flight.to as u8]);
        self.digest = fnv(self.digest, &in_flight.message.term().0.to_le_bytes());
        // Like the shell: keep a snapshot only if the core takes it.
        let offered = match (&in_flight.message, in_flight.snapshot) {
            (Message::InstallSnapshot { meta, .. }, Some(data)) => Some(*meta).zip(Some(data)),
            _ => None,
        };
        let offered_meta = offered.as_ref().map(|(meta, _)| *meta);
        let waiting = if offered.is_some() { std::mem::replace(&mut node.received, offered) } else { None };
        let outcome = raft.step(now, &from, in_flight.message);
        if offered_meta.is_some() && raft.pending_install() != offered_meta {
            node.received = waiting;
        }
        match outcome {
            Ok(()) => {}
            // A message from a node outside the receiver's configuration (removed, or added
            // in an entry the receiver has not seen) is refused by design.
            Err(StepError::UnknownPeer(_)) if self.membership_changes > 0 => {}
            Err(error) => return Err(format!("a valid message was refused: {error}")),
        }
        self.process_ready(in_flight.to);
        Ok(())
    }

    fn propose_somewhere(&mut self) -> Result<(), String> {
        if self.proposals >= MAX_CHAOS_PROPOSALS {
            return Ok(());
        }
        // Half the time to whoever leads in the highest term, half to anyone.
        let anyone = self.rng.below(self.nodes.len() as u64) as usize;
        let index = match self.leader() {
            Some((leader, _)) if self.rng.below(2) == 0 => leader,
            _ => anyone,
        };
        let data = format!("chaos-{}", self.proposals).into_bytes();
        if let Some(raft) = self.nodes[index].raft.as_mut()
            && raft.propose(data).is_ok()
        {
            self.proposals += 1;
            self.process_ready(index);
        }
        Ok(())
    }

    /// The leader (of the highest term) adds a node outside its configuration while it has
    /// `size` voters, or removes one of its voters (perhaps itself) while it has more.
    fn change_membership(&mut self) {
        if self.nodes.len() == self.bootstrap.len() {
            return;
        }
        let Some((leader, _)) = self.leader() else { return };
        let pick = self.rng.below(1 << 16) as usize;
        let all: Vec<PeerId> = self.nodes.iter().map(|node| node.id.clone()).collect();
        let size = self.bootstrap.len();
        let Some(raft) = self.nodes[leader].raft.as_mut() else { return };
        let mut voters = raft.voters().clone();
        let mut removes_itself = false;
        if voters.len() > size {
            let members: Vec<PeerId> = voters.iter().cloned().collect();
            let removed = &members[pick % members.len()];
            removes_itself = removed == raft.me();
            voters.remove(removed);
        } else {
            let outside: Vec<&PeerId> = all.iter().filter(|node| !voters.contains(*node)).collect();
            if outside.is_empty() {
                return;
            }
            voters.insert(outside[pick % outside.len()].clone());
        }
        if raft.propose_membership(voters).is_ok() {
            self.membership_changes += 1;
            self.self_removals += u64::from(removes_itself);
            self.digest = fnv(self.digest, &[0xC0]);
            self.process_ready(leader);
        }
    }

    /// A node snapshots its state machine at an applied index past its last snapshot and
    /// compacts its log there (on disk first, as the shell does).
    fn compact_one(&mut self) {
        let index = self.rng.below(self.nodes.len() as u64) as usize;
        let pick = self.rng.below(1 << 16);
        let node = &mut self.nodes[index];
        let Some(raft) = node.raft.as_mut() else { return };
        let from = raft.snapshot().index.0;
        let applied = raft.applied().0;
        if applied <= from {
            return;
        }
        let at = Index(from + 1 + pick % (applied - from));
        let (Some(term), Some(voters)) = (raft.term_at(at), raft.voters_at(at).cloned()) else { return };
        let meta = SnapshotMeta { index: at, term };
        let position = (at.0 - from) as usize;
        node.base_chain = node.chains[position - 1];
        node.disk_log.drain(..position);
        node.chains.drain(..position);
        raft.compact(at).expect("an applied index past the snapshot compacts");
        node.disk_snapshot = Some((meta, voters, node.applied[..at.0 as usize].to_vec()));
        self.digest = fnv(self.digest, &[0xD0]);
    }

    fn change_partition(&mut self) {
        let size = self.nodes.len();
        self.cut.clear();
        match self.rng.below(3) {
            0 => {} // Heal.
            1 => {
                let isolated = self.rng.below(size as u64) as usize;
                for other in (0..size).filter(|other| *other != isolated) {
                    self.cut.insert((isolated, other));
                    self.cut.insert((other, isolated));
                }
            }
            _ => {
                let side: Vec<bool> = (0..size).map(|_| self.rng.below(2) == 0).collect();
                for a in 0..size {
                    for b in 0..size {
                        if side[a] != side[b] {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
        }
    }

    fn crash(&mut self) {
        // Everything not on disk is lost (the sim persists each Ready whole, as a shell does
        // before sending anything).
        let index = self.rng.below(self.nodes.len() as u64) as usize;
        let node = &mut self.nodes[index];
        node.raft = None;
        node.applied.clear();
        node.received = None;
    }

    fn restart_one(&mut self) -> Result<(), String> {
        let index = self.rng.below(self.nodes.len() as u64) as usize;
        if self.nodes[index].raft.is_none() { self.restart(index) } else { Ok(()) }
    }

    fn restart(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let snapshot = node.disk_snapshot.as_ref();
        let persisted = Persisted {
            snapshot: snapshot.map(|(meta, _, _)| *meta),
            snapshot_voters: snapshot.map(|(_, voters, _)| voters.clone()),
            hard_state: node.disk_hard_state.clone(),
            entries: node.disk_log.clone(),
            applied: node.snapshot_end(),
        };
        node.applied = snapshot.map(|(_, _, data)| data.clone()).unwrap_or_default();
        let raft =
            start_node(&node.id, node.joining, &self.bootstrap, &self.config, persisted, self.now, &mut node.rng)
                .map_err(|error| format!("restart of {} failed: {error}", node.id))?;
        node.raft = Some(raft);
        self.process_ready(index);
        Ok(())
    }

    /// Carries out a node's `Ready` in contract order: persist, send, apply.
    fn process_ready(&mut self, index: usize) {
        let Some(raft) = self.nodes[index].raft.as_mut() else { return };
        let ready = raft.poll_ready();
        let term = raft.term();
        let node = &mut self.nodes[index];
        if let Some((meta, voters)) = ready.install {
            // Install first: the snapshot replaces the log and the state machine.
            let (received, data) = node.received.take().expect("an installed snapshot was received");
            assert_eq!(received, meta, "{} installs a snapshot it did not receive", node.id);
            for entry in &data {
                let known = self.applied.get(&entry.index).map(|(known, _)| known);
                assert_eq!(known, Some(entry), "state-machine safety: {}'s snapshot holds another entry", node.id);
            }
            node.base_chain = *self.chains.get(&(meta.index, meta.term)).expect("a snapshot ends at a logged entry");
            node.disk_log.clear();
            node.chains.clear();
            node.applied = data.clone();
            node.disk_snapshot = Some((meta, voters, data));
            self.installs += 1;
        }
        if let Some(hard_state) = ready.hard_state {
            node.disk_hard_state = hard_state;
        }
        if let Some(first) = ready.entries.first() {
            let keep = first.index.0.checked_sub(node.snapshot_end().0 + 1).expect("no persist inside the snapshot");
            let keep = keep as usize;
            node.disk_log.truncate(keep);
            node.chains.truncate(keep);
            for entry in ready.entries {
                let previous = node.chains.last().copied().unwrap_or(node.base_chain);
                let chain = chain_hash(previous, &entry);
                let known = *self.chains.entry((entry.index, entry.term)).or_insert(chain);
                assert_eq!(
                    known, chain,
                    "log matching: {} has a different prefix at {} ({})",
                    node.id, entry.index, entry.term
                );
                node.chains.push(chain);
                node.disk_log.push(entry);
            }
        }
        for out in ready.messages {
            if self.queue.len() >= MAX_IN_FLIGHT {
                break;
            }
            let to = self.nodes.iter().position(|node| node.id == out.to).expect("messages go to members");
            self.queue.push(InFlight { from: index, to, message: out.message, snapshot: None });
        }
        for (peer, leader_term) in ready.send_snapshots {
            let Some((meta, voters, data)) = self.nodes[index].disk_snapshot.clone() else { continue };
            if self.queue.len() >= MAX_IN_FLIGHT {
                break;
            }
            let to = self.nodes.iter().position(|node| node.id == peer).expect("snapshots go to members");
            let message = Message::InstallSnapshot { term: leader_term, meta, voters };
            self.queue.push(InFlight { from: index, to, message, snapshot: Some(data) });
        }
        let node = &mut self.nodes[index];
        for entry in ready.committed {
            assert_eq!(entry.index.0, node.applied.len() as u64 + 1, "{} applied out of order", node.id);
            match self.applied.get_mut(&entry.index) {
                Some((known, first_term)) => {
                    assert_eq!(*known, entry, "state-machine safety: {} applied another entry", node.id);
                    *first_term = (*first_term).min(term);
                }
                None => {
                    self.applied.insert(entry.index, (entry.clone(), term));
                }
            }
            self.digest = fnv(self.digest, &entry.index.0.to_le_bytes());
            node.applied.push(entry);
        }
    }

    fn check(&mut self) -> Result<(), String> {
        for node in &self.nodes {
            let Some(raft) = &node.raft else { continue };
            if raft.commit_index() > raft.last_index() {
                return Err(format!("{} committed beyond its log", node.id));
            }
            if raft.role() != Role::Leader {
                continue;
            }
            let known = self.leaders.entry(raft.term()).or_insert_with(|| node.id.clone());
            if *known != node.id {
                return Err(format!("election safety: {} and {} both lead {}", known, node.id, raft.term()));
            }
            for (index, (entry, committed_by)) in &self.applied {
                // A compacted entry is in the leader's snapshot, checked when it was applied.
                if *index <= raft.snapshot().index {
                    continue;
                }
                if *committed_by < raft.term() && raft.entry(*index) != Some(entry) {
                    return Err(format!("leader completeness: leader {} of {} lacks {index}", node.id, raft.term()));
                }
            }
        }
        Ok(())
    }

    fn leader(&self) -> Option<(usize, Term)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(index, node)| node.raft.as_ref().map(|raft| (index, raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(index, raft)| (index, raft.term()))
    }

    /// Heals every fault, then requires a leader to commit fresh commands on every voter of its
    /// configuration within [`LIVENESS_BOUND`] of virtual time.
    fn heal_and_check_liveness(&mut self) -> Result<(), String> {
        self.faults = false;
        self.cut.clear();
        for index in 0..self.nodes.len() {
            if self.nodes[index].raft.is_none() {
                self.restart(index)?;
            }
        }
        let commands: Vec<Vec<u8>> = (0..LIVENESS_COMMANDS).map(|n| format!("live-{n}").into_bytes()).collect();
        // The (leader, term) each command was last proposed to.
        let mut proposed: Vec<Option<(usize, Term)>> = vec![None; commands.len()];
        let deadline = self.now + LIVENESS_BOUND;
        while self.now < deadline {
            self.advance();
            while !self.queue.is_empty() {
                self.deliver_one()?;
                self.check()?;
            }
            let everywhere = |sim: &Sim, command: &Vec<u8>| {
                let Some(voters) =
                    sim.leader().and_then(|(leader, _)| sim.nodes[leader].raft.as_ref()).map(Raft::voters)
                else {
                    return false;
                };
                sim.nodes
                    .iter()
                    .filter(|node| voters.contains(&node.id))
                    .all(|node| node.applied.iter().any(|entry| entry.data == *command))
            };
            if commands.iter().all(|command| everywhere(self, command)) {
                return Ok(());
            }
            if let Some((leader, term)) = self.leader() {
                for (command, proposed) in commands.iter().zip(proposed.iter_mut()) {
                    if *proposed != Some((leader, term))
                        && !everywhere(self, command)
                        && let Some(raft) = self.nodes[leader].raft.as_mut()
                        && raft.propose(command.clone()).is_ok()
                    {
                        *proposed = Some((leader, term));
                    }
                }
                self.process_ready(leader);
            }
            self.check()?;
        }
        let leader = self.leader().map(|(index, term)| format!("{} in {term}", self.nodes[index].id));
        Err(format!("liveness: commands not applied everywhere {LIVENESS_BOUND:?} after healing; leader {leader:?}"))
    }
}

/// A node as the sim starts it: a bootstrap voter, or the spare joining the bootstrap voters.
fn start_node(
    name: &PeerId,
    joining: bool,
    bootstrap: &BTreeSet<PeerId>,
    config: &RaftConfig,
    persisted: Persisted,
    now: Time,
    rng: &mut Rng,
) -> Result<Raft, InitError> {
    if joining {
        Raft::new_joining(name.clone(), bootstrap.clone(), config.clone(), persisted, now, rng)
    } else {
        let peers = bootstrap.iter().filter(|peer| *peer != name).cloned().collect();
        Raft::new(name.clone(), peers, config.clone(), persisted, now, rng)
    }
}

/// Runs one seed; `Err` names the broken invariant.
fn run(seed: u64, size: usize, steps: usize) -> Result<u64, String> {
    let mut sim = Sim::new(seed, size);
    for step in 0..steps {
        sim.chaos_step().map_err(|error| format!("step {step}: {error}"))?;
    }
    sim.heal_and_check_liveness()?;
    Ok(sim.digest)
}

/// `FLOTILLA_RAFT_SEED=s` runs seed `s` alone; `FLOTILLA_RAFT_SEEDS=n` runs `0..n` (200).
fn seeds() -> std::ops::Range<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|value| value.parse::<u64>().ok());
    match (var("FLOTILLA_RAFT_SEED"), var("FLOTILLA_RAFT_SEEDS")) {
        (Some(seed), _) => seed..seed + 1,
        (None, count) => 0..count.unwrap_or(200),
    }
}

fn run_seeds(size: usize, steps: usize) {
    for seed in seeds() {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed, size, steps)));
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                panic!("seed {seed} ({size} nodes, {steps} steps): {error} (rerun it with FLOTILLA_RAFT_SEED={seed})")
            }
            Err(_) => panic!("seed {seed} ({size} nodes, {steps} steps): panicked (message above)"),
        }
    }
}

#[test]
fn three_nodes_stay_safe_and_recover_under_faults() {
    run_seeds(3, 5000);
}

#[test]
fn five_nodes_stay_safe_and_recover_under_faults() {
    run_seeds(5, 5000);
}

#[test]
fn the_chaos_changes_the_membership_removes_leaders_and_installs_snapshots() {
    let (mut changes, mut self_removals, mut spare_voted, mut installs) = (0, 0, 0, 0);
    for seed in 0..20 {
        let mut sim = Sim::new(seed, 3);
        for step in 0..5000 {
            sim.chaos_step().unwrap_or_else(|error| panic!("seed {seed} step {step}: {error}"));
        }
        sim.heal_and_check_liveness().unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        changes += sim.membership_changes;
        self_removals += sim.self_removals;
        installs += sim.installs;
        let spare = PeerId::from("n3");
        spare_voted += u64::from(sim.nodes[3].applied.iter().any(|entry| {
            entry.kind == EntryKind::Config && decode_voters(&entry.data).is_ok_and(|voters| voters.contains(&spare))
        }));
    }
    assert!(changes >= 40, "only {changes} membership changes in 20 seeds");
    assert!(self_removals >= 3, "only {self_removals} leaders removed themselves in 20 seeds");
    assert!(spare_voted >= 10, "the spare became a voter in only {spare_voted} of 20 seeds");
    assert!(installs >= 10, "only {installs} snapshots installed in 20 seeds");
}

#[test]
fn a_seed_replays_the_same_trace() {
    let first = run(42, 5, 2000).expect("seed 42 is safe");
    assert_eq!(run(42, 5, 2000), Ok(first));
    assert_ne!(run(43, 5, 2000), Ok(first));
}

#[test]
fn a_fault_free_cluster_elects_one_leader_and_commits() {
    for size in [1, 3, 5] {
        let mut sim = Sim::build(7, size, false);
        sim.faults = false;
        sim.heal_and_check_liveness().unwrap_or_else(|error| panic!("{size} nodes: {error}"));
        let (leader, term) = sim.leader().expect("a leader");
        assert!(term <= Term(3), "{size} nodes needed {term} to elect {leader}");
    }
}

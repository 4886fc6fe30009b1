//! Model checking of the pure Raft core (`flotilla_actors::election::core`) with stateright.
//!
//! # The model
//!
//! Three nodes, `a`, `b` and `c`, each a stateright [`Actor`] wrapping one [`Raft`]:
//!
//! - `on_start`: [`Raft::new`] from the node's persisted state (empty on the first start), then
//!   the `Ready` is carried out.
//! - `on_msg`: [`Raft::step`], then [`Raft::poll_ready`] and the `Ready` is carried out in the
//!   contract's order: persist (hard state, then truncate-and-append the entries into the
//!   node's `Disk`, saved as stateright storage), send every outbound message, apply the
//!   committed entries to the node's in-memory state machine.
//! - `on_timeout(Tick)`: the node's virtual clock jumps by [`JUMP`], past every deadline it
//!   has, and it ticks (a follower campaigns, a leader heartbeats, retransmits and checks its
//!   quorum). Every tick uses `Rng::seeded(RNG_SEED)`: the randomized timeout is irrelevant
//!   when time jumps past it.
//! - `on_timeout(Propose)`: armed only while the node leads, it proposes one command; the
//!   boundary allows `Bounds::max_proposals` in the whole cluster.
//! - stateright's crash and recovery (at most `Bounds::max_crashes` nodes down at once): a
//!   crashed node loses its volatile state and restarts from its `Disk` (hard state and log;
//!   the state machine is rebuilt from index 1).
//!
//! The network is unordered and duplicating, and lossy unless `Bounds::lossy` is off: any
//! message in flight may be delivered (again) or dropped at any step. The search is bounded by
//! `Bounds`: terms, log lengths, proposals, crashes and optionally ticks per node.
//!
//! # State equivalence
//!
//! A node's fingerprint is a hash of the `Debug` text of its `Raft` (every field, private
//! ones included) in which every `Time(..)` is rewritten relative to the node's clock and
//! clamped at [`JUMP`] in the past. The core uses time only through differences and
//! comparisons against durations shorter than `JUMP`, so two nodes equal under this rewrite
//! behave identically from then on: states that differ only by how far the clocks have run
//! are merged, which keeps repeated ticks from growing the state space without bound.
//! `time_shift_is_invisible_to_the_fingerprint` guards the rewrite.
//!
//! # Properties
//!
//! - election safety: no two nodes are leaders of one term (in the state), and no two nodes
//!   ever sent `AppendEntries` (which only a leader sends) in one term (history);
//! - log matching: two logs with an entry of the same index and term agree up to it;
//! - leader completeness: a leader of a term at or above a node's term holds every entry that
//!   node knows to be committed;
//! - state machine safety: committed prefixes and applied entries never disagree between
//!   nodes, and every node applied exactly its own log's prefix;
//! - the `Ready` contract: the disk always equals the core's own hard state and log, applied
//!   entries come in order without gaps and were persisted first, and no node ever refused a
//!   message a peer produced.
//!
//! Sometimes-properties show the model is not vacuous: a leader is elected, a command
//! commits, a leader is elected in a later term.
//!
//! # Runs
//!
//! In every `cargo test` (about 45 s in a debug build on a busy 2-core machine, in parallel):
//! `raft_model_full_bfs` searches every interleaving of [`FULL`] (pre-vote, check-quorum, loss,
//! crashes) of up to 7 steps, in which a leader is elected; `raft_model_lean_bfs` every
//! interleaving of [`LEAN`] (no pre-vote, no loss, no crash, one tick per node) of up to 8
//! steps, in which a command commits and a leader of a later term is elected.
//! `raft_model_deep` (ignored) searches [`DEEP`] for `FLOTILLA_MODEL_SECONDS` (default 180):
//! `cargo test --release -p flotilla-actors --test raft_model -- --ignored --nocapture`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actors::election::core::{
    Entry, EntryKind, HardState, Index, Message, PeerId, Persisted, Raft, RaftConfig, Role, Term,
};
use flotilla_supervisors::{Rng, Time};
use stateright::actor::{Actor, ActorModel, ActorModelState, Envelope, Id, LossyNetwork, Network, Out, model_timeout};
use stateright::{Checker, Expectation, Model};

const NAMES: [&str; 3] = ["a", "b", "c"];
const RNG_SEED: u64 = 7;
/// How far a node's clock jumps on a tick: beyond every duration in [`raft_config`].
const JUMP: Duration = Duration::from_secs(1);

/// The bounds of the search.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// States in which a node's term exceeds this are not explored.
    max_term: u64,
    /// States in which a node's log is longer than this are not explored.
    max_log: u64,
    /// Commands proposed in the whole cluster.
    max_proposals: u8,
    /// Nodes down at the same time.
    max_crashes: usize,
    pre_vote: bool,
    /// Whether the network may drop messages.
    lossy: bool,
    /// Ticks per node, if bounded.
    max_ticks: Option<u8>,
}

fn raft_config(bounds: &Bounds) -> RaftConfig {
    let config = RaftConfig { pre_vote: bounds.pre_vote, check_quorum: true, ..RaftConfig::default() };
    let longest = [
        config.election_timeout_min,
        config.election_timeout_max,
        config.heartbeat_interval,
        config.retransmit_timeout,
    ];
    assert!(longest.iter().all(|duration| *duration < JUMP), "a tick must jump past every deadline");
    config
}

// --- Messages ----------------------------------------------------------------------------------

/// A [`Message`] with the hash of its `Debug` text, so that stateright can hash and order it
/// without the core's types having to implement `Hash` or `Ord`. Shared, as every state in the
/// search holds its own copy of the network.
#[derive(Clone)]
struct Msg {
    digest: u64,
    message: Arc<Message>,
}

impl Msg {
    fn new(message: Message) -> Msg {
        Msg { digest: digest_of(&format!("{message:?}")), message: Arc::new(message) }
    }
}

impl PartialEq for Msg {
    fn eq(&self, other: &Msg) -> bool {
        self.digest == other.digest && self.message == other.message
    }
}

impl Eq for Msg {}

impl Hash for Msg {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl PartialOrd for Msg {
    fn partial_cmp(&self, other: &Msg) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Msg {
    fn cmp(&self, other: &Msg) -> std::cmp::Ordering {
        self.digest.cmp(&other.digest).then_with(|| {
            if self.message == other.message {
                std::cmp::Ordering::Equal
            } else {
                format!("{:?}", self.message).cmp(&format!("{:?}", other.message))
            }
        })
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.message)
    }
}

fn digest_of(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

// --- Node state ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    Tick,
    Propose,
}

/// What a node keeps across a crash: its persisted hard state and log, and (a model
/// variable) how many commands it has proposed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Disk {
    hard_state: HardState,
    log: Vec<Entry>,
    proposed: u8,
}

#[derive(Clone)]
struct Node {
    raft: Raft,
    /// The node's virtual clock (the last time fed to its `Raft`).
    now: Time,
    /// The persisted state, written from each `Ready` as the contract says.
    disk: Disk,
    /// The in-memory state machine: every entry applied, in order.
    applied: Vec<Entry>,
    /// The first broken contract this node noticed (a property requires none).
    violation: Option<String>,
    /// Ticks since the node (re)started, counted only under `Bounds::max_ticks`.
    ticks: u8,
    /// The fingerprint: see the module documentation.
    digest: u64,
}

impl Node {
    fn entry(&self, index: u64) -> Option<&Entry> {
        self.raft.entry(Index(index))
    }

    fn commit(&self) -> u64 {
        self.raft.commit_index().0
    }

    fn last(&self) -> u64 {
        self.raft.last_index().0
    }

    fn violate(&mut self, why: String) {
        if self.violation.is_none() {
            self.violation = Some(why);
        }
    }

    /// Carries out the pending `Ready`: persist, then send, then apply.
    fn carry_out_ready(&mut self, actor: &RaftActor, out: &mut Out<RaftActor>, mut save: bool) {
        let ready = self.raft.poll_ready();
        if let Some(hard_state) = ready.hard_state {
            self.disk.hard_state = hard_state;
            save = true;
        }
        if let Some(first) = ready.entries.first() {
            let keep = first.index.0.saturating_sub(1);
            if keep > self.disk.log.len() as u64 {
                self.violate(format!("Ready entries start at {} past the disk's end", first.index));
            } else {
                self.disk.log.truncate(keep as usize);
                self.disk.log.extend(ready.entries.iter().cloned());
            }
            save = true;
        }
        if save {
            out.save(Arc::new(self.disk.clone()));
        }
        for outbound in ready.messages {
            match actor.id_of(&outbound.to) {
                Some(to) => out.send(to, Msg::new(outbound.message)),
                None => self.violate(format!("message to unknown peer {}", outbound.to)),
            }
        }
        for entry in ready.committed {
            let expected = self.applied.len() as u64 + 1;
            if entry.index.0 != expected {
                self.violate(format!("applied {} after {}", entry.index, expected - 1));
            } else if self.disk.log.get(self.applied.len()) != Some(&entry) {
                self.violate(format!("applied {} before persisting it", entry.index));
            }
            self.applied.push(entry);
        }
        if self.disk.hard_state != self.raft.hard_state() {
            self.violate("the persisted hard state differs from the core's".to_owned());
        }
        let memory: Vec<&Entry> = (1..=self.last()).filter_map(|index| self.entry(index)).collect();
        if memory.len() != self.disk.log.len() || memory.iter().zip(&self.disk.log).any(|(a, b)| *a != b) {
            self.violate("the persisted log differs from the core's".to_owned());
        }
        if self.raft.role() == Role::Leader && self.disk.proposed < actor.max_proposals {
            out.set_timer(Timer::Propose, model_timeout());
        } else {
            out.cancel_timer(Timer::Propose);
        }
        self.refresh_digest();
    }

    fn refresh_digest(&mut self) {
        let mut hasher = DefaultHasher::new();
        canonical_debug(&self.raft, self.now).hash(&mut hasher);
        self.applied.len().hash(&mut hasher);
        self.disk.proposed.hash(&mut hasher);
        self.violation.hash(&mut hasher);
        self.ticks.hash(&mut hasher);
        self.digest = hasher.finish();
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.digest == other.digest
    }
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hard = self.raft.hard_state();
        write!(
            f,
            "{} {:?} {} vote={:?} commit={} applied={} log=[",
            self.raft.me(),
            self.raft.role(),
            hard.term,
            hard.voted_for.as_ref().map(|peer| peer.0.as_str()),
            hard.commit.0,
            self.applied.len(),
        )?;
        for index in 1..=self.last() {
            if let Some(entry) = self.entry(index) {
                let sep = if index > 1 { " " } else { "" };
                match entry.kind {
                    EntryKind::Noop => write!(f, "{sep}{}:noop", entry.term)?,
                    EntryKind::Command => write!(f, "{sep}{}:cmd{:?}", entry.term, entry.data)?,
                    EntryKind::Config => write!(f, "{sep}{}:config", entry.term)?,
                }
            }
        }
        write!(f, "]")?;
        if let Some(violation) = &self.violation {
            write!(f, " VIOLATION: {violation}")?;
        }
        Ok(())
    }
}

/// The `Debug` text of `raft` with every `Time(..)` rewritten as its offset from `now` in
/// nanoseconds, clamped at `-JUMP` (anything that old is past every deadline).
fn canonical_debug(raft: &Raft, now: Time) -> String {
    let text = format!("{raft:?}");
    let now = now.since_origin().as_nanos() as i128;
    let floor = -(JUMP.as_nanos() as i128);
    let mut canonical = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("Time(") {
        canonical.push_str(&rest[..start]);
        let after = &rest[start + "Time(".len()..];
        let end = after.find(')').expect("a Time's Debug closes its parenthesis");
        let offset = (parse_duration_debug(&after[..end]) as i128 - now).max(floor);
        write!(canonical, "T({offset})").expect("writing to a String");
        rest = &after[end + 1..];
    }
    canonical.push_str(rest);
    canonical
}

/// Nanoseconds from a `Duration`'s `Debug` text ("0ns", "150ms", "1.5s", "2.25µs").
fn parse_duration_debug(text: &str) -> u128 {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).expect("a Duration's Debug has a unit");
    let (number, unit) = text.split_at(split);
    let scale: u128 = match unit {
        "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "µs" => 1_000,
        "ns" => 1,
        other => panic!("unexpected Duration unit {other:?} in {text:?}"),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let mut nanos = whole.parse::<u128>().expect("a whole number") * scale;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).expect("a short fraction");
        nanos += fraction.parse::<u128>().expect("a fraction") * scale / 10u128.pow(digits);
    }
    nanos
}

// --- The actor ----------------------------------------------------------------------------------

#[derive(Clone)]
struct RaftActor {
    me: PeerId,
    index: u8,
    names: Vec<PeerId>,
    config: RaftConfig,
    max_proposals: u8,
    count_ticks: bool,
}

impl RaftActor {
    fn id_of(&self, peer: &PeerId) -> Option<Id> {
        self.names.iter().position(|name| name == peer).map(Id::from)
    }

    fn peer_of(&self, id: Id) -> PeerId {
        self.names[usize::from(id)].clone()
    }
}

impl Actor for RaftActor {
    type Msg = Msg;
    type State = Node;
    type Timer = Timer;
    type Random = ();
    type Storage = Arc<Disk>;

    fn on_start(&self, _id: Id, storage: &Option<Arc<Disk>>, o: &mut Out<Self>) -> Node {
        let disk = storage.as_deref().cloned().unwrap_or_default();
        let peers: BTreeSet<PeerId> = self.names.iter().filter(|name| **name != self.me).cloned().collect();
        #[allow(clippy::needless_update)] // Robust to fields added to `Persisted`.
        let persisted = Persisted {
            hard_state: disk.hard_state.clone(),
            entries: disk.log.clone(),
            applied: Index(0),
            ..Persisted::default()
        };
        let now = Time::ZERO;
        let raft = Raft::new(self.me.clone(), peers, self.config.clone(), persisted, now, &mut Rng::seeded(RNG_SEED))
            .expect("a node starts from what it persisted");
        let mut node = Node { raft, now, disk, applied: Vec::new(), violation: None, ticks: 0, digest: 0 };
        node.carry_out_ready(self, o, false);
        o.set_timer(Timer::Tick, model_timeout());
        node
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<Node>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let node = state.to_mut();
        let from = self.peer_of(src);
        if let Err(error) = node.raft.step(node.now, &from, Message::clone(&msg.message)) {
            node.violate(format!("refused a message from {from}: {error}"));
        }
        node.carry_out_ready(self, o, false);
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<Node>, timer: &Timer, o: &mut Out<Self>) {
        match timer {
            Timer::Tick => {
                let node = state.to_mut();
                if self.count_ticks {
                    node.ticks = node.ticks.saturating_add(1);
                }
                node.now = node.now + JUMP;
                node.raft.tick(node.now, &mut Rng::seeded(RNG_SEED));
                node.carry_out_ready(self, o, false);
                o.set_timer(Timer::Tick, model_timeout());
            }
            Timer::Propose => {
                // Armed only while this node leads (see `carry_out_ready`).
                let node = state.to_mut();
                let data = vec![self.index, node.disk.proposed];
                if let Err(error) = node.raft.propose(data) {
                    node.violate(format!("a leader refused a proposal: {error}"));
                }
                node.disk.proposed += 1;
                node.carry_out_ready(self, o, true);
            }
        }
    }

    fn name(&self) -> String {
        self.me.0.clone()
    }
}

// --- The model ----------------------------------------------------------------------------------

/// The terms in which each node sent `AppendEntries`, which only a leader does.
type Leaders = BTreeSet<(u64, usize)>;
type RaftModel = ActorModel<RaftActor, Bounds, Leaders>;
type State = ActorModelState<RaftActor, Leaders>;

fn nodes(state: &State) -> impl Iterator<Item = &Node> {
    state.actor_states.iter().map(|node| &**node)
}

fn model(bounds: Bounds) -> RaftModel {
    let names: Vec<PeerId> = NAMES.iter().map(|name| PeerId::from(*name)).collect();
    let config = raft_config(&bounds);
    let actors = names.iter().enumerate().map(|(index, me)| RaftActor {
        me: me.clone(),
        index: u8::try_from(index).expect("three nodes"),
        names: names.clone(),
        config: config.clone(),
        max_proposals: bounds.max_proposals,
        count_ticks: bounds.max_ticks.is_some(),
    });
    ActorModel::new(bounds, Leaders::new())
        .actors(actors)
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(if bounds.lossy { LossyNetwork::Yes } else { LossyNetwork::No })
        .max_crashes(bounds.max_crashes)
        .record_msg_out(record_leader)
        .within_boundary(within_bounds)
        .property(Expectation::Always, "election safety", election_safety)
        .property(Expectation::Always, "election safety (history)", election_safety_history)
        .property(Expectation::Always, "log matching", log_matching)
        .property(Expectation::Always, "leader completeness", leader_completeness)
        .property(Expectation::Always, "state machine safety", state_machine_safety)
        .property(Expectation::Always, "ready contract", ready_contract)
        .property(Expectation::Sometimes, "a leader is elected", |_, state| {
            nodes(state).any(|node| node.raft.role() == Role::Leader)
        })
        .property(Expectation::Sometimes, "a command commits", |_, state| {
            nodes(state).any(|node| {
                (1..=node.commit()).any(|index| node.entry(index).is_some_and(|entry| entry.kind == EntryKind::Command))
            })
        })
        .property(Expectation::Sometimes, "a leader is elected in a later term", |_, state| {
            nodes(state).any(|node| node.raft.role() == Role::Leader && node.raft.term() > Term(1))
        })
}

fn record_leader(_: &Bounds, leaders: &Leaders, envelope: Envelope<&Msg>) -> Option<Leaders> {
    if !matches!(*envelope.msg.message, Message::AppendEntries { .. }) {
        return None;
    }
    let key = (envelope.msg.message.term().0, usize::from(envelope.src));
    if leaders.contains(&key) {
        return None;
    }
    let mut leaders = leaders.clone();
    leaders.insert(key);
    Some(leaders)
}

fn within_bounds(bounds: &Bounds, state: &State) -> bool {
    let proposed: u64 = nodes(state).map(|node| u64::from(node.disk.proposed)).sum();
    proposed <= u64::from(bounds.max_proposals)
        && nodes(state).all(|node| {
            node.raft.term().0 <= bounds.max_term
                && node.last() <= bounds.max_log
                && bounds.max_ticks.is_none_or(|max| node.ticks <= max)
        })
}

fn election_safety(_: &RaftModel, state: &State) -> bool {
    let mut leaders: BTreeMap<Term, &PeerId> = BTreeMap::new();
    nodes(state)
        .filter(|node| node.raft.role() == Role::Leader)
        .all(|node| leaders.insert(node.raft.term(), node.raft.me()).is_none())
}

fn election_safety_history(_: &RaftModel, state: &State) -> bool {
    let terms: BTreeSet<u64> = state.history.iter().map(|(term, _)| *term).collect();
    terms.len() == state.history.len()
}

fn log_matching(_: &RaftModel, state: &State) -> bool {
    let all: Vec<&Node> = nodes(state).collect();
    all.iter().enumerate().all(|(i, n)| {
        all[i + 1..].iter().all(|m| {
            let common = n.last().min(m.last());
            let matched =
                (1..=common).rev().find(|index| n.entry(*index).map(|e| e.term) == m.entry(*index).map(|e| e.term));
            matched.is_none_or(|upto| (1..=upto).all(|index| n.entry(index) == m.entry(index)))
        })
    })
}

fn leader_completeness(_: &RaftModel, state: &State) -> bool {
    nodes(state).all(|node| {
        nodes(state)
            .filter(|leader| leader.raft.role() == Role::Leader && leader.raft.term() >= node.raft.term())
            .all(|leader| (1..=node.commit()).all(|index| leader.entry(index) == node.entry(index)))
    })
}

fn state_machine_safety(_: &RaftModel, state: &State) -> bool {
    let all: Vec<&Node> = nodes(state).collect();
    let own = all.iter().all(|node| {
        node.applied.len() as u64 <= node.commit()
            && node.applied.iter().enumerate().all(|(at, entry)| node.entry(at as u64 + 1) == Some(entry))
    });
    own && all.iter().enumerate().all(|(i, n)| {
        all[i + 1..].iter().all(|m| {
            let committed = n.commit().min(m.commit());
            let applied = n.applied.len().min(m.applied.len());
            (1..=committed).all(|index| n.entry(index) == m.entry(index))
                && n.applied[..applied] == m.applied[..applied]
        })
    })
}

fn ready_contract(_: &RaftModel, state: &State) -> bool {
    nodes(state).all(|node| node.violation.is_none())
}

// --- Runs ---------------------------------------------------------------------------------------

const ALWAYS: [&str; 6] = [
    "election safety",
    "election safety (history)",
    "log matching",
    "leader completeness",
    "state machine safety",
    "ready contract",
];
const SOMETIMES: [&str; 3] = ["a leader is elected", "a command commits", "a leader is elected in a later term"];

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prints what a run covered and fails on any counterexample, showing its path.
fn report(name: &str, checker: &impl Checker<RaftModel>, started: Instant) {
    let discoveries = checker.discoveries();
    println!(
        "{name}: {} unique states ({} generated), max depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed(),
    );
    for property in ALWAYS {
        let verdict = if discoveries.contains_key(property) { "COUNTEREXAMPLE" } else { "holds" };
        println!("  always    {property}: {verdict}");
    }
    for property in SOMETIMES {
        let verdict = if discoveries.contains_key(property) { "example found" } else { "NOT FOUND" };
        println!("  sometimes {property}: {verdict}");
    }
    for property in ALWAYS {
        if let Some(path) = discoveries.get(property) {
            let mut trace = String::new();
            for (state, action) in path.clone().into_vec() {
                let _ = writeln!(trace, "{state:#?}");
                if let Some(action) = action {
                    let _ = writeln!(trace, "--> {}", checker.model().format_action(&action));
                }
            }
            panic!("{name}: counterexample to {property:?}:\n{trace}");
        }
    }
}

/// The whole model: pre-vote and check-quorum, a lossy network, one node down at a time, two
/// proposals, terms up to 2.
const FULL: Bounds =
    Bounds { max_term: 2, max_log: 4, max_proposals: 2, max_crashes: 1, pre_vote: true, lossy: true, max_ticks: None };

/// Plain elections (no pre-vote), no loss (still duplicating and reordering), no crash, one
/// proposal and at most one tick per node: a command commits within a depth that a debug build
/// searches exhaustively in seconds.
const LEAN: Bounds = Bounds {
    max_term: 2,
    max_log: 3,
    max_proposals: 1,
    max_crashes: 0,
    pre_vote: false,
    lossy: false,
    max_ticks: Some(1),
};

/// The longer run: terms up to 3.
const DEEP: Bounds = Bounds { max_term: 3, max_log: 5, ..FULL };

/// Every interleaving of [`FULL`] of up to [`FULL_STEPS`] steps. Single-threaded, so that the
/// breadth-first search is exact: every state is first reached by one of its shortest paths.
#[test]
fn raft_model_full_bfs() {
    let started = Instant::now();
    let checker = model(FULL).checker().target_max_depth(depth_bound(FULL_STEPS)).spawn_bfs().join();
    report("full model", &checker, started);
    assert!(checker.discoveries().contains_key("a leader is elected"), "no leader within {FULL_STEPS} steps");
}

/// Every interleaving of [`LEAN`] of up to [`LEAN_STEPS`] steps, deep enough for a command to
/// commit and for a leader of a later term: the model is not vacuous.
#[test]
fn raft_model_lean_bfs() {
    let started = Instant::now();
    let checker = model(LEAN).checker().target_max_depth(depth_bound(LEAN_STEPS)).spawn_bfs().join();
    report("lean model", &checker, started);
    let discoveries = checker.discoveries();
    for property in SOMETIMES {
        assert!(discoveries.contains_key(property), "no example of {property:?}: the model is vacuous");
    }
}

/// Steps (deliveries, drops, timeouts, crashes, recoveries) searched in every interleaving.
const FULL_STEPS: usize = 7;
const LEAN_STEPS: usize = 8;

/// The checker's depth bound for paths of `steps` steps: the initial state has depth 1, and
/// states at the bound itself are not checked.
fn depth_bound(steps: usize) -> usize {
    steps + 2
}

/// A long breadth-first run of [`DEEP`], by default for 180 s (`FLOTILLA_MODEL_SECONDS`).
///
/// `FLOTILLA_MODEL_LOSSY=0` leaves out message loss, which changes no reachable node state (on
/// a duplicating network a message never delivered is as good as lost) and so reaches deeper
/// in the same time. The breadth-first frontier takes about 2.5 KiB a state, so the run also
/// stops after `FLOTILLA_MODEL_MAX_STATES` generated states (default 25 million, about 6 million
/// unique: 13 GiB lossy, 16 GiB lossless, which the default 180 s in release on 2 cores nearly
/// reach).
#[test]
#[ignore = "long: run with --ignored --nocapture, preferably in release"]
fn raft_model_deep() {
    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default);
    let seconds = env("FLOTILLA_MODEL_SECONDS", 180);
    let max_states = usize::try_from(env("FLOTILLA_MODEL_MAX_STATES", 25_000_000)).unwrap_or(usize::MAX);
    let bounds = Bounds { lossy: env("FLOTILLA_MODEL_LOSSY", 1) != 0, ..DEEP };
    println!("deep run: {bounds:?}, at most {seconds} s and {max_states} states");
    let started = Instant::now();
    let checker = model(bounds)
        .checker()
        .threads(threads())
        .timeout(Duration::from_secs(seconds))
        .target_state_count(max_states)
        .spawn_bfs()
        .join();
    report("deep run", &checker, started);
}

/// The fingerprint ignores how far a node's clock has run, and nothing else.
#[test]
fn time_shift_is_invisible_to_the_fingerprint() {
    let names: Vec<PeerId> = NAMES.iter().map(|name| PeerId::from(*name)).collect();
    let peers: BTreeSet<PeerId> = names[1..].iter().cloned().collect();
    let config = RaftConfig::default();
    let run = |origin: Time, ticks: u32| {
        let mut rng = Rng::seeded(RNG_SEED);
        let mut raft =
            Raft::new(names[0].clone(), peers.clone(), config.clone(), Persisted::default(), origin, &mut rng)
                .expect("a valid node");
        let mut now = origin;
        for _ in 0..ticks {
            now = now + JUMP;
            raft.tick(now, &mut Rng::seeded(RNG_SEED));
            raft.poll_ready();
        }
        assert!(format!("{raft:?}").contains("Time("), "the core's Debug no longer shows its times");
        canonical_debug(&raft, now)
    };
    let shifted = Time::from_duration(Duration::from_millis(123_456_789));
    assert_eq!(run(Time::ZERO, 1), run(shifted, 1));
    assert_eq!(run(Time::ZERO, 0), run(shifted, 0));
    assert_ne!(run(Time::ZERO, 0), run(Time::ZERO, 1));
    assert_eq!(parse_duration_debug(&format!("{:?}", Duration::new(3, 5))), 3_000_000_005);
    assert_eq!(parse_duration_debug(&format!("{:?}", Duration::from_micros(2_250))), 2_250_000);
    assert_eq!(parse_duration_debug(&format!("{:?}", Duration::from_nanos(1_500))), 1_500);
}

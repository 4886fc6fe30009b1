//! The election actor: the shell that drives one master's [`Raft`] core with a tick timer,
//! messages from the transport and proposals, and carries out each [`Ready`] in the order of
//! its contract: persist (through a [`RaftStorage`]), then send (with [`Transport::cast`]),
//! then apply (through the [`ApplyFn`] given in the arguments).
//!
//! A storage error stops the actor with a failure: its supervisor restarts it, and the new
//! instance reloads the hard state and log from the (new) storage it is given. Because
//! `Persisted::applied` is 0, a restarted actor re-applies committed entries from index 1: the
//! [`ApplyFn`] must rebuild its state machine rather than assume each entry arrives once.
//!
//! Not yet: the sender of a [`RaftEnvelope`] is the name it declares (every peer passed the
//! cluster's mTLS admission, but one master could speak for another); no unexport on stop (a
//! restarted actor takes the name back, and casts to a dead one are dropped).

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_supervisors::{Node, Rng};
use flotilla_transport::{RemoteMessage, Transport};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::core::{Entry, Index, Message, PeerId, ProposeError, Raft, RaftConfig, Role, Term};
use crate::storage::RaftStorage;

/// The name the election actor is exported under on every master.
pub const ELECTION_NAME: &str = "election";

/// How often the core's timers are advanced unless the arguments say otherwise.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_millis(10);

/// A Raft message between masters, as it travels on the transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// The sending master's name (its `PeerId`).
    pub from: String,
    pub message: Message,
}

impl RemoteMessage for RaftEnvelope {
    const TAG: u32 = 0x5241_4654; // "RAFT"
}

/// What this node's core reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    pub term: Term,
    pub leader: Option<PeerId>,
    pub commit: Index,
}

/// The messages of the election actor.
#[derive(Debug)]
pub enum ElectionMsg {
    /// Advance the core's timers (sent by the actor's own interval timer).
    Tick,
    /// A message from a peer, delivered by the transport.
    Inbound(RaftEnvelope),
    /// Propose a command; answers its log index, or why it was refused. The command is
    /// committed only when it is applied.
    Propose(Vec<u8>, RpcReplyPort<Result<Index, ProposeError>>),
    Status(RpcReplyPort<Status>),
}

/// Called with each committed entry, in log order, with no gap (no-ops included).
pub type ApplyFn = Box<dyn FnMut(&Entry) + Send>;

/// What an election actor starts from.
pub struct ElectionArgs {
    pub transport: Transport,
    pub me: PeerId,
    /// The other voters.
    pub peers: BTreeSet<PeerId>,
    pub config: RaftConfig,
    pub storage: Box<dyn RaftStorage + Send>,
    /// The clock and the seed of the core's RNG.
    pub node: Node,
    pub apply: ApplyFn,
    pub tick_interval: Duration,
}

/// The election actor (one per master).
#[derive(Debug, Default)]
pub struct Election;

pub struct ElectionState {
    raft: Raft,
    rng: Rng,
    node: Node,
    transport: Transport,
    storage: Box<dyn RaftStorage + Send>,
    apply: ApplyFn,
    ticker: JoinHandle<()>,
}

impl Actor for Election {
    type Msg = ElectionMsg;
    type State = ElectionState;
    type Arguments = ElectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ElectionMsg>,
        args: ElectionArgs,
    ) -> Result<ElectionState, ActorProcessingErr> {
        let ElectionArgs { transport, me, peers, config, mut storage, node, apply, tick_interval } = args;
        let persisted = storage.load()?;
        let mut rng = node.fork_rng();
        let raft = Raft::new(me, peers, config, persisted, node.now(), &mut rng)?;
        transport.export::<RaftEnvelope, ElectionMsg>(ELECTION_NAME, &myself, ElectionMsg::Inbound);
        let ticker = myself.send_interval(tick_interval, || ElectionMsg::Tick);
        Ok(ElectionState { raft, rng, node, transport, storage, apply, ticker })
    }

    async fn post_stop(&self, _: ActorRef<ElectionMsg>, state: &mut ElectionState) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ElectionMsg>,
        msg: ElectionMsg,
        state: &mut ElectionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ElectionMsg::Tick => {
                let now = state.node.now();
                state.raft.tick(now, &mut state.rng);
            }
            ElectionMsg::Inbound(RaftEnvelope { from, message }) => {
                // Unknown senders and malformed messages change nothing; dropping them is all
                // there is to do.
                let _ = state.raft.step(state.node.now(), &PeerId(from), message);
            }
            ElectionMsg::Propose(data, reply) => {
                let _ = reply.send(state.raft.propose(data));
            }
            ElectionMsg::Status(reply) => {
                let raft = &state.raft;
                let status = Status {
                    role: raft.role(),
                    term: raft.term(),
                    leader: raft.leader().cloned(),
                    commit: raft.commit_index(),
                };
                let _ = reply.send(status);
            }
        }
        state.drain()
    }
}

impl ElectionState {
    /// Carries out every pending `Ready`: persist, then send, then apply.
    fn drain(&mut self) -> Result<(), ActorProcessingErr> {
        while self.raft.has_ready() {
            let ready = self.raft.poll_ready();
            if ready.hard_state.is_some() || !ready.entries.is_empty() {
                self.storage.persist(ready.hard_state.as_ref(), &ready.entries)?;
            }
            let from = self.raft.me().0.clone();
            for out in ready.messages {
                let envelope = RaftEnvelope { from: from.clone(), message: out.message };
                // Raft tolerates loss: an unreachable peer is retried by the core's timers.
                let _ = self.transport.cast(&out.to.0, ELECTION_NAME, &envelope);
            }
            for entry in &ready.committed {
                (self.apply)(entry);
            }
        }
        Ok(())
    }
}

//! Leadership as a supervision concern: the leader-only subtree runs exactly while this master
//! leads. The guard hears every leadership change from the registry; on winning it starts the
//! subtree (one_for_all, built for that term, so every command its children send can carry the
//! term); on losing it, or on a new term, it stops it first.
//!
//! If the subtree gives up (its restart intensity is exceeded), the guard fails with it and the
//! control-plane supervisor decides what happens next.

use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{Node, Supervisor, SupervisorRef, SupervisorSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::election::actor::Status;
use crate::election::core::Term;
use crate::registry::actor::RegistryMsg;
use crate::registry::protocol::REGISTRY_NAME;

/// The name the guard registers under in the node's registry.
pub const LEADERSHIP_NAME: &str = "leadership";

/// What the leader-only subtree's children know about the leadership they run under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderContext {
    /// The term this node leads in: every command leaving the leader carries it, so that
    /// agents refuse the commands of a deposed leader.
    pub term: Term,
}

/// Builds the leader-only subtree for a term.
pub type LeaderTree = Arc<dyn Fn(LeaderContext) -> SupervisorSpec + Send + Sync>;

/// How long the subtree may take to stop when leadership is lost.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LeadershipArgs {
    pub node: Node,
    pub tree: LeaderTree,
}

#[derive(Debug)]
pub enum LeadershipMsg {
    Changed(Status),
}

/// The guard actor.
#[derive(Debug, Default)]
pub struct Leadership;

pub struct LeadershipState {
    node: Node,
    tree: LeaderTree,
    running: Option<(Term, SupervisorRef)>,
}

impl Actor for Leadership {
    type Msg = LeadershipMsg;
    type State = LeadershipState;
    type Arguments = LeadershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LeadershipMsg>,
        args: LeadershipArgs,
    ) -> Result<LeadershipState, ActorProcessingErr> {
        args.node.register(LEADERSHIP_NAME, myself.get_cell())?;
        // Ask the registry for the current leadership and every later change.
        let registry = args
            .node
            .whereis_ref::<RegistryMsg>(REGISTRY_NAME)
            .ok_or("the leadership guard starts after the registry")?;
        registry.send_message(RegistryMsg::WatchLeadership(myself.clone()))?;
        Ok(LeadershipState { node: args.node, tree: args.tree, running: None })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<LeadershipMsg>,
        state: &mut LeadershipState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_subtree().await;
        state.node.unregister(LEADERSHIP_NAME, &myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<LeadershipMsg>,
        msg: LeadershipMsg,
        state: &mut LeadershipState,
    ) -> Result<(), ActorProcessingErr> {
        let LeadershipMsg::Changed(status) = msg;
        let wanted = status.leads().then_some(status.term);
        if state.running.as_ref().map(|(term, _)| *term) == wanted {
            return Ok(());
        }
        state.stop_subtree().await;
        if let Some(term) = wanted {
            let spec = (state.tree)(LeaderContext { term });
            let subtree = Supervisor::spawn(state.node.clone(), spec, Some(myself.get_cell())).await?;
            tracing::info!(node = %state.node.id(), %term, "leading: leader-only subtree started");
            state.running = Some((term, subtree));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<LeadershipMsg>,
        event: SupervisionEvent,
        state: &mut LeadershipState,
    ) -> Result<(), ActorProcessingErr> {
        let running = state.running.as_ref().map(|(_, subtree)| subtree.cell().get_id());
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) if Some(cell.get_id()) == running => {
                state.running = None;
                Err(format!("the leader-only subtree stopped: {reason:?}").into())
            }
            SupervisionEvent::ActorFailed(cell, error) if Some(cell.get_id()) == running => {
                state.running = None;
                Err(format!("the leader-only subtree failed: {error}").into())
            }
            _ => Ok(()),
        }
    }
}

impl LeadershipState {
    async fn stop_subtree(&mut self) {
        if let Some((term, subtree)) = self.running.take() {
            // `running` is already empty, so the exit this causes is not taken as a failure.
            let _ = subtree.shutdown(STOP_TIMEOUT).await;
            tracing::info!(node = %self.node.id(), %term, "not leading: leader-only subtree stopped");
        }
    }
}

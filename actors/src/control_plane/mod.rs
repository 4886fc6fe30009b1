//! A master's control plane as a supervision subtree (DESIGN.md §3):
//!
//! ```text
//! control-plane (rest_for_one)
//! ├── registry     the replicated state machine and the door for clients
//! ├── election     Raft, feeding the registry
//! └── leadership   starts the leader-only subtree while this master leads
//!     └── leader (one_for_all, per term)
//! ```
//!
//! The order is the dependency order: the election sends its events to the registry that was
//! running when it started, and the guard subscribes to that registry. `rest_for_one` keeps
//! it consistent: a restarted registry (whose state was lost) restarts the election, which
//! replays the log into it; a restarted election replays into the running registry, which
//! skips what it already applied.

pub mod leadership;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{
    ChildKind, ChildSpec, StartContext, StartError, Started, Strategy, SupervisorFlags, SupervisorSpec,
};
use flotilla_transport::Transport;
use ractor::Actor;

use crate::election::actor::{Election, ElectionArgs};
use crate::election::core::{PeerId, RaftConfig};
use crate::registry::actor::{Registry, RegistryArgs, RegistryConfig, RegistryMsg, registry_event_sink};
use crate::registry::protocol::REGISTRY_NAME;
use crate::storage::{RaftStorage, StorageError};
use leadership::{LeaderTree, Leadership, LeadershipArgs};

/// Opens this master's Raft storage; called on every (re)start of the election actor.
pub type OpenStorage = Arc<dyn Fn() -> Result<Box<dyn RaftStorage + Send>, StorageError> + Send + Sync>;

/// The running transport (it is replaced when the transport subtree restarts).
pub type CurrentTransport = Arc<dyn Fn() -> Option<Transport> + Send + Sync>;

/// Everything a master's control plane is built from.
#[derive(Clone)]
pub struct ControlPlanePlan {
    pub me: PeerId,
    /// The other voters of the bootstrap configuration.
    pub peers: BTreeSet<PeerId>,
    /// Start as a joiner, outside the configuration (see `ElectionArgs::joining`).
    pub joining: bool,
    pub raft: RaftConfig,
    pub registry: RegistryConfig,
    pub tick_interval: Duration,
    pub storage: OpenStorage,
    pub transport: CurrentTransport,
    pub leader_tree: LeaderTree,
}

/// Spawns `handler` linked to the starting supervisor.
async fn spawn_child<A: Actor>(handler: A, args: A::Arguments, ctx: &StartContext) -> Result<Started, StartError> {
    let (actor, _) = Actor::spawn_linked(None, handler, args, ctx.supervisor.clone()).await?;
    Ok(Started::Running(actor.get_cell()))
}

/// The control-plane subtree of a master.
pub fn control_plane_spec(plan: ControlPlanePlan) -> SupervisorSpec {
    let flags = SupervisorFlags::strategy(Strategy::RestForOne).with_intensity(5, Duration::from_secs(30));
    let registry = {
        let plan = plan.clone();
        ChildSpec::new("registry", ChildKind::Worker, move |ctx: StartContext| {
            let plan = plan.clone();
            async move {
                // The transport subtree starts first and restarts the control plane when it
                // restarts (the node's root is rest_for_one).
                let transport = (plan.transport)().ok_or_else(|| StartError("no running transport".to_owned()))?;
                let args = RegistryArgs { transport, node: ctx.node.clone(), config: plan.registry.clone() };
                spawn_child(Registry, args, &ctx).await
            }
        })
    };
    let election = {
        let plan = plan.clone();
        ChildSpec::new("election", ChildKind::Worker, move |ctx: StartContext| {
            let plan = plan.clone();
            async move {
                let registry = ctx
                    .node
                    .whereis_ref::<RegistryMsg>(REGISTRY_NAME)
                    .ok_or_else(|| StartError("the election starts after the registry".to_owned()))?;
                let transport = (plan.transport)().ok_or_else(|| StartError("no running transport".to_owned()))?;
                let storage = (plan.storage)().map_err(|e| StartError(format!("raft storage: {e}")))?;
                let args = ElectionArgs {
                    transport,
                    me: plan.me.clone(),
                    peers: plan.peers.clone(),
                    joining: plan.joining,
                    config: plan.raft.clone(),
                    storage,
                    node: ctx.node.clone(),
                    events: registry_event_sink(registry),
                    tick_interval: plan.tick_interval,
                };
                spawn_child(Election, args, &ctx).await
            }
        })
    };
    let leadership = ChildSpec::worker("leadership", move |ctx: &StartContext| {
        (Leadership, LeadershipArgs { node: ctx.node.clone(), tree: Arc::clone(&plan.leader_tree) })
    });
    SupervisorSpec::new(flags).named("control-plane").child(registry).child(election).child(leadership)
}

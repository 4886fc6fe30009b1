//! The leading master of the cluster manager: agents, tasks, frameworks and offers. Its
//! decisions are pure (`master/core`); `actor.rs` runs them in the leader-only subtree, talks
//! to agents over the transport and to frameworks (local actors) by message, and keeps the
//! admitted agents in the registry so that a new leader knows whom to wait for.

pub mod actor;
pub mod core;

use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{
    ChildKind, ChildSpec, StartContext, StartError, Started, Strategy, SupervisorFlags, SupervisorSpec,
};
use ractor::Actor;

use self::core::MasterConfig;
use crate::control_plane::CurrentTransport;
use crate::control_plane::leadership::{LeaderContext, LeaderTree};
use crate::launcher::actor::{Launcher, LauncherArgs};
use crate::registry::actor::RegistryMsg;
use crate::registry::protocol::REGISTRY_NAME;
use actor::{MASTER_ACTOR, Master, MasterArgs, MasterMsg};

/// How often the master's timers are checked.
pub const MASTER_TICK: Duration = Duration::from_millis(10);

pub(crate) async fn spawn<A: Actor>(handler: A, args: A::Arguments, ctx: &StartContext) -> Result<Started, StartError> {
    let (actor, _) = Actor::spawn_linked(None, handler, args, ctx.supervisor.clone()).await?;
    Ok(Started::Running(actor.get_cell()))
}

pub(crate) fn registry_of(ctx: &StartContext) -> Result<ractor::ActorRef<RegistryMsg>, StartError> {
    ctx.node.whereis_ref::<RegistryMsg>(REGISTRY_NAME).ok_or_else(|| StartError("no registry on this master".into()))
}

/// What a framework on the leader starts with: the registry, the transport and the master
/// actor (started before it in the same subtree).
pub(crate) fn framework_context(
    ctx: &StartContext,
    transport: &CurrentTransport,
) -> Result<(ractor::ActorRef<RegistryMsg>, flotilla_transport::Transport, ractor::ActorRef<MasterMsg>), StartError> {
    let registry = registry_of(ctx)?;
    let transport = transport().ok_or_else(|| StartError("no running transport".into()))?;
    let master = ctx
        .node
        .whereis_ref::<MasterMsg>(MASTER_ACTOR)
        .ok_or_else(|| StartError("frameworks start after the master".into()))?;
    Ok((registry, transport, master))
}

/// A framework that runs on the leader, as a child of the leader-only subtree built for a
/// term (its registry writes are fenced to that term).
pub type Framework = Arc<dyn Fn(&LeaderContext) -> ChildSpec + Send + Sync>;

/// The leader-only subtree of the cluster manager (one_for_all, per term): the master actor,
/// then the frameworks that run on the leader (the launcher); `extra` adds more frameworks
/// after them (the service scheduler; tests add their own).
pub fn cluster_manager_tree(config: MasterConfig, transport: CurrentTransport, extra: Vec<Framework>) -> LeaderTree {
    Arc::new(move |context: LeaderContext| {
        let term = context.term.0;
        let master = {
            let (config, transport) = (config.clone(), Arc::clone(&transport));
            ChildSpec::new("mesos-master", ChildKind::Worker, move |ctx: StartContext| {
                let (config, transport) = (config.clone(), Arc::clone(&transport));
                async move {
                    let registry = registry_of(&ctx)?;
                    let transport = transport().ok_or_else(|| StartError("no running transport".into()))?;
                    let args =
                        MasterArgs { config, term, transport, node: ctx.node.clone(), registry, tick: MASTER_TICK };
                    spawn(Master, args, &ctx).await
                }
            })
        };
        let launcher = {
            let transport = Arc::clone(&transport);
            ChildSpec::new("launcher", ChildKind::Worker, move |ctx: StartContext| {
                let transport = Arc::clone(&transport);
                async move {
                    let (registry, transport, master) = framework_context(&ctx, &transport)?;
                    let args = LauncherArgs { transport, node: ctx.node.clone(), registry, master, term };
                    spawn(Launcher, args, &ctx).await
                }
            })
        };
        let flags = SupervisorFlags::strategy(Strategy::OneForAll).with_intensity(3, Duration::from_secs(30));
        let spec = SupervisorSpec::new(flags).named("leader").child(master).child(launcher);
        extra.iter().map(|framework| framework(&context)).fold(spec, SupervisorSpec::child)
    })
}

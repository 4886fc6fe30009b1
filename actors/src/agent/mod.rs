//! The agent: offers its node's resources to the leading master and runs tasks through a
//! [`driver::TaskDriver`], checkpointing them so that they outlive the agent process.

pub mod actor;
pub mod checkpoint;
pub mod core;
pub mod driver;
pub mod fetch;
pub mod health;
pub mod http;

use std::sync::Arc;

use flotilla_supervisors::{ChildKind, ChildSpec, StartContext, StartError, Started};
use ractor::Actor;

use crate::control_plane::CurrentTransport;
use actor::{Agent, AgentArgs, AgentConfig};
use driver::TaskDriver;

/// The agent actor as a supervised worker (a restart re-adopts its tasks from the checkpoint).
pub fn agent_child(config: AgentConfig, driver: Arc<dyn TaskDriver>, transport: CurrentTransport) -> ChildSpec {
    ChildSpec::new("mesos-agent", ChildKind::Worker, move |ctx: StartContext| {
        let (config, driver, transport) = (config.clone(), Arc::clone(&driver), Arc::clone(&transport));
        async move {
            let transport = transport().ok_or_else(|| StartError("no running transport".into()))?;
            let args = AgentArgs { config, transport, driver, node: ctx.node.clone() };
            let (actor, _) = Actor::spawn_linked(None, Agent, args, ctx.supervisor.clone()).await?;
            Ok(Started::Running(actor.get_cell()))
        }
    })
}

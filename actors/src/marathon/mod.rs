//! Flotilla's service scheduler in the Marathon style: long-running apps kept at their
//! instance counts, changed through deployments, placed on agents' offers under placement
//! constraints, relaunched with a backoff after failures, and Marathon's REST API v2.
//!
//! The decisions are pure (in [`core`]): the app model, deployments, placement, backoff, the
//! scheduler's state machine ([`core::scheduler`]) and the REST routes ([`core::rest`]). The
//! actor ([`actor`]) runs them on the leading master as a framework of the allocator; the
//! HTTP server forwards requests to it ([`protocol`] carries them from followers).

pub mod actor;
pub mod core;
pub mod protocol;
pub mod readiness;

use std::sync::Arc;

use flotilla_supervisors::{ChildKind, ChildSpec, StartContext};

use crate::control_plane::CurrentTransport;
use crate::control_plane::leadership::LeaderContext;
use crate::master::{Framework, framework_context, spawn};
use actor::{Scheduler, SchedulerArgs};
use core::rest::ServerInfo;
use core::scheduler::SchedulerConfig;
use protocol::MARATHON_FRAMEWORK_ID;

/// The scheduler as a framework of the leader-only subtree (after the master actor): `server`
/// is what `/v2/info` and `/v2/leader` report of this master.
pub fn scheduler_child(transport: CurrentTransport, server: ServerInfo) -> Framework {
    Arc::new(move |context: &LeaderContext| {
        let (transport, server, term) = (Arc::clone(&transport), server.clone(), context.term.0);
        ChildSpec::new("marathon", ChildKind::Worker, move |ctx: StartContext| {
            let (transport, server) = (Arc::clone(&transport), server.clone());
            async move {
                let (registry, transport, master) = framework_context(&ctx, &transport)?;
                let config = SchedulerConfig::new(MARATHON_FRAMEWORK_ID);
                let args = SchedulerArgs { transport, node: ctx.node.clone(), registry, master, server, config, term };
                spawn(Scheduler, args, &ctx).await
            }
        })
    })
}

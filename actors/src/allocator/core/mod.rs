//! One allocation round of Mesos's hierarchical DRF allocator, as a pure function.
//!
//! [`allocate`] takes everything a round depends on — the [`AllocSnapshot`], the time and a
//! seed — and returns the [`Offer`]s to make. The rules, and where they differ from Mesos:
//!
//! - **Free resources.** An agent's free resources are its total minus every [`Allocation`]
//!   on it (tasks and outstanding offers alike). Its reservations split the total into one
//!   pool per reserving role plus the unreserved pool. Allocations carry no reservation
//!   details, so each is charged to its own role's pool first, then to its ancestors' pools
//!   (nearest first), then to the unreserved pool, and whatever is still left to the other
//!   roles' pools: every allocated unit comes out of some pool, so a round never hands out
//!   what an inconsistent snapshot already gave away. Port ranges are removed from every pool.
//! - **Who may use a reservation.** As in Mesos, resources reserved for role `R` go to
//!   frameworks in `R` and in `R`'s descendants (`eng/web` may use `eng`'s reservations);
//!   unreserved resources go to any role.
//! - **One offer per role per agent.** Each round every active agent is visited once per
//!   stage, in a shuffle seeded by `seed`. On a visit, the roles are taken in order, and the
//!   first one that can use something gets everything it can use there (its reservations, its
//!   ancestors' reservations and the unreserved pool, within the caps below), as one offer
//!   to one of its frameworks; the rest stays for the next role. A role is served at most
//!   once per agent per round.
//! - **Stage 1, quota guarantees.** Roles whose allocation is below their
//!   [`RoleConfig::guarantee`] are served first, over all agents, in DRF order among
//!   themselves. Their offers hold the guaranteed scalars only up to what is still owed, and
//!   are made only when they hold some of it. Unguaranteed scalars and ranges come along, so a
//!   task can be launched. Guarantees are not hierarchical: a parent's does not include its
//!   children's allocations.
//! - **Headroom.** What is still owed to every guarantee after stage 1 is held back: an offer
//!   takes unreserved scalars only as far as the unreserved resources left on active agents
//!   still cover every role's outstanding guarantee, plus what the offer's own role is owed.
//!   (Mesos also counts unallocated reservations of quota roles here; Flotilla does not.)
//! - **Stage 2, weighted DRF.** The remaining resources go to the role with the smallest
//!   dominant share divided by its weight (ties by name), then within the role to the
//!   framework with the smallest dominant share of its allocation under that role (ties by
//!   name). Dominant shares are against the scalars of all agents, active or not. Shares are
//!   updated after each offer, so one round spreads agents over roles and frameworks.
//! - **Quota limits.** An offer never takes a role's allocation of a scalar named in its
//!   [`RoleConfig::limit`] above the limit: the offer is shrunk to fit (reserved pools first,
//!   then unreserved), and skipped if what is left is no longer allocatable.
//! - **Skipped.** Inactive agents and frameworks, roles a framework suppressed, and a
//!   framework with a live [`Filter`] on the agent whose resources contain the whole offer.
//!   Another framework of the role is tried instead.
//! - **Minimum.** An offer is made only if it holds one of
//!   [`AllocSnapshot::min_allocatable`]. A scalar there named like a range resource counts its
//!   values (DC/OS's `ports:1`: at least one port). With no minimum configured, an offer must
//!   hold some scalar: ports alone never run a task.
//! - **Invalid weights** (not finite, or not above zero) count as 1.
//!
//! The offers come out in the order they are made. The same snapshot, time and seed give the
//! same round whatever the order of the snapshot's vectors.
//!
//! A round costs O(agents · log + frameworks + allocations), plus the filters it meets:
//! shares sit in ordered sets keyed by (share, index) and move per offer, names map to dense
//! indexes and resources to short vectors, so the round's arithmetic never compares strings.
//! Filters come indexed by agent and framework ([`Filters`], kept by the master across
//! rounds), so a round reads a filter only when the walk of a role's frameworks reaches its
//! framework on its agent, or, on an agent where a whole role may be filtered, once.

mod filters;
mod lookup;
mod names;
mod rng;
mod round;
mod spans;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use filters::{AgentFilters, FilterEntry, Filters};

use crate::mesos::core::resources::{Resources, RoleResources};

/// An agent as the allocator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView {
    pub hostname: String,
    pub total: Resources,
    /// Role -> the part of `total` reserved for that role (static or dynamic reservations);
    /// never contains "*".
    pub reserved: RoleResources,
    pub active: bool,
}

/// A framework as the allocator sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameworkView {
    pub roles: BTreeSet<String>,
    pub suppressed_roles: BTreeSet<String>,
    pub active: bool,
}

/// Mesos's offer filter from DECLINE with refuse_seconds: until `until_ms` the framework is
/// not offered resources on `agent` that are a subset of `resources`. Kept in [`Filters`].
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub framework: String,
    pub agent: String,
    pub resources: Resources,
    pub until_ms: u64,
}

/// A role's weight and quota.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleConfig {
    /// Default 1.0.
    pub weight: f64,
    /// Scalars; the quota guarantee.
    pub guarantee: Resources,
    /// The quota limit on scalars.
    pub limit: Option<Resources>,
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig { weight: 1.0, guarantee: Resources::new(), limit: None }
    }
}

/// Resources held by a framework under a role on an agent: used by its tasks or sitting in
/// an outstanding offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework: String,
    pub role: String,
    pub agent: String,
    pub resources: Resources,
}

/// Everything one round depends on, besides the time and the seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllocSnapshot {
    pub agents: BTreeMap<String, AgentView>,
    pub frameworks: BTreeMap<String, FrameworkView>,
    /// Roles absent here get weight 1 and no quota.
    pub roles: BTreeMap<String, RoleConfig>,
    pub allocations: Vec<Allocation>,
    /// Kept by the caller across rounds (expired ones are ignored, so expiring them is only
    /// housekeeping).
    pub filters: Filters,
    /// An offer must hold at least one of these (Mesos `--min_allocatable_resources`; DC/OS
    /// "cpus:0.01;mem:32").
    pub min_allocatable: Vec<Resources>,
}

/// Resources offered to a framework under one of its roles.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub framework: String,
    pub role: String,
    pub agent: String,
    pub resources: Resources,
    /// The part of `resources` that comes out of reservations, by reserving role (the offer's
    /// role or an ancestor); empty when all of it is unreserved. The master needs it to label
    /// each resource of the offer with its reservation, as Mesos's offers do.
    pub reserved: RoleResources,
}

/// The offers of one round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    pub offers: Vec<Offer>,
}

/// Runs one allocation round: stage 1 (quota guarantees), then stage 2 (weighted DRF), each
/// visiting the active agents in the order `seed` shuffles them into. Filters are live while
/// `now_ms < until_ms`.
pub fn allocate(snapshot: &AllocSnapshot, now_ms: u64, seed: u64) -> Round {
    let mut state = state::State::new(snapshot, now_ms);
    let mut order = state.active_agents();
    rng::shuffle(&mut order, seed);
    for stage in [round::Stage::Quota, round::Stage::Fair] {
        for &agent in &order {
            state.serve(agent, stage);
        }
    }
    Round { offers: state.into_offers() }
}

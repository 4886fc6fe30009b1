//! The allocator: which framework is offered which agent's free resources, round after round.
//!
//! Mesos's master runs its hierarchical DRF allocator every `--allocation_interval` (1 s):
//! roles below their quota guarantee are served first, then the role furthest below its
//! weighted dominant share, and within it the framework furthest below its own share
//! (`reference/dcos-api.md` §3.1, §3.4). Flotilla keeps that policy but states it as a pure
//! function, [`allocate`], of an [`AllocSnapshot`] (agents, frameworks, roles, what is
//! allocated, the offer filters), the time and a seed, in `allocator/core`. The master owns
//! the snapshot, calls `allocate` on its interval and sends the [`Offer`]s of the [`Round`];
//! since a round depends on nothing else, it is unit tested, property tested and benchmarked
//! (`benches/allocator.rs`, Mesos's `DeclineOffers` shape) without a cluster.

pub mod core;

pub use self::core::{
    AgentFilters, AgentView, AllocSnapshot, Allocation, Filter, FilterEntry, Filters, FrameworkView, Offer, RoleConfig,
    Round, allocate,
};

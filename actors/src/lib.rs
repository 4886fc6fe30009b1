//! Flotilla's components, each a pure core (a plain state machine with no runtime, no I/O, no
//! clock reads and no RNG construction) driven by a thin actor shell.
//!
//! - [`election`]: leader election and log replication (Raft) among the master nodes.
//! - [`storage`]: the durable-storage seam of the Raft log: a checksummed append-only record
//!   format (pure, in `storage/core`), a file-backed store and a simulated disk with fault hooks.
//! - [`registry`]: the replicated state machine on top of Raft: a revisioned key-value store
//!   with transactions, exactly-once retries, a watch history and snapshots (pure, in
//!   `registry/core`), and its actor: the door for clients, with forwarding to the leader.
//! - [`allocator`]: the master's allocator: one round of Mesos's hierarchical DRF allocation
//!   (quota guarantees, weighted DRF, limits, reservations, offer filters) as a pure function
//!   of a snapshot, a time and a seed (in `allocator/core`).
//! - [`mesos`], [`agent`], [`master`], [`launcher`]: the cluster manager — its vocabulary and
//!   protocol, the agents that run tasks, the leading master, and the built-in framework for
//!   one-off tasks.
//! - [`marathon`]: the service scheduler's pure cores: Marathon app definitions (parsing,
//!   defaults, deprecated aliases, validation, partial updates, the read model, task
//!   environment), deployment plans and progress, rolling upgrades and scaling, placement
//!   constraints and offer matching, launch backoff (in `marathon/core`).
//! - [`discovery`]: what service discovery serves on every node: the cluster's masters,
//!   agents, frameworks and running tasks with their ports, as a view and its changes.
//! - [`dns`]: the node's DNS server: Mesos-DNS and `thisdcos.directory` names from the
//!   discovery view (pure records and answers in `dns/core`), served over UDP and TCP, with
//!   forwarding of other names and Mesos-DNS's HTTP API.
//! - [`l4lb`]: the layer-4 load balancer: VIP labels, the VIP table and the balancing policy
//!   (pure, in `l4lb/core`), and the actor that serves every VIP through a user-space TCP/UDP
//!   proxy on this node.
//! - [`chaos`]: faults on purpose: the monkey's seeded fault schedule (pure, in `chaos/core`).
//! - [`control_plane`]: a master's supervision subtree (registry, election, and the guard that
//!   runs the leader-only subtree while this master leads).
//!
//! Cores live in `core/` folders; `tests/tidy.rs` keeps them free of runtimes, I/O, clocks,
//! random-order collections and RNG construction, so they are unit tested and simulated on
//! virtual time from a seed.

pub mod agent;
pub mod allocator;
pub mod chaos;
pub mod control_plane;
pub mod discovery;
pub mod dns;
pub mod election;
pub mod l4lb;
pub mod launcher;
pub mod marathon;
pub mod master;
pub mod mesos;
pub mod registry;
pub mod storage;

//! Service discovery's shared input: the view of the cluster (masters, agents, frameworks,
//! running tasks and their ports) that the DNS server and the load balancer on every node
//! serve, kept up to date from the registry's watch stream.

pub mod entries;
pub mod feed;
pub mod model;

pub use model::{
    AgentEntry, ClusterView, FrameworkEntry, MasterEntry, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate,
};

//! The node's DNS server (issue 7): Mesos-DNS names (`<task>.<framework>.mesos`, SRV records,
//! `leader.mesos`, ...) and dcos-dns's `thisdcos.directory` zones (per-task names, the
//! mirror of the mesos zone and named VIPs), answered from the cluster view that discovery's
//! feed keeps up to date; other names are forwarded to upstream resolvers.
//!
//! The records and answers are pure ([`core`]); [`server`] serves them over UDP and TCP
//! (hickory-server) and forwards the rest; [`actor`] applies the feed's updates to the index
//! the server reads.

pub mod actor;
pub mod core;
pub mod server;

pub use actor::{DNS_ACTOR, Dns, DnsArgs, DnsMsg, DnsStatus, dns_child};
pub use core::{DnsConfig, IpSource, http_api, named_vip_address};

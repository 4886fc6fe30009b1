//! The node's DNS server (issue 7): Mesos-DNS names (`<task>.<framework>.mesos`, SRV records,
//! `leader.mesos`, ...) and dcos-dns's `thisdcos.directory` zones (per-task names, the
//! mirror of the mesos zone and named VIPs), answered from the cluster view that discovery's
//! feed keeps up to date; other names are forwarded to upstream resolvers.
//!
//! The records and answers are pure ([`core`]), and so is the wire format of the UDP fast
//! path ([`core::wire`]): a plain query is read by hand and answered by copying a response
//! prepared once per (name, type, class). [`udp`] runs that path on `threads` OS threads, one
//! SO_REUSEPORT socket each, reading and answering datagrams in batches (`recvmmsg`,
//! `sendmmsg`), with a cache per thread that every index change empties;
//! [`server`] is the full path — everything the fast path leaves (unusual or malformed
//! packets, forwarding, answers that may need truncation) and all of TCP (hickory-server) —
//! with the same answers; [`actor`] applies the feed's updates to the index both read.

pub mod actor;
pub mod core;
pub mod server;
pub mod udp;

#[cfg(test)]
mod fast_path_tests;
#[cfg(test)]
mod udp_tests;

pub use actor::{DNS_ACTOR, Dns, DnsArgs, DnsMsg, DnsStatus, dns_child};
pub use core::{DnsConfig, IpSource, http_api, named_vip_address};

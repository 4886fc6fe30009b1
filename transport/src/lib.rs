//! The one transport between Flotilla nodes: typed remote actor references over QUIC with
//! mutual TLS, failure detection, and SimNet — the same API on an in-memory, seeded network.
//!
//! - [`core`]: the pure parts (wire codec, identity and admission, session rules, failure
//!   detector, fault model).
//! - [`identity`] and [`tls`]: the cluster CA, node certificates, rustls and quinn configs.
//! - [`mesh`]: a node's [`Transport`]: sessions, exports, casts, calls, monitors, bulk
//!   transfers, graceful shutdown.
//! - [`remote`]: [`RemoteMessage`], [`RemoteCall`], [`RemoteRef`], [`ReplyPort`].
//! - [`quic`] and [`sim`]: the two networks behind the same [`mesh::Network`] seam.
//! - `link_faults`: link faults on a live transport ([`Transport::inject_fault`]), the same
//!   model SimNet applies, carried out at the node's own edges.
//!
//! Guarantees: messages from one node to one actor arrive in the order they were sent while
//! a session lasts (one ordered stream per pair; SimNet breaks this only under an explicit
//! `Reorder` or `Duplicate` fault); a message to an unknown actor comes back as a typed error;
//! a lost session fires monitors with `NoConnection`, which says the connection died, not that
//! the peer did.

pub mod core;
pub mod identity;
mod link;
mod link_faults;
pub mod mesh;
mod queue;
pub mod quic;
pub mod remote;
pub mod sim;
pub mod tls;

pub use crate::core::fault::{Fault, FaultError, FaultId, Links, NodeSet};
pub use crate::core::identity::{AdmissionPolicy, ClusterId, PeerIdentity, Refusal, Role};
pub use crate::mesh::{
    Address, BulkError, BulkTransfer, CallError, Network, PeerStats, RemoteDown, RemoteLink, RemoteMonitor,
    RemoteTarget, SendError, Sender, Transport, TransportConfig, TransportError, TransportStats,
};
pub use crate::queue::{QueueDepth, QueueFull, QueueLimits};
pub use crate::remote::{RemoteCall, RemoteMessage, RemoteRef, ReplyPort};
pub use crate::sim::{SimNet, Trace};
pub use rustls::pki_types::CertificateDer;

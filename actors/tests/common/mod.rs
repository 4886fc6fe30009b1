//! Test harness shared by the simulated-cluster tests: simulated disks that outlive their
//! master, SimNet transports, and a bounded wait on a condition.

#![allow(dead_code)]

use std::time::Duration;

use flotilla_supervisors::{Node, NodeId};
use flotilla_transport::{ClusterId, PeerIdentity, Role, SimNet, Transport, TransportConfig};

/// A simulated disk that outlives the master using it, so a restarted master finds what its
/// predecessor synced (and nothing it did not).
#[allow(unused_imports)]
pub use flotilla_actors::storage::SharedSimDisk as SharedDisk;

pub async fn start_transport(net: &SimNet, id: &str, role: Role, seed: u64) -> (Node, Transport) {
    let node = Node::builder(NodeId::new(id).unwrap()).seed(seed).start().await.unwrap();
    let identity = PeerIdentity { cluster: ClusterId::new("test").unwrap(), node: id.into(), role };
    let network = flotilla_transport::Network::Sim(net.clone());
    // SimNet loses a handshake cut by a partition for good, where QUIC would retransmit it
    // as soon as the path heals; a 1 s handshake timeout stands in for that retransmission
    // (with the default 5 s, a dial in flight at healing delays reconnection by up to 5 s).
    let config = TransportConfig { handshake_timeout: Duration::from_secs(1), ..TransportConfig::default() };
    let transport = Transport::start(&node, identity, config, network, None).await.unwrap();
    (node, transport)
}

/// Waits (on the tokio clock, virtual in these tests) until a check gives a value; fails the
/// test after the bound.
pub use flotilla_supervisors::wait_until;

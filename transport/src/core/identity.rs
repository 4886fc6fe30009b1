//! Who a peer is, and whether an endpoint admits it: pure values and one pure decision.
//!
//! A node's identity is carried by its certificate (see `crate::identity`): the cluster it
//! belongs to, its node id and its role. The endpoint admits a peer only if all three fit
//! its [`AdmissionPolicy`]; the check runs after the TLS handshake and before any stream
//! is accepted, so a refused peer never reaches an actor.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The role a node plays in the cluster, as named in its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Master,
    Agent,
    /// A person's or a tool's client (the CLI, a benchmark): talks to masters' APIs, never
    /// votes and never runs tasks.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Agent, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster's id: the same rules as a node id (`[a-z0-9._-]{1,63}`), so it fits in a URI
/// and a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        if valid_id(&id) { Ok(ClusterId(id)) } else { Err(InvalidId(id)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id that breaks the `[a-z0-9._-]{1,63}` rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {0:?}: expected 1 to 63 characters from [a-z0-9._-]")]
pub struct InvalidId(pub String);

/// The id rule shared by node ids and cluster ids.
pub fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a verified certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub cluster: ClusterId,
    /// The node id (validated with [`valid_id`]).
    pub node: String,
    pub role: Role,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, cluster {})", self.node, self.role, self.cluster)
    }
}

/// Which peers an endpoint admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionPolicy {
    pub cluster: ClusterId,
    pub allowed_roles: BTreeSet<Role>,
}

impl AdmissionPolicy {
    /// Admit every role of `cluster`.
    pub fn cluster(cluster: ClusterId) -> Self {
        AdmissionPolicy { cluster, allowed_roles: Role::ALL.into_iter().collect() }
    }

    pub fn roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.allowed_roles = roles.into_iter().collect();
        self
    }

    /// The admission decision for a peer whose certificate chain already verified.
    pub fn admit(&self, peer: &PeerIdentity) -> Result<(), Refusal> {
        if peer.cluster != self.cluster {
            return Err(Refusal::WrongCluster { expected: self.cluster.clone(), got: peer.cluster.clone() });
        }
        if !self.allowed_roles.contains(&peer.role) {
            return Err(Refusal::RoleNotAllowed { role: peer.role });
        }
        Ok(())
    }
}

/// Why a connection was refused. Every refusal is logged once and counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("the peer's certificate names no valid identity: {0}")]
    NoIdentity(String),
    #[error("the peer belongs to cluster {got}, not {expected}")]
    WrongCluster { expected: ClusterId, got: ClusterId },
    #[error("role {role} is not allowed on this endpoint")]
    RoleNotAllowed { role: Role },
    #[error("the peer's hello does not match its certificate: {0}")]
    HelloMismatch(String),
    #[error("the peer is node {got}, not the node {expected} that was dialled")]
    UnexpectedNode { expected: String, got: String },
    #[error("the handshake did not complete: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cluster: &str, role: Role) -> PeerIdentity {
        PeerIdentity { cluster: ClusterId::new(cluster).unwrap(), node: "n1".into(), role }
    }

    #[test]
    fn admits_only_its_cluster_and_roles() {
        let policy = AdmissionPolicy::cluster(ClusterId::new("prod").unwrap()).roles([Role::Master]);
        assert_eq!(policy.admit(&peer("prod", Role::Master)), Ok(()));
        assert_eq!(policy.admit(&peer("prod", Role::Agent)), Err(Refusal::RoleNotAllowed { role: Role::Agent }));
        assert!(matches!(policy.admit(&peer("test", Role::Master)), Err(Refusal::WrongCluster { .. })));
    }

    #[test]
    fn ids_follow_the_node_id_rule() {
        assert!(ClusterId::new("prod-eu_1.a").is_ok());
        for bad in ["", "Prod", "a/b", "a b", &"x".repeat(64)] {
            assert!(ClusterId::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Role::parse("agent"), Some(Role::Agent));
        assert_eq!(Role::parse("root"), None);
    }
}

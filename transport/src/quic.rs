//! The real network: one quinn endpoint per node (one UDP socket to listen and to dial),
//! mTLS from the cluster CA, admission by the identity in the peer's certificate.
//!
//! Admission happens in two steps, both before any stream is read: rustls verifies the
//! chain, validity and key usage during the handshake; then the cluster id and role named in
//! the certificate are checked against the endpoint's [`AdmissionPolicy`]. A refused
//! connection is closed, logged once and counted; nothing it sent reaches an actor.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::core::identity::{AdmissionPolicy, PeerIdentity, Refusal};
use crate::core::session::Origin;
use crate::core::wire::{self, Envelope};
use crate::identity::NodeCredentials;
use crate::link::{Conn, FrameReader, Rx, Tx, close_code};
use crate::mesh::{Address, Handshaken, Shared, TransportError};
use crate::tls::{self, QuicTuning};

/// What a node needs to join the cluster over QUIC.
#[derive(Debug)]
pub struct QuicSetup {
    /// Where to listen (and dial from); port 0 picks a free port.
    pub bind: SocketAddr,
    pub credentials: NodeCredentials,
    /// The cluster CA's certificate: the only trust anchor.
    pub ca: CertificateDer<'static>,
    pub policy: AdmissionPolicy,
    pub tuning: QuicTuning,
}

/// The running endpoint and the policy it admits peers by.
pub(crate) struct QuicNet {
    pub(crate) endpoint: quinn::Endpoint,
    policy: AdmissionPolicy,
}

pub(crate) fn start(shared: &Arc<Shared>, setup: QuicSetup) -> Result<QuicNet, TransportError> {
    let server = tls::server_config(&setup.credentials, &setup.ca, &setup.tuning)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let client = tls::client_config(&setup.credentials, &setup.ca, &setup.tuning)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut endpoint = quinn::Endpoint::server(server, setup.bind)
        .map_err(|source| TransportError::Bind { addr: setup.bind, source })?;
    endpoint.set_default_client_config(client);
    let accepting = endpoint.clone();
    let policy = setup.policy.clone();
    let weak = Arc::downgrade(shared);
    let task = tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let Some(shared) = weak.upgrade() else { return };
            let policy = policy.clone();
            let handshake = tokio::spawn(async move { accept(&shared, incoming, &policy).await });
            if let Some(shared) = weak.upgrade() {
                shared.own_task(handshake.abort_handle());
            }
        }
    });
    shared.own_task(task.abort_handle());
    Ok(QuicNet { endpoint, policy: setup.policy })
}

/// Completes an incoming connection's handshake and admission, then hands it to the endpoint
/// actor. Every refusal is logged once and counted.
async fn accept(shared: &Arc<Shared>, incoming: quinn::Incoming, policy: &AdmissionPolicy) {
    let remote = incoming.remote_address();
    let timeout = shared.config.handshake_timeout;
    let conn = match tokio::time::timeout(timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return shared.count_refusal(&remote.to_string(), &Refusal::Handshake(err.to_string())),
        Err(_) => return shared.count_refusal(&remote.to_string(), &Refusal::Handshake("timed out".into())),
    };
    let admitted = tls::peer_identity(&conn).and_then(|identity| policy.admit(&identity).map(|()| identity));
    let identity = match admitted {
        Ok(identity) => identity,
        Err(refusal) => return refuse(shared, &conn, &remote.to_string(), &refusal),
    };
    let result = tokio::time::timeout(timeout, read_hello(shared, &conn, &identity)).await;
    match result {
        Ok(Ok((tx, reader, boot_id))) => shared.handshaken(Handshaken {
            identity,
            boot_id,
            origin: Origin::Accepted,
            conn: Conn::Quic(conn),
            tx: Tx::Quic(tx),
            reader,
            address: None,
        }),
        Ok(Err(refusal)) => refuse(shared, &conn, &identity.node, &refusal),
        Err(_) => refuse(shared, &conn, &identity.node, &Refusal::Protocol("no hello in time".into())),
    }
}

async fn read_hello(
    shared: &Shared,
    conn: &quinn::Connection,
    identity: &PeerIdentity,
) -> Result<(quinn::SendStream, FrameReader, u64), Refusal> {
    let (tx, rx) = conn.accept_bi().await.map_err(|e| Refusal::Protocol(e.to_string()))?;
    let mut reader = FrameReader::new(Rx::Quic(rx), shared.config.max_frame_body);
    match reader.next().await.map_err(|e| Refusal::Protocol(e.to_string()))? {
        Envelope::Hello { cluster, node, role, boot_id } => {
            check_claim(identity, &cluster, &node, role)?;
            Ok((tx, reader, boot_id))
        }
        other => Err(Refusal::Protocol(format!("expected hello, got {}", wire::kind_name(other.kind())))),
    }
}

/// A hello or welcome must name what the certificate names.
fn check_claim(
    identity: &PeerIdentity,
    cluster: &str,
    node: &str,
    role: crate::core::identity::Role,
) -> Result<(), Refusal> {
    if identity.cluster.as_str() != cluster || identity.node != node || identity.role != role {
        return Err(Refusal::HelloMismatch(format!(
            "hello says {node} ({role}, cluster {cluster}), certificate says {identity}"
        )));
    }
    Ok(())
}

fn refuse(shared: &Shared, conn: &quinn::Connection, who: &str, refusal: &Refusal) {
    conn.close(quinn::VarInt::from_u32(close_code::REFUSED), refusal.to_string().as_bytes());
    shared.count_refusal(who, refusal);
}

/// Dials `node` at `address`, verifies that the certificate names that node and passes the
/// admission policy, and exchanges hello and welcome.
pub(crate) async fn dial(shared: &Shared, net: &QuicNet, node: &str, address: &Address) -> Result<Handshaken, String> {
    let Address::Udp(addr) = address else {
        return Err(format!("{address:?} is not a UDP address"));
    };
    let timeout = shared.config.handshake_timeout;
    let connecting = net.endpoint.connect(*addr, tls::SERVER_NAME).map_err(|e| e.to_string())?;
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err(format!("no handshake with {addr} within {timeout:?}")),
    };
    let identity = tls::peer_identity(&conn)
        .and_then(|identity| net.policy.admit(&identity).map(|()| identity))
        .and_then(|identity| {
            if identity.node == node {
                Ok(identity)
            } else {
                Err(Refusal::UnexpectedNode { expected: node.to_owned(), got: identity.node })
            }
        });
    let identity = match identity {
        Ok(identity) => identity,
        Err(refusal) => {
            refuse(shared, &conn, node, &refusal);
            return Err(refusal.to_string());
        }
    };
    match tokio::time::timeout(timeout, hello(shared, &conn, &identity)).await {
        Ok(Ok((tx, reader, boot_id))) => Ok(Handshaken {
            identity,
            boot_id,
            origin: Origin::Dialed,
            conn: Conn::Quic(conn),
            tx: Tx::Quic(tx),
            reader,
            address: Some(address.clone()),
        }),
        Ok(Err(err)) => {
            conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), err.as_bytes());
            Err(err)
        }
        Err(_) => {
            conn.close(quinn::VarInt::from_u32(close_code::PROTOCOL), b"no welcome in time");
            Err(format!("no welcome from {node} within {timeout:?}"))
        }
    }
}

async fn hello(
    shared: &Shared,
    conn: &quinn::Connection,
    identity: &PeerIdentity,
) -> Result<(quinn::SendStream, FrameReader, u64), String> {
    let (mut tx, rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let local = &shared.local;
    let hello = Envelope::Hello {
        cluster: local.cluster.as_str().to_owned(),
        node: local.node.clone(),
        role: local.role,
        boot_id: shared.boot_id,
    };
    let mut frame = Vec::new();
    wire::encode(&hello, &mut frame).map_err(|e| e.to_string())?;
    tx.write_all(&frame).await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(Rx::Quic(rx), shared.config.max_frame_body);
    match reader.next().await.map_err(|e| format!("refused: {e}"))? {
        Envelope::Welcome { cluster, node, role, boot_id } => {
            check_claim(identity, &cluster, &node, role).map_err(|e| e.to_string())?;
            Ok((tx, reader, boot_id))
        }
        other => Err(format!("expected welcome, got {}", wire::kind_name(other.kind()))),
    }
}

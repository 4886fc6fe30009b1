//! The admission matrix: every kind of bad peer is refused before any message reaches an
//! actor, and each refusal is counted (and logged) exactly once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Net, Note, cluster_id, start_member_with, wait_for};
use flotilla_transport::core::wire::{self, Envelope};
use flotilla_transport::identity::{ClusterCa, IssueOptions, NodeCredentials};
use flotilla_transport::tls::{self, QuicTuning};
use flotilla_transport::{AdmissionPolicy, ClusterId, RemoteMessage, Role, TransportConfig};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use time::{Duration as Span, OffsetDateTime};

/// A client that speaks the protocol but may hold any certificate (or none).
struct Client {
    name: &'static str,
    config: quinn::ClientConfig,
    claims: (String, String, Role),
}

fn client(name: &'static str, creds: &NodeCredentials, trusted_ca: &CertificateDer<'static>) -> Client {
    let config = tls::client_config(creds, trusted_ca, &QuicTuning::default()).unwrap();
    let id = &creds.identity;
    Client { name, config, claims: (id.cluster.as_str().to_owned(), id.node.clone(), id.role) }
}

fn without_certificate(trusted_ca: &CertificateDer<'static>) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted_ca.clone()).unwrap();
    let mut crypto = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![tls::ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()));
    Client { name: "no certificate", config, claims: ("test".into(), "anon".into(), Role::Master) }
}

/// Connects, sends a hello and a cast to `echo`, and lets the connection end however the
/// server decides.
async fn attempt(client: &Client, server: std::net::SocketAddr) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client.config.clone());
    let Ok(connecting) = endpoint.connect(server, tls::SERVER_NAME) else { return };
    let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await else { return };
    let (cluster, node, role) = client.claims.clone();
    let mut frames = Vec::new();
    wire::encode(&Envelope::Hello { cluster, node: node.clone(), role, boot_id: 1 }, &mut frames).unwrap();
    let payload = postcard::to_stdvec(&Note { from: node, seq: 0 }).unwrap();
    wire::encode_cast("echo", Note::TAG, &payload, &mut frames).unwrap();
    if let Ok(Ok((mut tx, _rx))) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await {
        let _ = tx.write_all(&frames).await;
        let _ = tx.finish();
    }
    // The server closes refused connections; an admitted one stays open until we leave.
    let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

#[tokio::test]
async fn every_bad_peer_is_refused_before_reaching_an_actor() {
    let net = Net::quic();
    let Net::Quic(ca) = &net else { unreachable!() };
    let ca_cert = ca.cert_der().clone();
    let now = OffsetDateTime::now_utc();
    // The server admits masters of cluster "test" only.
    let masters_only = AdmissionPolicy::cluster(cluster_id()).roles([Role::Master]);
    let server = start_member_with(&net, "s", TransportConfig::default(), masters_only).await;
    let addr = server.transport.local_addr().unwrap();

    let other_ca = ClusterCa::generate(&cluster_id()).unwrap();
    let window =
        |from: Span, to: Span| IssueOptions { not_before: now + from, not_after: now + to, cluster_override: None };
    let other_cluster =
        IssueOptions { cluster_override: Some(ClusterId::new("other").unwrap()), ..IssueOptions::default() };
    let refused = [
        without_certificate(&ca_cert),
        client("certificate from another CA", &other_ca.issue("m9", Role::Master).unwrap(), &ca_cert),
        client(
            "self-signed certificate",
            &NodeCredentials::self_signed(&cluster_id(), "m9", Role::Master).unwrap(),
            &ca_cert,
        ),
        client(
            "expired certificate",
            &ca.issue_with("m9", Role::Master, window(Span::days(-30), Span::days(-1))).unwrap(),
            &ca_cert,
        ),
        client(
            "not yet valid certificate",
            &ca.issue_with("m9", Role::Master, window(Span::days(1), Span::days(30))).unwrap(),
            &ca_cert,
        ),
        client("another cluster's id", &ca.issue_with("m9", Role::Master, other_cluster).unwrap(), &ca_cert),
        client("role not allowed here", &ca.issue("a9", Role::Agent).unwrap(), &ca_cert),
    ];
    for (count, bad) in refused.iter().enumerate() {
        attempt(bad, addr).await;
        let transport = server.transport.clone();
        let expected = count as u64 + 1;
        wait_for(&format!("refusal of: {}", bad.name), || transport.stats().refused >= expected).await;
        assert_eq!(server.transport.stats().refused, expected, "{} was refused more than once", bad.name);
        assert_eq!(server.transport.stats().dispatched, 0, "{} reached an actor", bad.name);
        assert!(server.echo.notes().is_empty(), "{} reached an actor", bad.name);
        assert!(server.transport.connected().is_empty(), "{} got a session", bad.name);
    }

    // The same attempt with a good certificate does reach the actor: the matrix can fail.
    let good = client("a master of this cluster", &ca.issue("m2", Role::Master).unwrap(), &ca_cert);
    let echo = server.echo.clone();
    let (attempted, ()) =
        tokio::join!(attempt(&good, addr), wait_for("the good peer's cast", || echo.notes().len() == 1));
    let () = attempted;
    assert_eq!(server.transport.stats().refused, refused.len() as u64);
    assert_eq!(server.transport.stats().dispatched, 1);
    server.transport.shutdown().await;
}

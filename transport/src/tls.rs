//! rustls and quinn configuration for mutually authenticated node links.
//!
//! Both ends present a certificate issued by the cluster CA and verify the other's against it:
//! TLS 1.3 only, the *ring* provider only, ALPN [`ALPN`], server name [`SERVER_NAME`]. Which node
//! the peer is comes from its certificate's URI SAN after the handshake ([`peer_identity`]); the
//! endpoint then applies its `AdmissionPolicy`.
//!
//! Session resumption is off on both sides, so every connection re-verifies the peer's chain
//! (including its validity window) with a full handshake; node links are long-lived, so the
//! extra round trip does not matter.

use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, version::TLS13};

use crate::core::identity::{PeerIdentity, Refusal};
use crate::identity::{self, NodeCredentials, identity_from_cert};

/// The one application protocol node links speak.
pub const ALPN: &[u8] = b"flotilla/1";
/// The TLS server name every client asks for; every node certificate carries it as a DNS SAN.
pub const SERVER_NAME: &str = identity::DNS_NAME;

/// Why a TLS or QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA certificate cannot be used as a trust anchor: {0}")]
    BadCa(String),
    #[error("the node credentials hold no certificate")]
    NoCertificate,
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC needs a TLS 1.3 initial cipher suite: {0}")]
    NoInitialCipherSuite(#[from] NoInitialCipherSuite),
}

/// The *ring* crypto provider, built once and shared by every configuration built here.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Installs the *ring* provider as rustls' process-wide default, for libraries that build
/// their own configurations. Call it first thing in `main`; later calls, or a provider already
/// installed by someone else, are not errors.
pub fn install_default_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if CryptoProvider::clone(&crypto_provider()).install_default().is_err() {
            tracing::debug!("a process-wide rustls crypto provider was already installed");
        }
    });
}

/// QUIC transport parameters for node links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicTuning {
    /// How often an idle link sends a keep-alive.
    pub keep_alive: Duration,
    /// How long a silent peer is tolerated before the link is declared dead. Zero disables the
    /// timeout (QUIC's convention); do not do that for node links.
    pub idle_timeout: Duration,
    /// Per-stream receive window, in bytes.
    pub stream_window: u64,
    /// Per-connection receive window (all streams together) and send window, in bytes.
    pub connection_window: u64,
    /// Bytes of unread incoming datagrams buffered, and of outgoing datagrams queued.
    pub datagram_buffer: usize,
    /// Unidirectional streams the peer may have open at once.
    pub max_uni_streams: u32,
    /// Bidirectional streams the peer may have open at once.
    pub max_bidi_streams: u32,
}

impl Default for QuicTuning {
    fn default() -> Self {
        QuicTuning {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            stream_window: 8 << 20,
            connection_window: 16 << 20,
            datagram_buffer: 1 << 20,
            max_uni_streams: 256,
            max_bidi_streams: 256,
        }
    }
}

impl QuicTuning {
    /// The quinn transport configuration. Values beyond QUIC's limits saturate.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let varint = |value: u64| VarInt::from_u64(value).unwrap_or(VarInt::MAX);
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut config = quinn::TransportConfig::default();
        config
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(IdleTimeout::from(varint(idle_ms))))
            .stream_receive_window(varint(self.stream_window))
            .receive_window(varint(self.connection_window))
            .send_window(self.connection_window)
            .datagram_receive_buffer_size(Some(self.datagram_buffer))
            .datagram_send_buffer_size(self.datagram_buffer)
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams));
        config
    }
}

/// The configuration of an endpoint that accepts node links: it presents `creds`, and requires
/// and verifies a client certificate issued by `ca`.
pub fn server_config(
    creds: &NodeCredentials,
    ca: &CertificateDer<'static>,
    tuning: &QuicTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(creds)?, creds.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(Arc::new(tuning.transport_config()));
    Ok(config)
}

/// The configuration of an endpoint that dials node links: it verifies the server against `ca`
/// under the name [`SERVER_NAME`] and presents `creds`.
pub fn client_config(
    creds: &NodeCredentials,
    ca: &CertificateDer<'static>,
    tuning: &QuicTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain(creds)?, creds.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(Arc::new(tuning.transport_config()));
    Ok(config)
}

/// Who the peer of an established connection is, read from the leaf of the certificate chain
/// the handshake verified.
pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, Refusal> {
    let any = conn.peer_identity().ok_or_else(|| Refusal::NoIdentity("the peer presented no certificate".into()))?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| Refusal::NoIdentity("the peer identity is not a certificate chain".into()))?;
    let leaf = chain.first().ok_or_else(|| Refusal::NoIdentity("the peer's certificate chain is empty".into()))?;
    identity_from_cert(leaf).map_err(|err| Refusal::NoIdentity(err.to_string()))
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|err| TlsError::BadCa(err.to_string()))?;
    Ok(roots)
}

fn chain(creds: &NodeCredentials) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if creds.cert_chain.is_empty() { Err(TlsError::NoCertificate) } else { Ok(creds.cert_chain.clone()) }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use time::OffsetDateTime;
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    use super::*;
    use crate::core::identity::{AdmissionPolicy, ClusterId, Role};
    use crate::identity::{ClusterCa, IssueOptions};

    const BOUND: Duration = Duration::from_secs(10);

    fn cluster(id: &str) -> ClusterId {
        ClusterId::new(id).unwrap()
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// What the server's accept loop reports for one incoming connection.
    type Accepted = Result<(quinn::Connection, PeerIdentity), quinn::ConnectionError>;

    /// A server endpoint whose accept loop reports, per incoming connection, the outcome of
    /// awaiting the handshake (`Connecting`), with the peer identity on success.
    fn spawn_server(config: quinn::ServerConfig) -> (quinn::Endpoint, mpsc::UnboundedReceiver<Accepted>) {
        let endpoint = quinn::Endpoint::server(config, localhost()).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let outcome = match incoming.await {
                    Ok(conn) => {
                        let peer = peer_identity(&conn).expect("a verified peer names an identity");
                        Ok((conn, peer))
                    }
                    Err(err) => Err(err),
                };
                if tx.send(outcome).is_err() {
                    break;
                }
            }
        });
        (endpoint, rx)
    }

    fn client_endpoint() -> quinn::Endpoint {
        quinn::Endpoint::client(localhost()).unwrap()
    }

    /// The TLS alert a failed QUIC handshake carries (QUIC error codes 0x100..=0x1ff), if any.
    fn tls_alert(err: &quinn::ConnectionError) -> Option<u8> {
        let code = match err {
            quinn::ConnectionError::TransportError(err) => err.code,
            quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
            _ => return None,
        };
        let code = u64::from(code);
        (0x100..0x200).contains(&code).then_some((code & 0xff) as u8)
    }

    #[tokio::test]
    async fn good_client_connects_and_both_sides_see_each_other() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let master = ca.issue("m1", Role::Master).unwrap();
        let agent = ca.issue("a1", Role::Agent).unwrap();
        let tuning = QuicTuning::default();
        let (server, mut accepted) = spawn_server(server_config(&master, ca.cert_der(), &tuning).unwrap());
        let addr = server.local_addr().unwrap();

        let client = client_endpoint();
        let connecting =
            client.connect_with(client_config(&agent, ca.cert_der(), &tuning).unwrap(), addr, SERVER_NAME).unwrap();
        let conn = timeout(BOUND, connecting).await.unwrap().unwrap();
        assert_eq!(peer_identity(&conn).unwrap(), master.identity);
        assert_eq!(
            conn.handshake_data()
                .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|data| data.protocol),
            Some(ALPN.to_vec())
        );

        let (server_conn, seen) = timeout(BOUND, accepted.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(seen, agent.identity);
        assert_eq!(AdmissionPolicy::cluster(cluster("prod")).admit(&seen), Ok(()));

        // The link carries streams and allows datagrams.
        let mut send = timeout(BOUND, conn.open_uni()).await.unwrap().unwrap();
        send.write_all(b"hello").await.unwrap();
        send.finish().unwrap();
        let mut recv = timeout(BOUND, server_conn.accept_uni()).await.unwrap().unwrap();
        assert_eq!(timeout(BOUND, recv.read_to_end(64)).await.unwrap().unwrap(), b"hello");
        assert!(conn.max_datagram_size().is_some(), "datagrams are enabled");

        conn.close(0u32.into(), b"done");
        server.close(0u32.into(), b"done");
        timeout(BOUND, client.wait_idle()).await.unwrap();
    }

    #[tokio::test]
    async fn other_cluster_passes_the_handshake_and_fails_admission() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let master = ca.issue("m1", Role::Master).unwrap();
        let options = IssueOptions { cluster_override: Some(cluster("test")), ..IssueOptions::default() };
        let stranger = ca.issue_with("a1", Role::Agent, options).unwrap();
        let tuning = QuicTuning::default();
        let (server, mut accepted) = spawn_server(server_config(&master, ca.cert_der(), &tuning).unwrap());
        let client = client_endpoint();
        let connecting = client
            .connect_with(
                client_config(&stranger, ca.cert_der(), &tuning).unwrap(),
                server.local_addr().unwrap(),
                SERVER_NAME,
            )
            .unwrap();
        let _conn = timeout(BOUND, connecting).await.unwrap().unwrap();
        let (_server_conn, seen) = timeout(BOUND, accepted.recv()).await.unwrap().unwrap().unwrap();
        assert!(matches!(AdmissionPolicy::cluster(cluster("prod")).admit(&seen), Err(Refusal::WrongCluster { .. })));
    }

    /// Every bad client fails the handshake on the server: `Incoming` arrives, and awaiting it
    /// (`Connecting`) gives `ConnectionError::TransportError` carrying the TLS alert the server
    /// sent. The client's own `Connecting` typically succeeds first (a TLS 1.3 client is done
    /// once it has sent its certificate), and the alert then arrives as the connection's close.
    #[tokio::test]
    async fn bad_clients_fail_the_handshake_on_the_server() {
        const CERTIFICATE_EXPIRED: u8 = 45;
        const UNKNOWN_CA: u8 = 48;
        const DECRYPT_ERROR: u8 = 51;
        const CERTIFICATE_REQUIRED: u8 = 116;

        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        // Same cluster, so same subject name as the real CA: the signature check fails.
        let twin_ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let foreign_ca = ClusterCa::generate(&cluster("test")).unwrap();
        let master = ca.issue("m1", Role::Master).unwrap();
        let tuning = QuicTuning::default();
        let (server, mut accepted) = spawn_server(server_config(&master, ca.cert_der(), &tuning).unwrap());
        let addr = server.local_addr().unwrap();
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);

        let no_cert = {
            let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_protocol_versions(&[&TLS13])
                .unwrap()
                .with_root_certificates(roots(ca.cert_der()).unwrap())
                .with_no_client_auth();
            tls.alpn_protocols = vec![ALPN.to_vec()];
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
        };
        let with = |creds: NodeCredentials| client_config(&creds, ca.cert_der(), &tuning).unwrap();
        let window = |not_before, not_after| IssueOptions { not_before, not_after, cluster_override: None };
        let self_signed = NodeCredentials::self_signed(&cluster("prod"), "a1", Role::Agent).unwrap();
        let expired = ca.issue_with("a1", Role::Agent, window(now - 2 * day, now - day)).unwrap();
        let early = ca.issue_with("a1", Role::Agent, window(now + day, now + 2 * day)).unwrap();
        let cases = [
            ("no client certificate", no_cert, CERTIFICATE_REQUIRED),
            ("certificate from another CA, same name", with(twin_ca.issue("a1", Role::Agent).unwrap()), DECRYPT_ERROR),
            ("certificate from another cluster's CA", with(foreign_ca.issue("a1", Role::Agent).unwrap()), UNKNOWN_CA),
            ("self-signed certificate", with(self_signed), UNKNOWN_CA),
            ("expired certificate", with(expired), CERTIFICATE_EXPIRED),
            ("not-yet-valid certificate", with(early), CERTIFICATE_EXPIRED),
        ];

        for (name, config, alert) in cases {
            let client = client_endpoint();
            let connecting = client.connect_with(config, addr, SERVER_NAME).unwrap();
            let (client_connected, client_err) = match timeout(BOUND, connecting).await.unwrap() {
                Ok(conn) => (true, timeout(BOUND, conn.closed()).await.unwrap()),
                Err(err) => (false, err),
            };
            let server_err = match timeout(BOUND, accepted.recv()).await.unwrap().unwrap() {
                Ok((_, peer)) => panic!("{name}: the server accepted {peer}"),
                Err(err) => err,
            };
            eprintln!("{name}: server: {server_err:?}; client Connecting ok: {client_connected}, then: {client_err:?}");
            assert!(matches!(server_err, quinn::ConnectionError::TransportError(_)), "{name}: {server_err:?}");
            assert_eq!(tls_alert(&server_err), Some(alert), "{name}: {server_err:?}");
            assert!(matches!(client_err, quinn::ConnectionError::ConnectionClosed(_)), "{name}: {client_err:?}");
            assert_eq!(tls_alert(&client_err), Some(alert), "{name}: {client_err:?}");
            client.close(0u32.into(), b"done");
        }
        // Nothing else reached the server.
        server.close(0u32.into(), b"done");
        assert!(timeout(BOUND, accepted.recv()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn client_refuses_a_server_from_another_ca() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let other_ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let impostor = other_ca.issue("m1", Role::Master).unwrap();
        let agent = ca.issue("a1", Role::Agent).unwrap();
        let tuning = QuicTuning::default();
        let (server, mut accepted) = spawn_server(server_config(&impostor, other_ca.cert_der(), &tuning).unwrap());
        let client = client_endpoint();
        let connecting = client
            .connect_with(
                client_config(&agent, ca.cert_der(), &tuning).unwrap(),
                server.local_addr().unwrap(),
                SERVER_NAME,
            )
            .unwrap();
        // The client checks the server's certificate before sending its own: its `Connecting`
        // fails, and the server sees the client's alert as a close.
        let client_err = timeout(BOUND, connecting).await.unwrap().unwrap_err();
        assert!(matches!(client_err, quinn::ConnectionError::TransportError(_)), "{client_err:?}");
        assert!(tls_alert(&client_err).is_some(), "{client_err:?}");
        let server_err = timeout(BOUND, accepted.recv()).await.unwrap().unwrap().unwrap_err();
        eprintln!("server from another CA: client: {client_err:?}; server: {server_err:?}");
        assert!(matches!(server_err, quinn::ConnectionError::ConnectionClosed(_)), "{server_err:?}");
        assert_eq!(tls_alert(&server_err), tls_alert(&client_err));
    }

    #[test]
    fn bad_inputs_give_errors_not_panics() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let creds = ca.issue("n1", Role::Master).unwrap();
        let tuning = QuicTuning::default();
        let garbage = CertificateDer::from(b"garbage".to_vec());
        assert!(matches!(server_config(&creds, &garbage, &tuning), Err(TlsError::BadCa(_))));
        assert!(matches!(client_config(&creds, &garbage, &tuning), Err(TlsError::BadCa(_))));
        let mut empty = creds.clone();
        empty.cert_chain.clear();
        assert!(matches!(server_config(&empty, ca.cert_der(), &tuning), Err(TlsError::NoCertificate)));
        assert!(matches!(client_config(&empty, ca.cert_der(), &tuning), Err(TlsError::NoCertificate)));
        // Extreme tuning saturates instead of failing.
        let extreme = QuicTuning {
            idle_timeout: Duration::MAX,
            stream_window: u64::MAX,
            connection_window: u64::MAX,
            ..QuicTuning::default()
        };
        let _ = extreme.transport_config();
    }

    #[test]
    fn provider_is_shared_and_installs_once() {
        assert!(Arc::ptr_eq(&crypto_provider(), &crypto_provider()));
        install_default_provider();
        install_default_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}

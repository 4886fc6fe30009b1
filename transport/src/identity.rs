//! Node certificates: the cluster CA, the credentials it issues, and how a certificate names
//! its holder.
//!
//! Every node certificate carries:
//! * a URI SAN `flotilla://<cluster>/<role>/<node>`: the node's identity, read back after the
//!   handshake with [`identity_from_cert`];
//! * a DNS SAN [`DNS_NAME`] (`flotilla`), the TLS server name every node uses, because node
//!   identity is checked from the URI SAN rather than by hostname;
//! * CN = node id, and the extended key usages serverAuth and clientAuth, so one certificate
//!   serves both ends of a link.
//!
//! The CA certificate has CN `flotilla cluster <cluster> CA` and a URI SAN `flotilla://<cluster>`.
//!
//! This module is a shell: it reads the wall clock and the file system. Nothing here panics
//! on bad input; files and certificates that do not parse give an [`IdentityError`].

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::core::identity::{ClusterId, InvalidId, PeerIdentity, Role, valid_id};

/// The scheme prefix of every identity URI.
pub const URI_PREFIX: &str = "flotilla://";
/// The DNS SAN every node certificate carries, and the TLS server name every client asks for.
pub const DNS_NAME: &str = "flotilla";
/// The CA certificate's file name in a credentials directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key's file name in a credentials directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// How far back `not_before` is set, to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::hours(1);
/// A CA certificate's lifetime.
const CA_LIFETIME: Duration = Duration::days(3653);
/// A node certificate's lifetime.
const NODE_LIFETIME: Duration = Duration::days(365);
/// The largest credentials file read; anything bigger is not a certificate or key of ours.
const MAX_FILE_BYTES: u64 = 1 << 20;
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Why a certificate could not be made, saved, loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{}: bad PEM: {reason}", .path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("the certificate names no valid flotilla identity: {0}")]
    NoIdentity(String),
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    #[error("invalid validity window: not_before {not_before} is not before not_after {not_after}")]
    BadValidity { not_before: OffsetDateTime, not_after: OffsetDateTime },
    #[error("certificate generation failed: {0}")]
    Rcgen(String),
}

impl From<rcgen::Error> for IdentityError {
    fn from(err: rcgen::Error) -> Self {
        IdentityError::Rcgen(err.to_string())
    }
}

/// The identity URI of a node: `flotilla://<cluster>/<role>/<node>`.
pub fn identity_uri(identity: &PeerIdentity) -> String {
    format!("{URI_PREFIX}{}/{}/{}", identity.cluster, identity.role, identity.node)
}

/// The URI naming a cluster in its CA certificate: `flotilla://<cluster>`.
pub fn cluster_uri(cluster: &ClusterId) -> String {
    format!("{URI_PREFIX}{cluster}")
}

/// Parses an identity URI; `None` unless it has exactly the form [`identity_uri`] writes.
pub fn parse_identity_uri(uri: &str) -> Option<PeerIdentity> {
    let rest = uri.strip_prefix(URI_PREFIX)?;
    let mut parts = rest.split('/');
    let (cluster, role, node) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_id(node) {
        return None;
    }
    Some(PeerIdentity { cluster: ClusterId::new(cluster).ok()?, node: node.to_owned(), role: Role::parse(role)? })
}

/// What a node certificate says about its holder, read from its `flotilla://` URI SAN.
///
/// The certificate must carry exactly one `flotilla://` URI SAN, of the form
/// `flotilla://<cluster>/<role>/<node>` with valid ids and a known role. This does not verify
/// the certificate: call it on a chain the TLS stack has already verified.
pub fn identity_from_cert(der: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let cert = parse_cert(der)?;
    let uris = flotilla_uris(&cert)?;
    match uris.as_slice() {
        [] => Err(IdentityError::NoIdentity("no flotilla:// URI SAN".into())),
        [uri] => parse_identity_uri(uri).ok_or_else(|| {
            IdentityError::NoIdentity(format!("{uri:?} is not of the form flotilla://<cluster>/<role>/<node>"))
        }),
        _ => Err(IdentityError::NoIdentity(format!("{} flotilla:// URI SANs, expected exactly one", uris.len()))),
    }
}

/// The cluster a CA certificate belongs to, read from its `flotilla://<cluster>` URI SAN. The
/// certificate must be a CA (basic constraints `CA:TRUE`).
pub fn cluster_from_ca_cert(der: &CertificateDer<'_>) -> Result<ClusterId, IdentityError> {
    let cert = parse_cert(der)?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(IdentityError::BadCertificate("not a CA certificate".into())),
        Err(err) => return Err(IdentityError::BadCertificate(format!("basic constraints: {err}"))),
    }
    let uris = flotilla_uris(&cert)?;
    let [uri] = uris.as_slice() else {
        return Err(IdentityError::NoIdentity(format!(
            "{} flotilla:// URI SANs in the CA certificate, expected exactly one",
            uris.len()
        )));
    };
    let cluster = uri.strip_prefix(URI_PREFIX).unwrap_or_default();
    ClusterId::new(cluster)
        .map_err(|_| IdentityError::NoIdentity(format!("{uri:?} is not of the form flotilla://<cluster>")))
}

/// Loads the CA certificate (`ca.crt`) from `dir`, for nodes that trust the CA but do not hold
/// its key. The certificate must be a flotilla cluster CA.
pub fn load_ca_cert(dir: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    let path = dir.join(CA_CERT_FILE);
    let cert = read_single_cert(&path)?;
    cluster_from_ca_cert(&cert)?;
    Ok(cert)
}

/// Validity and naming overrides for [`ClusterCa::issue_with`]: tests use them to make expired,
/// not-yet-valid and other-cluster certificates signed by a real CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueOptions {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Name this cluster in the identity URI instead of the CA's own.
    pub cluster_override: Option<ClusterId>,
}

impl Default for IssueOptions {
    /// Valid from an hour ago (clock skew) for one year.
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        IssueOptions { not_before: now - BACKDATE, not_after: now + NODE_LIFETIME, cluster_override: None }
    }
}

/// A cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    cluster: ClusterId,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA for `cluster`, valid from an hour ago for ten years.
    pub fn generate(cluster: &ClusterId) -> Result<Self, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("flotilla cluster {cluster} CA"));
        params.subject_alt_names = vec![SanType::URI(ia5(cluster_uri(cluster))?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cluster: cluster.clone(), cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// A certificate for `node` in `role`, valid from an hour ago for one year.
    pub fn issue(&self, node: &str, role: Role) -> Result<NodeCredentials, IdentityError> {
        self.issue_with(node, role, IssueOptions::default())
    }

    /// A certificate for `node` in `role` with explicit validity, optionally naming another
    /// cluster than the CA's.
    pub fn issue_with(&self, node: &str, role: Role, options: IssueOptions) -> Result<NodeCredentials, IdentityError> {
        let cluster = options.cluster_override.unwrap_or_else(|| self.cluster.clone());
        let identity = node_identity(cluster, node, role)?;
        let mut params = node_params(&identity, options.not_before, options.not_after)?;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCredentials { identity, cert_chain: vec![cert.der().clone()], key: pkcs8(&key) })
    }

    /// Writes `ca.crt` (mode 0644) and `ca.key` (mode 0600) into `dir`, creating `dir` with mode
    /// 0700 if it is missing. Refuses with [`IdentityError::Exists`] if either file exists,
    /// unless `overwrite`.
    pub fn save(&self, dir: &Path, overwrite: bool) -> Result<(), IdentityError> {
        let key_pem = self.issuer.key().serialize_pem();
        save_pair(dir, CA_CERT_FILE, self.cert_pem().as_bytes(), CA_KEY_FILE, key_pem.as_bytes(), overwrite)
    }

    /// Reloads a CA saved with [`ClusterCa::save`]. The cluster comes from the certificate's
    /// `flotilla://<cluster>` URI SAN; the key must match the certificate.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert = read_single_cert(&cert_path)?;
        let cluster = cluster_from_ca_cert(&cert)?;
        let key = read_key(&key_path)?;
        let key_pair = KeyPair::try_from(&key)
            .map_err(|err| IdentityError::BadPem { path: key_path.clone(), reason: err.to_string() })?;
        check_key_matches(&cert, &key_pair)
            .map_err(|reason| IdentityError::KeyMismatch(format!("{}: {reason}", key_path.display())))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key_pair)?;
        Ok(ClusterCa { cluster, cert, issuer })
    }
}

/// A node's certificate chain and private key, and the identity the certificate names.
pub struct NodeCredentials {
    pub identity: PeerIdentity,
    /// The leaf first. Certificates issued here are signed directly by the cluster CA, so the
    /// chain is just the leaf.
    pub cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .field("cert_chain", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        NodeCredentials {
            identity: self.identity.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeCredentials {
    /// Credentials from a chain (leaf first) and its key. The identity is read from the leaf;
    /// the key must be PKCS#8 and match the leaf.
    pub fn new(cert_chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, IdentityError> {
        let leaf = cert_chain.first().ok_or_else(|| IdentityError::BadCertificate("empty certificate chain".into()))?;
        let identity = identity_from_cert(leaf)?;
        let key_pair = KeyPair::try_from(&key).map_err(|err| IdentityError::KeyMismatch(err.to_string()))?;
        check_key_matches(leaf, &key_pair).map_err(IdentityError::KeyMismatch)?;
        Ok(NodeCredentials { identity, cert_chain, key })
    }

    /// A certificate with the usual SANs signed by its own key: no CA trusts it. For tests.
    pub fn self_signed(cluster: &ClusterId, node: &str, role: Role) -> Result<Self, IdentityError> {
        let identity = node_identity(cluster.clone(), node, role)?;
        let now = OffsetDateTime::now_utc();
        let params = node_params(&identity, now - BACKDATE, now + NODE_LIFETIME)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(NodeCredentials { identity, cert_chain: vec![cert.der().clone()], key: pkcs8(&key) })
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// `<dir>/<node>.crt`.
    pub fn cert_path(dir: &Path, node: &str) -> PathBuf {
        dir.join(format!("{node}.crt"))
    }

    /// `<dir>/<node>.key`.
    pub fn key_path(dir: &Path, node: &str) -> PathBuf {
        dir.join(format!("{node}.key"))
    }

    /// Writes `<node>.crt` (mode 0644, PEM, the chain leaf first) and `<node>.key` (mode 0600,
    /// PEM PKCS#8) into `dir`, creating `dir` with mode 0700 if it is missing. Refuses with
    /// [`IdentityError::Exists`] if either file exists, unless `overwrite`.
    pub fn save(&self, dir: &Path, overwrite: bool) -> Result<(), IdentityError> {
        let node = &self.identity.node;
        if !valid_id(node) {
            return Err(InvalidId(node.clone()).into());
        }
        let certs: String = self.cert_chain.iter().map(|cert| pem_encode("CERTIFICATE", cert)).collect();
        let key = pem_encode(key_label(&self.key), self.key.secret_der());
        save_pair(dir, &format!("{node}.crt"), certs.as_bytes(), &format!("{node}.key"), key.as_bytes(), overwrite)
    }

    /// Loads the credentials [`NodeCredentials::save`] wrote for `node`. The certificate must
    /// name `node` and the key must match it.
    pub fn load(dir: &Path, node: &str) -> Result<Self, IdentityError> {
        if !valid_id(node) {
            return Err(InvalidId(node.to_owned()).into());
        }
        let cert_path = Self::cert_path(dir, node);
        let key_path = Self::key_path(dir, node);
        let chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        let creds = NodeCredentials::new(chain, key).map_err(|err| match err {
            IdentityError::KeyMismatch(reason) => {
                IdentityError::KeyMismatch(format!("{}: {reason}", key_path.display()))
            }
            other => other,
        })?;
        if creds.identity.node != node {
            return Err(IdentityError::NoIdentity(format!(
                "{} names node {:?}, not {node:?}",
                cert_path.display(),
                creds.identity.node
            )));
        }
        Ok(creds)
    }
}

fn node_identity(cluster: ClusterId, node: &str, role: Role) -> Result<PeerIdentity, IdentityError> {
    if !valid_id(node) {
        return Err(InvalidId(node.to_owned()).into());
    }
    Ok(PeerIdentity { cluster, node: node.to_owned(), role })
}

fn node_params(
    identity: &PeerIdentity,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, IdentityError> {
    if not_before >= not_after {
        return Err(IdentityError::BadValidity { not_before, not_after });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&identity.node);
    params.subject_alt_names = vec![SanType::URI(ia5(identity_uri(identity))?), SanType::DnsName(ia5(DNS_NAME)?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn ia5(text: impl Into<String>) -> Result<Ia5String, IdentityError> {
    Ia5String::try_from(text.into()).map_err(|err| IdentityError::Rcgen(err.to_string()))
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn parse_cert<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, IdentityError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|err| IdentityError::BadCertificate(err.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::BadCertificate(format!("{} bytes of trailing data", rest.len())));
    }
    Ok(cert)
}

/// The certificate's URI SANs that start with `flotilla://`.
fn flotilla_uris<'a>(cert: &X509Certificate<'a>) -> Result<Vec<&'a str>, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|err| IdentityError::BadCertificate(format!("subject alternative names: {err}")))?;
    let Some(san) = san else {
        return Err(IdentityError::NoIdentity("no subject alternative names".into()));
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect())
}

/// Whether `key` is the private half of `cert`'s public key.
fn check_key_matches(cert: &CertificateDer<'_>, key: &KeyPair) -> Result<(), String> {
    let parsed = parse_cert(cert).map_err(|err| err.to_string())?;
    if parsed.public_key().subject_public_key.data.as_ref() == key.der_bytes() {
        Ok(())
    } else {
        Err("the key's public half differs from the certificate's public key".into())
    }
}

fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

/// PEM text: `-----BEGIN <label>-----`, base64 in 64-column lines, `-----END <label>-----`.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    // `b64` is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads a credentials file, refusing anything larger than [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let read_err = |source| IdentityError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_err)?;
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut contents).map_err(read_err)?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(IdentityError::BadPem {
            path: path.to_owned(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(contents)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let contents = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| IdentityError::BadPem { path: path.to_owned(), reason: err.to_string() })?;
    if certs.is_empty() {
        return Err(IdentityError::BadPem { path: path.to_owned(), reason: "no CERTIFICATE section".into() });
    }
    Ok(certs)
}

fn read_single_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    let mut certs = read_certs(path)?;
    if certs.len() != 1 {
        return Err(IdentityError::BadPem {
            path: path.to_owned(),
            reason: format!("{} CERTIFICATE sections, expected one", certs.len()),
        });
    }
    Ok(certs.swap_remove(0))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let contents = read_file(path)?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "private key file is accessible to other users");
    }
    PrivateKeyDer::from_pem_slice(&contents)
        .map_err(|err| IdentityError::BadPem { path: path.to_owned(), reason: err.to_string() })
}

/// Writes a certificate file and its key file into `dir` (created with mode 0700 if missing).
/// Without `overwrite`, refuses if either exists and leaves no half-written pair behind.
fn save_pair(
    dir: &Path,
    cert_name: &str,
    cert: &[u8],
    key_name: &str,
    key: &[u8],
    overwrite: bool,
) -> Result<(), IdentityError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| IdentityError::Write { path: dir.to_owned(), source })?;
    }
    let cert_path = dir.join(cert_name);
    let key_path = dir.join(key_name);
    if !overwrite {
        for path in [&cert_path, &key_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(IdentityError::Exists(path.clone()));
            }
        }
    }
    write_file(&key_path, key, KEY_MODE, overwrite)?;
    if let Err(err) = write_file(&cert_path, cert, CERT_MODE, overwrite) {
        if !overwrite {
            // The key was created just now; do not leave it without its certificate.
            let _ = fs::remove_file(&key_path);
        }
        return Err(err);
    }
    if let Ok(dir_handle) = File::open(dir) {
        dir_handle.sync_all().map_err(|source| IdentityError::Write { path: dir.to_owned(), source })?;
    }
    Ok(())
}

/// Writes `contents` to `path` with exactly `mode` (whatever the umask). Without `overwrite`
/// the file is created exclusively; with it, the new file replaces the old one atomically.
fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<(), IdentityError> {
    let write_err = |source| IdentityError::Write { path: path.to_owned(), source };
    if !overwrite {
        let file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|err| {
            if err.kind() == io::ErrorKind::AlreadyExists {
                IdentityError::Exists(path.to_owned())
            } else {
                write_err(err)
            }
        })?;
        let result = fill(&file, contents, mode);
        if result.is_err() {
            let _ = fs::remove_file(path);
        }
        return result.map_err(write_err);
    }
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|file| fill(&file, contents, mode))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

fn fill(mut file: &File, contents: &[u8], mode: u32) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: &str) -> ClusterId {
        ClusterId::new(id).unwrap()
    }

    /// A fresh, empty scratch directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flotilla-identity-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A certificate with exactly the given SANs, signed by itself.
    fn cert_with_sans(sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(Ia5String::try_from(text).unwrap())
    }

    /// Whether `leaf` is signed by `ca`, checked by rustls' webpki verifier.
    fn verifies(ca: &CertificateDer<'static>, leaf: &CertificateDer<'static>) -> bool {
        use rustls::pki_types::UnixTime;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        verifier.verify_client_cert(leaf, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn identity_round_trips_for_both_roles() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        for role in Role::ALL {
            let creds = ca.issue("node-1.a_b", role).unwrap();
            let expected = PeerIdentity { cluster: cluster("prod"), node: "node-1.a_b".into(), role };
            assert_eq!(creds.identity, expected);
            assert_eq!(identity_from_cert(&creds.cert_chain[0]).unwrap(), expected);
            assert!(verifies(ca.cert_der(), &creds.cert_chain[0]));
        }
        assert_eq!(cluster_from_ca_cert(ca.cert_der()).unwrap(), cluster("prod"));
    }

    #[test]
    fn node_certificates_carry_the_documented_fields() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let creds = ca.issue("n1", Role::Agent).unwrap();
        let leaf = parse_cert(&creds.cert_chain[0]).unwrap();
        let cn = leaf.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        assert_eq!(cn, "n1");
        let sans = leaf.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        assert!(sans.contains(&GeneralName::URI("flotilla://prod/agent/n1")));
        assert!(sans.contains(&GeneralName::DNSName(DNS_NAME)));
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!leaf.is_ca());

        let ca_cert = parse_cert(ca.cert_der()).unwrap();
        let cn = ca_cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        assert_eq!(cn, "flotilla cluster prod CA");
        assert!(ca_cert.is_ca());
        let usage = ca_cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    }

    #[test]
    fn issue_rejects_invalid_node_ids_and_windows() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        for bad in ["", "Node", "a/b", "../x", "a b"] {
            assert!(matches!(ca.issue(bad, Role::Agent), Err(IdentityError::InvalidId(_))), "{bad:?}");
        }
        let now = OffsetDateTime::now_utc();
        let options = IssueOptions { not_before: now, not_after: now - Duration::hours(1), cluster_override: None };
        assert!(matches!(ca.issue_with("n1", Role::Agent, options), Err(IdentityError::BadValidity { .. })));
    }

    #[test]
    fn issue_with_overrides_validity_and_cluster() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let now = OffsetDateTime::now_utc();
        let options = IssueOptions {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
            cluster_override: Some(cluster("other")),
        };
        let creds = ca.issue_with("n1", Role::Master, options).unwrap();
        assert_eq!(creds.identity.cluster, cluster("other"));
        assert_eq!(identity_from_cert(&creds.cert_chain[0]).unwrap().cluster, cluster("other"));
        let leaf = parse_cert(&creds.cert_chain[0]).unwrap();
        assert!(leaf.validity().not_after.timestamp() < now.unix_timestamp());
        // Expired, so the verifier refuses it even though the CA signed it.
        assert!(!verifies(ca.cert_der(), &creds.cert_chain[0]));
    }

    #[test]
    fn ca_save_load_round_trip() {
        let dir = scratch("ca-round-trip");
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        ca.save(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o644);
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);

        let reloaded = ClusterCa::load(&dir).unwrap();
        assert_eq!(reloaded.cluster(), &cluster("prod"));
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        assert_eq!(load_ca_cert(&dir).unwrap(), *ca.cert_der());
        let creds = reloaded.issue("n2", Role::Agent).unwrap();
        assert!(verifies(ca.cert_der(), &creds.cert_chain[0]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_credentials_save_load_round_trip() {
        let dir = scratch("node-round-trip");
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let creds = ca.issue("n1", Role::Master).unwrap();
        creds.save(&dir, false).unwrap();
        assert_eq!(mode(&NodeCredentials::cert_path(&dir, "n1")), 0o644);
        assert_eq!(mode(&NodeCredentials::key_path(&dir, "n1")), 0o600);
        let loaded = NodeCredentials::load(&dir, "n1").unwrap();
        assert_eq!(loaded.identity, creds.identity);
        assert_eq!(loaded.cert_chain, creds.cert_chain);
        assert_eq!(loaded.key().secret_der(), creds.key().secret_der());
        assert!(matches!(NodeCredentials::load(&dir, "n2"), Err(IdentityError::Read { .. })));
        assert!(matches!(NodeCredentials::load(&dir, "../n1"), Err(IdentityError::InvalidId(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_refuses_to_overwrite_unless_asked() {
        let dir = scratch("overwrite");
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        ca.save(&dir, false).unwrap();
        let other = ClusterCa::generate(&cluster("prod")).unwrap();
        assert!(matches!(other.save(&dir, false), Err(IdentityError::Exists(_))));
        assert_eq!(ClusterCa::load(&dir).unwrap().cert_der(), ca.cert_der());
        other.save(&dir, true).unwrap();
        assert_eq!(ClusterCa::load(&dir).unwrap().cert_der(), other.cert_der());
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o644);

        let first = ca.issue("n1", Role::Agent).unwrap();
        let second = ca.issue("n1", Role::Agent).unwrap();
        first.save(&dir, false).unwrap();
        assert!(matches!(second.save(&dir, false), Err(IdentityError::Exists(_))));
        // Only the key existing is enough to refuse, and the refusal writes nothing.
        fs::remove_file(NodeCredentials::cert_path(&dir, "n1")).unwrap();
        assert!(matches!(second.save(&dir, false), Err(IdentityError::Exists(_))));
        assert!(!NodeCredentials::cert_path(&dir, "n1").exists());
        second.save(&dir, true).unwrap();
        assert_eq!(NodeCredentials::load(&dir, "n1").unwrap().cert_chain, second.cert_chain);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identity_from_cert_rejects_missing_or_garbage_uri_sans() {
        let dns = SanType::DnsName(Ia5String::try_from(DNS_NAME).unwrap());
        let cases: Vec<(&str, Vec<SanType>)> = vec![
            ("no SAN at all", vec![]),
            ("DNS only", vec![dns.clone()]),
            ("other scheme", vec![uri("https://prod/agent/n1"), dns]),
            ("cluster URI only", vec![uri("flotilla://prod")]),
            ("two segments", vec![uri("flotilla://prod/agent")]),
            ("four segments", vec![uri("flotilla://prod/agent/n1/x")]),
            ("unknown role", vec![uri("flotilla://prod/root/n1")]),
            ("bad cluster id", vec![uri("flotilla://Prod/agent/n1")]),
            ("bad node id", vec![uri("flotilla://prod/agent/N1")]),
            ("empty node", vec![uri("flotilla://prod/agent/")]),
            ("two identities", vec![uri("flotilla://prod/agent/n1"), uri("flotilla://prod/master/n2")]),
        ];
        for (name, sans) in cases {
            let cert = cert_with_sans(sans);
            assert!(matches!(identity_from_cert(&cert), Err(IdentityError::NoIdentity(_))), "{name}");
        }
        let garbage = CertificateDer::from(b"not a certificate".to_vec());
        assert!(matches!(identity_from_cert(&garbage), Err(IdentityError::BadCertificate(_))));
        // A lone flotilla URI next to unrelated URIs is fine.
        let ok = cert_with_sans(vec![uri("spiffe://x/y"), uri("flotilla://prod/agent/n1")]);
        assert_eq!(identity_from_cert(&ok).unwrap().node, "n1");
    }

    #[test]
    fn bad_files_give_errors_not_panics() {
        let dir = scratch("bad-pem");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(CA_CERT_FILE), "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        fs::write(dir.join(CA_KEY_FILE), "garbage").unwrap();
        assert!(matches!(ClusterCa::load(&dir), Err(IdentityError::BadPem { .. })));
        assert!(matches!(load_ca_cert(&dir), Err(IdentityError::BadPem { .. })));

        // Well-formed PEM around garbage DER.
        fs::write(dir.join(CA_CERT_FILE), pem_encode("CERTIFICATE", b"garbage")).unwrap();
        assert!(matches!(load_ca_cert(&dir), Err(IdentityError::BadCertificate(_))));

        // A valid CA certificate with a garbage key, then with someone else's key.
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        fs::write(dir.join(CA_CERT_FILE), ca.cert_pem()).unwrap();
        assert!(matches!(ClusterCa::load(&dir), Err(IdentityError::BadPem { .. })));
        let stranger = KeyPair::generate().unwrap();
        fs::write(dir.join(CA_KEY_FILE), stranger.serialize_pem()).unwrap();
        assert!(matches!(ClusterCa::load(&dir), Err(IdentityError::KeyMismatch(_))));

        // A node certificate is not a CA.
        let creds = ca.issue("n1", Role::Agent).unwrap();
        fs::write(dir.join(CA_CERT_FILE), pem_encode("CERTIFICATE", &creds.cert_chain[0])).unwrap();
        assert!(matches!(load_ca_cert(&dir), Err(IdentityError::BadCertificate(_))));

        // Node files: empty certificate file, mismatched key, and a certificate naming another node.
        fs::write(NodeCredentials::cert_path(&dir, "n1"), "").unwrap();
        fs::write(NodeCredentials::key_path(&dir, "n1"), stranger.serialize_pem()).unwrap();
        assert!(matches!(NodeCredentials::load(&dir, "n1"), Err(IdentityError::BadPem { .. })));
        fs::write(NodeCredentials::cert_path(&dir, "n1"), pem_encode("CERTIFICATE", &creds.cert_chain[0])).unwrap();
        assert!(matches!(NodeCredentials::load(&dir, "n1"), Err(IdentityError::KeyMismatch(_))));
        creds.save(&dir, true).unwrap();
        fs::rename(NodeCredentials::cert_path(&dir, "n1"), NodeCredentials::cert_path(&dir, "n9")).unwrap();
        fs::rename(NodeCredentials::key_path(&dir, "n1"), NodeCredentials::key_path(&dir, "n9")).unwrap();
        assert!(matches!(NodeCredentials::load(&dir, "n9"), Err(IdentityError::NoIdentity(_))));

        assert!(matches!(ClusterCa::load(&dir.join("missing")), Err(IdentityError::Read { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn self_signed_credentials_name_the_node_but_do_not_verify() {
        let ca = ClusterCa::generate(&cluster("prod")).unwrap();
        let creds = NodeCredentials::self_signed(&cluster("prod"), "n1", Role::Agent).unwrap();
        assert_eq!(identity_from_cert(&creds.cert_chain[0]).unwrap(), creds.identity);
        assert!(!verifies(ca.cert_der(), &creds.cert_chain[0]));
        assert!(NodeCredentials::new(creds.cert_chain.clone(), creds.key()).is_ok());
        assert!(matches!(NodeCredentials::new(vec![], creds.key()), Err(IdentityError::BadCertificate(_))));
    }

    #[test]
    fn pem_encoding_round_trips_every_padding_length() {
        for len in 0..200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &data);
            assert!(pem.lines().all(|line| line.len() <= 64));
            let decoded = CertificateDer::from_pem_slice(pem.as_bytes());
            if len == 0 {
                continue;
            }
            assert_eq!(decoded.unwrap().as_ref(), data.as_slice(), "length {len}");
        }
    }
}

//! Certificates for operators (`flotilla cert ...`) and for `flotilla dev`, which makes its
//! own cluster CA and node certificate in its data directory on first start.

use std::path::{Path, PathBuf};

use anyhow::Context;
use flotilla_transport::identity::{ClusterCa, NodeCredentials, load_ca_cert};
use flotilla_transport::{CertificateDer, ClusterId, Role};

/// The cluster id `flotilla dev` gives its CA.
pub const DEV_CLUSTER: &str = "dev";

/// `$XDG_DATA_HOME/flotilla/dev`, else `~/.local/share/flotilla/dev`, else `./.flotilla/dev`.
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("flotilla").join("dev")
}

/// `flotilla cert init`: a new cluster CA in `dir`.
pub fn init_ca(dir: &Path, cluster: &str, force: bool) -> anyhow::Result<ClusterCa> {
    let cluster = ClusterId::new(cluster)?;
    let ca = ClusterCa::generate(&cluster)?;
    ca.save(dir, force).with_context(|| format!("writing the CA to {}", dir.display()))?;
    Ok(ca)
}

/// `flotilla cert issue`: a node certificate signed by the CA in `ca_dir`, written to `out`.
pub fn issue(ca_dir: &Path, node: &str, role: Role, out: &Path, force: bool) -> anyhow::Result<NodeCredentials> {
    let ca = ClusterCa::load(ca_dir).with_context(|| format!("loading the CA from {}", ca_dir.display()))?;
    let credentials = ca.issue(node, role)?;
    credentials.save(out, force).with_context(|| format!("writing the certificate to {}", out.display()))?;
    Ok(credentials)
}

/// A dev node's credentials (for `role`) and CA certificate, created under `data_dir/pki` if
/// missing.
pub fn dev_credentials(
    data_dir: &Path,
    node: &str,
    role: Role,
) -> anyhow::Result<(NodeCredentials, CertificateDer<'static>)> {
    let pki = data_dir.join("pki");
    if !pki.join("ca.crt").exists() {
        init_ca(&pki, DEV_CLUSTER, false)?;
    }
    if !NodeCredentials::cert_path(&pki, node).exists() {
        issue(&pki, node, role, &pki, false)?;
    }
    let credentials = NodeCredentials::load(&pki, node).with_context(|| format!("loading {node}'s certificate"))?;
    let ca = load_ca_cert(&pki).context("loading the CA certificate")?;
    Ok((credentials, ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_credentials_are_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("flotilla-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (first, ca) = dev_credentials(&dir, "dev", Role::Master).unwrap();
        assert_eq!(first.identity.cluster.as_str(), DEV_CLUSTER);
        assert_eq!(first.identity.node, "dev");
        let (second, ca_again) = dev_credentials(&dir, "dev", Role::Master).unwrap();
        assert_eq!(first.cert_chain, second.cert_chain);
        assert_eq!(ca, ca_again);
        assert!(issue(&dir.join("pki"), "dev", Role::Agent, &dir.join("pki"), false).is_err(), "no silent overwrite");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

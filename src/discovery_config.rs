//! The `[dns]` and `[l4lb]` sections of a node's configuration file (masters and agents):
//! the node's DNS server and VIP load balancer. Both default to on for agents (where tasks
//! run and clients resolve them) and off for masters; `flotilla dev` runs them on its agent.
//!
//! ```toml
//! [dns]                             # optional
//! enabled = true                    # [default: agents true, masters false]
//! listen = "0.0.0.0:61053"          # UDP and TCP [default: 0.0.0.0:61053, DC/OS's Mesos-DNS port]
//! domain = "mesos"                  # the Mesos-DNS zone [default: mesos]
//! upstreams = ["10.0.0.2:53"]       # other names go here [default: /etc/resolv.conf's]
//! ttl = 60                          # seconds, the mesos zone [default: 60]
//! forward_timeout_ms = 5000         # per upstream, then the next [default: 5000]
//! rfc952 = false                    # Mesos-DNS's EnforceRFC952 [default: false]
//! threads = 1                       # UDP sockets and threads (SO_REUSEPORT) [default: 1]
//! http_listen = "0.0.0.0:8123"      # Mesos-DNS's HTTP API (/v1/hosts/...) [default: 0.0.0.0:8123]
//! http = true                       # serve that API [default: true]
//!
//! [l4lb]                            # optional
//! enabled = true                    # [default: agents true, masters false]
//! drain_timeout_secs = 30           # a removed backend's connections stay this long (proxy)
//! data_plane = "proxy"              # "proxy" (user space) or "nftables" (kernel DNAT; root and
//!                                   # `nft`, else the proxy serves) [default: proxy]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_actors::dns::core::DnsConfig;
use flotilla_actors::l4lb::{DataPlane, L4lbConfig};
use serde::Deserialize;

/// `[dns]`; fields left out keep [`DnsConfig`]'s defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
    pub domain: Option<String>,
    pub upstreams: Option<Vec<SocketAddr>>,
    pub ttl: Option<u32>,
    pub forward_timeout_ms: Option<u64>,
    pub rfc952: Option<bool>,
    pub threads: Option<usize>,
    pub http: Option<bool>,
    pub http_listen: Option<SocketAddr>,
}

/// DC/OS serves Mesos-DNS on this port; an unprivileged default that no resolver holds.
pub const DEFAULT_DNS_PORT: u16 = 61053;
/// Mesos-DNS's HTTP port.
pub const DEFAULT_DNS_HTTP_PORT: u16 = 8123;

impl DnsSection {
    /// Where Mesos-DNS's HTTP API listens, when the server runs and serves it.
    pub fn http_address(&self, on_by_default: bool) -> Option<SocketAddr> {
        let serves = self.enabled.unwrap_or(on_by_default) && self.http.unwrap_or(true);
        serves.then(|| self.http_listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_DNS_HTTP_PORT))))
    }

    /// The DNS server's settings; `on_by_default` is the node kind's default.
    pub fn config(&self, on_by_default: bool) -> anyhow::Result<DnsConfig> {
        let defaults = DnsConfig::default();
        let domain = self.domain.clone().unwrap_or(defaults.domain.clone());
        let trimmed = domain.trim_matches('.');
        if trimmed.is_empty() || trimmed.split('.').any(|label| label.is_empty() || label.len() > 63) {
            anyhow::bail!("[dns] domain {domain:?} is not a DNS name (labels of 1 to 63 characters)");
        }
        Ok(DnsConfig {
            enabled: self.enabled.unwrap_or(on_by_default),
            listen: self.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_DNS_PORT))),
            domain: trimmed.to_owned(),
            upstreams: self.upstreams.clone(),
            ttl: self.ttl.unwrap_or(defaults.ttl),
            forward_timeout_ms: self.forward_timeout_ms.unwrap_or(defaults.forward_timeout_ms),
            rfc952: self.rfc952.unwrap_or(defaults.rfc952),
            threads: self.threads.unwrap_or(defaults.threads),
            ..defaults
        })
    }
}

/// `[l4lb]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L4lbSection {
    pub enabled: Option<bool>,
    pub drain_timeout_secs: Option<u64>,
    pub data_plane: Option<DataPlane>,
}

impl L4lbSection {
    pub fn config(&self, on_by_default: bool) -> L4lbConfig {
        let defaults = L4lbConfig::default();
        L4lbConfig {
            enabled: self.enabled.unwrap_or(on_by_default),
            drain_timeout: self.drain_timeout_secs.map_or(defaults.drain_timeout, Duration::from_secs),
            data_plane: self.data_plane.unwrap_or(defaults.data_plane),
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_node_kind_and_bad_domains_are_refused() {
        let dns = DnsSection::default();
        assert!(dns.config(true).unwrap().enabled);
        assert!(!dns.config(false).unwrap().enabled);
        assert_eq!(dns.config(true).unwrap().listen.port(), DEFAULT_DNS_PORT);
        let custom = DnsSection { domain: Some("prod.mesos.".to_owned()), ..DnsSection::default() };
        assert_eq!(custom.config(true).unwrap().domain, "prod.mesos");
        let bad = DnsSection { domain: Some("a..b".to_owned()), ..DnsSection::default() };
        assert!(bad.config(true).unwrap_err().to_string().contains("not a DNS name"));
        assert!(!L4lbSection { enabled: Some(false), ..L4lbSection::default() }.config(true).enabled);
    }

    #[test]
    fn l4lb_data_plane_is_read_and_defaults_to_the_proxy() {
        let section = |text: &str| toml::from_str::<L4lbSection>(text).map(|section| section.config(true));
        assert_eq!(section("").unwrap().data_plane, DataPlane::Proxy);
        assert_eq!(section("data_plane = \"proxy\"").unwrap().data_plane, DataPlane::Proxy);
        assert_eq!(section("data_plane = \"nftables\"").unwrap().data_plane, DataPlane::Nftables);
        assert!(section("data_plane = \"ipvs\"").is_err());
    }

    #[test]
    fn dns_threads_default_to_one_and_are_read_from_the_file() {
        assert_eq!(DnsSection::default().config(true).unwrap().threads, 1);
        let section: DnsSection = toml::from_str("threads = 4").unwrap();
        assert_eq!(section.config(true).unwrap().threads, 4);
    }
}

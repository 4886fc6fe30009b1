//! The DNS server's settings, with Mesos-DNS's and dcos-dns's defaults.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Where a task's address comes from, in order of preference (Mesos-DNS's `IPSources`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// The agent's address (Mesos-DNS `host`).
    Host,
    /// The task's container-network addresses (Mesos-DNS `netinfo`, `mesos`, `docker`).
    Container,
}

/// Everything the DNS server needs to know besides the cluster view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Whether the node serves DNS at all.
    pub enabled: bool,
    /// UDP and TCP listen address; port 0 picks a free port (the actor reports the bound one).
    pub listen: SocketAddr,
    /// The Mesos-DNS domain (`mesos`), without dots at either end.
    pub domain: String,
    /// TTL of the Mesos-DNS zone's records, in seconds (Mesos-DNS: 60).
    pub ttl: u32,
    /// TTL of the `thisdcos.directory` zones' records, in seconds (dcos-dns: 5).
    pub dcos_ttl: u32,
    /// Upstream resolvers for names outside the served zones. `None` reads the `nameserver`
    /// lines of `/etc/resolv.conf` when the server starts; an empty list turns forwarding
    /// off (out-of-zone queries are then REFUSED).
    pub upstreams: Option<Vec<SocketAddr>>,
    /// How long one upstream may take before the next one is asked, in milliseconds.
    pub forward_timeout_ms: u64,
    /// Where task addresses come from, first match wins (Mesos-DNS default: netinfo, host).
    pub ip_sources: Vec<IpSource>,
    /// Mesos-DNS `EnforceRFC952`: 24-character labels that start with a letter.
    pub rfc952: bool,
    /// The weight of task SRV records (Mesos-DNS `srvRecordDefaultWeight`: 1).
    pub srv_weight: u16,
    /// The port of `_leader._tcp` and `_master._tcp` SRV records (Mesos: 5050).
    pub master_port: u16,
    /// The port of `_slave._tcp` SRV records (Mesos: 5051).
    pub agent_port: u16,
    /// The port of `_framework._tcp.<framework>` SRV records; the view carries no scheduler
    /// port, so without one these records are not served.
    pub framework_port: Option<u16>,
    /// The address of `ns1.<domain>` (Mesos-DNS's listener record); `None` takes the listen
    /// address when it is a specific one, and serves no address for `ns1` otherwise.
    pub ns_address: Option<IpAddr>,
    /// UDP sockets, each served by its own thread (SO_REUSEPORT spreads the clients over
    /// them); one serves a node's own queries with room to spare, more serve a busy cluster
    /// with more cores.
    pub threads: usize,
    /// SOA timers (Mesos-DNS `SOARefresh`, `SOARetry`, `SOAExpire`, `SOAMinttl`).
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub soa_minttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53),
            domain: "mesos".to_owned(),
            ttl: 60,
            dcos_ttl: 5,
            upstreams: None,
            forward_timeout_ms: 5_000,
            ip_sources: vec![IpSource::Container, IpSource::Host],
            rfc952: false,
            srv_weight: 1,
            master_port: 5050,
            agent_port: 5051,
            framework_port: None,
            ns_address: None,
            threads: 1,
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86_400,
            soa_minttl: 60,
        }
    }
}

impl DnsConfig {
    /// The domain in lowercase without surrounding dots, the form names are compared in.
    pub fn normalized_domain(&self) -> String {
        self.domain.trim_matches('.').to_ascii_lowercase()
    }

    /// The address served for `ns1.<domain>`.
    pub fn ns_ip(&self) -> Option<IpAddr> {
        self.ns_address.or_else(|| (!self.listen.ip().is_unspecified()).then(|| self.listen.ip()))
    }
}

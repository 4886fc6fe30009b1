//! VIP declarations: how a task's labels name a virtual IP, and the address a named VIP gets.
//!
//! dcos-l4lb reads two forms (`dcos_net_mesos_listener.erl`, `dcos_l4lb_mesos_poller.erl`):
//!
//! - a **port label** whose key starts with `VIP` or `vip` (`VIP_0`, `vip1`, ...) and whose value
//!   is `<name-or-ip>:<port>`; the protocol is the port's own;
//! - a **task label** `VIP_PORT<idx>` = `tcp://<name-or-ip>:<port>` (or `udp://`), where `idx`
//!   indexes the task's ports.
//!
//! The value is split at its last `:`. A left side that parses as an IP address is an IP VIP
//! (`10.0.0.1:80`, `[fd00::1]:80`); anything else is a named VIP whose label is the name with
//! its slashes dropped (`/mygroup/myapp` → `mygroupmyapp`), served at
//! [`named_vip_address`]`(label, framework)` and, through DNS, at
//! `<label>.<framework>.l4lb.thisdcos.directory`.

use std::fmt;
// `core::net`: the address types without `std::net`'s sockets (which tidy keeps out of cores).
use ::core::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::discovery::{PortProtocol, TaskEntry};

/// The prefix of a task label in the `VIP_PORT<idx>` form.
const TASK_LABEL_PREFIX: &str = "VIP_PORT";

/// A virtual service: an address, a port and a protocol. Two labels that name the same key are
/// one VIP with the union of their backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VipKey {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: PortProtocol,
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{}://{ip}:{}", self.protocol.as_str(), self.port),
            IpAddr::V6(ip) => write!(f, "{}://[{ip}]:{}", self.protocol.as_str(), self.port),
        }
    }
}

/// Where a VIP's traffic goes: a task's agent address and host port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// The left side of a VIP value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipTarget {
    Ip(IpAddr),
    /// A named VIP's label, slashes already dropped.
    Named(String),
}

/// A parsed VIP value: `<name-or-ip>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub target: VipTarget,
    pub port: u16,
}

/// One VIP a task's port belongs to: the VIP, the name it was declared by (`myapp.marathon`
/// for a named VIP, `None` for an IP VIP) and the task's backend in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipBinding {
    pub key: VipKey,
    pub name: Option<String>,
    pub backend: Backend,
}

/// Why a VIP label was not understood; the label is skipped, the task's other labels still count.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VipLabelError {
    #[error("label {key}: value {value:?} has no `:<port>` (expected `<name-or-ip>:<port>`)")]
    MissingPort { key: String, value: String },
    #[error("label {key}: {port:?} in {value:?} is not a port between 1 and 65535")]
    BadPort { key: String, value: String, port: String },
    #[error("label {key}: value {value:?} names no VIP before its `:<port>`")]
    EmptyName { key: String, value: String },
    #[error("label {key}: value {value:?} must start with `tcp://` or `udp://`")]
    BadScheme { key: String, value: String },
    #[error("label {key}: {index:?} is not an index into the task's {ports} ports")]
    BadPortIndex { key: String, index: String, ports: usize },
}

/// The address of a named VIP: the DNS server's (`dns::core::vip`), so the name
/// `<label>.<framework>.l4lb.thisdcos.directory` resolves to the address this balancer serves.
/// The hash is fixed (FNV-1a, never std's `DefaultHasher`), so every node and every release
/// computes the same address without agreeing on anything. Two names that collide on the same
/// port and protocol become one VIP serving both names' backends; the table keeps both names
/// so the status shows the collision (DC/OS has the same property).
pub fn named_vip_address(label: &str, framework: &str) -> Ipv4Addr {
    crate::dns::core::vip::named_vip_address(label, framework)
}

/// Whether a port label's key declares a VIP (`VIP_0`, `vip`, ...).
pub fn is_vip_label(key: &str) -> bool {
    key.starts_with("VIP") || key.starts_with("vip")
}

/// Parses `<name-or-ip>:<port>`, split at the last `:` as dcos-l4lb does. `key` is only for
/// the error.
pub fn parse_vip_value(key: &str, value: &str) -> Result<VipSpec, VipLabelError> {
    let value = value.trim();
    let (left, port_text) = value
        .rsplit_once(':')
        .ok_or_else(|| VipLabelError::MissingPort { key: key.to_owned(), value: value.to_owned() })?;
    let port = match port_text.parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => {
            let (key, value, port) = (key.to_owned(), value.to_owned(), port_text.to_owned());
            return Err(VipLabelError::BadPort { key, value, port });
        }
    };
    let bracketless = left.strip_prefix('[').and_then(|l| l.strip_suffix(']')).unwrap_or(left);
    if let Ok(ip) = bracketless.parse::<IpAddr>() {
        return Ok(VipSpec { target: VipTarget::Ip(ip), port });
    }
    let label: String = left.chars().filter(|c| *c != '/').collect();
    if label.is_empty() || label.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(VipLabelError::EmptyName { key: key.to_owned(), value: value.to_owned() });
    }
    Ok(VipSpec { target: VipTarget::Named(label), port })
}

/// Every VIP `task` belongs to, by its port labels and its `VIP_PORT<idx>` task labels, sorted
/// and without duplicates, and the labels that could not be read. Backends are the agent's
/// address and the host port: tasks on a container network (no host port) are not balanced.
pub fn task_vips(task: &TaskEntry) -> (Vec<VipBinding>, Vec<VipLabelError>) {
    let mut bindings = Vec::new();
    let mut errors = Vec::new();
    for port in &task.ports {
        let backend = Backend { ip: task.agent_ip, port: port.number };
        for (key, value) in port.labels.iter().filter(|(key, _)| is_vip_label(key)) {
            match parse_vip_value(key, value) {
                Ok(spec) => bindings.push(binding(&spec, port.protocol, &task.framework, backend)),
                Err(error) => errors.push(error),
            }
        }
    }
    for (key, value) in &task.labels {
        let Some(index) = key.strip_prefix(TASK_LABEL_PREFIX) else { continue };
        match task_label_binding(task, key, index, value) {
            Ok(found) => bindings.push(found),
            Err(error) => errors.push(error),
        }
    }
    bindings.sort();
    bindings.dedup();
    (bindings, errors)
}

/// `VIP_PORT<idx>` = `tcp://<name-or-ip>:<port>`: the VIP's protocol is the scheme's, its
/// backend the host port at `idx` of the task's ports.
fn task_label_binding(task: &TaskEntry, key: &str, index: &str, value: &str) -> Result<VipBinding, VipLabelError> {
    let value = value.trim();
    let (protocol, rest) = if let Some(rest) = strip_prefix_ignore_case(value, "tcp://") {
        (PortProtocol::Tcp, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(value, "udp://") {
        (PortProtocol::Udp, rest)
    } else {
        return Err(VipLabelError::BadScheme { key: key.to_owned(), value: value.to_owned() });
    };
    let port = index.parse::<usize>().ok().and_then(|i| task.ports.get(i)).ok_or_else(|| {
        VipLabelError::BadPortIndex { key: key.to_owned(), index: index.to_owned(), ports: task.ports.len() }
    })?;
    let spec = parse_vip_value(key, rest)?;
    let backend = Backend { ip: task.agent_ip, port: port.number };
    Ok(binding(&spec, protocol, &task.framework, backend))
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

fn binding(spec: &VipSpec, protocol: PortProtocol, framework: &str, backend: Backend) -> VipBinding {
    let (ip, name) = match &spec.target {
        VipTarget::Ip(ip) => (*ip, None),
        VipTarget::Named(label) => {
            (IpAddr::V4(named_vip_address(label, framework)), Some(format!("{label}.{framework}")))
        }
    };
    VipBinding { key: VipKey { ip, port: spec.port, protocol }, name, backend }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::discovery::PortEntry;

    fn task(ports: Vec<PortEntry>, labels: &[(&str, &str)]) -> TaskEntry {
        TaskEntry {
            id: "t1".to_owned(),
            name: "web".to_owned(),
            framework_id: "fw".to_owned(),
            framework: "marathon".to_owned(),
            agent_id: "a1".to_owned(),
            agent_ip: "10.0.0.7".parse().unwrap(),
            container_ips: Vec::new(),
            healthy: None,
            ports,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn port(number: u16, protocol: PortProtocol, labels: &[(&str, &str)]) -> PortEntry {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        PortEntry { number, protocol, name: None, labels }
    }

    #[test]
    fn named_addresses_are_stable_and_in_eleven_slash_eight() {
        let a = named_vip_address("myapp", "marathon");
        assert_eq!(a.octets()[0], 11);
        assert_eq!(a, named_vip_address("myapp", "marathon"));
        assert_ne!(a, named_vip_address("myapp", "metronome"));
        // The DNS server answers the same address for the VIP's name.
        assert_eq!(a, crate::dns::core::vip::named_vip_address("/myapp", "marathon"));
    }

    #[test]
    fn values_split_at_the_last_colon() {
        let named = parse_vip_value("VIP_0", "/mygroup/myapp:80").unwrap();
        assert_eq!(named, VipSpec { target: VipTarget::Named("mygroupmyapp".into()), port: 80 });
        let ip = parse_vip_value("VIP_0", "10.0.0.1:8080").unwrap();
        assert_eq!(ip.target, VipTarget::Ip("10.0.0.1".parse().unwrap()));
        let v6 = parse_vip_value("VIP_0", "[fd00::1]:53").unwrap();
        assert_eq!(v6, VipSpec { target: VipTarget::Ip("fd00::1".parse().unwrap()), port: 53 });
        let bare_v6 = parse_vip_value("VIP_0", "fd00::1:53").unwrap();
        assert_eq!(bare_v6.target, VipTarget::Ip("fd00::1".parse().unwrap()));
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(matches!(parse_vip_value("VIP_0", "myapp"), Err(VipLabelError::MissingPort { .. })));
        assert!(matches!(parse_vip_value("VIP_0", "myapp:0"), Err(VipLabelError::BadPort { .. })));
        assert!(matches!(parse_vip_value("VIP_0", "myapp:70000"), Err(VipLabelError::BadPort { .. })));
        assert!(matches!(parse_vip_value("VIP_0", "myapp:"), Err(VipLabelError::BadPort { .. })));
        assert!(matches!(parse_vip_value("VIP_0", "//:80"), Err(VipLabelError::EmptyName { .. })));
        assert!(matches!(parse_vip_value("VIP_0", "my app:80"), Err(VipLabelError::EmptyName { .. })));
    }

    #[test]
    fn port_labels_use_the_ports_protocol_and_host_port() {
        let t = task(
            vec![
                port(31000, PortProtocol::Tcp, &[("VIP_0", "/myapp:80"), ("other", "x:1")]),
                port(31001, PortProtocol::Udp, &[("vip_dns", "10.1.1.1:53"), ("VIP_1", "nonsense")]),
            ],
            &[],
        );
        let (bindings, errors) = task_vips(&t);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let agent: IpAddr = "10.0.0.7".parse().unwrap();
        let named =
            VipKey { ip: IpAddr::V4(named_vip_address("myapp", "marathon")), port: 80, protocol: PortProtocol::Tcp };
        let dns = VipKey { ip: "10.1.1.1".parse().unwrap(), port: 53, protocol: PortProtocol::Udp };
        let expected = [
            VipBinding { key: dns, name: None, backend: Backend { ip: agent, port: 31001 } },
            VipBinding { key: named, name: Some("myapp.marathon".into()), backend: Backend { ip: agent, port: 31000 } },
        ];
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(bindings, expected);
    }

    #[test]
    fn task_labels_index_the_ports() {
        let t = task(
            vec![port(31000, PortProtocol::Tcp, &[]), port(31001, PortProtocol::Tcp, &[])],
            &[("VIP_PORT1", "UDP://stats:8125"), ("VIP_PORT5", "tcp://x:1"), ("VIP_PORT0", "http://x:1")],
        );
        let (bindings, errors) = task_vips(&t);
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].key.protocol, PortProtocol::Udp);
        assert_eq!(bindings[0].backend.port, 31001);
        assert_eq!(bindings[0].name.as_deref(), Some("stats.marathon"));
        assert!(errors.iter().any(|e| matches!(e, VipLabelError::BadPortIndex { .. })));
        assert!(errors.iter().any(|e| matches!(e, VipLabelError::BadScheme { .. })));
    }

    #[test]
    fn duplicate_labels_bind_once() {
        let t = task(vec![port(31000, PortProtocol::Tcp, &[("VIP_0", "/a:80"), ("VIP_1", "a:80")])], &[]);
        assert_eq!(task_vips(&t).0.len(), 1);
    }
}

//! The nftables data plane's ruleset: the whole of it, rendered from the VIPs to serve, so the
//! shell replaces the kernel's copy in one `nft -f -` transaction on every change.
//!
//! One table, [`TABLE`] in the `ip` family, belongs to Flotilla; nothing else in the kernel's
//! ruleset is touched. In it:
//!
//! - a verdict map `vips` from `address . protocol . port` to the VIP's chain, looked up by NAT
//!   chains on two hooks: `output` (connections opened by this host's processes) and
//!   `prerouting` (connections from containers and network namespaces, which reach the host
//!   through an interface). NAT chains only see a connection's first packet: the rest follow
//!   its conntrack entry, which is also why a backend removed from the ruleset keeps its open
//!   connections until they end.
//! - one chain per VIP: a DNAT to its backends, or a refusal (TCP reset, ICMP port unreachable)
//!   for a VIP without any, so a client fails at once instead of waiting for a timeout.
//! - a `postrouting` chain that masquerades DNAT-ed connections whose source is a VIP address.
//!   The shell puts VIP addresses on `lo`, so that a VIP is routable on a host without a
//!   default route; a local client connecting to it then gets the VIP itself as its source
//!   address, and a remote backend's replies to that address would go to *its* `lo`. The
//!   masquerade gives such connections the outgoing interface's address instead.
//!
//! Balancing is round robin (`numgen inc`): new connections alternate exactly over the
//! backends, which spreads them evenly even when there are few (a random draw drifts on small
//! numbers) and makes the order testable. Its cost is one shared counter per VIP, touched once
//! per new connection. The counter starts again at 0 whenever the ruleset is replaced. Load
//! (active connections) is invisible here, so `Policy` only applies to the proxy.
//!
//! IPv4 only. IPv6 would need the same table in the `ip6` family (or `inet`, with
//! `dnat ip6 to`), `ipv6_addr` in the set and map types, `[addr]:port` backends,
//! `reject with icmpv6 port-unreachable`, and the VIP on `lo` as a `/128`. IPv6 VIPs, and IPv6
//! backends of an IPv4 VIP (NAT does not cross families), are left out and reported in
//! [`Ruleset::skipped`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ::core::net::{IpAddr, Ipv4Addr};

use super::vip::{Backend, VipKey};
use crate::discovery::PortProtocol;

/// The family and name of the table Flotilla owns.
pub const TABLE: &str = "ip flotilla_l4lb";

/// Priorities of the hooks, by number: nft 1.0.6 accepts the names (`dstnat`, `srcnat`) on
/// some hooks only. -100 and 100 are where iptables' NAT tables sit, so Docker's and
/// Kubernetes' rules run beside ours rather than before or after.
const DNAT_PRIORITY: i32 = -100;
const SNAT_PRIORITY: i32 = 100;

/// What the kernel is to do, ready for `nft -f -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The transaction: create the table if missing, delete it, declare it anew. nft applies
    /// a file as one transaction, so packets see the old ruleset or the new one, never a mix.
    pub text: String,
    /// VIPs or backends left out, with why (IPv6).
    pub skipped: BTreeMap<VipKey, String>,
}

/// The transaction that takes Flotilla's table out of the kernel (declaring it first, so the
/// delete succeeds when it is already gone).
pub fn removal() -> String {
    format!("table {TABLE}\ndelete table {TABLE}\n")
}

/// The ruleset serving `vips`: each VIP with the backends to balance over; an empty set
/// means the VIP refuses connections.
pub fn render(vips: &BTreeMap<VipKey, BTreeSet<Backend>>) -> Ruleset {
    let mut skipped = BTreeMap::new();
    let mut served: Vec<ServedVip> = Vec::new();
    for (key, backends) in vips {
        let IpAddr::V4(address) = key.ip else {
            skipped.insert(*key, "IPv6 VIPs are not served by the nftables data plane".to_owned());
            continue;
        };
        let (v4, v6): (Vec<Backend>, Vec<Backend>) = backends.iter().partition(|backend| backend.ip.is_ipv4());
        if !v6.is_empty() {
            let list: Vec<String> = v6.iter().map(Backend::to_string).collect();
            skipped.insert(*key, format!("IPv6 backends left out (NAT cannot cross families): {}", list.join(", ")));
        }
        served.push(ServedVip { key: *key, address, backends: v4 });
    }
    let mut text = removal();
    if served.is_empty() {
        // No hook at all: an empty table costs nothing per packet and keeps conntrack unloaded.
        let _ = writeln!(text, "table {TABLE} {{\n}}");
    } else {
        render_table(&mut text, &served);
    }
    Ruleset { text, skipped }
}

/// An IPv4 VIP and its IPv4 backends, in order.
struct ServedVip {
    key: VipKey,
    address: Ipv4Addr,
    backends: Vec<Backend>,
}

fn render_table(text: &mut String, served: &[ServedVip]) {
    let _ = writeln!(text, "table {TABLE} {{");
    let addresses: BTreeSet<Ipv4Addr> = served.iter().map(|vip| vip.address).collect();
    let addresses: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
    let _ = writeln!(text, "\tset vip_addresses {{\n\t\ttype ipv4_addr");
    let _ = writeln!(text, "\t\telements = {{ {} }}\n\t}}\n", addresses.join(", "));

    let elements: Vec<String> =
        served.iter().map(|vip| format!("{} : jump {}", selector(vip), chain_name(&vip.key))).collect();
    let _ = writeln!(text, "\tmap vips {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict");
    let _ = writeln!(text, "\t\telements = {{ {} }}\n\t}}\n", elements.join(", "));

    for vip in served {
        let _ = writeln!(text, "\tchain {} {{\n\t\t{}\n\t}}\n", chain_name(&vip.key), vip_rule(vip));
    }
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(text, "\tchain {chain} {{");
        let _ = writeln!(text, "\t\ttype nat hook {hook} priority {DNAT_PRIORITY}; policy accept;");
        let _ = writeln!(text, "\t\tip daddr . meta l4proto . th dport vmap @vips\n\t}}\n");
    }
    let _ = writeln!(text, "\tchain postrouting {{");
    let _ = writeln!(text, "\t\ttype nat hook postrouting priority {SNAT_PRIORITY}; policy accept;");
    let _ = writeln!(text, "\t\tct status dnat ip saddr @vip_addresses masquerade\n\t}}\n}}");
}

/// `11.0.0.1 . tcp . 80`: the key of a VIP in the `vips` map.
fn selector(vip: &ServedVip) -> String {
    format!("{} . {} . {}", vip.address, vip.key.protocol.as_str(), vip.key.port)
}

/// `vip_tcp_11_0_0_1_80`: unique per VIP, and readable in `nft list`.
fn chain_name(key: &VipKey) -> String {
    let address = key.ip.to_string().replace(['.', ':'], "_");
    format!("vip_{}_{address}_{}", key.protocol.as_str(), key.port)
}

/// The one rule of a VIP's chain.
fn vip_rule(vip: &ServedVip) -> String {
    let protocol = vip.key.protocol.as_str();
    match vip.backends.as_slice() {
        [] => match vip.key.protocol {
            PortProtocol::Tcp => "meta l4proto tcp reject with tcp reset".to_owned(),
            // ICMP port unreachable: what a host says when nothing listens on a UDP port.
            PortProtocol::Udp => "meta l4proto udp reject".to_owned(),
        },
        [only] => format!("meta l4proto {protocol} dnat ip to {}", only),
        many => {
            let entries: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(index, backend)| format!("{index} : {} . {}", backend.ip, backend.port))
                .collect();
            format!("meta l4proto {protocol} dnat ip to numgen inc mod {} map {{ {} }}", many.len(), entries.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(ip: [u8; 4], port: u16, protocol: PortProtocol) -> VipKey {
        VipKey { ip: IpAddr::from(ip), port, protocol }
    }

    fn backend(last: u8, port: u16) -> Backend {
        Backend { ip: IpAddr::from([10, 0, 0, last]), port }
    }

    #[test]
    fn no_vip_is_an_empty_table_without_hooks() {
        let ruleset = render(&BTreeMap::new());
        let expected = "table ip flotilla_l4lb\n\
                        delete table ip flotilla_l4lb\n\
                        table ip flotilla_l4lb {\n\
                        }\n";
        assert_eq!(ruleset.text, expected);
        assert!(ruleset.skipped.is_empty());
    }

    #[test]
    fn golden_ruleset() {
        let vips = BTreeMap::from([
            (key([11, 0, 0, 1], 80, PortProtocol::Tcp), BTreeSet::from([backend(2, 31000), backend(1, 31000)])),
            (key([11, 0, 0, 1], 53, PortProtocol::Udp), BTreeSet::from([backend(3, 31053)])),
            (key([11, 0, 0, 2], 8080, PortProtocol::Tcp), BTreeSet::new()),
            (key([11, 0, 0, 3], 53, PortProtocol::Udp), BTreeSet::new()),
        ]);
        let expected = "\
table ip flotilla_l4lb
delete table ip flotilla_l4lb
table ip flotilla_l4lb {
\tset vip_addresses {
\t\ttype ipv4_addr
\t\telements = { 11.0.0.1, 11.0.0.2, 11.0.0.3 }
\t}

\tmap vips {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = { 11.0.0.1 . udp . 53 : jump vip_udp_11_0_0_1_53, 11.0.0.1 . tcp . 80 : jump vip_tcp_11_0_0_1_80, \
11.0.0.2 . tcp . 8080 : jump vip_tcp_11_0_0_2_8080, 11.0.0.3 . udp . 53 : jump vip_udp_11_0_0_3_53 }
\t}

\tchain vip_udp_11_0_0_1_53 {
\t\tmeta l4proto udp dnat ip to 10.0.0.3:31053
\t}

\tchain vip_tcp_11_0_0_1_80 {
\t\tmeta l4proto tcp dnat ip to numgen inc mod 2 map { 0 : 10.0.0.1 . 31000, 1 : 10.0.0.2 . 31000 }
\t}

\tchain vip_tcp_11_0_0_2_8080 {
\t\tmeta l4proto tcp reject with tcp reset
\t}

\tchain vip_udp_11_0_0_3_53 {
\t\tmeta l4proto udp reject
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tip daddr . meta l4proto . th dport vmap @vips
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr . meta l4proto . th dport vmap @vips
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tct status dnat ip saddr @vip_addresses masquerade
\t}
}
";
        let ruleset = render(&vips);
        assert_eq!(ruleset.text, expected, "\n{}", ruleset.text);
        assert!(ruleset.skipped.is_empty());
    }

    #[test]
    fn ipv6_is_left_out_and_reported() {
        let v6_vip = VipKey { ip: "fd00::1".parse().unwrap(), port: 80, protocol: PortProtocol::Tcp };
        let v4_vip = key([11, 0, 0, 1], 80, PortProtocol::Tcp);
        let v6_backend = Backend { ip: "fd00::2".parse().unwrap(), port: 31000 };
        let vips = BTreeMap::from([
            (v6_vip, BTreeSet::from([v6_backend])),
            (v4_vip, BTreeSet::from([backend(1, 31000), v6_backend])),
        ]);
        let ruleset = render(&vips);
        assert_eq!(ruleset.skipped.keys().copied().collect::<Vec<_>>(), vec![v4_vip, v6_vip]);
        assert!(ruleset.skipped[&v4_vip].contains("[fd00::2]:31000"));
        assert!(!ruleset.text.contains("fd00"), "{}", ruleset.text);
        assert!(ruleset.text.contains("dnat ip to 10.0.0.1:31000"));
    }

    #[test]
    fn removal_declares_then_deletes() {
        assert_eq!(removal(), "table ip flotilla_l4lb\ndelete table ip flotilla_l4lb\n");
    }

    /// From discovery's changes to the ruleset: a task turning unhealthy, and one that ends,
    /// leave the rules; the last one gone takes its VIP with it.
    #[test]
    fn unhealthy_and_gone_tasks_leave_the_rules() {
        use crate::discovery::ViewChange;
        use crate::l4lb::core::VipTable;
        use crate::l4lb::core::table::tests::task as vip_task;

        let task = |id: &str, agent: u8, healthy: Option<bool>| vip_task(id, agent, 31000, "11.0.0.9:80", healthy);
        let mut table = VipTable::default();
        table.apply(&[
            ViewChange::TaskUp(task("t1", 1, None)),
            ViewChange::TaskUp(task("t2", 2, Some(true))),
            ViewChange::TaskUp(task("t3", 3, Some(true))),
        ]);
        let text = render(&table.snapshot()).text;
        assert!(text.contains("map { 0 : 10.0.0.1 . 31000, 1 : 10.0.0.2 . 31000, 2 : 10.0.0.3 . 31000 }"), "{text}");

        table.apply(&[ViewChange::TaskUp(task("t2", 2, Some(false))), ViewChange::TaskGone { id: "t3".into() }]);
        let text = render(&table.snapshot()).text;
        assert!(text.contains("dnat ip to 10.0.0.1:31000"), "{text}");
        assert!(!text.contains("10.0.0.2") && !text.contains("10.0.0.3"), "{text}");

        table.apply(&[ViewChange::TaskGone { id: "t1".into() }]);
        assert_eq!(render(&table.snapshot()).text, render(&BTreeMap::new()).text);
    }

    fn arb_vips() -> impl Strategy<Value = BTreeMap<VipKey, BTreeSet<Backend>>> {
        let key =
            (0..4u8, prop::sample::select(vec![53u16, 80, 8080]), prop::bool::ANY).prop_map(|(host, port, udp)| {
                key([11, 0, 0, host], port, if udp { PortProtocol::Udp } else { PortProtocol::Tcp })
            });
        let backends = prop::collection::btree_set((1..6u8, 31000..31003u16).prop_map(|(h, p)| backend(h, p)), 0..5);
        prop::collection::btree_map(key, backends, 0..6)
    }

    /// The DNAT rule of a VIP's chain, found by the chain's name.
    fn rule_of<'a>(text: &'a str, key: &VipKey) -> &'a str {
        let header = format!("\tchain {} {{\n\t\t", chain_name(key));
        let start = text.find(&header).expect("the VIP has a chain") + header.len();
        text[start..].lines().next().unwrap()
    }

    proptest! {
        /// Every backend of a VIP is in its rule, nothing else is, and a VIP without backends
        /// refuses; the output is a function of the input alone.
        #[test]
        fn rules_name_exactly_the_backends(vips in arb_vips(), removed in arb_vips()) {
            let ruleset = render(&vips);
            prop_assert_eq!(&ruleset.text, &render(&vips.clone()).text);
            for (key, backends) in &vips {
                let rule = rule_of(&ruleset.text, key);
                if backends.is_empty() {
                    prop_assert!(rule.contains("reject"), "{}", rule);
                } else {
                    prop_assert!(rule.contains("dnat ip to"), "{}", rule);
                }
                for backend in backends {
                    let one = format!("{}:{}", backend.ip, backend.port);
                    let among = format!(" : {} . {}", backend.ip, backend.port);
                    prop_assert!(rule.ends_with(&one) || rule.contains(&among), "{} missing in {}", backend, rule);
                }
                // Backends of the other draw that this VIP does not have never appear in it.
                for gone in removed.values().flatten().filter(|b| !backends.contains(b)) {
                    let one = format!("to {}:{}", gone.ip, gone.port);
                    let among = format!(" : {} . {}", gone.ip, gone.port);
                    prop_assert!(!rule.contains(&one) && !rule.contains(&among), "{} present in {}", gone, rule);
                }
                let numbered = rule.matches(" . ").count();
                prop_assert_eq!(numbered, if backends.len() > 1 { backends.len() } else { 0 });
            }
            let chains = ruleset.text.matches("\tchain vip_").count();
            prop_assert_eq!(chains, vips.len());
        }
    }
}

//! Named virtual IPs (dcos-l4lb's `VIP_n` port labels) and their addresses.
//!
//! A port label whose key starts with `VIP` or `vip` and whose value is `<name>:<port>`
//! declares a VIP; when the part before the last `:` is not an IP address it is a **named
//! VIP**, served as `<name>.<framework>.l4lb.thisdcos.directory` with the slashes of the name
//! dropped (`/mygroup/myapp:80` on `marathon` → `mygroupmyapp.marathon.l4lb.thisdcos.directory`).
//!
//! Its address is a hash of `<name>.<framework>` into `11.0.0.0/8` (dcos-l4lb's named range),
//! so every node computes the same address without coordination. The hash is FNV-1a (64 bit)
//! folded to 24 bits, skipping `11.0.0.0` and `11.255.255.255`.
//!
//! Collisions: 2^24 - 2 addresses make a collision between two of 1,000 VIPs about 3 % likely,
//! so they are handled rather than ignored. [`named_vip_address_at`] gives the address of a
//! probe `attempt` (attempt 0 is [`named_vip_address`]); [`assign_named_vips`] gives every VIP
//! of a set an address that no other VIP of the set has: VIPs are taken in sorted order and
//! each takes its first free probe. A VIP's address therefore only moves when another VIP
//! that sorts before it collides with it, and every node holding the same set agrees. The DNS
//! server and the load balancer must both use [`assign_named_vips`] over the set of VIPs they
//! see (the same view), or both use [`named_vip_address`] alone.

use std::collections::{BTreeMap, BTreeSet};

use super::labels::fnv1a64;

pub use core::net::Ipv4Addr;

/// How many probes [`assign_named_vips`] tries before giving a VIP its attempt-0 address
/// anyway (only reachable when millions of VIPs crowd the range).
pub const MAX_PROBES: u32 = 64;

/// A VIP declared on a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VipLabel {
    /// `name` as declared (`/myapp`), and the port.
    Named { name: String, port: u16 },
    /// A fixed address VIP (`10.0.0.1:80`).
    Ip { ip: core::net::IpAddr, port: u16 },
}

/// The VIP a port label declares, if it declares one.
pub fn parse_vip_label(key: &str, value: &str) -> Option<VipLabel> {
    if !(key.starts_with("VIP") || key.starts_with("vip")) {
        return None;
    }
    let (name, port) = value.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<core::net::IpAddr>() {
        return Some(VipLabel::Ip { ip, port });
    }
    if normalize_vip_name(name).is_empty() {
        return None;
    }
    Some(VipLabel::Named { name: name.to_owned(), port })
}

/// A named VIP's DNS label: slashes dropped, lowercased; other characters as DNS labels allow.
pub fn normalize_vip_name(name: &str) -> String {
    let without_slashes: String = name.chars().filter(|&c| c != '/').collect();
    super::labels::label(&without_slashes, false)
}

/// The address of the named VIP `name` (as declared, `/myapp`, or already normalized) of
/// `framework`: attempt 0 of its probe sequence.
pub fn named_vip_address(name: &str, framework: &str) -> Ipv4Addr {
    named_vip_address_at(name, framework, 0)
}

/// The address of probe `attempt` of the named VIP: attempt 0 hashes `<name>.<framework>`,
/// later attempts hash `<name>.<framework>#<attempt>`.
pub fn named_vip_address_at(name: &str, framework: &str, attempt: u32) -> Ipv4Addr {
    let mut key = format!("{}.{}", normalize_vip_name(name), super::labels::domain_frag(framework, false));
    if attempt > 0 {
        key.push('#');
        key.push_str(&attempt.to_string());
    }
    let hash = fnv1a64(key.as_bytes());
    let folded = ((hash >> 40) ^ (hash >> 16) ^ hash) as u32 & 0x00ff_ffff;
    // 0 and 0xffffff are the range's network and broadcast addresses.
    let host = 1 + folded % 0x00ff_fffe;
    Ipv4Addr::from(0x0b00_0000 | host)
}

/// Addresses for a set of named VIPs `(name, framework)`, free of collisions (see the module
/// doc). Names are normalized first, so `/myapp` and `myapp` are one VIP.
pub fn assign_named_vips<'a>(
    vips: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<(String, String), Ipv4Addr> {
    let keys: BTreeSet<(String, String)> =
        vips.into_iter().map(|(name, fw)| (normalize_vip_name(name), super::labels::domain_frag(fw, false))).collect();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (name, fw) in keys {
        let address = (0..MAX_PROBES)
            .map(|attempt| named_vip_address_at(&name, &fw, attempt))
            .find(|a| !taken.contains(a))
            .unwrap_or_else(|| named_vip_address(&name, &fw));
        taken.insert(address);
        out.insert((name, fw), address);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_parsed() {
        assert_eq!(parse_vip_label("VIP_0", "/myapp:80"), Some(VipLabel::Named { name: "/myapp".into(), port: 80 }));
        assert_eq!(
            parse_vip_label("vip_1", "10.0.0.1:8080"),
            Some(VipLabel::Ip { ip: "10.0.0.1".parse().unwrap(), port: 8080 })
        );
        assert_eq!(parse_vip_label("VIP_2", "[fd01::1]:53").map(|v| matches!(v, VipLabel::Ip { .. })), Some(true));
        assert_eq!(parse_vip_label("LABEL", "/myapp:80"), None);
        assert_eq!(parse_vip_label("VIP_0", "/myapp"), None);
        assert_eq!(parse_vip_label("VIP_0", "/myapp:http"), None);
        assert_eq!(parse_vip_label("VIP_0", "//:80"), None);
    }

    #[test]
    fn addresses_are_stable_and_in_range() {
        let a = named_vip_address("/myapp", "marathon");
        assert_eq!(a, named_vip_address("myapp", "marathon"), "slashes are dropped before hashing");
        assert_eq!(a, named_vip_address("/MyApp", "Marathon"), "names are case-insensitive as DNS is");
        assert_eq!(a.octets()[0], 11);
        assert_ne!(a, named_vip_address("/myapp", "metronome"));
        assert_eq!(normalize_vip_name("/mygroup/myapp"), "mygroupmyapp");
        for i in 0..2000 {
            let o = named_vip_address(&format!("app{i}"), "marathon").octets();
            assert_eq!(o[0], 11);
            assert!(o[1..] != [0, 0, 0] && o[1..] != [255, 255, 255]);
        }
    }

    #[test]
    fn assignment_resolves_collisions() {
        let names: Vec<String> = (0..5000).map(|i| format!("/svc{i}")).collect();
        let assigned = assign_named_vips(names.iter().map(|n| (n.as_str(), "marathon")));
        let distinct: BTreeSet<_> = assigned.values().collect();
        assert_eq!(distinct.len(), names.len());
        // Names that do not collide keep their attempt-0 address.
        let unmoved = assigned.iter().filter(|((n, f), a)| named_vip_address(n, f) == **a).count();
        assert!(unmoved >= names.len() - 10, "{unmoved}");
    }
}

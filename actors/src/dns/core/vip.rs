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
//! Collisions: 2^24 - 2 addresses make a collision between two of 1,000 VIPs about 3 % likely.
//! The load balancer computes the same address (it calls [`named_vip_address`]); two names
//! that collide on one port and protocol become one VIP serving the backends of both, which
//! its status shows — as in DC/OS. Probing for a free address would need every node to agree
//! on the whole set of names first, which is what a fixed hash avoids.

use super::labels::fnv1a64;

pub use core::net::Ipv4Addr;

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
/// `framework`: FNV-1a (64 bit) of `<name>.<framework>` folded into `11.0.0.0/8`, skipping
/// the range's first and last addresses.
pub fn named_vip_address(name: &str, framework: &str) -> Ipv4Addr {
    let key = format!("{}.{}", normalize_vip_name(name), super::labels::domain_frag(framework, false));
    let hash = fnv1a64(key.as_bytes());
    let folded = ((hash >> 40) ^ (hash >> 16) ^ hash) as u32 & 0x00ff_ffff;
    // 0 and 0xffffff are the range's network and broadcast addresses.
    let host = 1 + folded % 0x00ff_fffe;
    Ipv4Addr::from(0x0b00_0000 | host)
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
}

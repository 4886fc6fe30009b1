//! The `nameserver` lines of a resolv.conf(5) file: the upstreams a node's DNS server
//! forwards to when none are configured.

use core::net::{IpAddr, SocketAddr};

/// resolv.conf has no port syntax; resolvers listen on 53.
pub const DNS_PORT: u16 = 53;

/// The nameservers of `text` in file order, each once, leaving out `exclude` (the server's
/// own address, so a node whose resolv.conf names itself does not forward to itself).
/// Comments (`#`, `;`), other options and unparsable addresses are skipped; an IPv6 address
/// may carry a `%zone`, which is dropped.
pub fn parse_resolv_conf(text: &str, exclude: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(address) = words.next() else { continue };
        let address = address.split('%').next().unwrap_or(address);
        let Ok(ip) = address.parse::<IpAddr>() else { continue };
        let server = SocketAddr::new(ip, DNS_PORT);
        if !out.contains(&server) && !exclude.contains(&server) {
            out.push(server);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_parsed_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0 # v6\n\
                    ;nameserver 10.9.9.9\nnameserver bogus\nnameserver 10.0.0.2\noptions ndots:2\nnameserver\n";
        let got = parse_resolv_conf(text, &[]);
        assert_eq!(got, vec!["10.0.0.2:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
        let own: SocketAddr = "10.0.0.2:53".parse().unwrap();
        assert_eq!(parse_resolv_conf(text, &[own]).len(), 1);
        assert!(parse_resolv_conf("", &[]).is_empty());
    }
}

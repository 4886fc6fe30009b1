//! Answering one question from the [`Index`]: the sections of the response, its code and
//! whether it is authoritative. The shell turns this into wire format.
//!
//! Inside a served zone (`<domain>` and `thisdcos.directory`) every question is answered
//! authoritatively: records of the asked type; NOERROR without records (NODATA) and the
//! zone's SOA in the authority section when the name exists without that type (including
//! names that only have names below them); NXDOMAIN with the SOA when it does not exist.
//! `X.mesos.thisdcos.directory` mirrors `X.<domain>` with the mirror's names and TTL.
//! Questions outside the zones are not answered here ([`Resolution::Forward`]).

use core::net::{Ipv4Addr, Ipv6Addr};
use std::collections::BTreeSet;

use super::config::DnsConfig;
use super::index::{DCOS_ZONE, Data, Index, MESOS_MIRROR_ZONE};

/// The record types this server knows; the rest are `Other` (answered with NODATA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    Soa,
    Ns,
    Any,
    Other(u16),
}

impl QType {
    /// The type a question asks for by its wire code.
    pub fn from_code(code: u16) -> QType {
        match code {
            1 => QType::A,
            28 => QType::Aaaa,
            33 => QType::Srv,
            6 => QType::Soa,
            2 => QType::Ns,
            255 => QType::Any,
            other => QType::Other(other),
        }
    }
}

/// DNS class IN.
pub const CLASS_IN: u16 = 1;
/// DNS class ANY (`*`).
pub const CLASS_ANY: u16 = 255;

/// The response codes this core gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    NxDomain,
    /// A class other than IN in a served zone.
    Refused,
}

/// The data of an answered record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Ns(String),
    Soa { mname: String, rname: String, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 },
}

/// One record of a response; `name` has no final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

/// The response to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

/// What to do with a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Answer(Answer),
    /// Outside the served zones: for the upstream resolvers.
    Forward,
}

/// The zone a name falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zone {
    Mesos,
    Dcos,
}

/// How a question maps onto stored names.
struct Lookup<'a> {
    zone: Zone,
    /// The zone's apex.
    apex: &'a str,
    /// The name to look up in the index.
    stored: String,
    /// For the mirror zone: stored names end in `.<domain>`, shown as `.mesos.thisdcos.directory`.
    mirror: bool,
}

/// Answers `qname` (any case, with or without the final dot) of `qtype` and `qclass`.
/// `seed` orders the records of a name (a fresh one per query spreads the load).
pub fn resolve(index: &Index, config: &DnsConfig, qname: &str, qtype: QType, qclass: u16, seed: u64) -> Resolution {
    let name = qname.strip_suffix('.').unwrap_or(qname).to_ascii_lowercase();
    let Some(lookup) = lookup_of(index, &name) else { return Resolution::Forward };
    if qclass != CLASS_IN && qclass != CLASS_ANY {
        return Resolution::Answer(Answer {
            rcode: Rcode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        });
    }
    let ttl = match lookup.zone {
        Zone::Mesos => config.ttl,
        Zone::Dcos => config.dcos_ttl,
    };
    let responder = Responder { index, config, lookup: &lookup, ttl, shown: &name };
    Resolution::Answer(responder.answer(qtype, seed))
}

fn lookup_of<'a>(index: &'a Index, name: &str) -> Option<Lookup<'a>> {
    let domain = index.domain();
    if in_zone(name, domain) {
        return Some(Lookup { zone: Zone::Mesos, apex: domain, stored: name.to_owned(), mirror: false });
    }
    if !in_zone(name, DCOS_ZONE) {
        return None;
    }
    if let Some(prefix) = name.strip_suffix(MESOS_MIRROR_ZONE)
        && (prefix.is_empty() || prefix.ends_with('.'))
    {
        let stored = format!("{prefix}{domain}");
        return Some(Lookup { zone: Zone::Dcos, apex: DCOS_ZONE, stored, mirror: true });
    }
    Some(Lookup { zone: Zone::Dcos, apex: DCOS_ZONE, stored: name.to_owned(), mirror: false })
}

fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|prefix| prefix.ends_with('.'))
}

struct Responder<'a> {
    index: &'a Index,
    config: &'a DnsConfig,
    lookup: &'a Lookup<'a>,
    ttl: u32,
    /// The asked name, lowercase: the owner of the answers.
    shown: &'a str,
}

impl Responder<'_> {
    fn answer(&self, qtype: QType, seed: u64) -> Answer {
        let at_apex = self.shown == self.lookup.apex;
        let mut answers = Vec::new();
        if at_apex && matches!(qtype, QType::Soa | QType::Any) {
            answers.push(self.soa());
        }
        if at_apex && matches!(qtype, QType::Ns | QType::Any) {
            answers.push(self.ns());
        }
        let mut stored: Vec<&Data> = self.index.records(&self.lookup.stored).filter(|d| wanted(d, qtype)).collect();
        shuffle(&mut stored, seed);
        answers.extend(stored.into_iter().map(|d| self.rr(self.shown, d)));
        let exists = at_apex || self.index.name_exists(&self.lookup.stored);
        if answers.is_empty() {
            let rcode = if exists { Rcode::NoError } else { Rcode::NxDomain };
            return Answer { rcode, authoritative: true, answers, authority: vec![self.soa()], additional: Vec::new() };
        }
        let additional = self.additional(&answers);
        Answer { rcode: Rcode::NoError, authoritative: true, answers, authority: Vec::new(), additional }
    }

    /// Addresses of SRV targets and name servers that this server knows.
    fn additional(&self, answers: &[Rr]) -> Vec<Rr> {
        let mut targets = BTreeSet::new();
        for rr in answers {
            match &rr.data {
                RData::Srv { target, .. } | RData::Ns(target) => {
                    targets.insert(target.clone());
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for target in targets {
            let stored = self.stored_name(&target);
            for data in self.index.records(&stored).filter(|d| matches!(d, Data::A(_) | Data::Aaaa(_))) {
                out.push(self.rr(&target, data));
            }
        }
        out
    }

    /// A shown name back to its stored form (mirror names end in the mesos domain).
    fn stored_name(&self, shown: &str) -> String {
        match shown.strip_suffix(MESOS_MIRROR_ZONE) {
            Some(prefix) if self.lookup.mirror => format!("{prefix}{}", self.index.domain()),
            _ => shown.to_owned(),
        }
    }

    /// A stored target as shown in this zone.
    fn shown_name(&self, stored: &str) -> String {
        let domain = self.index.domain();
        match stored.strip_suffix(domain) {
            Some(prefix) if self.lookup.mirror && (prefix.is_empty() || prefix.ends_with('.')) => {
                format!("{prefix}{MESOS_MIRROR_ZONE}")
            }
            _ => stored.to_owned(),
        }
    }

    fn rr(&self, owner: &str, data: &Data) -> Rr {
        let data = match data {
            Data::A(ip) => RData::A(*ip),
            Data::Aaaa(ip) => RData::Aaaa(*ip),
            Data::Srv { port, target } => {
                RData::Srv { priority: 0, weight: self.config.srv_weight, port: *port, target: self.shown_name(target) }
            }
        };
        Rr { name: owner.to_owned(), ttl: self.ttl, data }
    }

    fn soa(&self) -> Rr {
        let ns = self.index.ns_name();
        let data = RData::Soa {
            rname: format!("root.{ns}"),
            mname: ns,
            serial: (self.index.revision() & u64::from(u32::MAX)) as u32,
            refresh: self.config.soa_refresh,
            retry: self.config.soa_retry,
            expire: self.config.soa_expire,
            minimum: self.config.soa_minttl,
        };
        Rr { name: self.lookup.apex.to_owned(), ttl: self.ttl, data }
    }

    fn ns(&self) -> Rr {
        Rr { name: self.lookup.apex.to_owned(), ttl: self.ttl, data: RData::Ns(self.index.ns_name()) }
    }
}

fn wanted(data: &Data, qtype: QType) -> bool {
    matches!(
        (data, qtype),
        (Data::A(_), QType::A | QType::Any)
            | (Data::Aaaa(_), QType::Aaaa | QType::Any)
            | (Data::Srv { .. }, QType::Srv | QType::Any)
    )
}

/// Fisher-Yates driven by splitmix64 from `seed`: every order is reachable, and one seed
/// always gives the same order.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

//! The UDP fast path's wire format: reading a plain query by hand and replying from a
//! response prepared once per (name, type, class).
//!
//! Most queries a node's resolver sees are the same few questions asked over and over, each a
//! standard query with one question and at most an EDNS OPT record. Parsing such a query into
//! a general message and encoding every answer record again costs far more than the lookup,
//! so the shell keeps [`Prepared`] responses and a reply is three copies: a header, the
//! question exactly as the client sent it (its letter case kept, so 0x20 randomisation keeps
//! working) and the prepared records, whose names point back into that question.
//!
//! Anything else — other opcodes, several questions, names with pointers or unusual bytes,
//! EDNS options, trailing bytes — is left to the full path ([`parse_plain_query`] says
//! `None`), and so are responses that might not fit the smallest UDP limit ([`prepare`] says
//! `None`): truncation is the full path's job.

use super::answer::{Answer, RData, Rcode, Rr};

/// The DNS header's length.
pub const HEADER_LEN: usize = 12;
/// The longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// The longest cache key: a name, its type and its class.
pub const MAX_KEY_LEN: usize = MAX_NAME_LEN + 4;
/// The UDP limit of a query without EDNS; prepared replies fit in it with an OPT record, so
/// they never need truncation whatever the client's limit.
pub const PLAIN_UDP_LIMIT: usize = 512;
/// The largest UDP payload the server offers in EDNS (the 2020 flag day value, which avoids
/// IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_RECORD_LEN: usize = 1 + 2 + 2 + 4 + 2;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const MAX_LABEL_LEN: usize = 63;
/// A name compression pointer's tag bits (RFC 1035 §4.1.4).
const POINTER_TAG: u8 = 0xC0;

const FLAG_QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;

/// A standard query with one question that the fast path can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainQuery {
    pub id: u16,
    /// The query's flags that a response repeats (RD and CD).
    pub echoed_flags: u16,
    /// The question's name on the wire, labels and final zero, starting at [`HEADER_LEN`].
    pub name_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// The payload size of the query's EDNS OPT record, when it has one.
    pub edns_payload: Option<u16>,
}

impl PlainQuery {
    /// Where the question section ends.
    pub fn question_end(&self) -> usize {
        HEADER_LEN + self.name_len + 4
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Letters, digits, `-` and `_`: the bytes of every name the index serves. Names with other
/// bytes have an escaped text form, which only the full path renders.
fn plain_label_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// The length of the uncompressed name of plain labels at `at`, or `None`.
fn plain_name_len(packet: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = usize::from(*packet.get(pos)?);
        if len == 0 {
            let name_len = pos + 1 - at;
            return (name_len <= MAX_NAME_LEN).then_some(name_len);
        }
        if len > MAX_LABEL_LEN {
            return None; // a compression pointer or a reserved label type
        }
        let label = packet.get(pos + 1..pos + 1 + len)?;
        if !label.iter().all(|&b| plain_label_byte(b)) {
            return None;
        }
        pos += 1 + len;
    }
}

/// Reads `packet` as a plain query: QR clear, opcode QUERY, TC clear, one question with an
/// uncompressed name of plain labels, no answer or authority records, and at most one
/// additional record that is an EDNS version 0 OPT record without options, and nothing after.
/// `None` sends the packet down the full path.
pub fn parse_plain_query(packet: &[u8]) -> Option<PlainQuery> {
    let id = u16_at(packet, 0)?;
    let flags = u16_at(packet, 2)?;
    let counts = [u16_at(packet, 4)?, u16_at(packet, 6)?, u16_at(packet, 8)?, u16_at(packet, 10)?];
    if flags & (FLAG_QR | OPCODE_MASK | FLAG_TC) != 0 || counts[..3] != [1, 0, 0] || counts[3] > 1 {
        return None;
    }
    let name_len = plain_name_len(packet, HEADER_LEN)?;
    let qtype = u16_at(packet, HEADER_LEN + name_len)?;
    let qclass = u16_at(packet, HEADER_LEN + name_len + 2)?;
    let mut query =
        PlainQuery { id, echoed_flags: flags & (FLAG_RD | FLAG_CD), name_len, qtype, qclass, edns_payload: None };
    let end = query.question_end();
    if counts[3] == 1 {
        query.edns_payload = Some(plain_opt_payload(packet.get(end..)?)?);
    } else if packet.len() != end {
        return None;
    }
    Some(query)
}

/// The payload size of `bytes` when they are exactly one OPT record with extended RCODE 0,
/// version 0 and no options (any flags: the response does not repeat DO either way).
fn plain_opt_payload(bytes: &[u8]) -> Option<u16> {
    if bytes.len() != OPT_RECORD_LEN || bytes[0] != 0 || u16_at(bytes, 1)? != TYPE_OPT {
        return None;
    }
    let (extended_rcode, version, rdlength) = (bytes[5], bytes[6], u16_at(bytes, 9)?);
    (extended_rcode == 0 && version == 0 && rdlength == 0).then(|| u16_at(bytes, 3)).flatten()
}

/// Writes the cache key of `query` into `key`: its name in lowercase (clients vary the case,
/// the answer does not), its type and its class. Returns the key's length.
pub fn cache_key(packet: &[u8], query: &PlainQuery, key: &mut [u8; MAX_KEY_LEN]) -> usize {
    let name = &packet[HEADER_LEN..HEADER_LEN + query.name_len];
    for (to, from) in key.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    let len = query.name_len;
    key[len..len + 2].copy_from_slice(&query.qtype.to_be_bytes());
    key[len + 2..len + 4].copy_from_slice(&query.qclass.to_be_bytes());
    len + 4
}

/// The question's name as text with the final dot (`.` for the root), as the full path
/// hands it to [`resolve`](super::answer::resolve).
pub fn qname_text(packet: &[u8], query: &PlainQuery) -> String {
    let name = &packet[HEADER_LEN..HEADER_LEN + query.name_len];
    let mut text = String::with_capacity(query.name_len);
    let mut pos = 0;
    while name[pos] != 0 {
        let len = usize::from(name[pos]);
        text.extend(name[pos + 1..pos + 1 + len].iter().map(|&b| char::from(b)));
        text.push('.');
        pos += 1 + len;
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// A response to one (name, type, class), encoded once and copied into every reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// QR, AA, RA and the response code; the query adds RD and CD.
    flags: u16,
    /// Answer, authority and additional record counts.
    counts: [u16; 3],
    /// Where each answer record ends in `records`, so replies can rotate their order.
    answer_ends: Box<[u16]>,
    /// The records of the three sections; names equal to or ending in the question's name
    /// point into the question, which every reply puts at the same place.
    records: Box<[u8]>,
}

impl Prepared {
    /// The response code (the low four bits of the flags).
    pub fn rcode(&self) -> u16 {
        self.flags & 0x000F
    }

    /// The reply's length for a question of `name_len` bytes, without and with EDNS.
    fn reply_len(&self, name_len: usize, edns: bool) -> usize {
        HEADER_LEN + name_len + 4 + self.records.len() + if edns { OPT_RECORD_LEN } else { 0 }
    }
}

fn rcode_bits(rcode: Rcode) -> u16 {
    match rcode {
        Rcode::NoError => 0,
        Rcode::NxDomain => 3,
        Rcode::Refused => 5,
    }
}

/// Encodes `answer` to the question whose name is `qname` on the wire (any case), for a
/// server that does (`recursion_available`) or does not forward. `None` when a name cannot
/// be encoded or the reply could exceed [`PLAIN_UDP_LIMIT`]: the full path answers those.
pub fn prepare(answer: &Answer, qname: &[u8], recursion_available: bool) -> Option<Prepared> {
    let mut flags = FLAG_QR | rcode_bits(answer.rcode);
    if answer.authoritative {
        flags |= FLAG_AA;
    }
    if recursion_available {
        flags |= FLAG_RA;
    }
    let mut records = Vec::with_capacity(128);
    let mut answer_ends = Vec::with_capacity(answer.answers.len());
    for rr in &answer.answers {
        push_record(&mut records, rr, qname)?;
        answer_ends.push(u16::try_from(records.len()).ok()?);
    }
    for rr in answer.authority.iter().chain(&answer.additional) {
        push_record(&mut records, rr, qname)?;
    }
    let count = |rrs: &[Rr]| u16::try_from(rrs.len()).ok();
    let counts = [count(&answer.answers)?, count(&answer.authority)?, count(&answer.additional)?];
    let prepared = Prepared { flags, counts, answer_ends: answer_ends.into(), records: records.into_boxed_slice() };
    (prepared.reply_len(qname.len(), true) <= PLAIN_UDP_LIMIT).then_some(prepared)
}

fn push_record(out: &mut Vec<u8>, rr: &Rr, qname: &[u8]) -> Option<()> {
    push_name(out, &rr.name, qname)?;
    let rtype: u16 = match rr.data {
        RData::A(_) => 1,
        RData::Ns(_) => 2,
        RData::Soa { .. } => 6,
        RData::Aaaa(_) => 28,
        RData::Srv { .. } => 33,
    };
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&rr.ttl.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &rr.data {
        RData::A(ip) => out.extend_from_slice(&ip.octets()),
        RData::Aaaa(ip) => out.extend_from_slice(&ip.octets()),
        RData::Ns(target) => push_name(out, target, qname)?,
        RData::Srv { priority, weight, port, target } => {
            for value in [priority, weight, port] {
                out.extend_from_slice(&value.to_be_bytes());
            }
            // RFC 2782: the target is never compressed.
            push_name(out, target, &[])?;
        }
        RData::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
            push_name(out, mname, qname)?;
            push_name(out, rname, qname)?;
            for value in [serial, refresh, retry, expire, minimum] {
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
    }
    let rdlength = u16::try_from(out.len() - length_at - 2).ok()?;
    out[length_at..length_at + 2].copy_from_slice(&rdlength.to_be_bytes());
    Some(())
}

/// `name` (text, with or without the final dot) on the wire, or `None` when it is not a
/// valid name.
fn name_to_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
    }
    wire.push(0);
    (wire.len() <= MAX_NAME_LEN).then_some(wire)
}

/// Where the labels of the wire name `name` start, first label first (the root excluded).
fn label_starts(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut pos = 0;
    core::iter::from_fn(move || {
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            return None;
        }
        let start = pos;
        pos += 1 + len;
        Some(start)
    })
}

/// Appends `name`, its longest suffix that ends the question's name `qname` replaced by a
/// pointer into the question (which every reply places right after the header).
fn push_name(out: &mut Vec<u8>, name: &str, qname: &[u8]) -> Option<()> {
    let wire = name_to_wire(name)?;
    for start in label_starts(&wire) {
        let tail = &wire[start..];
        let Some(at) = qname.len().checked_sub(tail.len()) else { continue };
        if label_starts(qname).any(|s| s == at) && qname[at..].eq_ignore_ascii_case(tail) {
            out.extend_from_slice(&wire[..start]);
            let pointer = u16::try_from(HEADER_LEN + at).ok()?;
            out.extend_from_slice(&[POINTER_TAG | (pointer >> 8) as u8, pointer as u8]);
            return Some(());
        }
    }
    out.extend_from_slice(&wire);
    Some(())
}

/// Writes the reply to `query` (read from `packet`) from `prepared` into `out`, the answer
/// records rotated by `rotation` so that clients taking the first address spread over all of
/// them. Returns the reply's length, or `None` when `out` is too small (never for an `out` of
/// [`PLAIN_UDP_LIMIT`] bytes and a `prepared` made for this question).
pub fn write_reply(
    packet: &[u8],
    query: &PlainQuery,
    prepared: &Prepared,
    rotation: u64,
    out: &mut [u8],
) -> Option<usize> {
    let len = prepared.reply_len(query.name_len, query.edns_payload.is_some());
    let out = out.get_mut(..len)?;
    let additionals = prepared.counts[2] + u16::from(query.edns_payload.is_some());
    let header =
        [query.id, prepared.flags | query.echoed_flags, 1, prepared.counts[0], prepared.counts[1], additionals];
    for (chunk, value) in out[..HEADER_LEN].chunks_exact_mut(2).zip(header) {
        chunk.copy_from_slice(&value.to_be_bytes());
    }
    let question_end = query.question_end();
    out[HEADER_LEN..question_end].copy_from_slice(packet.get(HEADER_LEN..question_end)?);
    let records_end = question_end + prepared.records.len();
    copy_rotated_records(prepared, rotation, &mut out[question_end..records_end]);
    if let Some(payload) = query.edns_payload {
        let payload = payload.clamp(PLAIN_UDP_LIMIT as u16, MAX_UDP_PAYLOAD).to_be_bytes();
        out[records_end..].copy_from_slice(&[0, 0, TYPE_OPT as u8, payload[0], payload[1], 0, 0, 0, 0, 0, 0]);
    }
    Some(len)
}

/// Copies the records, the answers starting at `rotation` modulo their number.
fn copy_rotated_records(prepared: &Prepared, rotation: u64, out: &mut [u8]) {
    let records = &prepared.records;
    let answers_end = prepared.answer_ends.last().map_or(0, |&end| usize::from(end));
    let count = prepared.answer_ends.len();
    let first = if count > 1 { (rotation % count as u64) as usize } else { 0 };
    let split = if first == 0 { 0 } else { usize::from(prepared.answer_ends[first - 1]) };
    let tail = answers_end - split;
    out[..tail].copy_from_slice(&records[split..answers_end]);
    out[tail..answers_end].copy_from_slice(&records[..split]);
    out[answers_end..].copy_from_slice(&records[answers_end..]);
}

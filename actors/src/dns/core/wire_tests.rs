//! The fast path's wire format: which packets the hand parser takes, and what the prepared
//! replies decode to. That these replies equal the full path's is checked in the shell's
//! tests (`dns/server_tests.rs`), where the full path lives.

use core::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData as HickoryRData, RecordType};

use super::answer::{Answer, RData, Rcode, Rr};
use super::wire::{
    HEADER_LEN, MAX_KEY_LEN, PlainQuery, cache_key, parse_plain_query, prepare, qname_text, write_reply,
};

fn query_bytes(name: &str, record_type: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

#[test]
fn plain_queries_are_read_with_and_without_edns() {
    let packet = query_bytes("App0.Marathon.mesos.", RecordType::A, None);
    let query = parse_plain_query(&packet).expect("a plain query");
    assert_eq!(
        query,
        PlainQuery { id: 0x1234, echoed_flags: 0x0100, name_len: 21, qtype: 1, qclass: 1, edns_payload: None }
    );
    assert_eq!(qname_text(&packet, &query), "App0.Marathon.mesos.");
    let mut key = [0u8; MAX_KEY_LEN];
    let len = cache_key(&packet, &query, &mut key);
    assert_eq!(&key[..len], b"\x04app0\x08marathon\x05mesos\x00\x00\x01\x00\x01");

    let packet = query_bytes("_web._tcp.marathon.mesos.", RecordType::SRV, Some(4096));
    let query = parse_plain_query(&packet).expect("a plain query with EDNS");
    assert_eq!((query.qtype, query.edns_payload), (33, Some(4096)));

    let root = query_bytes(".", RecordType::NS, None);
    let query = parse_plain_query(&root).unwrap();
    assert_eq!((query.name_len, qname_text(&root, &query).as_str()), (1, "."));
}

/// `base` with byte `at` replaced by `value`.
fn with_byte(base: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut packet = base.to_vec();
    packet[at] = value;
    packet
}

#[test]
fn unusual_or_malformed_packets_are_left_to_the_full_path() {
    let plain = query_bytes("web.marathon.mesos.", RecordType::A, None);
    let with_edns = query_bytes("web.marathon.mesos.", RecordType::A, Some(1232));
    let opt_at = with_edns.len() - 11;
    let mut two_labels_pointer = plain[..HEADER_LEN + 4].to_vec();
    two_labels_pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let mut long_name = plain[..HEADER_LEN].to_vec();
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut trailing = plain.clone();
    trailing.push(0);
    let mut other_additional = with_edns.clone();
    other_additional[opt_at + 2] = 1; // type A instead of OPT
    let mut opt_with_option = with_edns.clone();
    opt_with_option[opt_at + 10] = 4;
    opt_with_option.extend_from_slice(&[0, 10, 0, 0]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("shorter than a header", plain[..11].to_vec()),
        ("header only", plain[..HEADER_LEN].to_vec()),
        ("name cut short", plain[..HEADER_LEN + 6].to_vec()),
        ("no type and class", plain[..plain.len() - 4].to_vec()),
        ("a response", with_byte(&plain, 2, plain[2] | 0x80)),
        ("opcode NOTIFY", with_byte(&plain, 2, plain[2] | (4 << 3))),
        ("opcode UPDATE", with_byte(&plain, 2, plain[2] | (5 << 3))),
        ("truncated query", with_byte(&plain, 2, plain[2] | 0x02)),
        ("no question", with_byte(&plain, 5, 0)),
        ("two questions", with_byte(&plain, 5, 2)),
        ("an answer", with_byte(&plain, 7, 1)),
        ("an authority record", with_byte(&plain, 9, 1)),
        ("two additional records", with_byte(&with_edns, 11, 2)),
        ("additional count without the record", with_byte(&plain, 11, 1)),
        ("a compression pointer", two_labels_pointer),
        ("a reserved label type", with_byte(&plain, HEADER_LEN, 0x40 | 3)),
        ("a dot inside a label", with_byte(&plain, HEADER_LEN + 2, b'.')),
        ("a space inside a label", with_byte(&plain, HEADER_LEN + 2, b' ')),
        ("a non-ASCII byte", with_byte(&plain, HEADER_LEN + 2, 0xE9)),
        ("a name over 255 bytes", long_name),
        ("trailing bytes", trailing),
        ("an additional record that is not OPT", other_additional),
        ("an OPT record with a name", with_byte(&with_edns, opt_at, 1)),
        ("EDNS version 1", with_byte(&with_edns, opt_at + 6, 1)),
        ("an extended RCODE", with_byte(&with_edns, opt_at + 5, 1)),
        ("EDNS options", opt_with_option),
        ("a cut OPT record", with_edns[..with_edns.len() - 1].to_vec()),
    ];
    for (what, packet) in cases {
        assert_eq!(parse_plain_query(&packet), None, "{what}");
    }
    assert!(parse_plain_query(&plain).is_some() && parse_plain_query(&with_edns).is_some());
    // The DO flag and AD bit are ignored, as the full path ignores them.
    assert!(parse_plain_query(&with_byte(&with_edns, opt_at + 7, 0x80)).is_some());
    assert!(parse_plain_query(&with_byte(&plain, 3, plain[3] | 0x20)).is_some());
}

fn a(name: &str, last: u8) -> Rr {
    Rr { name: name.to_owned(), ttl: 60, data: RData::A(Ipv4Addr::new(10, 0, 0, last)) }
}

fn answer_of(answers: Vec<Rr>) -> Answer {
    Answer { rcode: Rcode::NoError, authoritative: true, answers, authority: Vec::new(), additional: Vec::new() }
}

#[test]
fn replies_keep_the_clients_question_and_rotate_the_answers() {
    let packet = query_bytes("WeB.marathon.MESOS.", RecordType::A, Some(4096));
    let query = parse_plain_query(&packet).unwrap();
    let qname = &packet[HEADER_LEN..HEADER_LEN + query.name_len];
    let answer = answer_of((1..=3).map(|i| a("web.marathon.mesos", i)).collect());
    let prepared = prepare(&answer, qname, false).unwrap();
    let mut firsts = Vec::new();
    for rotation in 0..3 {
        let mut out = [0u8; 512];
        let len = write_reply(&packet, &query, &prepared, rotation, &mut out).unwrap();
        let reply = Message::from_vec(&out[..len]).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
        assert!(!reply.metadata.recursion_available);
        assert_eq!(reply.queries[0].name().to_string(), "WeB.marathon.MESOS.", "0x20 case kept");
        assert_eq!(reply.edns.as_ref().map(Edns::max_payload), Some(1232));
        let mut addresses: Vec<_> = reply
            .answers
            .iter()
            .map(|r| match &r.data {
                HickoryRData::A(ip) => ip.0.octets()[3],
                other => panic!("not an A record: {other:?}"),
            })
            .collect();
        firsts.push(addresses[0]);
        addresses.sort_unstable();
        assert_eq!(addresses, [1, 2, 3]);
    }
    firsts.sort_unstable();
    assert_eq!(firsts, [1, 2, 3], "every record comes first in turn");
}

#[test]
fn names_point_into_the_question_where_they_end_it() {
    let packet = query_bytes("nothing.marathon.mesos.", RecordType::A, None);
    let query = parse_plain_query(&packet).unwrap();
    let qname = &packet[HEADER_LEN..HEADER_LEN + query.name_len];
    let soa = Rr {
        name: "mesos".to_owned(),
        ttl: 60,
        data: RData::Soa {
            mname: "ns1.mesos".to_owned(),
            rname: "root.ns1.mesos".to_owned(),
            serial: 7,
            refresh: 60,
            retry: 600,
            expire: 86_400,
            minimum: 60,
        },
    };
    let answer = Answer { rcode: Rcode::NxDomain, authority: vec![soa], ..answer_of(Vec::new()) };
    let prepared = prepare(&answer, qname, true).unwrap();
    let mut out = [0u8; 512];
    let len = write_reply(&packet, &query, &prepared, 0, &mut out).unwrap();
    // The SOA's owner is a two-byte pointer to "mesos" inside the question.
    let soa_at = HEADER_LEN + query.name_len + 4;
    let mesos_at = HEADER_LEN + query.name_len - 7;
    assert_eq!(out[soa_at..soa_at + 2], [0xC0, mesos_at as u8]);
    let reply = Message::from_vec(&out[..len]).unwrap();
    assert!(reply.metadata.recursion_available);
    assert_eq!(reply.metadata.response_code, hickory_proto::op::ResponseCode::NXDomain);
    assert!(matches!(&reply.authorities[0].data, HickoryRData::SOA(s)
        if s.mname.to_string() == "ns1.mesos." && s.rname.to_string() == "root.ns1.mesos." && s.serial == 7));
}

#[test]
fn responses_that_might_need_truncation_are_not_prepared() {
    let packet = query_bytes("many.marathon.mesos.", RecordType::A, None);
    let query = parse_plain_query(&packet).unwrap();
    let qname = &packet[HEADER_LEN..HEADER_LEN + query.name_len];
    // 16 bytes per A record behind a pointer: 29 fit beside the header, question and OPT.
    let fits = answer_of((0..29).map(|i| a("many.marathon.mesos", i)).collect());
    assert!(prepare(&fits, qname, false).is_some());
    let too_many = answer_of((0..30).map(|i| a("many.marathon.mesos", i)).collect());
    assert!(prepare(&too_many, qname, false).is_none());
    let bad_name = answer_of(vec![a("a..b", 1)]);
    assert!(prepare(&bad_name, qname, false).is_none());
}

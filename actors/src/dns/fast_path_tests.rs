//! The UDP fast path answers exactly as the full path: for many names × types × classes, in
//! any letter case, with and without EDNS, the bytes the fast path writes decode to the same
//! message as the full path's (hickory-server's encoding of [`Handler`]'s answer), given the
//! same seed; and what the fast path declines is what the full path must handle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use proptest::prelude::*;

use super::core::answer::{QType, Resolution, resolve};
use super::core::wire::{HEADER_LEN, PLAIN_UDP_LIMIT, parse_plain_query, prepare, qname_text, write_reply};
use super::core::{DnsConfig, Index};
use super::server::{Handler, SharedIndex, Stats, encode_for_udp};
use crate::discovery::{AgentEntry, ClusterView, FrameworkEntry, MasterEntry, PortEntry, PortProtocol, TaskEntry};

fn task(id: &str, name: &str, ip: &str, port: u16) -> TaskEntry {
    TaskEntry {
        id: id.to_owned(),
        name: name.to_owned(),
        framework_id: "fw".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: "S1".to_owned(),
        agent_ip: ip.parse().unwrap(),
        container_ips: if id.ends_with('6') { vec!["fd00::6".parse().unwrap()] } else { Vec::new() },
        healthy: None,
        ports: vec![PortEntry {
            number: port,
            protocol: PortProtocol::Tcp,
            name: Some("http".to_owned()),
            labels: BTreeMap::from([("VIP_0".to_owned(), "/web:80".to_owned())]),
        }],
        labels: BTreeMap::new(),
    }
}

fn index(config: &DnsConfig) -> Index {
    let mut tasks = BTreeMap::new();
    for (id, name, ip, port) in [
        ("web.1", "web.shop", "10.0.1.1", 31000),
        ("web.2", "web.shop", "10.0.1.2", 31001),
        ("web.3", "web.shop", "10.0.1.3", 31002),
        ("db.1", "db", "10.0.2.1", 5432),
        ("v6.6", "v6", "10.0.3.1", 8080),
    ] {
        tasks.insert(id.to_owned(), task(id, name, ip, port));
    }
    for i in 0..40 {
        let id = format!("many.{i}");
        tasks.insert(id.clone(), task(&id, "many", &format!("10.1.0.{}", i + 1), 9000));
    }
    let view = ClusterView {
        revision: 9,
        leader: Some("m1".to_owned()),
        masters: vec![MasterEntry { id: "m1".to_owned(), ip: "10.0.0.1".parse().unwrap() }],
        agents: BTreeMap::from([(
            "S1".to_owned(),
            AgentEntry { id: "S1".to_owned(), hostname: "a1".to_owned(), ip: "10.0.1.1".parse().unwrap() },
        )]),
        frameworks: BTreeMap::from([(
            "fw".to_owned(),
            FrameworkEntry { id: "fw".to_owned(), name: "marathon".to_owned() },
        )]),
        tasks,
    };
    Index::from_view(config, &view)
}

const NAMES: &[&str] = &[
    "web-shop.marathon.mesos.",
    "db.marathon.mesos.",
    "v6.marathon.mesos.",
    "many.marathon.mesos.",
    "_web-shop._tcp.marathon.mesos.",
    "_db._tcp.marathon.mesos.",
    "_many._tcp.marathon.mesos.",
    "mesos.",
    "marathon.mesos.",
    "leader.mesos.",
    "master.mesos.",
    "ns1.mesos.",
    "_leader._tcp.mesos.",
    "slave.mesos.",
    "nothing.marathon.mesos.",
    "a.b.c.nothing.mesos.",
    "thisdcos.directory.",
    "web.marathon.l4lb.thisdcos.directory.",
    "web-shop.marathon.mesos.thisdcos.directory.",
    "_web-shop._tcp.marathon.mesos.thisdcos.directory.",
    "mesos.thisdcos.directory.",
    "missing.thisdcos.directory.",
    "example.com.",
    ".",
];

const TYPES: &[u16] = &[1, 28, 33, 6, 2, 255, 16, 15, 12, 999];
const CLASSES: &[u16] = &[1, 255, 3];

fn query_bytes(name: &str, qtype: u16, qclass: u16, edns: Option<u16>, rd: bool) -> Vec<u8> {
    let mut message = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = rd;
    let mut query = Query::query(Name::from_ascii(name).unwrap(), RecordType::from(qtype));
    query.set_query_class(DNSClass::from(qclass));
    message.add_query(query);
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

/// `name` with the letters whose bit in `mask` is set in upper case.
fn mixed_case(name: &str, mask: u64) -> String {
    name.chars().enumerate().map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
}

/// Every field of each record. Records compare equal in hickory without their TTL (as RFC 2136
/// defines it), and owner names compare without case (the fast path's point into the
/// client's question, in the client's case).
fn fields(records: &[Record]) -> Vec<(String, RecordType, DNSClass, u32, RData)> {
    records
        .iter()
        .map(|r| (r.name.to_lowercase().to_string(), r.record_type(), r.dns_class, r.ttl, r.data.clone()))
        .collect()
}

/// Keeps the full path's UDP response.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode_for_udp(response);
        *self.0.lock().unwrap() = bytes;
        Ok(info)
    }
}

/// What the fast path does with a query.
enum Fast {
    Reply(Message),
    /// Out of the zones: for the full path to forward or refuse.
    Forward,
    /// Perhaps too long for the client: for the full path to truncate.
    TooLong,
}

struct Paths {
    config: Arc<DnsConfig>,
    index: Arc<SharedIndex>,
    runtime: tokio::runtime::Runtime,
}

impl Paths {
    fn new() -> Paths {
        let config = Arc::new(DnsConfig { ns_address: Some("10.0.0.53".parse().unwrap()), ..DnsConfig::default() });
        let index = Arc::new(SharedIndex::new(index(&config)));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Paths { config, index, runtime }
    }

    /// The full path's response, from a handler whose first query gets `seed`.
    fn full(&self, packet: &[u8], forwarding: bool, seed: u64) -> Message {
        let upstreams = if forwarding { vec!["192.0.2.1:53".parse().unwrap()] } else { Vec::new() };
        let stats = Arc::new(Stats::default());
        let handler = Handler::new(Arc::clone(&self.index), Arc::clone(&self.config), upstreams, stats, seed);
        let request = Request::from_bytes(packet.to_vec(), "127.0.0.1:5353".parse().unwrap(), Protocol::Udp).unwrap();
        let capture = Capture::default();
        self.runtime.block_on(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
        let bytes = capture.0.lock().unwrap().clone();
        Message::from_vec(&bytes).unwrap()
    }

    /// The fast path's response with `seed` and the first rotation.
    fn fast(&self, packet: &[u8], forwarding: bool, seed: u64) -> Fast {
        let query = parse_plain_query(packet).expect("every generated query is plain");
        let name = qname_text(packet, &query);
        let resolution =
            resolve(&self.index.read(), &self.config, &name, QType::from_code(query.qtype), query.qclass, seed);
        let Resolution::Answer(answer) = resolution else { return Fast::Forward };
        let Some(prepared) = prepare(&answer, &packet[HEADER_LEN..HEADER_LEN + query.name_len], forwarding) else {
            return Fast::TooLong;
        };
        let mut out = [0u8; PLAIN_UDP_LIMIT];
        let len = write_reply(packet, &query, &prepared, 0, &mut out).unwrap();
        Fast::Reply(Message::from_vec(&out[..len]).unwrap())
    }

    fn assert_same(&self, name: &str, qtype: u16, qclass: u16, edns: Option<u16>, rd: bool, forwarding: bool) {
        let packet = query_bytes(name, qtype, qclass, edns, rd);
        let what = format!("{name} type {qtype} class {qclass} edns {edns:?} rd {rd} forwarding {forwarding}");
        let seed = 0x5eed ^ u64::from(qtype);
        let fast = match self.fast(&packet, forwarding, seed) {
            Fast::Reply(fast) => fast,
            Fast::Forward => {
                assert!(!name.to_ascii_lowercase().ends_with("mesos.") && !name.ends_with("directory."), "{what}");
                return;
            }
            Fast::TooLong => {
                let full = self.full(&packet, forwarding, seed);
                let len = full.to_vec().unwrap().len();
                assert!(full.metadata.truncation || len + 11 > PLAIN_UDP_LIMIT, "{what}: declined {len} bytes");
                return;
            }
        };
        let full = self.full(&packet, forwarding, seed);
        assert_eq!(fast.metadata, full.metadata, "{what}: header");
        assert_eq!(fast.queries, full.queries, "{what}: question");
        assert_eq!(fast.queries[0].name().to_string(), name, "{what}: the client's case");
        assert_eq!(fields(&fast.answers), fields(&full.answers), "{what}: answers");
        assert_eq!(fields(&fast.authorities), fields(&full.authorities), "{what}: authority");
        assert_eq!(fields(&fast.additionals), fields(&full.additionals), "{what}: additional");
        assert_eq!(fast.edns.map(|e| e.max_payload()), full.edns.map(|e| e.max_payload()), "{what}: EDNS");
    }
}

#[test]
fn every_name_type_and_class_is_answered_as_the_full_path_does() {
    let paths = Paths::new();
    for name in NAMES {
        for &qtype in TYPES {
            for &qclass in CLASSES {
                for edns in [None, Some(1232)] {
                    paths.assert_same(name, qtype, qclass, edns, true, false);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_case_edns_size_and_flags_give_the_full_paths_answer(
        name in prop::sample::select(NAMES),
        qtype in prop::sample::select(TYPES),
        qclass in prop::sample::select(CLASSES),
        mask in any::<u64>(),
        edns in prop::option::of(0u16..=4096),
        rd in any::<bool>(),
        forwarding in any::<bool>(),
    ) {
        let paths = Paths::new();
        paths.assert_same(&mixed_case(name, mask), qtype, qclass, edns, rd, forwarding);
    }
}

//! Tests of the index and the answers over a small cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::discovery::{
    AgentEntry, ClusterView, FrameworkEntry, MasterEntry, PortEntry, PortProtocol, TaskEntry, ViewChange, ViewUpdate,
};

fn config() -> DnsConfig {
    DnsConfig { ns_address: Some("10.0.0.53".parse().unwrap()), ..DnsConfig::default() }
}

fn port(number: u16, protocol: PortProtocol, name: Option<&str>, vip: Option<&str>) -> PortEntry {
    let labels = vip.map(|v| BTreeMap::from([("VIP_0".to_owned(), v.to_owned())])).unwrap_or_default();
    PortEntry { number, protocol, name: name.map(str::to_owned), labels }
}

fn task(id: &str, name: &str, agent: &str, ip: &str, ports: Vec<PortEntry>) -> TaskEntry {
    TaskEntry {
        id: id.to_owned(),
        name: name.to_owned(),
        framework_id: "fw-marathon".to_owned(),
        framework: "marathon".to_owned(),
        agent_id: agent.to_owned(),
        agent_ip: ip.parse().unwrap(),
        container_ips: Vec::new(),
        healthy: None,
        ports,
        labels: BTreeMap::new(),
    }
}

fn view() -> ClusterView {
    let masters = vec![
        MasterEntry { id: "m1".into(), ip: "10.0.0.1".parse().unwrap() },
        MasterEntry { id: "m2".into(), ip: "10.0.0.2".parse().unwrap() },
    ];
    let agents = BTreeMap::from([
        ("S1".into(), AgentEntry { id: "S1".into(), hostname: "a1".into(), ip: "10.0.1.1".parse().unwrap() }),
        ("S2".into(), AgentEntry { id: "S2".into(), hostname: "a2".into(), ip: "10.0.1.2".parse().unwrap() }),
    ]);
    let frameworks =
        BTreeMap::from([("fw-marathon".into(), FrameworkEntry { id: "fw-marathon".into(), name: "marathon".into() })]);
    let web = vec![port(31000, PortProtocol::Tcp, Some("http"), Some("/shop/web:80"))];
    let mut tasks = BTreeMap::new();
    tasks.insert("web.1".into(), task("web.1", "web.shop", "S1", "10.0.1.1", web.clone()));
    tasks.insert("web.2".into(), task("web.2", "web.shop", "S2", "10.0.1.2", web));
    let mut db = task("db.1", "DB_Main", "S1", "10.0.1.1", vec![port(5432, PortProtocol::Udp, None, None)]);
    db.container_ips = vec!["172.17.0.5".parse().unwrap()];
    tasks.insert("db.1".into(), db);
    ClusterView { revision: 7, leader: Some("m2".into()), masters, agents, frameworks, tasks }
}

fn ask(index: &Index, name: &str, qtype: QType) -> Answer {
    match resolve(index, &config(), name, qtype, answer::CLASS_IN, 1) {
        Resolution::Answer(answer) => answer,
        Resolution::Forward => panic!("{name} was not answered"),
    }
}

fn ips(answer: &Answer) -> Vec<String> {
    let mut out: Vec<String> = answer
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::A(ip) => Some(ip.to_string()),
            RData::Aaaa(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn srvs(answer: &Answer) -> Vec<(u16, u16, u16, String)> {
    let mut out: Vec<_> = answer
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::Srv { priority, weight, port, target } => Some((*priority, *weight, *port, target.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn task_a_records_follow_ip_sources() {
    let index = Index::from_view(&config(), &view());
    let web = ask(&index, "web-shop.marathon.mesos.", QType::A);
    assert_eq!((web.rcode, web.authoritative), (Rcode::NoError, true));
    assert_eq!(ips(&web), ["10.0.1.1", "10.0.1.2"]);
    assert!(web.answers.iter().all(|rr| rr.ttl == 60 && rr.name == "web-shop.marathon.mesos"));
    assert_eq!(ips(&ask(&index, "WEB-SHOP.Marathon.MESOS", QType::A)).len(), 2, "names are case-insensitive");
    // Container addresses come first by default; the slave name always has the agent's.
    assert_eq!(ips(&ask(&index, "db-main.marathon.mesos", QType::A)), ["172.17.0.5"]);
    assert_eq!(ips(&ask(&index, "db-main.marathon.slave.mesos", QType::A)), ["10.0.1.1"]);
    let host_first = DnsConfig { ip_sources: vec![IpSource::Host, IpSource::Container], ..config() };
    let index = Index::from_view(&host_first, &view());
    let answer = resolve(&index, &host_first, "db-main.marathon.mesos", QType::A, 1, 0);
    let Resolution::Answer(answer) = answer else { panic!() };
    assert_eq!(ips(&answer), ["10.0.1.1"]);
}

#[test]
fn srv_records_name_each_instance_with_addresses_in_additional() {
    let index = Index::from_view(&config(), &view());
    let answer = ask(&index, "_web-shop._tcp.marathon.mesos", QType::Srv);
    let srv = srvs(&answer);
    assert_eq!(srv.len(), 2);
    for (priority, weight, port, target) in &srv {
        assert_eq!((*priority, *weight, *port), (0, 1, 31000));
        assert!(target.starts_with("web-shop-") && target.ends_with(".marathon.mesos"), "{target}");
    }
    assert!(srv[0].3.contains("-s1.") || srv[1].3.contains("-s1."), "agent id tail in the target: {srv:?}");
    assert_eq!(answer.additional.len(), 2);
    for rr in &answer.additional {
        assert!(srv.iter().any(|s| s.3 == rr.name));
    }
    // The slave variant targets the canonical slave name; named ports have their own name.
    let slave = srvs(&ask(&index, "_web-shop._tcp.marathon.slave.mesos", QType::Srv));
    assert!(slave.iter().all(|s| s.3.ends_with(".marathon.slave.mesos")));
    assert_eq!(srvs(&ask(&index, "_http._web-shop._tcp.marathon.mesos", QType::Srv)).len(), 2);
    assert_eq!(srvs(&ask(&index, "_db-main._udp.marathon.mesos", QType::Srv))[0].2, 5432);
    // The canonical name resolves.
    assert_eq!(ips(&ask(&index, &srv[0].3, QType::A)).len(), 1);
}

#[test]
fn masters_agents_and_frameworks() {
    let index = Index::from_view(&config(), &view());
    assert_eq!(ips(&ask(&index, "leader.mesos", QType::A)), ["10.0.0.2"]);
    assert_eq!(ips(&ask(&index, "master.mesos", QType::A)), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(ips(&ask(&index, "master0.mesos", QType::A)), ["10.0.0.1"]);
    assert_eq!(ips(&ask(&index, "master1.mesos", QType::A)), ["10.0.0.2"]);
    assert_eq!(srvs(&ask(&index, "_leader._tcp.mesos", QType::Srv)), [(0, 1, 5050, "leader.mesos".to_owned())]);
    assert_eq!(srvs(&ask(&index, "_leader._udp.mesos", QType::Srv)).len(), 1);
    assert_eq!(srvs(&ask(&index, "_master._tcp.mesos", QType::Srv)).len(), 2);
    assert_eq!(ips(&ask(&index, "slave.mesos", QType::A)), ["10.0.1.1", "10.0.1.2"]);
    assert_eq!(srvs(&ask(&index, "_slave._tcp.mesos", QType::Srv)), [(0, 1, 5051, "slave.mesos".to_owned())]);
    assert_eq!(ips(&ask(&index, "marathon.mesos", QType::A)), ["10.0.0.2"], "frameworks live on the leader");
    assert_eq!(ips(&ask(&index, "ns1.mesos", QType::A)), ["10.0.0.53"]);
    // _framework._tcp needs a configured port.
    assert_eq!(ask(&index, "_framework._tcp.marathon.mesos", QType::Srv).rcode, Rcode::NxDomain);
    let with_port = DnsConfig { framework_port: Some(8080), ..config() };
    let index = Index::from_view(&with_port, &view());
    let Resolution::Answer(a) = resolve(&index, &with_port, "_framework._tcp.marathon.mesos", QType::Srv, 1, 0) else {
        panic!()
    };
    assert_eq!(srvs(&a), [(0, 1, 8080, "marathon.mesos".to_owned())]);
}

#[test]
fn soa_ns_nxdomain_and_nodata() {
    let index = Index::from_view(&config(), &view());
    let soa = ask(&index, "mesos", QType::Soa);
    assert_eq!(soa.answers.len(), 1);
    let RData::Soa { mname, rname, serial, .. } = &soa.answers[0].data else { panic!("{soa:?}") };
    assert_eq!((mname.as_str(), rname.as_str(), *serial), ("ns1.mesos", "root.ns1.mesos", 7));
    let ns = ask(&index, "mesos.", QType::Ns);
    assert_eq!(ns.answers[0].data, RData::Ns("ns1.mesos".into()));
    assert_eq!(ns.additional.len(), 1, "the name server's address");
    let missing = ask(&index, "nope.marathon.mesos", QType::A);
    assert_eq!((missing.rcode, missing.authoritative, missing.answers.len()), (Rcode::NxDomain, true, 0));
    assert!(matches!(missing.authority[0].data, RData::Soa { .. }));
    let nodata = ask(&index, "web-shop.marathon.mesos", QType::Aaaa);
    assert_eq!((nodata.rcode, nodata.answers.len(), nodata.authority.len()), (Rcode::NoError, 0, 1));
    let other = ask(&index, "web-shop.marathon.mesos", QType::Other(16));
    assert_eq!((other.rcode, other.answers.len()), (Rcode::NoError, 0));
    let empty_non_terminal = ask(&index, "marathon.slave.mesos", QType::A);
    assert_eq!((empty_non_terminal.rcode, empty_non_terminal.answers.len()), (Rcode::NoError, 0));
    let apex_a = ask(&index, "mesos", QType::A);
    assert_eq!((apex_a.rcode, apex_a.answers.len()), (Rcode::NoError, 0));
    let any = ask(&index, "mesos", QType::Any);
    assert_eq!(any.answers.len(), 2);
    assert_eq!(resolve(&index, &config(), "example.com", QType::A, 1, 0), Resolution::Forward);
    assert_eq!(resolve(&index, &config(), "notmesos", QType::A, 1, 0), Resolution::Forward);
    let Resolution::Answer(chaos) = resolve(&index, &config(), "leader.mesos", QType::A, 3, 0) else { panic!() };
    assert_eq!(chaos.rcode, Rcode::Refused);
}

#[test]
fn dcos_zones() {
    let index = Index::from_view(&config(), &view());
    let ask_dcos = |name: &str| ask(&index, name, QType::A);
    let agentip = ask_dcos("db-main.marathon.agentip.dcos.thisdcos.directory");
    assert_eq!(ips(&agentip), ["10.0.1.1"]);
    assert_eq!(agentip.answers[0].ttl, 5);
    assert_eq!(ips(&ask_dcos("db-main.marathon.containerip.dcos.thisdcos.directory")), ["172.17.0.5"]);
    // The db task maps a host port, so autoip is the agent's address.
    assert_eq!(ips(&ask_dcos("db-main.marathon.autoip.dcos.thisdcos.directory")), ["10.0.1.1"]);
    assert_eq!(ips(&ask_dcos("web-shop.marathon.autoip.dcos.thisdcos.directory")), ["10.0.1.1", "10.0.1.2"]);
    assert_eq!(ips(&ask_dcos("leader.dcos.thisdcos.directory")), ["10.0.0.2"]);
    assert_eq!(ips(&ask_dcos("master.dcos.thisdcos.directory")), ["10.0.0.1", "10.0.0.2"]);
    // The mirror of the mesos zone, with its own names and TTL.
    let mirror = ask_dcos("web-shop.marathon.mesos.thisdcos.directory");
    assert_eq!(ips(&mirror), ["10.0.1.1", "10.0.1.2"]);
    assert!(mirror.answers.iter().all(|rr| rr.ttl == 5 && rr.name == "web-shop.marathon.mesos.thisdcos.directory"));
    let srv = ask(&index, "_web-shop._tcp.marathon.mesos.thisdcos.directory", QType::Srv);
    assert!(srvs(&srv).iter().all(|s| s.3.ends_with(".marathon.mesos.thisdcos.directory")), "{srv:?}");
    assert_eq!(srv.additional.len(), 2);
    // Named VIPs.
    let vip = ask_dcos("shopweb.marathon.l4lb.thisdcos.directory");
    assert_eq!(vip.answers.len(), 1);
    assert_eq!(vip.answers[0].data, RData::A(named_vip_address("/shop/web", "marathon")));
    let missing = ask_dcos("nothing.thisdcos.directory");
    assert_eq!(missing.rcode, Rcode::NxDomain);
    assert_eq!(missing.authority[0].name, "thisdcos.directory");
    let soa = ask(&index, "thisdcos.directory", QType::Soa);
    assert_eq!(soa.answers.len(), 1);
}

#[test]
fn rfc952_mode_and_unlabelable_tasks() {
    let cfg = DnsConfig { rfc952: true, ..config() };
    let mut v = view();
    let long = "a-very-long-application-name-indeed";
    v.tasks.insert("x".into(), task("x", long, "S1", "10.0.1.1", Vec::new()));
    v.tasks.insert("bad".into(), task("bad", "!!!", "S1", "10.0.1.1", Vec::new()));
    let index = Index::from_view(&cfg, &v);
    let Resolution::Answer(a) = resolve(&index, &cfg, "a-very-long-application.marathon.mesos", QType::A, 1, 0) else {
        panic!()
    };
    assert_eq!(ips(&a), ["10.0.1.1"], "cut to 24 characters, trailing dash trimmed");
    assert!(!index.tasks().contains_key("bad"));
}

#[test]
fn records_of_a_name_are_shuffled_by_the_seed() {
    let mut v = view();
    for i in 0..20 {
        let ip = format!("10.0.2.{i}");
        v.tasks.insert(format!("t{i}"), task(&format!("t{i}"), "many", "S1", &ip, Vec::new()));
    }
    let index = Index::from_view(&config(), &v);
    let order = |seed| match resolve(&index, &config(), "many.marathon.mesos", QType::A, 1, seed) {
        Resolution::Answer(a) => a.answers,
        Resolution::Forward => panic!(),
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));
    assert_eq!(order(1).len(), 20);
}

#[test]
fn incremental_changes_add_and_remove_exactly() {
    let empty = Index::new(&config());
    let mut index = Index::from_view(&config(), &view());
    let changes = vec![
        ViewChange::TaskGone { id: "web.1".into() },
        ViewChange::TaskGone { id: "web.2".into() },
        ViewChange::TaskGone { id: "db.1".into() },
        ViewChange::FrameworkGone { id: "fw-marathon".into() },
        ViewChange::AgentGone { id: "S1".into() },
        ViewChange::AgentGone { id: "S2".into() },
        ViewChange::Masters { masters: Vec::new(), leader: None },
    ];
    index.apply_update(&ViewUpdate::Changes { revision: 0, changes: Arc::new(changes) });
    assert_eq!(index.name_count(), empty.name_count());
    assert_eq!(index, empty);
    // A task that moves keeps one set of records.
    let mut index = Index::from_view(&config(), &view());
    let mut moved = view().tasks["web.1"].clone();
    moved.agent_ip = "10.0.1.9".parse().unwrap();
    index.apply(&ViewChange::TaskUp(moved));
    assert_eq!(ips(&ask(&index, "web-shop.marathon.mesos", QType::A)), ["10.0.1.2", "10.0.1.9"]);
    // Two instances on one agent share a record; removing one keeps it.
    index.apply(&ViewChange::TaskUp(task("web.3", "web.shop", "S2", "10.0.1.2", Vec::new())));
    index.apply(&ViewChange::TaskGone { id: "web.3".into() });
    assert_eq!(ips(&ask(&index, "web-shop.marathon.mesos", QType::A)), ["10.0.1.2", "10.0.1.9"]);
    // A leader change moves the framework's address.
    let masters = view().masters;
    index.apply(&ViewChange::Masters { masters, leader: Some("m1".into()) });
    assert_eq!(ips(&ask(&index, "marathon.mesos", QType::A)), ["10.0.0.1"]);
    // The VIP stays while one task declares it, and goes with the last.
    index.apply(&ViewChange::TaskGone { id: "web.1".into() });
    assert_eq!(ask(&index, "shopweb.marathon.l4lb.thisdcos.directory", QType::A).answers.len(), 1);
    index.apply(&ViewChange::TaskGone { id: "web.2".into() });
    assert_eq!(ask(&index, "shopweb.marathon.l4lb.thisdcos.directory", QType::A).rcode, Rcode::NxDomain);
    assert!(index.named_vips().is_empty());
}

#[test]
fn http_api_shapes() {
    let cfg = config();
    let index = Index::from_view(&cfg, &view());
    let (status, hosts) = http_api(&index, &cfg, "/v1/hosts/web-shop.marathon.mesos");
    assert_eq!(status, 200);
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    assert_eq!(hosts[0]["host"], "web-shop.marathon.mesos.");
    let (_, none) = http_api(&index, &cfg, "/v1/hosts/nope.mesos");
    assert_eq!(none, serde_json::json!([{ "host": "", "ip": "" }]));
    let (_, services) = http_api(&index, &cfg, "/v1/services/_web-shop._tcp.marathon.mesos");
    assert_eq!(services.as_array().unwrap().len(), 2);
    assert_eq!(services[0]["service"], "_web-shop._tcp.marathon.mesos.");
    assert_eq!(services[0]["port"], "31000");
    assert!(services[0]["host"].as_str().unwrap().ends_with(".marathon.mesos."));
    let (_, version) = http_api(&index, &cfg, "/v1/version");
    assert_eq!(version["Service"], "Mesos-DNS");
    let (_, config_json) = http_api(&index, &cfg, "/v1/config");
    assert_eq!((config_json["Domain"].as_str(), config_json["TTL"].as_u64()), (Some("mesos"), Some(60)));
    let (_, enumerate) = http_api(&index, &cfg, "/v1/enumerate");
    let marathon = &enumerate["frameworks"][0];
    assert_eq!(marathon["name"], "marathon");
    assert_eq!(marathon["tasks"].as_array().unwrap().len(), 3);
    assert!(marathon["tasks"][0]["records"].as_array().unwrap().iter().any(|r| r["rtype"] == "SRV"));
    assert_eq!(http_api(&index, &cfg, "/v1/nothing").0, 404);
    assert_eq!(http_api(&index, &cfg, "/v1/hosts/").0, 404);
}

fn arb_change() -> impl Strategy<Value = ViewChange> {
    let agent = (0..3u8).prop_map(|i| AgentEntry {
        id: format!("S{i}"),
        hostname: format!("a{i}"),
        ip: format!("10.0.1.{i}").parse().unwrap(),
    });
    let task_up = (0..6u8, 0..3u8, 0..3u8, proptest::bool::ANY, proptest::bool::ANY).prop_map(
        |(id, name, agent, vip, container)| {
            let vip = vip.then(|| format!("/vip{name}:80"));
            let ports = vec![port(31000 + u16::from(id), PortProtocol::Tcp, Some("http"), vip.as_deref())];
            let mut t = task(&format!("t{id}"), &format!("app{name}.grp"), &format!("S{agent}"), "10.0.1.1", ports);
            t.agent_ip = format!("10.0.1.{agent}").parse().unwrap();
            if container {
                t.container_ips = vec![format!("172.17.0.{id}").parse().unwrap()];
            }
            t
        },
    );
    let masters = (0..3usize, proptest::option::of(0..3usize)).prop_map(|(n, leader)| ViewChange::Masters {
        masters: (0..n)
            .map(|i| MasterEntry { id: format!("m{i}"), ip: format!("10.0.0.{i}").parse().unwrap() })
            .collect(),
        leader: leader.map(|l| format!("m{l}")),
    });
    prop_oneof![
        masters,
        agent.prop_map(ViewChange::AgentUp),
        (0..3u8).prop_map(|i| ViewChange::AgentGone { id: format!("S{i}") }),
        (0..2u8).prop_map(|i| ViewChange::FrameworkUp(FrameworkEntry { id: format!("f{i}"), name: format!("fw{i}") })),
        (0..2u8).prop_map(|i| ViewChange::FrameworkGone { id: format!("f{i}") }),
        task_up.prop_map(ViewChange::TaskUp),
        (0..6u8).prop_map(|i| ViewChange::TaskGone { id: format!("t{i}") }),
    ]
}

proptest! {
    #[test]
    fn incremental_application_equals_a_rebuild(changes in proptest::collection::vec(arb_change(), 0..40), split in 0usize..40) {
        let cfg = config();
        let split = split.min(changes.len());
        let mut start = ClusterView::default();
        for change in &changes[..split] {
            start.apply(change);
        }
        let mut index = Index::from_view(&cfg, &start);
        let mut end = start.clone();
        for change in &changes[split..] {
            end.apply(change);
        }
        end.revision = 99;
        index.apply_update(&ViewUpdate::Changes { revision: 99, changes: Arc::new(changes[split..].to_vec()) });
        let rebuilt = Index::from_view(&cfg, &end);
        prop_assert_eq!(&index.tasks().len(), &rebuilt.tasks().len());
        prop_assert_eq!(index, rebuilt);
    }
}

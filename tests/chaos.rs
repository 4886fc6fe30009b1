//! The chaos actor on real nodes (`RunningNode`, the same trees as `flotilla master|agent`)
//! over QUIC on loopback: a killed actor is restarted by its supervisor, a partition injected
//! through one node's chaos actor cuts the link and heals, a fault with a duration heals
//! itself, a fault on another node is forwarded, a crash restarts the node's tree, a skewed
//! clock is set right, and a node without chaos answers its HTTP API with 403.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flotilla::client::quic_plan;
use flotilla::http::HttpApi;
use flotilla::local_cluster::http_request;
use flotilla::node::{ChaosSettings, NodePlan, Role, RunningNode};
use flotilla::pki;
use flotilla_actors::chaos::actor::ChaosMsg;
use flotilla_actors::chaos::protocol::{CHAOS_NAME, ChaosReply, ChaosRequest, Injection};
use flotilla_actors::discovery::feed::FEED_ACTOR;
use flotilla_supervisors::{NodeId, wait_until};
use flotilla_transport::{Address, Fault, NodeSet, ReplyPort, Role as CertRole};

const BOUND: Duration = Duration::from_secs(30);

async fn start_node(dir: &Path, id: &str, role: CertRole, peers: Vec<(String, Address)>, chaos: bool) -> RunningNode {
    pki::dev_credentials(dir, id, role).unwrap();
    let plan = quic_plan(&dir.join("pki"), id, SocketAddr::from(([127, 0, 0, 1], 0)), peers).unwrap();
    let plan = NodePlan {
        transport: Some(plan),
        chaos: chaos.then(|| ChaosSettings { masters: vec!["m".into()] }),
        ..NodePlan::default()
    };
    let role = if role == CertRole::Master { Role::Master } else { Role::Agent };
    RunningNode::start_with(NodeId::new(id).unwrap(), role, plan).await.unwrap()
}

/// A master-certified node `m` and an agent `a` that dials it, both with chaos.
async fn pair(dir: &Path) -> (RunningNode, RunningNode) {
    let m = start_node(dir, "m", CertRole::Master, Vec::new(), true).await;
    let address = Address::Udp(m.transport().unwrap().local_addr().unwrap());
    let a = start_node(dir, "a", CertRole::Agent, vec![("m".into(), address)], true).await;
    let (tm, ta) = (m.transport().unwrap(), a.transport().unwrap());
    wait_until("m and a connected", BOUND, async || (tm.is_connected("a") && ta.is_connected("m")).then_some(())).await;
    (m, a)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flotilla-chaos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Asks a node's chaos actor in-process, as the HTTP API does.
async fn ask(node: &RunningNode, request: ChaosRequest) -> ChaosReply {
    let chaos = node.node.whereis_ref::<ChaosMsg>(CHAOS_NAME).expect("the node runs chaos");
    let (reply, answer) = ReplyPort::local();
    chaos.send_message(ChaosMsg::Request { from: None, request, reply }).unwrap();
    tokio::time::timeout(BOUND, answer).await.expect("chaos answers").unwrap()
}

async fn inject(node: &RunningNode, fault: Fault, duration: Option<Duration>) -> ChaosReply {
    ask(node, ChaosRequest::Inject(Injection { fault, duration, node: None })).await
}

fn ids(reply: &ChaosReply) -> Vec<(String, u64)> {
    match reply {
        ChaosReply::Faults { faults, failed } if failed.is_empty() => {
            faults.iter().map(|f| (f.node.clone(), f.id)).collect()
        }
        other => panic!("not injected: {other:?}"),
    }
}

async fn stop(nodes: Vec<RunningNode>) {
    for node in nodes {
        node.shutdown(BOUND).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_actor_is_restarted_by_its_supervisor() {
    let dir = temp_dir("kill");
    let (m, a) = pair(&dir).await;
    let before = a.node.whereis(FEED_ACTOR).expect("the feed runs").get_id();
    let reply = inject(&m, Fault::KillActor { node: "a".into(), name: FEED_ACTOR.into() }, None).await;
    assert_eq!(ids(&reply), [("a".to_owned(), 1)], "forwarded to a, which holds it");
    let node = a.node.clone();
    wait_until("a new feed", BOUND, async || node.whereis(FEED_ACTOR).filter(|c| c.get_id() != before).map(|_| ()))
        .await;
    let refused = inject(&a, Fault::KillActor { node: "a".into(), name: "nobody".into() }, None).await;
    assert!(
        matches!(&refused, ChaosReply::Refused(m) if m.contains("no actor is registered as nobody")),
        "{refused:?}"
    );
    let root = inject(&a, Fault::KillActor { node: "a".into(), name: "node".into() }, None).await;
    assert!(matches!(&root, ChaosReply::Invalid(m) if m.contains("use CrashNode")), "{root:?}");
    stop(vec![a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_through_the_chaos_actor_cuts_the_link_until_healed() {
    let dir = temp_dir("partition");
    let (m, a) = pair(&dir).await;
    let partition = Fault::Partition { a: NodeSet::one("a"), b: NodeSet::one("m"), one_way: false };
    let reply = inject(&m, partition, None).await;
    let [(holder, id)] = &ids(&reply)[..] else { panic!("{reply:?}") };
    let id = *id;
    assert_eq!(holder, "a", "a partition is held by its `a` side");
    let (tm, ta) = (m.transport().unwrap(), a.transport().unwrap());
    wait_until("the session is lost", BOUND, async || (!tm.is_connected("a") && !ta.is_connected("m")).then_some(()))
        .await;
    assert_eq!(ta.active_faults().len(), 1);
    // m cannot reach a's chaos actor any more: the partition cuts that link too, so it is
    // listed and healed on a itself (or given a duration).
    let unreachable = ask(&m, ChaosRequest::List { node: Some("a".into()) }).await;
    assert!(matches!(&unreachable, ChaosReply::Refused(m) if m.contains("node a did not answer")), "{unreachable:?}");
    let listed = ask(&a, ChaosRequest::List { node: None }).await;
    assert_eq!(ids(&listed), [("a".to_owned(), id)]);
    let healed = ask(&a, ChaosRequest::Heal { node: None, id: Some(id) }).await;
    assert_eq!(ids(&healed), [("a".to_owned(), id)]);
    assert!(ta.active_faults().is_empty());
    wait_until("the session is back", BOUND, async || (tm.is_connected("a") && ta.is_connected("m")).then_some(()))
        .await;
    stop(vec![a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_with_a_duration_heal_themselves_and_a_pause_clogs_both_ways() {
    let dir = temp_dir("duration");
    let (m, a) = pair(&dir).await;
    let clog = Fault::Clog { links: flotilla_transport::Links::one("m", "a") };
    ids(&inject(&m, clog, Some(Duration::from_millis(300))).await);
    ids(&inject(&m, Fault::PauseNode { node: "m".into(), for_: Duration::from_millis(400) }, None).await);
    let tm = m.transport().unwrap();
    assert_eq!(tm.active_faults().len(), 3, "a clog, and a pause's two clogs");
    wait_until("every fault healed by itself", BOUND, async || tm.active_faults().is_empty().then_some(())).await;
    let listed = ask(&m, ChaosRequest::List { node: None }).await;
    assert_eq!(ids(&listed), []);
    let bad = inject(&m, Fault::CrashNode { node: "a".into() }, Some(Duration::from_secs(1))).await;
    assert!(matches!(&bad, ChaosReply::Invalid(m) if m.contains("instantaneous")), "{bad:?}");
    let elsewhere = ask(
        &m,
        ChaosRequest::Inject(Injection {
            fault: Fault::Drop { links: flotilla_transport::Links::one("x", "y"), probability: 1.0 },
            duration: None,
            node: Some("m".into()),
        }),
    )
    .await;
    assert!(matches!(&elsewhere, ChaosReply::Invalid(m) if m.contains("touches no link of node m")), "{elsewhere:?}");
    stop(vec![a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_set_right_when_healed() {
    let dir = temp_dir("skew");
    let (m, a) = pair(&dir).await;
    let before = a.node.now();
    let reply = inject(&m, Fault::ClockSkew { node: "a".into(), skew_nanos: 3_600_000_000_000 }, None).await;
    let [(_, id)] = &ids(&reply)[..] else { panic!("{reply:?}") };
    let id = *id;
    assert!(a.node.now().saturating_since(before) >= Duration::from_secs(3_600), "the clock jumped an hour");
    ids(&ask(&a, ChaosRequest::Heal { node: None, id: Some(id) }).await);
    assert!(a.node.now().saturating_since(before) < Duration::from_secs(3_600), "and is back");
    stop(vec![a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarts_its_tree_and_its_peers_see_a_new_incarnation() {
    let dir = temp_dir("crash");
    let (m, a) = pair(&dir).await;
    let boot = a.transport().unwrap().boot_id();
    let chaos_before = a.node.whereis(CHAOS_NAME).unwrap().get_id();
    ids(&inject(&m, Fault::CrashNode { node: "a".into() }, None).await);
    let (node, slot) = (a.node.clone(), a.current_transport());
    wait_until("a new transport on a", BOUND, async || slot().filter(|t| t.boot_id() != boot).map(|_| ())).await;
    wait_until("a new chaos actor on a", BOUND, async || {
        node.whereis(CHAOS_NAME).filter(|c| c.get_id() != chaos_before).map(|_| ())
    })
    .await;
    let tm = m.transport().unwrap();
    wait_until("m sees a's new incarnation", BOUND, async || {
        (tm.peer_stats("a").and_then(|s| s.boot_id) == slot().map(|t| t.boot_id())).then_some(())
    })
    .await;
    stop(vec![a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_chaos_answers_403_and_says_how_to_enable_it() {
    let dir = temp_dir("disabled");
    let node = start_node(&dir, "m", CertRole::Master, Vec::new(), false).await;
    let api =
        HttpApi::start(SocketAddr::from(([127, 0, 0, 1], 0)), node.node.clone(), node.current_transport(), vec![])
            .unwrap();
    let address = api.address;
    let (status, body) = tokio::task::spawn_blocking(move || {
        http_request(address, "POST", "/chaos/v1/faults", r#"{"CrashNode": {"node": "m"}}"#).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("chaos is disabled on this node") && body.contains("--chaos"), "{body}");
    api.stop().await;
    stop(vec![node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monkey_draws_faults_from_its_seed_until_its_span_ends() {
    use flotilla_actors::chaos::protocol::MonkeyRequest;
    let dir = temp_dir("monkey");
    let (m, a) = pair(&dir).await;
    let request = MonkeyRequest {
        seed: 7,
        mean_interval: Duration::from_millis(100),
        span: Duration::from_millis(600),
        actors: vec![FEED_ACTOR.into()],
    };
    let ChaosReply::Monkey(status) = ask(&m, ChaosRequest::MonkeyStart(request)).await else { panic!() };
    assert_eq!((status.running, status.seed), (true, Some(7)));
    let scheduled = status.remaining as u64;
    assert!(scheduled > 0, "seed 7 draws some faults in 600 ms");
    let done = wait_until("the monkey's schedule is done", Duration::from_secs(120), async || {
        match ask(&m, ChaosRequest::MonkeyStatus).await {
            ChaosReply::Monkey(status) if status.remaining == 0 => Some(status),
            _ => None,
        }
    })
    .await;
    assert_eq!(done.injected + done.failed, scheduled, "every scheduled fault was tried: {done:?}");
    assert!(!done.running);
    let ChaosReply::Monkey(stopped) = ask(&m, ChaosRequest::MonkeyStop).await else { panic!() };
    assert_eq!(stopped, Default::default());
    stop(vec![a, m]).await;
}

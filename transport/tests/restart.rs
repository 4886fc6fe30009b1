//! A node killed (SIGKILL: no close, no goodbye) and restarted under the same id reconnects
//! at once, 25 times out of 25: its new boot id makes the survivor replace the stale session
//! without waiting for its failure detector.
//!
//! The restarted node is a real process: this test binary run again as `restart_child`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{Ask, Echo, wait_for};
use flotilla_supervisors::{Node, NodeId};
use flotilla_transport::core::detector::DetectorConfig;
use flotilla_transport::identity::{ClusterCa, NodeCredentials, load_ca_cert};
use flotilla_transport::quic::QuicSetup;
use flotilla_transport::tls::{self, QuicTuning};
use flotilla_transport::{Address, AdmissionPolicy, Network, Role, Transport, TransportConfig};

const RESTARTS: usize = 25;
const DIR_VAR: &str = "FLOTILLA_RESTART_DIR";

fn setup(dir: &Path, node: &str, bind: SocketAddr, tuning: QuicTuning) -> Network {
    let credentials = NodeCredentials::load(dir, node).unwrap();
    let ca = load_ca_cert(dir).unwrap();
    let policy = AdmissionPolicy::cluster(credentials.identity.cluster.clone());
    Network::Quic(Box::new(QuicSetup { bind, credentials, ca, policy, tuning }))
}

async fn start(dir: &Path, node: &str, bind: SocketAddr, config: TransportConfig, tuning: QuicTuning) -> Transport {
    tls::install_default_provider();
    let n = Node::builder(NodeId::new(node).unwrap()).start().await.unwrap();
    let identity = NodeCredentials::load(dir, node).unwrap().identity;
    Transport::start(&n, identity, config, setup(dir, node, bind, tuning), None).await.unwrap()
}

/// The restarted node: dials the survivor, serves `echo`, runs until killed.
#[tokio::test]
#[ignore = "run by node_killed_and_restarted_reconnects_at_once as its child process"]
async fn restart_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let dir = PathBuf::from(dir);
    let bind: SocketAddr = std::env::var("FLOTILLA_RESTART_BIND").unwrap().parse().unwrap();
    let survivor: SocketAddr = std::env::var("FLOTILLA_RESTART_PEER").unwrap().parse().unwrap();
    let transport = start(&dir, "b", bind, TransportConfig::default(), slow_idle()).await;
    let _echo = Echo::start(&transport).await;
    transport.connect("a", Address::Udp(survivor));
    std::future::pending::<()>().await;
}

/// QUIC's idle timeout is the smaller of the two sides', so both set it long.
fn slow_idle() -> QuicTuning {
    QuicTuning { idle_timeout: Duration::from_secs(60), ..QuicTuning::default() }
}

/// The child process, killed (SIGKILL) when dropped, so a failing test leaves no orphan.
struct Killed(Child);

impl Killed {
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path, bind: SocketAddr, survivor: SocketAddr) -> Killed {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "restart_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env("FLOTILLA_RESTART_BIND", bind.to_string())
        .env("FLOTILLA_RESTART_PEER", survivor.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test]
async fn node_killed_and_restarted_reconnects_at_once() {
    let dir = std::env::temp_dir().join(format!("flotilla-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = ClusterCa::generate(&common::cluster_id()).unwrap();
    ca.save(&dir, false).unwrap();
    for node in ["a", "b"] {
        ca.issue(node, Role::Master).unwrap().save(&dir, false).unwrap();
    }
    // The survivor would take a minute to notice a dead peer on its own, so only the boot id
    // can explain a reconnection within the wait below.
    let slow_detection = TransportConfig {
        detector: DetectorConfig::Timeout { after: Duration::from_secs(60) },
        ..TransportConfig::default()
    };
    let survivor = start(&dir, "a", "127.0.0.1:0".parse().unwrap(), slow_detection, slow_idle()).await;
    let survivor_addr = survivor.local_addr().unwrap();
    let child_addr = free_udp_port();
    // The survivor dials too, so its session usually is the one the lower id dialed: the kind a
    // dial of the same incarnation could not displace. Only the new boot id can.
    survivor.connect("b", Address::Udp(child_addr));
    let mut boots = Vec::new();
    for round in 0..RESTARTS {
        let child = spawn_child(&dir, child_addr, survivor_addr);
        let previous = boots.last().copied();
        let transport = survivor.clone();
        let new_boot =
            move || transport.peer_stats("b").and_then(|s| s.boot_id).filter(|boot| Some(*boot) != previous).is_some();
        wait_for(&format!("round {round}: the restarted node's session"), new_boot).await;
        let answer = survivor.remote::<Ask>("b", "echo").call(&Ask(round as u64), Duration::from_secs(10)).await;
        assert_eq!(answer, Ok(round as u64 + 1), "round {round}");
        boots.push(survivor.peer_stats("b").unwrap().boot_id.unwrap());
        child.kill();
    }
    assert_eq!(boots.len(), RESTARTS);
    assert_eq!(survivor.peer_stats("b").unwrap().sessions, RESTARTS as u64);
    survivor.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The `flotilla` binary: parses the command line, runs a node until a signal, exits with a
//! meaningful code.

use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use flotilla::cli::{CertCommand, Cli, Command};
use flotilla::node::{Role, RunningNode, TransportPlan};
use flotilla::pki;
use flotilla_supervisors::NodeId;
use flotilla_transport::quic::QuicSetup;
use flotilla_transport::tls::{self, QuicTuning};
use flotilla_transport::{AdmissionPolicy, Network, TransportConfig};

/// How long an orderly shutdown may take before the process gives up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for the whole process, installed before anything builds a TLS config.
    tls::install_default_provider();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cert { command } => cert(command),
        Command::Dev { node_id, data_dir, listen } => {
            let id = NodeId::new(node_id)?;
            let data_dir = data_dir.unwrap_or_else(pki::default_data_dir);
            let plan = dev_transport(&data_dir, id.as_str(), listen)?;
            let node = RunningNode::start_with(id, Role::Dev, Some(plan)).await.context("starting the dev node")?;
            print!("{}", node.render_tree().await);
            if let Some(transport) = node.transport()
                && let Some(addr) = transport.local_addr()
            {
                let identity = transport.identity();
                println!("transport: quic://{addr} (node {}, cluster {})", identity.node, identity.cluster);
            }
            println!("data: {}", data_dir.display());
            println!("flotilla dev: ready (Ctrl-C to stop)");
            wait_for_stop_signal().await?;
            println!("flotilla dev: stopping");
            node.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the dev node")?;
            println!("flotilla dev: stopped");
            Ok(())
        }
    }
}

/// `flotilla cert init` and `flotilla cert issue`.
fn cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Init { dir, cluster, force } => {
            let ca = pki::init_ca(&dir, &cluster, force)?;
            println!("cluster {} CA written to {}", ca.cluster(), dir.display());
        }
        CertCommand::Issue { dir, node, role, out, force } => {
            let out = out.unwrap_or_else(|| dir.clone());
            let credentials = pki::issue(&dir, &node, role.into(), &out, force)?;
            println!("certificate for {} written to {}", credentials.identity, out.display());
        }
    }
    Ok(())
}

/// The dev node's transport: QUIC on `listen` with certificates made on first start.
fn dev_transport(data_dir: &std::path::Path, node: &str, listen: SocketAddr) -> anyhow::Result<TransportPlan> {
    let (credentials, ca) = pki::dev_credentials(data_dir, node)
        .with_context(|| format!("preparing certificates in {}", data_dir.display()))?;
    let identity = credentials.identity.clone();
    let policy = AdmissionPolicy::cluster(identity.cluster.clone());
    let network = move || {
        let setup = QuicSetup {
            bind: listen,
            credentials: credentials.clone(),
            ca: ca.clone(),
            policy: policy.clone(),
            tuning: QuicTuning::default(),
        };
        Ok(Network::Quic(Box::new(setup)))
    };
    Ok(TransportPlan { identity, config: TransportConfig::default(), network: Arc::new(network) })
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

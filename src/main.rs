//! The `flotilla` binary: parses the command line, runs a node until a signal, exits with a
//! meaningful code.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flotilla::cli::{Cli, Command};
use flotilla::node::{Role, RunningNode};
use flotilla_supervisors::NodeId;

/// How long an orderly shutdown may take before the process gives up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
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
        Command::Dev { node_id } => {
            let id = NodeId::new(node_id)?;
            let node = RunningNode::start(id, Role::Dev).await.context("starting the dev node")?;
            print!("{}", node.render_tree().await);
            println!("flotilla dev: ready (Ctrl-C to stop)");
            wait_for_stop_signal().await?;
            println!("flotilla dev: stopping");
            node.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the dev node")?;
            println!("flotilla dev: stopped");
            Ok(())
        }
    }
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

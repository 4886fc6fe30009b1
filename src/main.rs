//! The `flotilla` binary: parses the command line, runs a node until a signal, exits with a
//! meaningful code.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use flotilla::agent_config::AgentFile;
use flotilla::cli::{CertCommand, Cli, ClusterConnection, Command, LogFormat, MembersCommand, RegistryCommand};
use flotilla::client::{ClusterClient, NoAnswer, quic_plan};
use flotilla::config::MasterConfig;
use flotilla::dns_http::DnsHttp;
use flotilla::http::{BoundApi, HttpApi};
use flotilla::node::{AgentPlan, ChaosSettings, NodePlan, Role, RunningNode, TransportPlan, master_plan, task_driver};
use flotilla::operator;
use flotilla::pki;
use flotilla_actors::agent::driver::isolation;
use flotilla_actors::election::core::{MembershipChange, PeerId, RaftConfig};
use flotilla_actors::marathon::core::rest::ServerInfo;
use flotilla_actors::marathon::protocol::MARATHON_FRAMEWORK_ID;
use flotilla_actors::registry::client::ClientError;
use flotilla_actors::registry::core::Txn;
use flotilla_supervisors::NodeId;
use flotilla_transport::tls;
use flotilla_transport::{Address, Role as CertRole};

/// How long an orderly shutdown may take before the process gives up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit status when no master answered in time (see `flotilla --help`).
const EXIT_NO_ANSWER: u8 = 3;

/// The exit status of a usage error (clap's own, and a fault that does not parse).
const EXIT_USAGE: u8 = 2;

/// A client error, with [`NoAnswer`] for the one whose outcome is unknown.
fn client_error(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Unavailable(..) => anyhow::Error::new(NoAnswer(error.to_string())),
        other => anyhow::Error::new(other),
    }
}

fn main() -> ExitCode {
    // The task shim first, before the tracing subscriber, the TLS provider or the runtime:
    // it makes namespaces, which needs a single-threaded process (see
    // flotilla_actors::agent::driver::isolation).
    let args: Vec<String> = std::env::args_os().map(|arg| arg.to_string_lossy().into_owned()).collect();
    if args.get(1).is_some_and(|command| command == isolation::TASK_INIT_SUBCOMMAND) {
        std::process::exit(isolation::task_init_main(&args[2..]));
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One crypto provider for the whole process, installed before anything builds a TLS config.
    tls::install_default_provider();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            if error.downcast_ref::<NoAnswer>().is_some() {
                ExitCode::from(EXIT_NO_ANSWER)
            } else if error.downcast_ref::<flotilla::chaos_cli::Usage>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Log lines to stderr, filtered by `RUST_LOG` (default: warnings and errors).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    // Colours only for a person at a terminal, never into a file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cert { command } => cert(command),
        Command::Dev { node_id, data_dir, listen, dns_listen, chaos } => {
            dev(node_id, data_dir, listen, dns_listen, chaos).await
        }
        Command::Master { config } => master(&config).await,
        Command::Agent { config } => agent(&config).await,
        Command::Node { connection, command } => operator::node(connection, command).await,
        Command::Task { connection, command } => operator::task(connection, command).await,
        Command::App { connection, command } => flotilla::apps::app(connection, command).await,
        Command::Deployment { connection, command } => flotilla::apps::deployment(connection, command).await,
        Command::Registry { connection, command } => registry(connection, command).await,
        Command::Members { connection, command } => members(connection, command).await,
        Command::Chaos { connection, command } => flotilla::chaos_cli::chaos(connection, command).await,
    }
}

/// `flotilla dev`: one master (a single-voter Raft, so it leads at once) and one agent, two
/// nodes in one process talking QUIC over loopback, with an operator certificate for the CLI.
async fn dev(
    node_id: String,
    data_dir: Option<std::path::PathBuf>,
    listen: SocketAddr,
    dns_listen: Option<SocketAddr>,
    chaos: bool,
) -> anyhow::Result<()> {
    let id = NodeId::new(node_id)?;
    let agent_id = NodeId::new(format!("{id}-agent"))?;
    let data_dir = data_dir.unwrap_or_else(pki::default_data_dir);
    let pki_dir = data_dir.join("pki");
    let certificates =
        [(id.as_str(), CertRole::Master), (agent_id.as_str(), CertRole::Agent), ("operator", CertRole::Operator)];
    for (node, role) in certificates {
        pki::dev_credentials(&data_dir, node, role)
            .with_context(|| format!("preparing certificates in {}", pki_dir.display()))?;
    }
    let plan = quic_plan(&pki_dir, id.as_str(), listen, Vec::new())?;
    let control_plane = master_plan(id.as_str(), &[], false, RaftConfig::default(), data_dir.join("raft"));
    let bound = BoundApi::bind(SocketAddr::new(listen.ip(), 0))?;
    let plan = NodePlan {
        transport: Some(plan),
        control_plane: Some(control_plane),
        marathon: Some(marathon_server(bound.address)),
        chaos: chaos.then(|| ChaosSettings { masters: vec![id.to_string()] }),
        ..NodePlan::default()
    };
    let master = RunningNode::start_with(id.clone(), Role::Master, plan).await.context("starting the dev master")?;
    let master_addr = master.transport().and_then(|t| t.local_addr()).context("the dev master has no address")?;
    let mut agent_file = AgentFile::dev(agent_id.as_str(), &data_dir.join("agent"), id.as_str(), master_addr);
    if dns_listen.is_some() {
        agent_file.dns.listen = dns_listen;
    }
    agent_file.chaos.enabled = chaos;
    let peers = vec![(id.to_string(), Address::Udp(master_addr))];
    let agent_plan = quic_plan(&pki_dir, agent_id.as_str(), SocketAddr::from(([127, 0, 0, 1], 0)), peers)?;
    let (agent_node, tasks, dns_http) = start_agent_node(agent_id.clone(), &agent_file, agent_plan).await?;
    let api = start_api(&master, bound, vec![id.to_string()])?;
    wait_until_serving(&master, &agent_id).await?;
    print!("{}", master.render_tree().await);
    print!("{}", agent_node.render_tree().await);
    print_transport(&master);
    println!("{tasks}");
    println!("api: http://{}/master/state", api.address);
    println!("marathon: http://{}", api.address);
    println!("data: {}", data_dir.display());
    println!("cli: flotilla task list --pki-dir {} --master {id}={master_addr}", pki_dir.display());
    if chaos {
        println!("chaos: enabled on {id} and {agent_id} (http://{}/chaos/v1/faults, flotilla chaos)", api.address);
    }
    println!("flotilla dev: ready (Ctrl-C to stop)");
    wait_for_stop_signal().await?;
    println!("flotilla dev: stopping");
    api.stop().await;
    if let Some(dns_http) = dns_http {
        dns_http.stop().await;
    }
    agent_node.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the dev agent")?;
    master.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the dev master")?;
    println!("flotilla dev: stopped");
    Ok(())
}

/// Starts an agent node: its task driver (isolating or plain, as configured and possible)
/// and its agent actor.
/// Returns the node, the lines on how its tasks run (the driver, and what isolation it lacks)
/// and where its DNS serves, and Mesos-DNS's HTTP API if it serves it.
async fn start_agent_node(
    id: NodeId,
    file: &AgentFile,
    transport: TransportPlan,
) -> anyhow::Result<(RunningNode, String, Option<DnsHttp>)> {
    if transport.identity.role != CertRole::Agent {
        bail!("{}'s certificate names role {}, not agent", transport.identity.node, transport.identity.role);
    }
    let driver = task_driver(file)?;
    let missing = driver.isolation().missing;
    let isolation = if missing.is_empty() { "isolated".to_owned() } else { format!("without: {}", missing.join("; ")) };
    let tasks = format!("tasks: {} driver ({isolation})", driver.name());
    let agent = AgentPlan { config: file.agent_config()?, driver };
    let plan = NodePlan {
        transport: Some(transport),
        agent: Some(agent),
        dns: Some(file.dns.config(true)?),
        l4lb: Some(file.l4lb.config(true)),
        chaos: file
            .chaos
            .enabled
            .then(|| ChaosSettings { masters: file.masters.iter().map(|m| m.id.clone()).collect() }),
        ..NodePlan::default()
    };
    let node = RunningNode::start_with(id, Role::Agent, plan).await.context("starting the agent")?;
    let mut lines = tasks;
    let mut dns_http = None;
    if let Some(address) = dns_address(&node).await {
        lines.push_str(&format!("\ndns: {address} (udp, tcp; mesos and thisdcos.directory)"));
        if let Some(listen) = file.dns.http_address(true) {
            let http = DnsHttp::serve(listen, node.node.clone())?;
            lines.push_str(&format!("\nmesos-dns: http://{}/v1/enumerate", http.address));
            dns_http = Some(http);
        }
    }
    Ok((node, lines, dns_http))
}

/// `flotilla agent --config FILE`.
async fn agent(path: &std::path::Path) -> anyhow::Result<()> {
    let file = AgentFile::load(path)?;
    let id = NodeId::new(file.node.id.clone())?;
    let peers: Vec<(String, Address)> = file.masters.iter().map(|m| (m.id.clone(), Address::Udp(m.address))).collect();
    let plan = quic_plan(&file.pki_dir(), id.as_str(), file.node.listen, peers)?;
    let (node, tasks, dns_http) = start_agent_node(id, &file, plan).await?;
    print_transport(&node);
    println!("{tasks}");
    println!("data: {}", file.node.data_dir.display());
    println!("flotilla agent: ready ({} masters)", file.masters.len());
    wait_for_stop_signal().await?;
    println!("flotilla agent: stopping");
    if let Some(dns_http) = dns_http {
        dns_http.stop().await;
    }
    node.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the agent")?;
    println!("flotilla agent: stopped");
    Ok(())
}

/// `flotilla master --config FILE`.
async fn master(path: &std::path::Path) -> anyhow::Result<()> {
    let config = MasterConfig::load(path)?;
    let id = NodeId::new(config.node.id.clone())?;
    let peers: Vec<(String, Address)> =
        config.peers().iter().map(|peer| (peer.id.clone(), Address::Udp(peer.address))).collect();
    let plan = quic_plan(&config.pki_dir(), id.as_str(), config.node.listen, peers.clone())?;
    let identity = plan.identity.clone();
    if identity.role != CertRole::Master {
        bail!("{}'s certificate names role {}, not master", identity.node, identity.role);
    }
    let peer_ids: Vec<String> = peers.into_iter().map(|(id, _)| id).collect();
    let control_plane =
        master_plan(id.as_str(), &peer_ids, config.node.join, config.raft_config()?, config.node.data_dir.join("raft"));
    let cluster_manager = config.cluster.manager_config()?;
    let bound = BoundApi::bind(config.api.listen)?;
    let plan = NodePlan {
        transport: Some(plan),
        control_plane: Some(control_plane),
        cluster_manager,
        marathon: Some(marathon_server(advertised(bound.address, config.node.listen))),
        agent: None,
        dns: Some(config.dns.config(false)?),
        l4lb: Some(config.l4lb.config(false)),
        chaos: config
            .chaos
            .enabled
            .then(|| ChaosSettings { masters: config.masters.iter().map(|m| m.id.clone()).collect() }),
        ..NodePlan::default()
    };
    let node = RunningNode::start_with(id, Role::Master, plan).await.context("starting the master")?;
    let masters = config.masters.iter().map(|m| m.id.clone()).collect();
    let api = start_api(&node, bound, masters)?;
    print_transport(&node);
    println!("api: http://{} (Mesos /master/state, Marathon /v2)", api.address);
    println!("data: {}", config.node.data_dir.display());
    let joining = if config.node.join { ", joining: not a voter until added" } else { "" };
    println!("flotilla master: ready (cluster {}, {} masters{joining})", identity.cluster, config.masters.len());
    wait_for_stop_signal().await?;
    println!("flotilla master: stopping");
    api.stop().await;
    node.shutdown(SHUTDOWN_TIMEOUT).await.context("stopping the master")?;
    println!("flotilla master: stopped");
    Ok(())
}

/// Where the node's DNS server listens, if it runs one.
async fn dns_address(node: &RunningNode) -> Option<SocketAddr> {
    let dns = node.node.whereis_ref::<flotilla_actors::dns::DnsMsg>(flotilla_actors::dns::DNS_ACTOR)?;
    let status = ractor::call_t!(dns, flotilla_actors::dns::DnsMsg::Status, 5_000).ok()?;
    Some(status.bound.udp)
}

/// Starts a master's HTTP API on its bound socket.
fn start_api(node: &RunningNode, bound: BoundApi, masters: Vec<String>) -> anyhow::Result<HttpApi> {
    node.transport().context("the master has no transport")?;
    HttpApi::serve(bound, node.node.clone(), node.current_transport(), masters)
}

/// What the service scheduler reports of a master whose HTTP API is at `address`.
fn marathon_server(address: SocketAddr) -> ServerInfo {
    ServerInfo {
        leader: address.to_string(),
        framework_id: MARATHON_FRAMEWORK_ID.to_owned(),
        http_port: address.port(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// How long `flotilla dev` waits for its cluster to serve before giving up.
const DEV_READY_BOUND: Duration = Duration::from_secs(60);

/// Returns once the dev master leads (recovery done), the agent is registered and Marathon's
/// framework is subscribed: from then on the API answers, so `ready` means usable.
async fn wait_until_serving(master: &RunningNode, agent_id: &NodeId) -> anyhow::Result<()> {
    use flotilla_actors::master::actor::{MASTER_ACTOR, MasterMsg};
    let deadline = tokio::time::Instant::now() + DEV_READY_BOUND;
    let mut last = "no master actor yet".to_owned();
    while tokio::time::Instant::now() < deadline {
        if let Some(actor) = master.node.whereis_ref::<MasterMsg>(MASTER_ACTOR) {
            match ractor::call_t!(actor, MasterMsg::State, 2_000) {
                Ok(state) => {
                    let agent = state.agents.iter().any(|a| a.active && a.info.id == agent_id.as_str());
                    let marathon = state.frameworks.iter().any(|f| f.id == MARATHON_FRAMEWORK_ID);
                    if !state.recovering && agent && marathon {
                        return Ok(());
                    }
                    last = format!(
                        "recovering: {}, agent registered: {agent}, marathon subscribed: {marathon}",
                        state.recovering
                    );
                }
                Err(error) => last = error.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the dev cluster did not start serving within {DEV_READY_BOUND:?} ({last})")
}

/// The address clients reach an API bound to `bound` at: a wildcard bind is advertised
/// under the IP of the transport's listen address (when that is not a wildcard too).
fn advertised(bound: SocketAddr, transport: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() && !transport.ip().is_unspecified() {
        SocketAddr::new(transport.ip(), bound.port())
    } else {
        bound
    }
}

fn print_transport(node: &RunningNode) {
    if let Some(transport) = node.transport()
        && let Some(addr) = transport.local_addr()
    {
        let identity = transport.identity();
        println!("transport: quic://{addr} (node {}, cluster {})", identity.node, identity.cluster);
    }
}

/// `flotilla registry ...`.
async fn registry(connection: ClusterConnection, command: RegistryCommand) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(connection.timeout_secs);
    let mut client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
    let registry = &mut client.registry;
    let outcome: anyhow::Result<()> = async {
        match command {
            RegistryCommand::Get { key } => match registry.get(&key, deadline).await.map_err(client_error)?.1 {
                Some(kv) => println!("{}", String::from_utf8_lossy(&kv.value)),
                None => bail!("{key}: no such key"),
            },
            RegistryCommand::Put { key, value } => {
                let response = registry.put(&key, value.as_bytes(), deadline).await.map_err(client_error)?;
                println!("revision {}", response.revision);
            }
            RegistryCommand::Delete { key } => {
                let response = registry.write(Txn::delete(key.clone()), deadline).await.map_err(client_error)?;
                if response.deleted == 0 {
                    bail!("{key}: no such key");
                }
                println!("revision {}", response.revision);
            }
            RegistryCommand::List { prefix } => {
                for kv in registry.range(&prefix, u32::MAX, deadline).await.map_err(client_error)?.1 {
                    println!("{}\t{}", kv.key, String::from_utf8_lossy(&kv.value));
                }
            }
            RegistryCommand::Status => {
                println!(
                    "{:<12} {:<8} {:<6} {:<12} {:>6} {:>10} {:>10}",
                    "MASTER", "ROLE", "VOTES", "LEADER", "TERM", "APPLIED", "REVISION"
                );
                for (id, _) in &connection.masters {
                    match registry.status_of(id).await {
                        Ok(status) => println!(
                            "{:<12} {:<8} {:<6} {:<12} {:>6} {:>10} {:>10}",
                            id,
                            if status.is_leader { "leader" } else { "follower" },
                            if status.voters.contains(id) { "yes" } else { "no" },
                            status.leader.as_deref().unwrap_or("-"),
                            status.term,
                            status.applied,
                            status.revision
                        ),
                        Err(error) => println!("{id:<12} unreachable: {error}"),
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    client.close().await;
    outcome
}

/// `flotilla members list|add|remove`: prints the voters, one per line.
async fn members(connection: ClusterConnection, command: MembersCommand) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(connection.timeout_secs);
    let mut client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
    let registry = &mut client.registry;
    let outcome = match command {
        MembersCommand::List => registry.members(deadline).await,
        MembersCommand::Add { id } => registry.change_membership(MembershipChange::Add(PeerId(id)), deadline).await,
        MembersCommand::Remove { id } => {
            registry.change_membership(MembershipChange::Remove(PeerId(id)), deadline).await
        }
    };
    client.close().await;
    for voter in outcome.map_err(client_error)? {
        println!("{voter}");
    }
    Ok(())
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

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

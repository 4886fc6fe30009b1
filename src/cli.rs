//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit status: 0 success; 1 refused or failed (for a write or a membership change: nothing
/// was changed); 2 a usage error; 3 no master answered in time (a write or a membership change
/// may or may not have been made).
#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A datacenter operating system built as a supervised actor system",
    after_help = "Exit status: 0 success; 1 refused or failed (nothing was changed); 2 usage error; \
                  3 no master answered in time (a write or membership change may or may not have been made)."
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the span fields) for log collectors. Levels and targets come from `RUST_LOG`
    /// [default: warn].
    #[arg(long, global = true, value_enum, env = "FLOTILLA_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a one-process cluster (one master and one agent) on this machine.
    Dev {
        /// The node id of the dev node.
        #[arg(long, default_value = "dev")]
        node_id: String,
        /// Where the dev node keeps its state and certificates
        /// [default: $XDG_DATA_HOME/flotilla/dev, else ~/.local/share/flotilla/dev].
        #[arg(long, env = "FLOTILLA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The UDP address the transport listens on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where the DNS server listens, UDP and TCP [default: 127.0.0.1:61053 when free,
        /// else a free port; printed at start].
        #[arg(long)]
        dns_listen: Option<SocketAddr>,
        /// Run the chaos actor on both nodes, so faults can be injected on purpose
        /// (`/chaos/v1`, `flotilla chaos`).
        #[arg(long)]
        chaos: bool,
    },
    /// Run a master: elect a leader with the other masters and keep the replicated registry.
    Master {
        /// The master's TOML configuration (see `flotilla::config` for every option).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an agent: offer this machine's resources to the leading master and run its tasks.
    Agent {
        /// The agent's TOML configuration (see `flotilla::agent_config` for every option).
        #[arg(long)]
        config: PathBuf,
    },
    /// The cluster's agents (as an operator).
    Node {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// The cluster's tasks; run and kill one-off tasks (as an operator).
    Task {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Long-running services (Marathon apps) on the service scheduler (as an operator).
    App {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: AppCommand,
    },
    /// The service scheduler's deployments (as an operator).
    Deployment {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: DeploymentCommand,
    },
    /// Read and write the registry of a running cluster (as an operator).
    Registry {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// List, add or remove the masters that vote (one at a time; as an operator).
    Members {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Inject faults on purpose, list and heal them, run the chaos monkey (as an operator;
    /// the nodes must run with chaos enabled).
    Chaos {
        #[command(flatten)]
        connection: ClusterConnection,
        #[command(subcommand)]
        command: ChaosCommand,
    },
    /// Manage the cluster's certificate authority and node certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a new cluster CA: `ca.crt` (0644) and `ca.key` (0600) in DIR.
    Init {
        /// The directory for the CA's files (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// The cluster id every node certificate will name ([a-z0-9._-], at most 63).
        #[arg(long)]
        cluster: String,
        /// Replace an existing CA (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate and key signed by the CA in DIR.
    Issue {
        /// The directory holding `ca.crt` and `ca.key`.
        #[arg(long)]
        dir: PathBuf,
        /// The node id the certificate names.
        #[arg(long)]
        node: String,
        /// The role the certificate names.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Where to write `<node>.crt` (0644) and `<node>.key` (0600) [default: DIR].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing certificate and key for this node.
        #[arg(long)]
        force: bool,
    },
}

/// How a client reaches the masters: its certificate, and where the masters listen.
#[derive(Debug, clap::Args)]
pub struct ClusterConnection {
    /// The directory holding `ca.crt` and this client's `<name>.crt` and `<name>.key`
    /// (issue them with `flotilla cert issue --role operator`).
    #[arg(long, env = "FLOTILLA_PKI_DIR")]
    pub pki_dir: PathBuf,
    /// The node id this client's certificate names.
    #[arg(long = "as", env = "FLOTILLA_CLIENT", default_value = "operator")]
    pub name: String,
    /// A master, as ID=HOST:PORT; repeat for each (any one that answers will do).
    #[arg(long = "master", required = true, value_parser = parse_master)]
    pub masters: Vec<(String, SocketAddr)>,
    /// How long to keep trying before giving up, in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

fn parse_master(text: &str) -> Result<(String, SocketAddr), String> {
    let (id, address) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let address = address.parse().map_err(|e| format!("{address:?}: {e}"))?;
    Ok((id.to_owned(), address))
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Inject a fault: its JSON (a Fault, or {"fault": ..., "durationMs": ..., "node": ...}),
    /// `-` to read that JSON from standard input, or a shorthand: heal | partition A B |
    /// partition-one-way A B | drop FROM TO P | duplicate FROM TO P | delay FROM TO BASE_MS
    /// [JITTER_MS] | reorder FROM TO P WINDOW_MS | clog FROM TO | kill NODE ACTOR | crash NODE |
    /// restart NODE | pause NODE MS | skew NODE MS (node sets: `*` or ids separated by commas).
    /// Options go before the fault (its words may start with `-`, as a negative skew).
    Inject {
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        fault: Vec<String>,
        /// Heal it after this many seconds (a pause takes its own length).
        #[arg(long = "for")]
        for_secs: Option<f64>,
        /// Hold it on exactly this node [default: the nodes the fault names].
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The faults a node holds.
    List {
        /// The node [default: the master asked].
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Heal one fault by its id, or every fault with --all.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Heal {
        id: Option<u64>,
        #[arg(long)]
        all: bool,
        /// The node holding it [default: the master asked].
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The chaos monkey: faults drawn from a seed at a rate (never a majority of masters down).
    Monkey {
        #[command(subcommand)]
        command: MonkeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MonkeyCommand {
    /// Start drawing faults (replacing a running monkey).
    Start {
        #[arg(long)]
        seed: u64,
        /// Faults per minute, on average.
        #[arg(long, default_value_t = 30.0)]
        rate: f64,
        /// Stop by itself after this many seconds.
        #[arg(long, default_value_t = 600)]
        span_secs: u64,
        /// An actor the monkey may kill by name on any node; repeat for more [default: none].
        #[arg(long = "actor")]
        actors: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop drawing faults (those injected heal at their time).
    Stop {
        #[arg(long)]
        json: bool,
    },
    /// Whether the monkey runs, and what it did.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app from its Marathon JSON definition (a file, or `-` for standard input).
    Add {
        file: String,
        /// Follow the deployment until it is done.
        #[arg(long)]
        wait: bool,
    },
    /// Every app with its running and wanted instances.
    List {
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One app with its tasks.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an app: the fields of the JSON in FILE (or `-`) replace the app's.
    Update {
        id: String,
        file: String,
        /// Cancel a deployment that holds the app.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Set an app's instance count.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Replace every instance of an app, honouring its upgrade strategy.
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Stop an app's instances and forget it.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// The running deployments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Follow a deployment (or every one) until it is done: live on a terminal, one line per
    /// change otherwise.
    Watch { id: Option<String> },
    /// Cancel a deployment: its apps are put back as they were (with `--force`: just stop it).
    Cancel {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Print a key's value (a linearizable read).
    Get { key: String },
    /// Set a key (acknowledged once durable on a quorum of masters).
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
    /// List the keys under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Each master's view: leader, term, applied index, revision.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// One line per agent: id, hostname, state, resources offered and used.
    List {
        /// Print the leading master's view as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// One line per task: id, state, agent, resources.
    List {
        /// Include finished tasks.
        #[arg(long)]
        all: bool,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Run a command once on some agent (the launcher framework); prints the task id.
    Run {
        /// The task's name (its id is NAME.<random>).
        #[arg(long)]
        name: String,
        /// CPUs (fractions allowed).
        #[arg(long, default_value_t = 0.1)]
        cpus: f64,
        /// Memory in MB (also its limit).
        #[arg(long, default_value_t = 32.0)]
        mem: f64,
        /// Disk in MB.
        #[arg(long, default_value_t = 0.0)]
        disk: f64,
        /// How many host ports it gets (as PORT0.., PORTS).
        #[arg(long, default_value_t = 0)]
        ports: u64,
        /// An environment variable NAME=VALUE; repeat for more.
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Seconds between SIGTERM and SIGKILL when it is killed.
        #[arg(long, default_value_t = 3.0)]
        grace_secs: f64,
        #[command(flatten)]
        health: HealthFlags,
        /// The command line, run with /bin/sh -c.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Kill a task started with `task run` (SIGTERM, then SIGKILL after its grace period).
    Kill { id: String },
    /// Print a task's output (its sandbox's `stdout`, or `stderr`), read from its agent through
    /// a master; any task, whichever framework started it.
    Log {
        id: String,
        /// Its standard error instead of its standard output.
        #[arg(long)]
        stderr: bool,
        /// Start this many bytes before the end (0: the whole file).
        #[arg(long, default_value_t = 8192)]
        tail: u64,
        /// Keep printing what the task writes, until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
}

/// A command health check for `flotilla task run`, run by the agent in the task's sandbox.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthFlags {
    /// A health check: this shell command, run in the task's sandbox with its environment;
    /// exit status 0 is healthy.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Seconds from one check's end to the next one's start.
    #[arg(long, default_value_t = 10.0, requires = "health_cmd")]
    pub health_interval_secs: f64,
    /// A check that takes longer fails.
    #[arg(long, default_value_t = 20.0, requires = "health_cmd")]
    pub health_timeout_secs: f64,
    /// Failures this soon after the start do not count, until the first success.
    #[arg(long, default_value_t = 10.0, requires = "health_cmd")]
    pub health_grace_secs: f64,
    /// Kill the task after this many failed checks in a row (0: never).
    #[arg(long, default_value_t = 3, requires = "health_cmd")]
    pub health_max_failures: u32,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Print the voting masters, one per line (the committed configuration).
    List,
    /// Make master ID a voter. Start it first with `join = true` in its configuration (it
    /// catches up from the leader); prints the new voters once the change is committed.
    Add { id: String },
    /// Stop master ID from voting (it may be the leader: it steps down once the change is
    /// committed, and the others elect a new one); prints the new voters once the change is
    /// committed. Stop its process afterwards.
    Remove { id: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Master,
    Agent,
    /// For the CLI and other clients of the masters' APIs.
    Operator,
}

impl From<RoleArg> for flotilla_transport::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Master => flotilla_transport::Role::Master,
            RoleArg::Operator => flotilla_transport::Role::Operator,
            RoleArg::Agent => flotilla_transport::Role::Agent,
        }
    }
}

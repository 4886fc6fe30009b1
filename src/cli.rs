//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about = "A datacenter operating system built as a supervised actor system")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Master,
    Agent,
}

impl From<RoleArg> for flotilla_transport::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Master => flotilla_transport::Role::Master,
            RoleArg::Agent => flotilla_transport::Role::Agent,
        }
    }
}

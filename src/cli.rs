//! The command line.

use clap::{Parser, Subcommand};

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
    },
}

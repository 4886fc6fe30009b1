//! Flotilla: a datacenter operating system in the spirit of DC/OS, built as a supervised
//! actor system modelled on Erlang/OTP.
//!
//! This crate is the composition root: it knows node roles, the CLI and process signals,
//! and it assembles the supervision tree of a node from the components in
//! `flotilla-actors`, `flotilla-transport` and `flotilla-supervisors`. See `ARCHITECTURE.md`.

pub mod agent_config;
pub mod apps;
pub mod chaos_cli;
pub mod chaos_http;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery_config;
pub mod dns_http;
pub mod files;
pub mod http;
pub mod local_cluster;
pub mod node;
pub mod operator;
pub mod pki;
pub mod sim;
pub mod state_json;

//! The launcher: Flotilla's built-in framework for one-off tasks (`flotilla task run`), and
//! the smallest complete framework of the cluster manager — it subscribes to the leading
//! master, fits requested tasks into offers, acknowledges their updates and reconciles after a
//! failover. Requests are kept in the registry (`/launcher/tasks/<id>`), marked launched before
//! the launch leaves, so a new leader never launches a task twice.

pub mod actor;
pub mod protocol;

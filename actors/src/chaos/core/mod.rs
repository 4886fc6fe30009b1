//! The chaos actor's pure core: the monkey's fault schedule ([`monkey`]).

pub mod monkey;

pub use monkey::{MonkeyConfig, ScheduledFault, schedule};

//! The chaos actor's pure core: the monkey's fault schedule ([`monkey`]) and the actor's
//! decisions and fault table ([`faults`]).

pub mod faults;
pub mod monkey;

pub use monkey::{MonkeyConfig, ScheduledFault, schedule};

//! What operators, the HTTP API and other nodes ask a chaos actor, over the transport or
//! in-process: one request type, one reply type.

use std::time::Duration;

use flotilla_transport::{Fault, RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

pub use super::core::faults::FaultView;

/// The name a chaos actor is registered and exported under.
pub const CHAOS_NAME: &str = "chaos";

/// A fault to inject, for how long, and where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub fault: Fault,
    /// Heal it after this long (`None`: until healed; a pause has its own `for`).
    pub duration: Option<Duration>,
    /// Hold it on exactly this node (`None`: the nodes the fault names, see
    /// `core::faults::holders`).
    pub node: Option<String>,
}

/// How the monkey draws its faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonkeyRequest {
    pub seed: u64,
    /// Mean time between two faults.
    pub mean_interval: Duration,
    /// How long the monkey runs before it stops by itself.
    pub span: Duration,
    /// Actors it may kill by name on any node (none: it kills no actor).
    pub actors: Vec<String>,
}

/// Where the monkey is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonkeyStatus {
    pub running: bool,
    pub seed: Option<u64>,
    /// Faults of its schedule carried out, and those that failed (logged).
    pub injected: u64,
    pub failed: u64,
    /// Faults of its schedule still to come.
    pub remaining: usize,
}

/// A request to a chaos actor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChaosRequest {
    Inject(Injection),
    /// The faults held by `node` (`None`: the node asked).
    List {
        node: Option<String>,
    },
    /// Heal fault `id` (`None`: every fault) held by `node` (`None`: the node asked).
    Heal {
        node: Option<String>,
        id: Option<u64>,
    },
    MonkeyStart(MonkeyRequest),
    MonkeyStop,
    MonkeyStatus,
}

/// One node that could not carry out its part of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeFailure {
    pub node: String,
    pub error: String,
}

/// A chaos actor's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChaosReply {
    /// The faults injected (or healed), and the nodes that failed their part.
    Faults {
        faults: Vec<FaultView>,
        failed: Vec<NodeFailure>,
    },
    Monkey(MonkeyStatus),
    /// The request is invalid (the message says why); nothing was done.
    Invalid(String),
    /// The request is valid but was refused here (the message says why).
    Refused(String),
    /// No such fault.
    NotFound(String),
}

impl RemoteMessage for ChaosRequest {
    const TAG: u32 = 0x4348_4153; // "CHAS"
}

impl RemoteCall for ChaosRequest {
    type Reply = ChaosReply;
}

//! How a follower's HTTP server reaches the scheduler on the leading master: the REST request
//! travels whole over the transport and the answer comes back whole (Marathon's followers
//! proxy to the leader the same way).

use flotilla_transport::{RemoteCall, RemoteMessage};
use serde::{Deserialize, Serialize};

use super::core::rest::{RestRequest, RestResponse};

/// The name the scheduler is exported under on the leading master.
pub const MARATHON_NAME: &str = "marathon";

/// The framework id the scheduler keeps across leaders.
pub const MARATHON_FRAMEWORK_ID: &str = "flotilla-marathon";

/// A REST request forwarded to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarathonCall(pub RestRequest);

impl RemoteMessage for MarathonCall {
    const TAG: u32 = 0x4d41_5254; // "MART"
}

impl RemoteCall for MarathonCall {
    type Reply = RestResponse;
}

impl RemoteMessage for RestResponse {
    const TAG: u32 = 0x4d41_5252; // "MARR"
}

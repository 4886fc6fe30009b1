//! Request-reply with a mandatory timeout.
//!
//! `call` only flows down the supervision tree (DESIGN.md principle 6); upward and sideways
//! traffic is a cast plus a reply message, so ask-cycles cannot deadlock. There is no call
//! without a timeout in this codebase.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

/// Why a call produced no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the actor is not running")]
    NoProc,
    #[error("the actor dropped the request without replying")]
    NoReply,
}

/// Sends the message built by `build` and waits at most `timeout` for its reply.
pub async fn call<M, R>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
    timeout: Duration,
) -> Result<R, CallError>
where
    M: Message,
    R: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => Err(CallError::Timeout(timeout)),
        Ok(CallResult::SenderError) => Err(CallError::NoReply),
        Err(_) => Err(CallError::NoProc),
    }
}

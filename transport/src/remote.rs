//! Typed messages across nodes: what may travel, how a reply finds its way back, and the
//! reference through which an actor on another node is addressed.

use std::marker::PhantomData;
use std::sync::Weak;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::core::wire::{self, RemoteError};
use crate::mesh::{CallError, SendError, Shared, Transport};
use crate::queue::Class;

/// A message type that may cross the wire. `TAG` is its explicit, stable wire tag: the
/// receiver checks it against what the addressed actor accepts, so a message of the wrong
/// type is refused with [`RemoteError::WrongType`] rather than misread.
pub trait RemoteMessage: Serialize + DeserializeOwned + Send + 'static {
    const TAG: u32;
}

/// A request whose answer travels back: `call` it with a timeout.
pub trait RemoteCall: RemoteMessage {
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// Where an actor sends the answer to a call, whether the caller is local or remote.
/// Dropping it unanswered tells a remote caller [`RemoteError::NoReply`] at once instead of
/// leaving it to time out.
pub struct ReplyPort<R: Serialize + Send + 'static> {
    target: Option<Target<R>>,
}

enum Target<R> {
    Local(oneshot::Sender<R>),
    Remote { shared: Weak<Shared>, node: String, id: u64 },
}

impl<R: Serialize + Send + 'static> std::fmt::Debug for ReplyPort<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(Target::Local(_)) => f.write_str("ReplyPort(local)"),
            Some(Target::Remote { node, id, .. }) => write!(f, "ReplyPort({node}#{id})"),
            None => f.write_str("ReplyPort(used)"),
        }
    }
}

impl<R: Serialize + Send + 'static> ReplyPort<R> {
    /// A port answered in this process, and the receiver its answer arrives on.
    pub fn local() -> (Self, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        (ReplyPort { target: Some(Target::Local(tx)) }, rx)
    }

    pub(crate) fn remote(shared: Weak<Shared>, node: String, id: u64) -> Self {
        ReplyPort { target: Some(Target::Remote { shared, node, id }) }
    }

    /// Sends the answer. Returns false if the caller is known to be gone.
    pub fn send(mut self, value: R) -> bool {
        match self.target.take() {
            Some(Target::Local(tx)) => tx.send(value).is_ok(),
            Some(Target::Remote { shared, node, id }) => match postcard::to_stdvec(&value) {
                Ok(payload) => push_reply(&shared, &node, |buf| wire::encode_reply(id, &payload, buf)),
                Err(err) => {
                    let error = RemoteError::Decode(format!("reply does not encode: {err}"));
                    push_reply(&shared, &node, |buf| wire::encode(&wire::Envelope::Fail { id, error }, buf))
                }
            },
            None => false,
        }
    }
}

impl<R: Serialize + Send + 'static> Drop for ReplyPort<R> {
    fn drop(&mut self) {
        if let Some(Target::Remote { shared, node, id }) = self.target.take() {
            let error = RemoteError::NoReply;
            push_reply(&shared, &node, |buf| wire::encode(&wire::Envelope::Fail { id, error }, buf));
        }
    }
}

fn push_reply(
    shared: &Weak<Shared>,
    node: &str,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), wire::WireError>,
) -> bool {
    let Some(shared) = shared.upgrade() else { return false };
    let Some(peer) = shared.peer(node) else { return false };
    peer.queue.push(Class::Control, encode).is_ok()
}

/// An actor on some node, addressed by (node, node-scoped name), that accepts messages of
/// type `T`. Cheap to clone; holds no connection of its own.
pub struct RemoteRef<T> {
    transport: Transport,
    node: String,
    name: String,
    _message: PhantomData<fn(T)>,
}

impl<T> Clone for RemoteRef<T> {
    fn clone(&self) -> Self {
        RemoteRef {
            transport: self.transport.clone(),
            node: self.node.clone(),
            name: self.name.clone(),
            _message: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RemoteRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteRef({}/{})", self.node, self.name)
    }
}

impl<T: RemoteMessage> RemoteRef<T> {
    pub(crate) fn new(transport: Transport, node: &str, name: &str) -> Self {
        RemoteRef { transport, node: node.to_owned(), name: name.to_owned(), _message: PhantomData }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `message` for the actor. Messages from one sender to one actor arrive in the
    /// order they were cast (they share the pair's ordered stream).
    pub fn cast(&self, message: &T) -> Result<(), SendError> {
        self.transport.cast(&self.node, &self.name, message)
    }
}

impl<T: RemoteCall> RemoteRef<T> {
    /// Asks the actor and waits at most `timeout` for its answer.
    pub async fn call(&self, request: &T, timeout: Duration) -> Result<T::Reply, CallError> {
        self.transport.call(&self.node, &self.name, request, timeout).await
    }
}

//! A registry client for any node with a transport (agents, the CLI, benchmarks, tests): it
//! talks to whichever master answers, moves on to the next one when a master does not, and
//! retries a write under the same request id, so a retry after a lost reply is applied once.

use std::time::Duration;

use flotilla_transport::{CallError, Transport};

use super::core::{Command, KeyValue, RequestId, Revision, Txn, TxnResponse};
use super::protocol::{REGISTRY_NAME, RegistryFailure, RegistryReply, RegistryRequest, RegistryStatus};
use crate::election::core::MembershipChange;

/// Why a client request failed for good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The registry refused the request; retrying the same request cannot help.
    #[error("{0}")]
    Refused(RegistryFailure),
    /// No master answered before the deadline. A write may or may not have been applied;
    /// [`RegistryClient::write`] retried it under one request id, so it is applied at most
    /// once.
    #[error("no master answered within {0:?} (last error: {1})")]
    Unavailable(Duration, String),
    /// An answer of the wrong kind (a master of another version).
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// A client of the registry of a cluster's masters.
pub struct RegistryClient {
    transport: Transport,
    masters: Vec<String>,
    current: usize,
    client: u64,
    seq: u64,
    /// How long one attempt on one master may take before the next master is tried.
    pub attempt_timeout: Duration,
}

impl RegistryClient {
    /// A client of `masters` (node ids the transport can reach). `client` must be unique
    /// among the registry's clients (a random `u64` is): it scopes the request ids.
    pub fn new(transport: Transport, masters: Vec<String>, client: u64) -> Self {
        RegistryClient { transport, masters, current: 0, client, seq: 0, attempt_timeout: Duration::from_secs(2) }
    }

    /// The masters this client knows.
    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// The master tried first.
    pub fn current_master(&self) -> Option<&str> {
        self.masters.get(self.current).map(String::as_str)
    }

    /// Applies `txn` once, acknowledged when it is committed on a quorum.
    pub async fn write(&mut self, txn: Txn, deadline: Duration) -> Result<TxnResponse, ClientError> {
        self.seq += 1;
        let command = Command { id: Some(RequestId { client: self.client, seq: self.seq }), txn, leader_term: None };
        match self.request(&RegistryRequest::Write(command), deadline).await? {
            RegistryReply::Written(response) => Ok(response),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn put(&mut self, key: &str, value: &[u8], deadline: Duration) -> Result<TxnResponse, ClientError> {
        self.write(Txn::put(key, value.to_vec()), deadline).await
    }

    /// The key, read linearizably, and the store's revision when it was read.
    pub async fn get(&mut self, key: &str, deadline: Duration) -> Result<(Revision, Option<KeyValue>), ClientError> {
        match self.request(&RegistryRequest::Get { key: key.to_owned() }, deadline).await? {
            RegistryReply::Value { revision, kv } => Ok((revision, kv)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn range(
        &mut self,
        prefix: &str,
        limit: u32,
        deadline: Duration,
    ) -> Result<(Revision, Vec<KeyValue>), ClientError> {
        match self.request(&RegistryRequest::Range { prefix: prefix.to_owned(), limit }, deadline).await? {
            RegistryReply::Values { revision, kvs } => Ok((revision, kvs)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// The voting masters (the committed configuration, read linearizably), sorted.
    pub async fn members(&mut self, deadline: Duration) -> Result<Vec<String>, ClientError> {
        match self.request(&RegistryRequest::Members, deadline).await? {
            RegistryReply::Members { voters } => Ok(voters),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Adds or removes one voting master; answers the new voters once the change is
    /// committed. When a master does not answer in time the next one is asked the same: if
    /// the first attempt went through meanwhile, the retry is refused (`AlreadyVoter`,
    /// `NotVoter` or `ChangePending`), and [`RegistryClient::members`] tells what holds.
    pub async fn change_membership(
        &mut self,
        change: MembershipChange,
        deadline: Duration,
    ) -> Result<Vec<String>, ClientError> {
        match self.request(&RegistryRequest::ChangeMembership(change), deadline).await? {
            RegistryReply::Members { voters } => Ok(voters),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// One master's own view (not forwarded).
    pub async fn status_of(&self, master: &str) -> Result<RegistryStatus, ClientError> {
        let reply = self.transport.call(master, REGISTRY_NAME, &RegistryRequest::Status, self.attempt_timeout).await;
        match reply {
            Ok(RegistryReply::Status(status)) => Ok(status),
            Ok(other) => Err(ClientError::Protocol(format!("{other:?}"))),
            Err(error) => Err(ClientError::Unavailable(self.attempt_timeout, error.to_string())),
        }
    }

    /// Starts streaming the changes of keys under `prefix` after `after` to the actor
    /// exported as `sink` on this node; returns the watch id. Any master serves watches.
    pub async fn watch(
        &mut self,
        prefix: &str,
        after: Revision,
        sink: &str,
        deadline: Duration,
    ) -> Result<u64, ClientError> {
        let request = RegistryRequest::Watch { prefix: prefix.to_owned(), after, sink: sink.to_owned() };
        match self.request(&request, deadline).await? {
            RegistryReply::Watching { watch } => Ok(watch),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Sends `request` to the current master, moving to the next on a timeout or a lost
    /// session, until `deadline` has passed.
    async fn request(&mut self, request: &RegistryRequest, deadline: Duration) -> Result<RegistryReply, ClientError> {
        let give_up = tokio::time::Instant::now() + deadline;
        let mut last_error = "no master configured".to_owned();
        while !self.masters.is_empty() && tokio::time::Instant::now() < give_up {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let master = self.masters[self.current % self.masters.len()].clone();
            match self.transport.call(&master, REGISTRY_NAME, request, self.attempt_timeout.min(left)).await {
                Ok(RegistryReply::Failed(failure @ (RegistryFailure::Timeout { .. } | RegistryFailure::Stopping))) => {
                    last_error = format!("{master}: {failure}");
                }
                Ok(RegistryReply::Failed(failure)) => return Err(ClientError::Refused(failure)),
                Ok(reply) => return Ok(reply),
                Err(error) => {
                    last_error = format!("{master}: {error}");
                    if matches!(error, CallError::Send(_)) {
                        // No session yet: give the transport a moment rather than spinning.
                        tokio::time::sleep(Duration::from_millis(5).min(left)).await;
                    }
                }
            }
            self.current = (self.current + 1) % self.masters.len();
        }
        Err(ClientError::Unavailable(deadline, last_error))
    }
}

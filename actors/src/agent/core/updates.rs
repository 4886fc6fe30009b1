//! The status-update stream of an agent, as Mesos's status update manager keeps it: each
//! task's updates are delivered in order, one at a time; the head is re-sent with exponential
//! backoff until the framework's acknowledgement (carrying its uuid) comes back through the
//! master, then the next one goes. Updates are checkpointed by the caller, so a restarted
//! agent resumes the stream where it stopped.

use std::collections::{BTreeMap, VecDeque};

use crate::mesos::core::TaskStatus;

/// Mesos's status-update retry: 10 s, doubling up to 10 minutes.
pub const DEFAULT_RETRY_MS: u64 = 10_000;
pub const DEFAULT_MAX_RETRY_MS: u64 = 600_000;

#[derive(Clone, Debug, Default)]
struct Queue {
    pending: VecDeque<TaskStatus>,
    /// When the head is due to be (re)sent.
    due_ms: u64,
    backoff_ms: u64,
}

/// What an acknowledgement did.
#[derive(Clone, Debug, PartialEq)]
pub enum Acknowledged {
    /// It matched the head: this is the next update to send (if any); `drained` when the
    /// task has no pending update left.
    Head { next: Option<TaskStatus>, drained: bool },
    /// It matched no head (a duplicate or stale acknowledgement): ignored.
    Ignored,
}

#[derive(Clone, Debug)]
pub struct UpdateStream {
    queues: BTreeMap<String, Queue>,
    retry_ms: u64,
    max_retry_ms: u64,
}

impl Default for UpdateStream {
    fn default() -> Self {
        UpdateStream::new(DEFAULT_RETRY_MS, DEFAULT_MAX_RETRY_MS)
    }
}

impl UpdateStream {
    pub fn new(retry_ms: u64, max_retry_ms: u64) -> UpdateStream {
        UpdateStream { queues: BTreeMap::new(), retry_ms: retry_ms.max(1), max_retry_ms: max_retry_ms.max(retry_ms) }
    }

    /// Queues an update; returns it when it is the task's head and goes out now.
    pub fn push(&mut self, status: TaskStatus, now_ms: u64) -> Option<TaskStatus> {
        let retry = self.retry_ms;
        let queue = self.queues.entry(status.task_id.clone()).or_default();
        queue.pending.push_back(status);
        if queue.pending.len() == 1 {
            queue.backoff_ms = retry;
            queue.due_ms = now_ms + retry;
            return queue.pending.front().cloned();
        }
        None
    }

    /// Restores a task's pending updates after a restart (they go out on the next
    /// [`UpdateStream::resend_all`]).
    pub fn restore(&mut self, task_id: &str, pending: Vec<TaskStatus>) {
        if !pending.is_empty() {
            let queue = Queue { pending: pending.into(), due_ms: 0, backoff_ms: self.retry_ms };
            self.queues.insert(task_id.to_owned(), queue);
        }
    }

    pub fn acknowledge(&mut self, task_id: &str, uuid: u128, now_ms: u64) -> Acknowledged {
        let retry = self.retry_ms;
        let Some(queue) = self.queues.get_mut(task_id) else { return Acknowledged::Ignored };
        if queue.pending.front().and_then(|s| s.uuid) != Some(uuid) {
            return Acknowledged::Ignored;
        }
        queue.pending.pop_front();
        queue.backoff_ms = retry;
        queue.due_ms = now_ms + retry;
        let next = queue.pending.front().cloned();
        let drained = next.is_none();
        if drained {
            self.queues.remove(task_id);
        }
        Acknowledged::Head { next, drained }
    }

    /// The heads whose retry time has come; each one's backoff doubles (up to the maximum).
    pub fn due(&mut self, now_ms: u64) -> Vec<TaskStatus> {
        let max = self.max_retry_ms;
        let mut out = Vec::new();
        for queue in self.queues.values_mut() {
            if queue.due_ms <= now_ms
                && let Some(head) = queue.pending.front()
            {
                out.push(head.clone());
                queue.backoff_ms = (queue.backoff_ms * 2).min(max);
                queue.due_ms = now_ms + queue.backoff_ms;
            }
        }
        out
    }

    /// Every head, now, with the backoff reset (after (re-)registering with a leader).
    pub fn resend_all(&mut self, now_ms: u64) -> Vec<TaskStatus> {
        let retry = self.retry_ms;
        self.queues
            .values_mut()
            .filter_map(|queue| {
                queue.backoff_ms = retry;
                queue.due_ms = now_ms + retry;
                queue.pending.front().cloned()
            })
            .collect()
    }

    /// A task's unacknowledged updates, oldest first (what the checkpoint keeps).
    pub fn pending(&self, task_id: &str) -> Vec<TaskStatus> {
        self.queues.get(task_id).map(|q| q.pending.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn has_pending(&self, task_id: &str) -> bool {
        self.queues.contains_key(task_id)
    }

    /// Drops a task's stream (its record is gone).
    pub fn forget(&mut self, task_id: &str) {
        self.queues.remove(task_id);
    }

    /// When the earliest head is due (to arm one timer).
    pub fn next_due(&self) -> Option<u64> {
        self.queues.values().map(|q| q.due_ms).min()
    }
}

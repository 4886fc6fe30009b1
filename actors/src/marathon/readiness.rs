//! The scheduler's readiness prober: an actor that makes the readiness probes the scheduler's
//! core asks for (`GET` on a new instance's port during a deployment) one after another, each
//! within its check's timeout, and tells the scheduler whether the instance is ready. Probes
//! run beside the scheduler, so a slow task never holds up the scheduler's own messages.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::actor::SchedulerMsg;
use super::core::scheduler::ReadinessProbe;
use crate::agent::http::{http_head, status_code};

#[derive(Debug, Default)]
pub struct ReadinessProber;

impl Actor for ReadinessProber {
    type Msg = ReadinessProbe;
    type State = ActorRef<SchedulerMsg>;
    type Arguments = ActorRef<SchedulerMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<ReadinessProbe>,
        scheduler: ActorRef<SchedulerMsg>,
    ) -> Result<ActorRef<SchedulerMsg>, ActorProcessingErr> {
        Ok(scheduler)
    }

    async fn handle(
        &self,
        _: ActorRef<ReadinessProbe>,
        probe: ReadinessProbe,
        scheduler: &mut ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let ready = is_ready(&probe).await;
        let _ = scheduler.send_message(SchedulerMsg::Ready { task_id: probe.task_id, ready });
        Ok(())
    }
}

/// Whether the probe's answer has one of its ready status codes, within its timeout.
async fn is_ready(probe: &ReadinessProbe) -> bool {
    let head = http_head(&probe.host, probe.port, &probe.path, probe.https);
    match tokio::time::timeout(Duration::from_millis(probe.timeout_ms), head).await {
        Ok(Ok(head)) => status_code(&head).is_some_and(|code| probe.codes.contains(&code)),
        _ => false,
    }
}

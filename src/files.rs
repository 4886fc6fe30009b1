//! The files relay of a master: operators read tasks' sandbox files (`flotilla task log`)
//! through any master, which asks the task's agent over the transport (the agents dial the
//! masters, so a master can reach every agent and an operator's client need not). Each read
//! is answered from a task of its own, so a slow agent holds up no other read.

use std::time::Duration;

use flotilla_actors::control_plane::CurrentTransport;
use flotilla_actors::mesos::protocol::{AGENT_FILES_NAME, FILES_RELAY_NAME, FileReply, ReadFile};
use flotilla_supervisors::{ChildKind, ChildSpec, StartContext, StartError, Started};
use flotilla_transport::{ReplyPort, Role, Sender, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// How long an agent may take to answer one read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RelayMsg(Sender, ReadFile, ReplyPort<FileReply>);

#[derive(Debug, Default)]
pub struct FilesRelay;

impl Actor for FilesRelay {
    type Msg = RelayMsg;
    type State = Transport;
    type Arguments = Transport;

    async fn pre_start(
        &self,
        myself: ActorRef<RelayMsg>,
        transport: Transport,
    ) -> Result<Transport, ActorProcessingErr> {
        transport.export_call_from::<ReadFile, RelayMsg>(FILES_RELAY_NAME, &myself, |from, read, reply| {
            RelayMsg(from, read, reply)
        });
        Ok(transport)
    }

    async fn post_stop(&self, _: ActorRef<RelayMsg>, transport: &mut Transport) -> Result<(), ActorProcessingErr> {
        transport.unexport(FILES_RELAY_NAME);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<RelayMsg>,
        msg: RelayMsg,
        transport: &mut Transport,
    ) -> Result<(), ActorProcessingErr> {
        let RelayMsg(from, read, reply) = msg;
        if from.role != Role::Operator {
            reply.send(FileReply::Refused(format!("{} may not read sandboxes (role {:?})", from.node, from.role)));
            return Ok(());
        }
        let transport = transport.clone();
        tokio::spawn(async move {
            let answer = match transport.call(&read.agent_id, AGENT_FILES_NAME, &read, READ_TIMEOUT).await {
                Ok(answer) => answer,
                Err(error) => FileReply::Refused(format!("agent {} did not answer: {error}", read.agent_id)),
            };
            reply.send(answer);
        });
        Ok(())
    }
}

/// The relay as a child of a master's `api` subtree.
pub fn files_relay_child(transport: CurrentTransport) -> ChildSpec {
    ChildSpec::new("files-relay", ChildKind::Worker, move |ctx: StartContext| {
        let transport = transport();
        async move {
            let transport = transport.ok_or_else(|| StartError("no running transport".into()))?;
            let (actor, _) = Actor::spawn_linked(None, FilesRelay, transport, ctx.supervisor.clone()).await?;
            Ok(Started::Running(actor.get_cell()))
        }
    })
}

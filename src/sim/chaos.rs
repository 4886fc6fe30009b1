//! Faults carried out on a simulated cluster: link faults through SimNet's model, node
//! faults through the nodes themselves.

use flotilla_transport::core::fault::Links;
use flotilla_transport::{Fault, FaultId, NodeSet};

use super::SimCluster;

/// What an injected fault left to undo.
#[derive(Debug)]
pub enum Injected {
    /// Link faults active in the network (a pause is two clogs: out of and into the node).
    Links(Vec<FaultId>),
    /// A node that crashed; healing restarts it.
    Crashed(String),
    /// A node whose clock was skewed; healing sets it right.
    Skewed(String),
    /// Nothing to undo: a killed actor (its supervisor restarts it), a restart, a heal.
    Done,
}

impl SimCluster {
    /// Carries `fault` out. A fault on a node that is down (or an actor that is not
    /// registered) does nothing, as it would on a real cluster.
    pub async fn inject(&self, fault: &Fault) -> anyhow::Result<Injected> {
        let injected = match fault {
            Fault::Drop { .. }
            | Fault::Delay { .. }
            | Fault::Duplicate { .. }
            | Fault::Reorder { .. }
            | Fault::Partition { .. }
            | Fault::Clog { .. } => Injected::Links(vec![self.net().inject(fault.clone())?]),
            Fault::Heal => {
                self.net().heal_all();
                Injected::Done
            }
            Fault::KillActor { node, name } => {
                if let Some(actor) = self.node(node).and_then(|node| node.whereis(name)) {
                    actor.kill();
                }
                Injected::Done
            }
            Fault::CrashNode { node } => {
                self.crash(node)?;
                Injected::Crashed(node.clone())
            }
            Fault::RestartNode { node } => {
                if !self.is_running(node) {
                    self.restart(node).await?;
                }
                Injected::Done
            }
            // A paused node neither sends nor receives; what it sent or was sent waits and is
            // delivered when it resumes. (Its own timers keep running: a simplification.)
            Fault::PauseNode { node, .. } => {
                let out = Fault::Clog { links: Links::new(NodeSet::one(node.clone()), NodeSet::All) };
                let into = Fault::Clog { links: Links::new(NodeSet::All, NodeSet::one(node.clone())) };
                Injected::Links(vec![self.net().inject(out)?, self.net().inject(into)?])
            }
            Fault::ClockSkew { node, skew_nanos } => {
                self.skew_clock(node, *skew_nanos)?;
                Injected::Skewed(node.clone())
            }
        };
        Ok(injected)
    }

    /// Undoes what [`Self::inject`] did.
    pub async fn heal(&self, injected: Injected) -> anyhow::Result<()> {
        match injected {
            Injected::Links(ids) => {
                for id in ids {
                    self.net().heal(id);
                }
            }
            Injected::Crashed(node) => {
                if !self.is_running(&node) {
                    self.restart(&node).await?;
                }
            }
            Injected::Skewed(node) => self.skew_clock(&node, 0)?,
            Injected::Done => {}
        }
        Ok(())
    }
}

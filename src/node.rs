//! A node's role and its root supervision tree (DESIGN.md §3).
//!
//! The tree has the shape every later component plugs into: the transport first (everything
//! else talks through it), then the role's subtrees, then the API. The root is
//! `rest_for_one`, so when the transport restarts, everything started after it restarts too
//! and never runs against a stale transport.

use std::time::Duration;

use flotilla_supervisors::tree;
use flotilla_supervisors::{
    ChildSpec, Node, NodeId, Strategy, Supervisor, SupervisorFlags, SupervisorRef, SupervisorSpec,
};

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Agent,
    /// One master and one agent in one process (`flotilla dev`).
    Dev,
}

impl Role {
    fn runs_master(self) -> bool {
        matches!(self, Role::Master | Role::Dev)
    }

    fn runs_agent(self) -> bool {
        matches!(self, Role::Agent | Role::Dev)
    }
}

/// An empty one_for_one subtree that later components fill.
fn subtree(name: &str) -> ChildSpec {
    let flags = SupervisorFlags::strategy(Strategy::OneForOne).with_intensity(10, Duration::from_secs(10));
    ChildSpec::supervisor(name, SupervisorSpec::new(flags))
}

/// The root supervision tree of a node with this role.
pub fn root_spec(role: Role) -> SupervisorSpec {
    let flags = SupervisorFlags::strategy(Strategy::RestForOne).with_intensity(3, Duration::from_secs(30));
    let mut spec = SupervisorSpec::new(flags).named("node").child(subtree("transport"));
    if role.runs_master() {
        spec = spec.child(subtree("control-plane"));
    }
    if role.runs_agent() {
        spec = spec.child(subtree("agent"));
    }
    spec.child(subtree("discovery")).child(subtree("api"))
}

/// A started node: its context and root supervisor.
pub struct RunningNode {
    pub node: Node,
    pub root: SupervisorRef,
}

impl RunningNode {
    pub async fn start(id: NodeId, role: Role) -> anyhow::Result<Self> {
        let node = Node::builder(id).start().await?;
        let root = Supervisor::spawn(node.clone(), root_spec(role), None).await?;
        Ok(RunningNode { node, root })
    }

    /// The live tree, one child per line.
    pub async fn render_tree(&self) -> String {
        tree::render(&self.root, &format!("node {} (rest_for_one)", self.node.id())).await
    }

    /// Stops the tree in reverse start order, then the node's runtime.
    pub async fn shutdown(self, timeout: Duration) -> anyhow::Result<()> {
        self.root.shutdown(timeout).await?;
        self.node.shutdown();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_ids(role: Role) -> Vec<String> {
        root_spec(role).children.iter().map(|c| c.id.to_string()).collect()
    }

    #[test]
    fn each_role_gets_its_subtrees_after_the_transport() {
        assert_eq!(child_ids(Role::Dev), ["transport", "control-plane", "agent", "discovery", "api"]);
        assert_eq!(child_ids(Role::Master), ["transport", "control-plane", "discovery", "api"]);
        assert_eq!(child_ids(Role::Agent), ["transport", "agent", "discovery", "api"]);
    }

    #[tokio::test]
    async fn a_dev_node_starts_renders_its_tree_and_stops() {
        let node = RunningNode::start(NodeId::new("dev").unwrap(), Role::Dev).await.unwrap();
        let tree = node.render_tree().await;
        assert!(tree.starts_with("node dev (rest_for_one)\n"), "{tree}");
        assert!(tree.contains("  control-plane (supervisor, running)"), "{tree}");
        assert_eq!(node.node.whereis("node").map(|c| c.get_id()), Some(node.root.cell().get_id()));
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

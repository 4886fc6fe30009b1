//! Renders a live supervision tree, as `flotilla dev` prints it at start.

use std::fmt::Write;

use crate::core::spec::ChildKind;
use crate::core::supervisor::ChildStatus;
use crate::supervisor::SupervisorRef;

/// One line per child, indented by depth: id, kind, status, and the strategy of supervisors.
pub async fn render(root: &SupervisorRef, root_label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{root_label}");
    render_children(root, 1, &mut out).await;
    out
}

async fn render_children(sup: &SupervisorRef, depth: usize, out: &mut String) {
    let children = match sup.which_children().await {
        Ok(children) => children,
        Err(err) => {
            let _ = writeln!(out, "{}(unavailable: {err})", "  ".repeat(depth));
            return;
        }
    };
    for child in children {
        let kind = match child.kind {
            ChildKind::Worker => "worker",
            ChildKind::Supervisor => "supervisor",
        };
        let status = match child.status {
            ChildStatus::Running => "running",
            ChildStatus::Stopped => "stopped",
            ChildStatus::Restarting => "restarting",
        };
        let _ = writeln!(out, "{}{} ({kind}, {status})", "  ".repeat(depth), child.id);
        if let (ChildKind::Supervisor, Some(actor)) = (child.kind, child.actor) {
            Box::pin(render_children(&SupervisorRef::from_cell(actor), depth + 1, out)).await;
        }
    }
}

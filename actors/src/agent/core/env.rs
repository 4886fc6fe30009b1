//! The environment a task is given, as Mesos's command executor and Marathon give it: the
//! framework's variables first, then Mesos's, which win (a task cannot fake its own id).

use std::collections::BTreeMap;

use crate::mesos::core::resources::format_milli;
use crate::mesos::protocol::TaskInfo;

/// Where the task runs, as far as its environment is concerned.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    pub agent_id: &'a str,
    pub hostname: &'a str,
    pub sandbox: &'a str,
    /// The agent's endpoint (`MESOS_AGENT_ENDPOINT`).
    pub agent_endpoint: &'a str,
}

pub fn task_environment(task: &TaskInfo, at: &Placement<'_>) -> BTreeMap<String, String> {
    let mut env = task.env.clone();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("MESOS_TASK_ID", task.task_id.clone());
    set("MESOS_SANDBOX", at.sandbox.to_owned());
    set("MESOS_DIRECTORY", at.sandbox.to_owned());
    set("MESOS_AGENT_ID", at.agent_id.to_owned());
    set("MESOS_SLAVE_ID", at.agent_id.to_owned());
    set("MESOS_FRAMEWORK_ID", task.framework_id.clone());
    set("MESOS_EXECUTOR_ID", task.task_id.clone());
    set("MESOS_AGENT_ENDPOINT", at.agent_endpoint.to_owned());
    set("MESOS_CHECKPOINT", "1".to_owned());
    set("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", format!("{}secs", format_milli(task.kill_grace_ms)));
    set("HOST", at.hostname.to_owned());
    let ports: Vec<u64> = task.resources.ports().iter().flat_map(|(b, e)| b..=e).collect();
    for (i, port) in ports.iter().enumerate() {
        set(&format!("PORT{i}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        set("PORT", first.to_string());
    }
    set("PORTS", ports.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    if !env.contains_key("PATH") {
        env.insert("PATH".to_owned(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    }
    env
}

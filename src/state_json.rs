//! The leading master's state in Mesos's JSON shape (`/master/state`, `/state`, and
//! `--json` of `flotilla node list` / `task list`): the field names mesos-dns, dcos-cli and
//! other tools read (`slaves`, `frameworks[].tasks[]`, `leader`, `hostname`, `id`, ...).

use flotilla_actors::mesos::core::resources::{Resources, format_milli};
use flotilla_actors::mesos::protocol::{AgentView, FrameworkView, MasterState, TaskView};
use serde_json::{Map, Value, json};

/// Mesos's version this state imitates.
pub const MESOS_VERSION: &str = "1.11.0";

/// A resource bag as Mesos's state endpoint shows it: scalars as numbers (cpus, mem, disk and
/// gpus always present), ranges in text form.
pub fn resources_json(resources: &Resources) -> Value {
    let mut map = Map::new();
    for name in ["cpus", "mem", "disk", "gpus"] {
        map.insert(name.to_owned(), json!(resources.scalar(name)));
    }
    for (name, milli) in resources.scalars() {
        map.insert(name.to_owned(), json!(format_milli(milli).parse::<f64>().unwrap_or(0.0)));
    }
    for (name, ranges) in resources.all_ranges() {
        map.insert(name.to_owned(), json!(ranges.to_string()));
    }
    Value::Object(map)
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn task_json(task: &TaskView) -> Value {
    let info = &task.task;
    let statuses: Vec<Value> = task
        .statuses
        .iter()
        .map(|s| {
            let mut status = json!({ "state": s.state.name(), "timestamp": seconds(s.timestamp_ms) });
            if let Some(reason) = s.reason {
                status["reason"] = json!(reason.name());
            }
            if !s.message.is_empty() {
                status["message"] = json!(s.message);
            }
            if let Some(healthy) = s.healthy {
                status["healthy"] = json!(healthy);
            }
            status
        })
        .collect();
    let labels: Vec<Value> = info.labels.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
    json!({
        "id": info.task_id,
        "name": info.name,
        "framework_id": info.framework_id,
        "executor_id": "",
        "slave_id": task.agent_id,
        "state": task.state.name(),
        "resources": resources_json(&info.resources),
        "role": info.role,
        "statuses": statuses,
        "labels": labels,
    })
}

fn agent_json(agent: &AgentView) -> Value {
    let info = &agent.info;
    let mut total = Resources::new();
    let mut reserved = Map::new();
    for (role, resources) in &info.resources {
        total.add(resources);
        if role != "*" {
            reserved.insert(role.clone(), resources_json(resources));
        }
    }
    let unreserved = info.resources.get("*").cloned().unwrap_or_default();
    let attributes: Map<String, Value> = info.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "id": info.id,
        "pid": format!("slave(1)@{}", info.hostname),
        "hostname": info.hostname,
        "registered_time": seconds(agent.registered_ms),
        "resources": resources_json(&total),
        "used_resources": resources_json(&agent.used),
        "offered_resources": resources_json(&agent.offered),
        "reserved_resources": reserved,
        "unreserved_resources": resources_json(&unreserved),
        "attributes": attributes,
        "active": agent.active,
        "version": MESOS_VERSION,
        "isolation": { "driver": info.driver, "missing": info.isolation_missing },
    })
}

fn framework_json(framework: &FrameworkView, state: &MasterState) -> Value {
    let of = |tasks: &[TaskView]| -> Vec<Value> {
        tasks.iter().filter(|t| t.task.framework_id == framework.id).map(task_json).collect()
    };
    json!({
        "id": framework.id,
        "name": framework.name,
        "pid": "",
        "hostname": state.leader,
        "user": "root",
        "role": framework.roles.first().cloned().unwrap_or_else(|| "*".to_owned()),
        "roles": framework.roles,
        "active": framework.active,
        "connected": framework.active,
        "recovered": false,
        "checkpoint": true,
        "capabilities": ["MULTI_ROLE", "PARTITION_AWARE", "TASK_KILLING_STATE"],
        "failover_timeout": 0,
        "principal": "",
        "webui_url": "",
        "labels": [],
        "resources": resources_json(&sum(&framework.used, &framework.offered)),
        "used_resources": resources_json(&framework.used),
        "offered_resources": resources_json(&framework.offered),
        "unreserved_resources": resources_json(&framework.used),
        "tasks": of(&state.tasks),
        "unreachable_tasks": [],
        "completed_tasks": of(&state.completed_tasks),
        "offers": [],
        "executors": [],
    })
}

fn sum(a: &Resources, b: &Resources) -> Resources {
    let mut out = a.clone();
    out.add(b);
    out
}

/// `/master/state`.
pub fn master_state_json(state: &MasterState) -> Value {
    let count = |active: bool| state.agents.iter().filter(|a| a.active == active).count();
    let known: Vec<&str> = state.frameworks.iter().map(|f| f.id.as_str()).collect();
    let orphans: Vec<Value> =
        state.tasks.iter().filter(|t| !known.contains(&t.task.framework_id.as_str())).map(task_json).collect();
    json!({
        "version": MESOS_VERSION,
        "flotilla_version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "start_time": seconds(state.elected_ms),
        "elected_time": seconds(state.elected_ms),
        "id": format!("{}-{}", state.leader, state.term),
        "pid": format!("master@{}", state.leader),
        "hostname": state.leader,
        "leader": format!("master@{}", state.leader),
        "leader_info": { "id": format!("{}-{}", state.leader, state.term), "hostname": state.leader, "pid": format!("master@{}", state.leader) },
        "activated_slaves": count(true),
        "deactivated_slaves": 0,
        "unreachable_slaves": count(false),
        "recovering": state.recovering,
        "capabilities": ["AGENT_UPDATE", "QUOTA_V2"],
        "flags": {},
        "slaves": state.agents.iter().map(agent_json).collect::<Vec<_>>(),
        "recovered_slaves": [],
        "frameworks": state.frameworks.iter().map(|f| framework_json(f, state)).collect::<Vec<_>>(),
        "completed_frameworks": [],
        "orphan_tasks": orphans,
        "unregistered_frameworks": [],
    })
}

//! The operator's views and commands on a running cluster: `flotilla node list` and
//! `flotilla task list|run|kill`, as tables for people and `--json` for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use flotilla_actors::agent::driver::TaskCommand as Command;
use flotilla_actors::launcher::protocol::{LauncherReply, LauncherRequest};
use flotilla_actors::mesos::core::TaskState;
use flotilla_actors::mesos::core::health::{HealthCheck, Probe};
use flotilla_actors::mesos::core::resources::{Ranges, Resources, to_milli};
use flotilla_actors::mesos::protocol::{MAX_READ_BYTES, MasterState, ReadFile, TaskInfo, TaskView};

use crate::cli::{ClusterConnection, HealthFlags, NodeCommand, TaskCommand};
use crate::client::ClusterClient;
use crate::state_json::master_state_json;

/// `cpus:0.5 mem:128` for a table cell.
fn brief(resources: &Resources) -> String {
    let mut parts = vec![format!("cpus:{}", resources.scalar("cpus")), format!("mem:{}", resources.scalar("mem"))];
    let ports = resources.ports();
    if !ports.is_empty() {
        parts.push(format!("ports:{ports}"));
    }
    parts.join(" ")
}

async fn with_state(connection: &ClusterConnection) -> anyhow::Result<MasterState> {
    let client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
    let state = client.master_state(Duration::from_secs(connection.timeout_secs)).await;
    client.close().await;
    state
}

/// `flotilla node list`.
pub async fn node(connection: ClusterConnection, command: NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::List { json } = command;
    let state = with_state(&connection).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&master_state_json(&state)["slaves"])?);
        return Ok(());
    }
    println!("{:<16} {:<20} {:<12} {:<10} {:<40} {:<30}", "ID", "HOSTNAME", "STATE", "DRIVER", "RESOURCES", "USED");
    for agent in &state.agents {
        let mut total = Resources::new();
        for resources in agent.info.resources.values() {
            total.add(resources);
        }
        let status = if agent.active { "active" } else { "unreachable" };
        println!(
            "{:<16} {:<20} {:<12} {:<10} {:<40} {:<30}",
            agent.info.id,
            agent.info.hostname,
            status,
            agent.info.driver,
            brief(&total),
            brief(&agent.used)
        );
    }
    Ok(())
}

/// The command health check the flags ask for: the first check at once (the grace period
/// covers a slow start).
fn health_check(flags: &HealthFlags) -> Option<HealthCheck> {
    let value = flags.health_cmd.clone()?;
    Some(HealthCheck {
        probe: Probe::Command { value },
        delay_ms: 0,
        interval_ms: to_milli(flags.health_interval_secs),
        timeout_ms: to_milli(flags.health_timeout_secs),
        grace_period_ms: to_milli(flags.health_grace_secs),
        max_consecutive_failures: flags.health_max_failures,
    })
}

/// A task's state with its health when a check reported one (`TASK_RUNNING (healthy)`).
fn state_with_health(task: &TaskView) -> String {
    match task.statuses.iter().rev().find_map(|s| s.healthy) {
        Some(true) if task.state == TaskState::Running => format!("{} (healthy)", task.state.name()),
        Some(false) if task.state == TaskState::Running => format!("{} (unhealthy)", task.state.name()),
        _ => task.state.name().to_owned(),
    }
}

fn task_row(task: &TaskView) {
    println!(
        "{:<36} {:<26} {:<16} {:<30} {}",
        task.task.task_id,
        state_with_health(task),
        task.agent_id,
        brief(&task.task.resources),
        task.statuses.last().map(|s| s.message.as_str()).unwrap_or("")
    );
}

/// `flotilla task list|run|kill`.
pub async fn task(connection: ClusterConnection, command: TaskCommand) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(connection.timeout_secs);
    match command {
        TaskCommand::List { all, json } => {
            let state = with_state(&connection).await?;
            if json {
                let mut tasks = state.tasks.clone();
                if all {
                    tasks.extend(state.completed_tasks.iter().cloned());
                }
                let value = master_state_json(&MasterState { tasks, completed_tasks: Vec::new(), ..state });
                let tasks: Vec<_> = value["frameworks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
                    .chain(value["orphan_tasks"].as_array().cloned().unwrap_or_default())
                    .collect();
                println!("{}", serde_json::to_string_pretty(&tasks)?);
                return Ok(());
            }
            println!("{:<36} {:<26} {:<16} {:<30} MESSAGE", "ID", "STATE", "AGENT", "RESOURCES");
            state.tasks.iter().for_each(task_row);
            if all {
                state.completed_tasks.iter().for_each(task_row);
            }
            Ok(())
        }
        TaskCommand::Run { name, cpus, mem, disk, ports, env, grace_secs, health, command } => {
            let mut resources = Resources::cpus_mem_disk(cpus, mem, disk);
            if ports > 0 {
                // Any `ports` ports: the launcher picks them from the offer.
                resources.add_ranges("ports", &Ranges::single(0, ports - 1));
            }
            let task = TaskInfo {
                task_id: String::new(),
                name,
                framework_id: String::new(),
                role: String::new(),
                command: Command { shell: true, value: command.join(" "), arguments: Vec::new() },
                resources,
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                labels: BTreeMap::new(),
                kill_grace_ms: to_milli(grace_secs),
                health_check: health_check(&health),
                fetch: Vec::new(),
                discovery: None,
            };
            match launcher(&connection, &LauncherRequest::Run(Box::new(task)), deadline).await? {
                LauncherReply::Accepted { task_id } => println!("{task_id}"),
                other => refused(other)?,
            }
            Ok(())
        }
        TaskCommand::Log { id, stderr, tail, follow } => {
            let client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
            let result = task_log(&client, deadline, &id, if stderr { "stderr" } else { "stdout" }, tail, follow).await;
            client.close().await;
            result
        }
        TaskCommand::Kill { id } => {
            match launcher(&connection, &LauncherRequest::Kill { task_id: id }, deadline).await? {
                LauncherReply::Killing { task_id } => println!("killing {task_id}"),
                other => refused(other)?,
            }
            Ok(())
        }
    }
}

/// How often `task log --follow` looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// `flotilla task log`: the file's last `tail` bytes (or all of it), then with `follow` what
/// is appended, as it comes.
async fn task_log(
    client: &ClusterClient,
    deadline: Duration,
    task_id: &str,
    file: &str,
    tail: u64,
    follow: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let state = client.master_state(deadline).await?;
    let Some(task) = state.tasks.iter().chain(state.completed_tasks.iter()).find(|t| t.task.task_id == task_id) else {
        bail!("no task '{task_id}' is known to the leading master (see `flotilla task list --all`)");
    };
    let read = |offset: u64| ReadFile {
        agent_id: task.agent_id.clone(),
        task_id: task_id.to_owned(),
        file: file.to_owned(),
        offset,
        length: MAX_READ_BYTES,
    };
    let (_, size) = client.read_file(&state.leader, &read(u64::MAX), deadline).await?;
    let mut offset = if tail == 0 { 0 } else { size.saturating_sub(tail) };
    let mut stdout = std::io::stdout();
    loop {
        let (data, size) = client.read_file(&state.leader, &read(offset), deadline).await?;
        stdout.write_all(&data)?;
        offset += data.len() as u64;
        if offset < size {
            continue;
        }
        if !follow {
            return Ok(());
        }
        stdout.flush()?;
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

async fn launcher(
    connection: &ClusterConnection,
    request: &LauncherRequest,
    deadline: Duration,
) -> anyhow::Result<LauncherReply> {
    let client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
    let reply = client.launcher(request, deadline).await;
    client.close().await;
    reply
}

fn refused(reply: LauncherReply) -> anyhow::Result<()> {
    match reply {
        LauncherReply::Refused(reason) => bail!("refused: {reason}"),
        other => bail!("unexpected answer from the launcher: {other:?}"),
    }
}

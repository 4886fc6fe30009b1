//! `flotilla app ...` and `flotilla deployment ...`: the service scheduler's REST API v2 as an
//! operator's commands. Each command is one Marathon request carried to the leading master
//! over the transport (under the operator's certificate) — the same request and answer the
//! HTTP API gives — shown as a table for people, or as the API's JSON with `--json`.
//!
//! Exit status: 0 done; 1 refused (the API's message and, for an invalid app, every field
//! with what is wrong with it); 3 no master answered in time.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse};
use serde_json::{Value, json};

use crate::cli::{AppCommand, ClusterConnection, DeploymentCommand};
use crate::client::{ClusterClient, NoAnswer};

/// How often `--wait` and `deployment watch` look at the deployments.
const POLL: Duration = Duration::from_millis(250);

/// `flotilla app ...`.
pub async fn app(connection: ClusterConnection, command: AppCommand) -> anyhow::Result<()> {
    let api = Api::connect(&connection).await?;
    let result = run_app(&api, command).await;
    api.client.close().await;
    result
}

/// `flotilla deployment ...`.
pub async fn deployment(connection: ClusterConnection, command: DeploymentCommand) -> anyhow::Result<()> {
    let api = Api::connect(&connection).await?;
    let result = match command {
        DeploymentCommand::List { json } => {
            let deployments = api.get("/v2/deployments").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&deployments)?);
            } else {
                print_deployments(&deployments);
            }
            Ok(())
        }
        DeploymentCommand::Watch { id } => watch(&api, id.as_deref()).await,
        DeploymentCommand::Cancel { id, force } => {
            let path = format!("/v2/deployments/{id}{}", force_query(force));
            let answer = api.send("DELETE", &path, Vec::new()).await?;
            if answer.status == 202 {
                println!("deployment {id} stopped");
            } else {
                println!("deployment {id} cancelled; rolling back in {}", deployment_id(&answer));
            }
            Ok(())
        }
    };
    api.client.close().await;
    result
}

async fn run_app(api: &Api, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Add { file, wait } => {
            let answer = api.send("POST", "/v2/apps", read_definition(&file)?).await?;
            let app = answer.json_body();
            println!("created {} (deployment {})", app["id"].as_str().unwrap_or("?"), deployment_id(&answer));
            finish(api, &answer, wait).await
        }
        AppCommand::List { json } => {
            let apps = api.get("/v2/apps").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&apps["apps"])?);
            } else {
                print_apps(&apps["apps"]);
            }
            Ok(())
        }
        AppCommand::Show { id, json } => {
            let app = api.get(&format!("/v2/apps/{}", trim(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&app["app"])?);
            } else {
                print_app(&app["app"]);
            }
            Ok(())
        }
        AppCommand::Update { id, file, force, wait } => {
            let path = format!("/v2/apps/{}{}", trim(&id), force_query(force));
            let answer = api.send("PUT", &path, read_definition(&file)?).await?;
            println!("updating /{} (deployment {})", trim(&id), deployment_id(&answer));
            finish(api, &answer, wait).await
        }
        AppCommand::Scale { id, instances, force, wait } => {
            let path = format!("/v2/apps/{}{}", trim(&id), force_query(force));
            let body = serde_json::to_vec(&json!({ "instances": instances }))?;
            let answer = api.send("PUT", &path, body).await?;
            println!("scaling /{} to {instances} (deployment {})", trim(&id), deployment_id(&answer));
            finish(api, &answer, wait).await
        }
        AppCommand::Restart { id, force, wait } => {
            let path = format!("/v2/apps/{}/restart{}", trim(&id), force_query(force));
            let answer = api.send("POST", &path, Vec::new()).await?;
            println!("restarting /{} (deployment {})", trim(&id), deployment_id(&answer));
            finish(api, &answer, wait).await
        }
        AppCommand::Remove { id, force, wait } => {
            let path = format!("/v2/apps/{}{}", trim(&id), force_query(force));
            let answer = api.send("DELETE", &path, Vec::new()).await?;
            println!("removing /{} (deployment {})", trim(&id), deployment_id(&answer));
            finish(api, &answer, wait).await
        }
    }
}

/// The leading master's Marathon API, reached over the transport.
struct Api {
    client: ClusterClient,
    deadline: Duration,
}

impl Api {
    async fn connect(connection: &ClusterConnection) -> anyhow::Result<Api> {
        let client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
        Ok(Api { client, deadline: Duration::from_secs(connection.timeout_secs) })
    }

    /// One request; a 4xx or 5xx answer is an error that says what the API said.
    async fn send(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<RestResponse> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = RestRequest { method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), body };
        let answer = self
            .client
            .marathon(request, self.deadline)
            .await
            .map_err(|error| anyhow::Error::new(NoAnswer(format!("{error:#}"))))?;
        if answer.status >= 400 {
            bail!("{}", refusal(&answer));
        }
        Ok(answer)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send("GET", path, Vec::new()).await?.json_body())
    }
}

/// An error answer for people: the message, each invalid field with its errors, and the
/// deployments that lock an app.
fn refusal(answer: &RestResponse) -> String {
    let body = answer.json_body();
    let mut text = format!(
        "refused ({}): {}",
        answer.status,
        body["message"].as_str().unwrap_or_else(|| std::str::from_utf8(&answer.body).unwrap_or("?"))
    );
    for detail in body["details"].as_array().into_iter().flatten() {
        let errors: Vec<&str> = detail["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        text.push_str(&format!("\n  {}: {}", detail["path"].as_str().unwrap_or("/"), errors.join("; ")));
    }
    if answer.status == 409 && body["deployments"].is_array() {
        text.push_str("\n  (add --force to cancel the running deployment)");
    }
    text
}

fn deployment_id(answer: &RestResponse) -> String {
    let body = answer.json_body();
    body["deploymentId"]
        .as_str()
        .or_else(|| body["deployments"][0]["id"].as_str())
        .map(str::to_owned)
        .or_else(|| answer.headers.iter().find(|(k, _)| k == "Marathon-Deployment-Id").map(|(_, v)| v.clone()))
        .unwrap_or_else(|| "none".to_owned())
}

/// With `--wait`, follows the deployment the answer started until it is over.
async fn finish(api: &Api, answer: &RestResponse, wait: bool) -> anyhow::Result<()> {
    if wait {
        watch(api, Some(&deployment_id(answer))).await?;
    }
    Ok(())
}

fn trim(id: &str) -> &str {
    id.trim_matches('/')
}

fn force_query(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
}

/// The app definition in `file`, or on standard input for `-`; checked to be JSON here so a
/// typo is reported with its line before anything is sent.
fn read_definition(file: &str) -> anyhow::Result<Vec<u8>> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text).context("reading the app definition from standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    serde_json::from_str::<Value>(&text).with_context(|| format!("{file} is not JSON"))?;
    Ok(text.into_bytes())
}

fn print_apps(apps: &Value) {
    println!("{:<32} {:>9} {:>6} {:>8} {:<12} CMD", "ID", "RUNNING", "CPUS", "MEM", "DEPLOYING");
    for app in apps.as_array().into_iter().flatten() {
        let deploying = if app["deployments"].as_array().is_some_and(|d| !d.is_empty()) { "yes" } else { "" };
        println!(
            "{:<32} {:>9} {:>6} {:>8} {:<12} {}",
            app["id"].as_str().unwrap_or(""),
            format!("{}/{}", app["tasksRunning"], app["instances"]),
            plain(&app["cpus"]),
            plain(&app["mem"]),
            deploying,
            app["cmd"].as_str().unwrap_or("")
        );
    }
}

fn print_app(app: &Value) {
    for key in ["id", "cmd", "instances", "cpus", "mem", "disk", "version"] {
        println!("{key:<12} {}", plain(&app[key]));
    }
    let ports: Vec<String> =
        app["portDefinitions"].as_array().into_iter().flatten().map(|p| plain(&p["port"])).collect();
    println!("{:<12} {}", "ports", ports.join(","));
    let deployments: Vec<String> =
        app["deployments"].as_array().into_iter().flatten().map(|d| plain(&d["id"])).collect();
    println!(
        "{:<12} {}",
        "deployments",
        if deployments.is_empty() { "none".to_owned() } else { deployments.join(",") }
    );
    println!();
    println!("{:<52} {:<14} {:<20} {:<16} STARTED", "TASK", "STATE", "HOST", "PORTS");
    for task in app["tasks"].as_array().into_iter().flatten() {
        let ports: Vec<String> = task["ports"].as_array().into_iter().flatten().map(plain).collect();
        let health = match task["healthCheckResults"][0]["alive"].as_bool() {
            Some(true) => " healthy",
            Some(false) => " unhealthy",
            None => "",
        };
        println!(
            "{:<52} {:<14} {:<20} {:<16} {}",
            plain(&task["id"]),
            format!("{}{health}", plain(&task["state"])),
            plain(&task["host"]),
            ports.join(","),
            plain(&task["startedAt"])
        );
    }
}

fn print_deployments(deployments: &Value) {
    println!("{:<38} {:<8} {:<32} CURRENT ACTIONS", "ID", "STEP", "APPS");
    for deployment in deployments.as_array().into_iter().flatten() {
        println!(
            "{:<38} {:<8} {:<32} {}",
            plain(&deployment["id"]),
            step_of(deployment),
            apps_of(deployment),
            actions_of(deployment)
        );
    }
}

fn step_of(deployment: &Value) -> String {
    format!("{}/{}", deployment["currentStep"], deployment["totalSteps"])
}

fn apps_of(deployment: &Value) -> String {
    let apps: Vec<String> = deployment["affectedApps"].as_array().into_iter().flatten().map(plain).collect();
    apps.join(",")
}

fn actions_of(deployment: &Value) -> String {
    let actions: Vec<String> = deployment["currentActions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{} {}", plain(&a["action"]), plain(&a["app"])))
        .collect();
    actions.join(", ")
}

/// A JSON value as text without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Follows one deployment (or all) until none is left: a line rewritten in place on a
/// terminal, a new line per change otherwise.
async fn watch(api: &Api, id: Option<&str>) -> anyhow::Result<()> {
    let live = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let deployments = api.get("/v2/deployments").await?;
        let watched: Vec<&Value> = deployments
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| id.is_none_or(|id| d["id"].as_str() == Some(id)))
            .collect();
        let line = match watched.as_slice() {
            [] => {
                let done = match id {
                    Some(id) => format!("deployment {id}: done"),
                    None => "no deployment is running".to_owned(),
                };
                if live {
                    println!("\r\x1b[2K{done}");
                } else {
                    println!("{done}");
                }
                return Ok(());
            }
            watched => watched
                .iter()
                .map(|d| format!("{} step {}: {}", plain(&d["id"]), step_of(d), actions_of(d)))
                .collect::<Vec<_>>()
                .join(" | "),
        };
        if line != last {
            if live {
                print!("\r\x1b[2K{line}");
                std::io::stdout().flush()?;
            } else {
                println!("{line}");
            }
            last = line;
        }
        tokio::time::sleep(POLL).await;
    }
}

//! Marathon's REST API v2 as a pure function: a request (method, path, query, body) and the
//! scheduler's state in, a response (status, headers, JSON body) and the scheduler's effects
//! out. The HTTP server is a thin shell around it (and forwards requests from followers to the
//! leader, where this runs); so every route, status code and error body is tested here
//! without sockets.
//!
//! Routes answer under `/v2/...`; the shell strips the `/marathon` and `/service/marathon`
//! prefixes first ([`strip_prefix`]). `/v2/events` (a stream) and `/ping` live in the shell.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::app::{self, AppDefinition, AppError, AppSpec};
use super::app_json::{self};
use super::path::PathId;
use super::scheduler::{Accepted, AppRecord, ChangeError, Effect, Instance, SchedulerCore};
use super::timestamp::Timestamp;
use crate::mesos::core::TaskState;

/// The lowest service port Marathon hands out (`--local_port_min`).
pub const SERVICE_PORT_MIN: i32 = 10_000;
/// One past the highest (`--local_port_max`).
pub const SERVICE_PORT_MAX: i32 = 20_000;

/// An HTTP request as the API sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestRequest {
    pub method: String,
    /// The path without the query, prefixes already stripped.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    pub body: Vec<u8>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestResponse {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RestResponse {
    pub fn json(status: u16, body: &Value) -> RestResponse {
        RestResponse {
            status,
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    pub fn message(status: u16, message: &str) -> RestResponse {
        RestResponse::json(status, &json!({ "message": message }))
    }

    pub fn text(status: u16, text: &str) -> RestResponse {
        RestResponse {
            status,
            content_type: "text/plain".to_owned(),
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> RestResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The body as JSON (for tests and clients).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What `/v2/info` and `/v2/leader` tell besides the scheduler's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `host:port` of the leader's HTTP API.
    pub leader: String,
    pub framework_id: String,
    pub http_port: u16,
    pub version: String,
}

/// The path under the API's root: `/marathon/v2/apps` and `/service/marathon/v2/apps` are
/// `/v2/apps`.
pub fn strip_prefix(path: &str) -> &str {
    for prefix in ["/service/marathon", "/marathon"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return if rest.is_empty() { "/" } else { rest };
        }
    }
    path
}

/// Answers one request; the effects are sent once the scheduler's writes are stored.
pub fn handle(
    core: &mut SchedulerCore,
    request: &RestRequest,
    server: &ServerInfo,
    now: Timestamp,
) -> (RestResponse, Vec<Effect>) {
    let query = Query::parse(&request.query);
    let path = request.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method.as_str();
    let response = match (method, segments.as_slice()) {
        ("GET", ["v2", "info"]) => RestResponse::json(200, &info(core, server)),
        ("GET", ["v2", "leader"]) => RestResponse::json(200, &json!({ "leader": server.leader })),
        ("GET", ["ping"]) => RestResponse::text(200, "pong"),
        ("GET", ["metrics"]) => RestResponse::json(200, &metrics(core)),
        ("GET", ["metrics", "prometheus"]) => RestResponse::text(200, &prometheus(core)),
        ("GET", ["v2", "apps"]) => list_apps(core, &query, now),
        ("POST", ["v2", "apps"]) => create_app(core, &request.body, &query, now),
        ("PUT" | "PATCH", ["v2", "apps"]) => update_apps(core, method, &request.body, &query, now),
        ("GET", ["v2", "tasks"]) => list_tasks(core, &query),
        ("POST", ["v2", "tasks", "delete"]) => delete_tasks(core, &request.body, &query, now),
        ("GET", ["v2", "deployments"]) => {
            RestResponse::json(200, &Value::Array(core.runs().map(|r| to_json(&r.info_view())).collect()))
        }
        ("DELETE", ["v2", "deployments", id]) => cancel_deployment(core, id, &query, now),
        ("GET", ["v2", "queue"]) => queue(core, &query, now),
        ("DELETE", ["v2", "queue", rest @ .., "delay"]) => reset_delay(core, rest, now),
        ("GET", ["v2", "groups", rest @ ..]) => get_group(core, rest, now),
        ("DELETE", ["v2", "groups", rest @ ..]) if !rest.is_empty() => delete_group(core, rest, &query, now),
        ("POST" | "PUT", ["v2", "groups", rest @ ..]) => put_group(core, rest, &request.body, &query, now),
        (_, ["v2", "apps", rest @ ..]) => app_route(core, method, rest, &request.body, &query, now),
        (_, ["v2", ..]) | (_, ["ping" | "metrics", ..]) => RestResponse::message(405, "Method Not Allowed"),
        _ => RestResponse::message(404, &format!("Not found: {}", request.path)),
    };
    let effects = core.converge(now);
    (response, effects)
}

/// The routes under `/v2/apps/{id...}`: the id is every segment up to a keyword.
fn app_route(
    core: &mut SchedulerCore,
    method: &str,
    rest: &[&str],
    body: &[u8],
    query: &Query,
    now: Timestamp,
) -> RestResponse {
    let keyword = rest.iter().position(|s| matches!(*s, "restart" | "tasks" | "versions"));
    let (id_segments, tail) = rest.split_at(keyword.unwrap_or(rest.len()));
    let id = match parse_id(id_segments) {
        Ok(id) => id,
        Err(response) => return response,
    };
    match (method, tail) {
        ("GET", []) => match core.app(&id) {
            Some(record) => {
                let embed = Embed::for_app(query, true);
                RestResponse::json(200, &json!({ "app": app_info(core, record, &embed) }))
            }
            None => unknown_app(&id),
        },
        ("PUT" | "PATCH", []) => put_app(core, method, &id, body, query, now),
        ("DELETE", []) => {
            let mut target = all_apps(core);
            if target.remove(&id).is_none() {
                return unknown_app(&id);
            }
            deployment_result(core.change(target, query.flag("force"), BTreeMap::new(), now), 200)
        }
        ("POST", ["restart"]) => {
            let Some(record) = core.app(&id) else { return unknown_app(&id) };
            let mut target = all_apps(core);
            target.insert(id.clone(), record.restarted(now));
            deployment_result(core.change(target, query.flag("force"), BTreeMap::new(), now), 200)
        }
        ("GET", ["tasks"]) => {
            if core.app(&id).is_none() {
                return unknown_app(&id);
            }
            let tasks: Vec<Value> = core.tasks_of(&id).map(|i| task_json(core, i)).collect();
            RestResponse::json(200, &json!({ "tasks": tasks }))
        }
        ("DELETE", ["tasks"]) => {
            if core.app(&id).is_none() {
                return unknown_app(&id);
            }
            let host = query.get("host");
            let ids: Vec<String> = core
                .tasks_of(&id)
                .filter(|i| host.is_none_or(|h| i.placed.as_ref().is_some_and(|p| p.host == h)))
                .map(|i| i.task_id.clone())
                .collect();
            kill_tasks(core, &ids, query, now, false)
        }
        ("DELETE", ["tasks", task_id]) => {
            if core.app(&id).is_none() {
                return unknown_app(&id);
            }
            if core.instance(task_id).is_none_or(|i| i.app_id != id || i.placed.is_none()) {
                return RestResponse::message(404, &format!("Task '{task_id}' does not exist"));
            }
            kill_tasks(core, &[(*task_id).to_owned()], query, now, true)
        }
        ("GET", ["versions"]) => match core.app(&id) {
            Some(record) => {
                let versions: Vec<String> = record.versions.keys().rev().map(Timestamp::to_string).collect();
                RestResponse::json(200, &json!({ "versions": versions }))
            }
            None => unknown_app(&id),
        },
        ("GET", ["versions", version]) => {
            let Some(record) = core.app(&id) else { return unknown_app(&id) };
            let found = Timestamp::parse(version).ok().and_then(|v| record.versions.get(&v).map(|app| (v, app)));
            match found {
                Some((at, app)) => RestResponse::json(200, &app.to_json(&app::VersionInfo::created(at))),
                None => RestResponse::message(404, &format!("App '{id}' does not exist in version {version}")),
            }
        }
        _ => RestResponse::message(405, "Method Not Allowed"),
    }
}

fn parse_id(segments: &[&str]) -> Result<PathId, RestResponse> {
    let text = format!("/{}", segments.join("/"));
    match PathId::parse(&text) {
        Ok(id) if !id.is_root() => Ok(id),
        _ => Err(RestResponse::message(400, &format!("Invalid app id '{text}'"))),
    }
}

fn unknown_app(id: &PathId) -> RestResponse {
    RestResponse::message(404, &format!("App '{id}' does not exist"))
}

fn app_error(error: &AppError) -> RestResponse {
    RestResponse::json(error.status(), &error.to_json())
}

fn all_apps(core: &SchedulerCore) -> BTreeMap<PathId, AppRecord> {
    core.apps().map(|r| (r.app.id.clone(), r.clone())).collect()
}

/// `{"deploymentId", "version"}` with the `Marathon-Deployment-Id` header, or the refusal.
fn deployment_result(result: Result<Accepted, ChangeError>, status: u16) -> RestResponse {
    match result {
        Ok(accepted) => RestResponse::json(
            status,
            &json!({ "deploymentId": accepted.deployment_id, "version": accepted.version.to_string() }),
        )
        .with_header("Marathon-Deployment-Id", &accepted.deployment_id),
        Err(error) => RestResponse::json(error.status(), &error.body()),
    }
}

fn create_app(core: &mut SchedulerCore, body: &[u8], query: &Query, now: Timestamp) -> RestResponse {
    let text = String::from_utf8_lossy(body);
    let app = match AppDefinition::from_json(&text, &core.config().apps) {
        Ok(app) => app,
        Err(error) => return app_error(&error),
    };
    if core.app(&app.id).is_some() {
        return RestResponse::message(409, &format!("An app with id [{}] already exists.", app.id));
    }
    if let Some(group) = app.id.ancestors().into_iter().find(|group| core.app(group).is_some()) {
        return RestResponse::message(409, &format!("A group with id [{group}] is an app."));
    }
    let app = with_service_ports(core, app, None);
    let id = app.id.clone();
    let mut target = all_apps(core);
    target.insert(id.clone(), AppRecord::created(app, now));
    match core.change(target, query.flag("force"), BTreeMap::new(), now) {
        Ok(accepted) => {
            api_post_event(core, &id, &format!("/v2/apps{id}"), now);
            let Some(record) = core.app(&id) else { return unknown_app(&id) };
            let mut info = app_info(core, record, &Embed::default());
            info["deployments"] = json!([{ "id": accepted.deployment_id }]);
            RestResponse::json(201, &info)
                .with_header("Location", &format!("/v2/apps{id}"))
                .with_header("Marathon-Deployment-Id", &accepted.deployment_id)
        }
        Err(error) => RestResponse::json(error.status(), &error.body()),
    }
}

/// The next definition of an app from an update body: created if new, merged (`PATCH`,
/// `partialUpdate`) or replaced, or rolled back to a stored version.
fn updated_record(
    core: &SchedulerCore,
    id: &PathId,
    spec: AppSpec,
    partial: bool,
    now: Timestamp,
) -> Result<AppRecord, RestResponse> {
    let config = &core.config().apps;
    let current = core.app(id);
    if let (Some(version), Some(record)) = (spec.version, current) {
        let Some(old) = record.versions.get(&version) else {
            return Err(RestResponse::message(404, &format!("App '{id}' does not exist in version {version}")));
        };
        return Ok(record.updated(old.clone(), now));
    }
    match current {
        None => {
            let app = app::replace(id, spec, config).map_err(|e| app_error(&e))?;
            Ok(AppRecord::created(with_service_ports(core, app, None), now))
        }
        Some(record) => {
            let next =
                if partial { app::merge_partial(&record.app, spec, config) } else { app::replace(id, spec, config) }
                    .map_err(|e| app_error(&e))?;
            Ok(record.updated(with_service_ports(core, next, Some(&record.app)), now))
        }
    }
}

/// Marathon's `api_post_event`: an app was created or changed through the API.
fn api_post_event(core: &mut SchedulerCore, id: &PathId, uri: &str, now: Timestamp) {
    let Some(record) = core.app(id) else { return };
    let event = json!({
        "eventType": "api_post_event", "timestamp": now.to_string(), "clientIp": null, "uri": uri,
        "appDefinition": record.app.to_json(&record.version_info),
    });
    core.publish(event);
}

fn put_app(
    core: &mut SchedulerCore,
    method: &str,
    id: &PathId,
    body: &[u8],
    query: &Query,
    now: Timestamp,
) -> RestResponse {
    let text = String::from_utf8_lossy(body);
    let spec = match app_json::parse_app_update(&text) {
        Ok(spec) => spec,
        Err(error) => return app_error(&AppError::Json(error)),
    };
    let partial = method == "PATCH" || query.get("partialUpdate").is_none_or(|v| v != "false");
    let existed = core.app(id).is_some();
    let record = match updated_record(core, id, spec, partial, now) {
        Ok(record) => record,
        Err(response) => return response,
    };
    let mut target = all_apps(core);
    target.insert(id.clone(), record);
    let result = core.change(target, query.flag("force"), BTreeMap::new(), now);
    if result.is_ok() {
        api_post_event(core, id, &format!("/v2/apps{id}"), now);
    }
    deployment_result(result, if existed { 200 } else { 201 })
}

fn update_apps(core: &mut SchedulerCore, method: &str, body: &[u8], query: &Query, now: Timestamp) -> RestResponse {
    let text = String::from_utf8_lossy(body);
    let specs = match app_json::parse_app_updates(&text) {
        Ok(specs) => specs,
        Err(error) => return app_error(&AppError::Json(error)),
    };
    let partial = method == "PATCH" || query.get("partialUpdate").is_none_or(|v| v != "false");
    let mut target = all_apps(core);
    for (index, spec) in specs.into_iter().enumerate() {
        let Some(id) = spec.id.as_deref().and_then(|id| PathId::parse(id).ok()) else {
            return RestResponse::json(
                422,
                &json!({ "message": "Object is not valid", "details": [{ "path": format!("({index})/id"), "errors": ["must be defined"] }] }),
            );
        };
        let record = match updated_record(core, &id, spec, partial, now) {
            Ok(record) => record,
            Err(response) => return response,
        };
        target.insert(id, record);
    }
    deployment_result(core.change(target, query.flag("force"), BTreeMap::new(), now), 200)
}

/// Ports of `portDefinitions` given as 0 get a free service port (Marathon's
/// `--local_port_min`..`--local_port_max`); an update keeps the ports the app already had.
fn with_service_ports(core: &SchedulerCore, mut app: AppDefinition, previous: Option<&AppDefinition>) -> AppDefinition {
    let mut used: BTreeSet<i32> = core
        .apps()
        .filter(|r| r.app.id != app.id)
        .flat_map(|r| r.app.port_definitions.iter().map(|p| p.port))
        .collect();
    used.extend(app.port_definitions.iter().map(|p| p.port));
    for (index, port) in app.port_definitions.iter_mut().enumerate() {
        if port.port != 0 {
            continue;
        }
        let kept = previous.and_then(|p| p.port_definitions.get(index)).map(|p| p.port).filter(|p| *p != 0);
        let chosen = kept.or_else(|| (SERVICE_PORT_MIN..SERVICE_PORT_MAX).find(|p| !used.contains(p)));
        if let Some(chosen) = chosen {
            port.port = chosen;
            used.insert(chosen);
        }
    }
    app
}

fn kill_tasks(core: &mut SchedulerCore, ids: &[String], query: &Query, now: Timestamp, single: bool) -> RestResponse {
    let (scale, wipe) = (query.flag("scale"), query.flag("wipe"));
    if scale && wipe {
        return RestResponse::message(400, "You cannot use scale and wipe at the same time.");
    }
    match core.kill_tasks(ids, scale, wipe, query.flag("force"), now) {
        Ok((_, Some(accepted))) => deployment_result(Ok(accepted), 200),
        Ok((killed, None)) => {
            let tasks: Vec<Value> = killed.iter().map(|i| task_json(core, i)).collect();
            if single {
                RestResponse::json(200, &json!({ "task": tasks.first().cloned().unwrap_or(Value::Null) }))
            } else {
                RestResponse::json(200, &json!({ "tasks": tasks }))
            }
        }
        Err(error) => RestResponse::json(error.status(), &error.body()),
    }
}

fn delete_tasks(core: &mut SchedulerCore, body: &[u8], query: &Query, now: Timestamp) -> RestResponse {
    #[derive(Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids = match serde_json::from_slice::<Ids>(body) {
        Ok(ids) => ids.ids,
        Err(error) => {
            return RestResponse::json(
                400,
                &json!({ "message": "Invalid JSON", "details": [{ "path": "/ids", "errors": [error.to_string()] }] }),
            );
        }
    };
    if let Some(unknown) = ids.iter().find(|id| core.instance(id).is_none_or(|i| i.placed.is_none())) {
        return RestResponse::message(400, &format!("Task '{unknown}' does not exist"));
    }
    kill_tasks(core, &ids, query, now, false)
}

fn list_tasks(core: &SchedulerCore, query: &Query) -> RestResponse {
    let wanted: BTreeSet<&str> = query.all("status").chain(query.all("status[]")).collect();
    let tasks: Vec<Value> = core
        .tasks()
        .filter(|i| {
            wanted.is_empty()
                || (wanted.contains("running") && i.state == TaskState::Running)
                || (wanted.contains("staging") && matches!(i.state, TaskState::Staging | TaskState::Starting))
        })
        .map(|i| task_json(core, i))
        .collect();
    RestResponse::json(200, &json!({ "tasks": tasks }))
}

fn cancel_deployment(core: &mut SchedulerCore, id: &str, query: &Query, now: Timestamp) -> RestResponse {
    let force = query.flag("force");
    match core.cancel_deployment(id, force, now) {
        None => RestResponse::message(404, &format!("DeploymentPlan {id} does not exist")),
        Some(Ok(_)) if force => RestResponse { status: 202, ..RestResponse::text(202, "") },
        Some(result) => deployment_result(result, 200),
    }
}

fn queue(core: &SchedulerCore, query: &Query, now: Timestamp) -> RestResponse {
    let embed_offers = query.all("embed").any(|e| e == "lastUnusedOffers");
    let mut items = Vec::new();
    for (id, count) in core.scheduled() {
        let Some(record) = core.app(id) else { continue };
        let delay = super::backoff::queue_delay(core.delay_until_ms(record, now), now.millis());
        let stats = core
            .launch_attempts(id)
            .cloned()
            .unwrap_or_else(|| super::placement::LaunchAttemptStats::new(now.millis()));
        let app = json!({ "app": app_info(core, record, &Embed::default()) });
        items.push(to_json(&stats.queue_item(app, count, &record.app.role, delay, embed_offers)));
    }
    RestResponse::json(200, &json!({ "queue": items }))
}

fn reset_delay(core: &mut SchedulerCore, id_segments: &[&str], now: Timestamp) -> RestResponse {
    let id = match parse_id(id_segments) {
        Ok(id) => id,
        Err(response) => return response,
    };
    if core.reset_delay(&id, now) {
        RestResponse { status: 204, ..RestResponse::text(204, "") }
    } else {
        RestResponse::message(404, &format!("Application {id} not found in tasks queue."))
    }
}

fn group_id(segments: &[&str]) -> Result<PathId, RestResponse> {
    let text = format!("/{}", segments.join("/"));
    PathId::parse(&text).map_err(|_| RestResponse::message(400, &format!("Invalid group id '{text}'")))
}

fn get_group(core: &SchedulerCore, segments: &[&str], _now: Timestamp) -> RestResponse {
    let id = match group_id(segments) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let inside: Vec<&AppRecord> = core.apps().filter(|r| id.includes(&r.app.id) && r.app.id != id).collect();
    if !id.is_root() && inside.is_empty() {
        return RestResponse::message(404, &format!("Group '{id}' does not exist"));
    }
    RestResponse::json(200, &group_json(core, &id, &inside))
}

/// A group and its subgroups, each with its direct apps.
fn group_json(core: &SchedulerCore, id: &PathId, apps: &[&AppRecord]) -> Value {
    let depth = id.segments().len();
    let direct: Vec<Value> = apps
        .iter()
        .filter(|r| r.app.id.segments().len() == depth + 1)
        .map(|r| app_info(core, r, &Embed::default()))
        .collect();
    let mut children: BTreeMap<PathId, Vec<&AppRecord>> = BTreeMap::new();
    for record in apps.iter().filter(|r| r.app.id.segments().len() > depth + 1) {
        let child = PathId::from_segments(record.app.id.segments()[..=depth].iter()).unwrap_or_else(|_| PathId::root());
        children.entry(child).or_default().push(record);
    }
    let groups: Vec<Value> = children.iter().map(|(child, apps)| group_json(core, child, apps)).collect();
    let version = apps.iter().map(|r| r.version_info.version).max().unwrap_or(Timestamp::from_millis(0));
    json!({
        "id": id.to_string(), "apps": direct, "pods": [], "groups": groups,
        "dependencies": [], "version": version.to_string(), "enforceRole": false,
    })
}

fn delete_group(core: &mut SchedulerCore, segments: &[&str], query: &Query, now: Timestamp) -> RestResponse {
    let id = match group_id(segments) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let mut target = all_apps(core);
    let before = target.len();
    target.retain(|app_id, _| !id.includes(app_id));
    if target.len() == before {
        return RestResponse::message(404, &format!("Group '{id}' does not exist"));
    }
    deployment_result(core.change(target, query.flag("force"), BTreeMap::new(), now), 200)
}

/// `POST`/`PUT /v2/groups[/{id}]` with `{"id", "apps": [...], "groups": [...]}`: every app of
/// the tree is created or replaced.
fn put_group(core: &mut SchedulerCore, segments: &[&str], body: &[u8], query: &Query, now: Timestamp) -> RestResponse {
    let base = match group_id(segments) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => {
            return RestResponse::json(
                400,
                &json!({ "message": "Invalid JSON", "details": [{ "path": "/", "errors": [error.to_string()] }] }),
            );
        }
    };
    let mut target = all_apps(core);
    if let Err(response) = collect_group_apps(core, &value, &base, "", &mut target, now) {
        return response;
    }
    deployment_result(core.change(target, query.flag("force"), BTreeMap::new(), now), 201)
}

fn collect_group_apps(
    core: &SchedulerCore,
    group: &Value,
    parent: &PathId,
    path: &str,
    target: &mut BTreeMap<PathId, AppRecord>,
    now: Timestamp,
) -> Result<(), RestResponse> {
    let id = match group.get("id").and_then(Value::as_str) {
        Some(text) => PathId::parse_relative_to(text, parent)
            .map_err(|_| RestResponse::message(422, &format!("Invalid group id '{text}'")))?,
        None => parent.clone(),
    };
    for (index, app) in group.get("apps").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let spec = app_json::read_app_value(app, &format!("{path}/apps({index})"), true)
            .map_err(|e| app_error(&AppError::Json(e)))?;
        let definition = AppDefinition::from_spec(spec, &id, &core.config().apps).map_err(|e| app_error(&e))?;
        let record = match core.app(&definition.id) {
            Some(current) => current.updated(with_service_ports(core, definition, Some(&current.app)), now),
            None => AppRecord::created(with_service_ports(core, definition, None), now),
        };
        target.insert(record.app.id.clone(), record);
    }
    for (index, child) in group.get("groups").and_then(Value::as_array).into_iter().flatten().enumerate() {
        collect_group_apps(core, child, &id, &format!("{path}/groups({index})"), target, now)?;
    }
    Ok(())
}

fn list_apps(core: &SchedulerCore, query: &Query, _now: Timestamp) -> RestResponse {
    let embed = Embed::for_app(query, false);
    let selector = match query.get("label").map(LabelSelector::parse).transpose() {
        Ok(selector) => selector,
        Err(message) => return RestResponse::message(400, &message),
    };
    let id_filter = query.get("id");
    let cmd_filter = query.get("cmd");
    let apps = core
        .apps()
        .filter(|r| id_filter.is_none_or(|f| r.app.id.to_string().contains(f)))
        .filter(|r| cmd_filter.is_none_or(|f| r.app.cmd.as_deref().is_some_and(|c| c.contains(f))))
        .filter(|r| selector.as_ref().is_none_or(|s| s.matches(&r.app.labels)));
    // Written as text from each app's rendered definition: no JSON tree per request.
    let mut body = br#"{"apps":["#.to_vec();
    for (index, record) in apps.enumerate() {
        if index > 0 {
            body.push(b',');
        }
        write_app_info(core, record, &embed, &mut body);
    }
    body.extend_from_slice(b"]}");
    RestResponse { body, ..RestResponse::json(200, &Value::Null) }
}

/// What an app's read model embeds.
#[derive(Clone, Copy, Debug, Default)]
struct Embed {
    tasks: bool,
    last_task_failure: bool,
}

impl Embed {
    /// Marathon reads an app's embeds under any of the prefixes `app.`, `apps.` and
    /// `group.apps.`, whichever endpoint is asked. A single app always embeds its tasks.
    fn for_app(query: &Query, single: bool) -> Embed {
        let named = |what: &str| {
            query.all("embed").any(|e| ["app.", "apps.", "group.apps."].iter().any(|p| e.strip_prefix(p) == Some(what)))
        };
        Embed { tasks: named("tasks") || single, last_task_failure: named("lastTaskFailure") || single }
    }
}

/// `AppInfo`: the definition with its counts, deployments and (embedded) tasks.
fn app_info(core: &SchedulerCore, record: &AppRecord, embed: &Embed) -> Value {
    let mut text = Vec::new();
    write_app_info(core, record, embed, &mut text);
    serde_json::from_slice(&text).unwrap_or(Value::Null)
}

/// Writes an `AppInfo` object: the rendered definition, then the fields that change with its
/// tasks and deployments (none of which the definition has).
fn write_app_info(core: &SchedulerCore, record: &AppRecord, embed: &Embed, out: &mut Vec<u8>) {
    let tasks: Vec<&Instance> = core.tasks_of(&record.app.id).collect();
    let running = tasks.iter().filter(|i| i.state == TaskState::Running).count();
    let staged = tasks.iter().filter(|i| matches!(i.state, TaskState::Staging | TaskState::Starting)).count();
    let checked = !record.app.health_checks.is_empty();
    let healthy = tasks.iter().filter(|i| checked && i.healthy == Some(true)).count();
    let unhealthy = tasks.iter().filter(|i| checked && i.healthy == Some(false)).count();
    let definition = record.rendered().trim_end();
    out.extend_from_slice(definition.strip_suffix('}').unwrap_or(definition).as_bytes());
    let counts = format!(
        r#","tasksStaged":{staged},"tasksRunning":{running},"tasksHealthy":{healthy},"tasksUnhealthy":{unhealthy},"deployments":"#
    );
    out.extend_from_slice(counts.as_bytes());
    let deployments: Vec<Value> =
        core.deployments_of(&record.app.id).into_iter().map(|id| json!({ "id": id })).collect();
    let _ = serde_json::to_writer(&mut *out, &deployments);
    if embed.tasks {
        out.extend_from_slice(br#","tasks":"#);
        let tasks: Vec<Value> = tasks.iter().map(|i| task_json(core, i)).collect();
        let _ = serde_json::to_writer(&mut *out, &tasks);
    }
    if (embed.last_task_failure || embed.tasks)
        && let Some(failure) = core.last_failure(&record.app.id)
    {
        out.extend_from_slice(br#","lastTaskFailure":"#);
        let _ = serde_json::to_writer(&mut *out, failure);
    }
    out.push(b'}');
}

/// Marathon's `Task`.
fn task_json(core: &SchedulerCore, instance: &Instance) -> Value {
    let placed = instance.placed.as_ref();
    let record = core.app(&instance.app_id);
    let service_ports: Vec<i32> =
        record.map(|r| r.app.port_definitions.iter().map(|p| p.port).collect()).unwrap_or_default();
    let mut task = Map::new();
    task.insert("id".into(), json!(instance.task_id));
    task.insert("appId".into(), json!(instance.app_id.to_string()));
    task.insert("host".into(), json!(placed.map_or("", |p| p.host.as_str())));
    task.insert("ipAddresses".into(), json!([]));
    task.insert("ports".into(), json!(placed.map_or(&[][..], |p| p.ports.as_slice())));
    task.insert("servicePorts".into(), json!(service_ports));
    task.insert("slaveId".into(), json!(placed.map_or("", |p| p.agent_id.as_str())));
    task.insert("state".into(), json!(instance.state.name()));
    task.insert("stagedAt".into(), json!(placed.map(|p| p.staged_at.to_string())));
    task.insert("startedAt".into(), json!(instance.started_at.map(|t| t.to_string())));
    task.insert("version".into(), json!(instance.version.to_string()));
    task.insert("localVolumes".into(), json!([]));
    if record.is_some_and(|r| !r.app.health_checks.is_empty())
        && let Some(alive) = instance.healthy
    {
        task.insert(
            "healthCheckResults".into(),
            json!([{
                "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 },
                "firstSuccess": null, "lastFailure": null, "lastSuccess": null,
                "lastFailureCause": null, "instanceId": instance.task_id, "taskId": instance.task_id,
            }]),
        );
    }
    Value::Object(task)
}

fn info(core: &SchedulerCore, server: &ServerInfo) -> Value {
    json!({
        "name": "marathon",
        "version": server.version,
        "buildref": format!("flotilla-{}", server.version),
        "elected": true,
        "leader": server.leader,
        "frameworkId": server.framework_id,
        "marathon_config": {
            "master": "flotilla",
            "framework_name": "marathon",
            "mesos_role": core.config().apps.default_role,
            "max_instances_per_offer": core.config().max_instances_per_offer,
            "local_port_min": SERVICE_PORT_MIN,
            "local_port_max": SERVICE_PORT_MAX,
            "checkpoint": true,
            "ha": true,
            "features": [],
        },
        "zookeeper_config": {},
        "http_config": { "http_port": server.http_port, "https_port": 0 },
    })
}

/// The scheduler's gauges: Marathon's metric names and their values.
fn gauges(core: &SchedulerCore) -> [(&'static str, usize); 6] {
    let tasks: Vec<&Instance> = core.tasks().collect();
    [
        ("marathon.apps.active.gauge", core.apps().count()),
        ("marathon.deployments.active.gauge", core.runs().count()),
        ("marathon.instances.launched.gauge", tasks.len()),
        ("marathon.instances.running.gauge", tasks.iter().filter(|i| i.state == TaskState::Running).count()),
        ("marathon.instances.staged.gauge", tasks.iter().filter(|i| i.state != TaskState::Running).count()),
        ("marathon.instances.waiting.gauge", core.scheduled().values().map(|n| *n as usize).sum()),
    ]
}

/// `/metrics`: the Dropwizard-style JSON.
fn metrics(core: &SchedulerCore) -> Value {
    let gauges: Map<String, Value> =
        gauges(core).into_iter().map(|(name, value)| (name.to_owned(), json!({ "value": value }))).collect();
    json!({ "version": "4.0.0", "gauges": gauges, "counters": {}, "histograms": {}, "meters": {}, "timers": {} })
}

/// `/metrics/prometheus`: the same gauges in Prometheus's text exposition format (dots
/// become underscores, as Marathon's exporter writes them).
fn prometheus(core: &SchedulerCore) -> String {
    let mut text = String::new();
    for (name, value) in gauges(core) {
        let name = name.replace('.', "_");
        text.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
    }
    text
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A parsed query string (`a=1&b=2&b=3`), percent-decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(text: &str) -> Query {
        Query(
            text.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key), percent_decode(value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`; comma-separated values count one by one (`embed=a,b`).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).flat_map(|(_, v)| v.split(',')).filter(|v| !v.is_empty())
    }

    /// A boolean flag: present with `true` or with no value.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Marathon's label selector (`GET /v2/apps?label=`): requirements joined by commas, each
/// `key`, `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`.
#[derive(Debug, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, PartialEq)]
enum Requirement {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (index, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..index]);
                    start = index + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        let requirements = parts.into_iter().map(str::trim).map(Requirement::parse).collect::<Result<_, _>>()?;
        Ok(LabelSelector(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    fn parse(text: &str) -> Result<Requirement, String> {
        let invalid = || format!("Invalid label selector: {text}");
        if let Some((key, value)) = text.split_once("!=") {
            return Ok(Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned()));
        }
        if let Some((key, value)) = text.split_once("==") {
            return Ok(Requirement::Equals(key.trim().to_owned(), value.trim().to_owned()));
        }
        for (keyword, negated) in [(" notin ", true), (" in ", false)] {
            if let Some((key, values)) = text.split_once(keyword) {
                let values = values.trim().strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or_else(invalid)?;
                let values = values.split(',').map(|v| v.trim().to_owned()).collect();
                let key = key.trim().to_owned();
                return Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
            }
        }
        if text.is_empty() || text.contains(char::is_whitespace) {
            return Err(invalid());
        }
        Ok(Requirement::Exists(text.to_owned()))
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        }
    }
}

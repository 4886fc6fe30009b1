//! The chaos API under `/chaos/v1` on a node's HTTP API, answered by the node's chaos actor
//! (`flotilla_actors::chaos`), and the chaos events that join `/v2/events`.
//!
//! - `GET /chaos/v1/faults[?node=N]`: the faults a node holds.
//! - `POST /chaos/v1/faults[?node=N]`: inject; the body is a `Fault` as JSON, or
//!   `{"fault": <Fault>, "durationMs": 5000, "node": "n"}`. `201` with the faults injected;
//!   `400` with the precise reason for malformed JSON or an invalid fault; `502` when a node
//!   that had to hold part of it failed (the body lists which, and what was injected).
//! - `DELETE /chaos/v1/faults/{id}[?node=N]`, `DELETE /chaos/v1/faults[?node=N]`: heal one
//!   fault (`404` if unknown) or all of them.
//! - `GET|POST|DELETE /chaos/v1/monkey`: the monkey's status, start
//!   (`{"seed": 7, "meanIntervalMs": 2000, "spanSecs": 600, "actors": ["dns"]}`), stop.
//!
//! A node without the chaos actor answers every route `403` and says how to enable it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use flotilla_actors::chaos::actor::{ChaosEvent, ChaosMsg};
use flotilla_actors::chaos::protocol::{CHAOS_NAME, ChaosReply, ChaosRequest, Injection, MonkeyRequest};
use flotilla_actors::marathon::actor::MarathonEvent;
use flotilla_actors::marathon::core::rest::Query;
use flotilla_supervisors::Node;
use flotilla_transport::{Fault, ReplyPort};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::http::Api;

/// What a node without chaos says.
pub const CHAOS_DISABLED: &str = "chaos is disabled on this node; start it with `flotilla dev --chaos`, \
                                  or set `[chaos] enabled = true` in its configuration file";

/// How long the chaos actor may take (it may forward to other nodes, 5 s each).
const CHAOS_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes, to be added to the node's HTTP API.
pub fn scope() -> actix_web::Scope {
    web::scope("/chaos/v1")
        .route("/faults", web::get().to(list))
        .route("/faults", web::post().to(inject))
        .route("/faults", web::delete().to(heal_all))
        .route("/faults/{id}", web::delete().to(heal_one))
        .route("/monkey", web::get().to(monkey_status))
        .route("/monkey", web::post().to(monkey_start))
        .route("/monkey", web::delete().to(monkey_stop))
}

/// The body of `POST /chaos/v1/faults` when it is more than a bare fault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InjectBody {
    fault: Fault,
    duration_ms: Option<u64>,
    node: Option<String>,
}

/// The body of `POST /chaos/v1/monkey`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MonkeyBody {
    seed: u64,
    #[serde(default = "default_interval_ms")]
    mean_interval_ms: u64,
    #[serde(default = "default_span_secs")]
    span_secs: u64,
    #[serde(default)]
    actors: Vec<String>,
}

fn default_interval_ms() -> u64 {
    2_000
}

fn default_span_secs() -> u64 {
    600
}

/// Parses an injection: a bare fault, or an object with a `fault` field. The error says what
/// was wrong, where.
pub fn parse_injection(body: &[u8], node: Option<String>) -> Result<Injection, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if value.get("fault").is_some() {
        let body: InjectBody = serde_json::from_value(value).map_err(|e| format!("invalid injection: {e}"))?;
        return Ok(Injection {
            fault: body.fault,
            duration: body.duration_ms.map(Duration::from_millis),
            node: body.node.or(node),
        });
    }
    let fault: Fault = serde_json::from_value(value).map_err(|e| {
        format!("invalid fault: {e} (a fault is one of Drop, Delay, Duplicate, Reorder, Partition, Clog, Heal, KillActor, CrashNode, RestartNode, PauseNode, ClockSkew, e.g. {{\"CrashNode\": {{\"node\": \"a1\"}}}})")
    })?;
    Ok(Injection { fault, duration: None, node })
}

fn node_param(request: &HttpRequest) -> Option<String> {
    Query::parse(request.query_string()).all("node").next().map(str::to_owned)
}

fn message(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "message": text }))
}

/// Asks this node's chaos actor; `Err` is the answer when there is none or it fails.
async fn ask(api: &Api, request: ChaosRequest) -> Result<ChaosReply, HttpResponse> {
    let Some(chaos) = api.node.whereis_ref::<ChaosMsg>(CHAOS_NAME) else {
        return Err(HttpResponse::Forbidden().json(json!({ "message": CHAOS_DISABLED })));
    };
    let (reply, answer) = ReplyPort::local();
    if chaos.send_message(ChaosMsg::Request { from: None, request, reply }).is_err() {
        return Err(message(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "the chaos actor is restarting"));
    }
    match tokio::time::timeout(CHAOS_TIMEOUT, answer).await {
        Ok(Ok(reply)) => Ok(reply),
        _ => Err(message(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "the chaos actor did not answer")),
    }
}

/// A reply as HTTP; `created` for a successful injection.
fn respond(reply: ChaosReply, created: bool) -> HttpResponse {
    use actix_web::http::StatusCode;
    match reply {
        ChaosReply::Faults { faults, failed } => {
            let status = match (failed.is_empty(), created) {
                (false, _) => StatusCode::BAD_GATEWAY,
                (true, true) => StatusCode::CREATED,
                (true, false) => StatusCode::OK,
            };
            HttpResponse::build(status).json(json!({ "faults": faults, "failed": failed }))
        }
        ChaosReply::Monkey(status) => HttpResponse::Ok().json(status),
        ChaosReply::Invalid(text) => message(StatusCode::BAD_REQUEST, &text),
        ChaosReply::Refused(text) => message(StatusCode::CONFLICT, &text),
        ChaosReply::NotFound(text) => message(StatusCode::NOT_FOUND, &text),
    }
}

async fn answer(api: &Api, request: ChaosRequest, created: bool) -> HttpResponse {
    match ask(api, request).await {
        Ok(reply) => respond(reply, created),
        Err(response) => response,
    }
}

async fn list(api: web::Data<Api>, request: HttpRequest) -> HttpResponse {
    answer(&api, ChaosRequest::List { node: node_param(&request) }, false).await
}

async fn inject(api: web::Data<Api>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    if api.node.whereis(CHAOS_NAME).is_none() {
        return HttpResponse::Forbidden().json(json!({ "message": CHAOS_DISABLED }));
    }
    match parse_injection(&body, node_param(&request)) {
        Ok(injection) => answer(&api, ChaosRequest::Inject(injection), true).await,
        Err(text) => message(actix_web::http::StatusCode::BAD_REQUEST, &text),
    }
}

async fn heal_all(api: web::Data<Api>, request: HttpRequest) -> HttpResponse {
    answer(&api, ChaosRequest::Heal { node: node_param(&request), id: None }, false).await
}

async fn heal_one(api: web::Data<Api>, request: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        let text = format!("{id:?} is not a fault id (a non-negative integer, as listed)");
        return message(actix_web::http::StatusCode::BAD_REQUEST, &text);
    };
    answer(&api, ChaosRequest::Heal { node: node_param(&request), id: Some(id) }, false).await
}

async fn monkey_status(api: web::Data<Api>) -> HttpResponse {
    answer(&api, ChaosRequest::MonkeyStatus, false).await
}

async fn monkey_start(api: web::Data<Api>, body: web::Bytes) -> HttpResponse {
    let body: MonkeyBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return message(actix_web::http::StatusCode::BAD_REQUEST, &format!("invalid monkey request: {e}")),
    };
    let request = MonkeyRequest {
        seed: body.seed,
        mean_interval: Duration::from_millis(body.mean_interval_ms),
        span: Duration::from_secs(body.span_secs),
        actors: body.actors,
    };
    answer(&api, ChaosRequest::MonkeyStart(request), false).await
}

async fn monkey_stop(api: web::Data<Api>) -> HttpResponse {
    answer(&api, ChaosRequest::MonkeyStop, false).await
}

/// A subscription to this node's chaos events, if it runs the chaos actor.
pub async fn event_stream(node: &Node) -> Option<broadcast::Receiver<Arc<ChaosEvent>>> {
    let chaos = node.whereis_ref::<ChaosMsg>(CHAOS_NAME)?;
    ractor::call_t!(chaos, ChaosMsg::Events, 2_000).ok()
}

/// The scheduler's events and this node's chaos events as one stream of (type, JSON).
pub struct MergedEvents {
    marathon: broadcast::Receiver<Arc<MarathonEvent>>,
    chaos: Option<broadcast::Receiver<Arc<ChaosEvent>>>,
}

pub fn merge_events(
    marathon: broadcast::Receiver<Arc<MarathonEvent>>,
    chaos: Option<broadcast::Receiver<Arc<ChaosEvent>>>,
) -> MergedEvents {
    MergedEvents { marathon, chaos }
}

enum Next {
    Marathon(Result<Arc<MarathonEvent>, broadcast::error::RecvError>),
    Chaos(Result<Arc<ChaosEvent>, broadcast::error::RecvError>),
}

impl MergedEvents {
    /// The next event of either stream; `None` when the scheduler's ends. A lagging
    /// subscriber skips what it missed; an ended chaos stream (its actor restarted) is dropped.
    pub async fn recv(&mut self) -> Option<(String, String)> {
        use broadcast::error::RecvError;
        loop {
            let next = {
                let chaos = async {
                    match &mut self.chaos {
                        Some(chaos) => chaos.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    event = self.marathon.recv() => Next::Marathon(event),
                    event = chaos => Next::Chaos(event),
                }
            };
            match next {
                Next::Marathon(Ok(event)) => return Some((event.event_type.clone(), event.json.clone())),
                Next::Chaos(Ok(event)) => return Some((event.event_type.clone(), event.json.clone())),
                Next::Marathon(Err(RecvError::Closed)) => return None,
                Next::Chaos(Err(RecvError::Closed)) => self.chaos = None,
                Next::Marathon(Err(RecvError::Lagged(_))) | Next::Chaos(Err(RecvError::Lagged(_))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_injection_is_a_bare_fault_or_an_object_with_one() {
        let bare = parse_injection(br#"{"CrashNode": {"node": "a1"}}"#, Some("b".into())).unwrap();
        assert_eq!(
            bare,
            Injection { fault: Fault::CrashNode { node: "a1".into() }, duration: None, node: Some("b".into()) }
        );
        let wrapped =
            parse_injection(br#"{"fault": {"ClockSkew": {"node": "a", "skew_nanos": -5}}, "durationMs": 1500}"#, None)
                .unwrap();
        assert_eq!(wrapped.duration, Some(Duration::from_millis(1500)));
        assert_eq!(wrapped.fault, Fault::ClockSkew { node: "a".into(), skew_nanos: -5 });
    }

    #[test]
    fn a_bad_injection_says_what_is_wrong() {
        let not_json = parse_injection(b"{nope", None).unwrap_err();
        assert!(not_json.starts_with("the body is not JSON"), "{not_json}");
        let unknown = parse_injection(br#"{"Explode": {}}"#, None).unwrap_err();
        assert!(unknown.contains("unknown variant `Explode`"), "{unknown}");
        let missing = parse_injection(br#"{"KillActor": {"node": "a"}}"#, None).unwrap_err();
        assert!(missing.contains("missing field `name`"), "{missing}");
        let extra = parse_injection(br#"{"fault": "Heal", "forever": true}"#, None).unwrap_err();
        assert!(extra.contains("unknown field `forever`"), "{extra}");
    }
}

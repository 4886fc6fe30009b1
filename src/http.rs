//! The HTTP API of a master (actix-web, inside the node's tokio runtime): Mesos's state
//! endpoints, `/master/state` and `/state` (and their `.json` forms), answered with the
//! leading master's state whichever master is asked (a follower asks the leader over the
//! transport); `/health`; and Marathon's REST API v2 (`/v2/...`, `/ping`, `/metrics`, also
//! under `/marathon/` and `/service/marathon/`). Marathon's routes are a pure function in
//! `flotilla_actors::marathon::core::rest`, run by the scheduler on the leading master: this
//! shell hands each request to the local scheduler, or forwards it whole to the masters that
//! may lead, and streams `/v2/events` from the local scheduler (a follower redirects event
//! stream clients to the leader's API).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use flotilla_actors::control_plane::CurrentTransport;
use flotilla_actors::marathon::actor::{SCHEDULER_ACTOR, SchedulerMsg};
use flotilla_actors::marathon::core::rest::{RestRequest, RestResponse, strip_prefix};
use flotilla_actors::marathon::protocol::{MARATHON_NAME, MarathonCall};
use flotilla_actors::master::actor::{MASTER_ACTOR, MasterMsg};
use flotilla_actors::mesos::protocol::{MASTER_NAME, MasterQuery, MasterState};
use flotilla_actors::registry::actor::RegistryMsg;
use flotilla_actors::registry::protocol::{REGISTRY_NAME, RegistryReply, RegistryRequest};
use flotilla_supervisors::Node;
use flotilla_transport::{ReplyPort, Transport};

use crate::state_json::master_state_json;

/// How long a forwarded request waits for this master's registry to name the leader.
const REGISTRY_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handlers reach the cluster through.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) node: Node,
    /// The node's transport as it is at each request (a crashed node restarts it).
    pub(crate) transport: CurrentTransport,
    masters: Vec<String>,
}

impl Api {
    fn transport(&self) -> Result<Transport, String> {
        (self.transport)().ok_or_else(|| "the node's transport is not running (restarting?)".to_owned())
    }

    /// The other masters in the order a follower forwards to them ([`forward_order`]), with the
    /// leader this master's registry knows and the sessions up now.
    async fn others_leader_first(&self, transport: &Transport) -> Vec<String> {
        let leader = self.registry_leader().await;
        forward_order(&self.masters, transport.node(), leader.as_deref(), |master| transport.is_connected(master))
    }

    /// The leader this master's registry follows, if it knows one.
    async fn registry_leader(&self) -> Option<String> {
        let registry = self.node.whereis_ref::<RegistryMsg>(REGISTRY_NAME)?;
        let (port, answer) = ReplyPort::local();
        registry.send_message(RegistryMsg::Request(RegistryRequest::Status, port)).ok()?;
        match tokio::time::timeout(REGISTRY_STATUS_TIMEOUT, answer).await {
            Ok(Ok(RegistryReply::Status(status))) => status.leader,
            _ => None,
        }
    }

    /// The leading master's state: this node's master actor if it leads, else the leader's.
    async fn master_state(&self) -> Result<MasterState, String> {
        if let Some(master) = self.node.whereis_ref::<MasterMsg>(MASTER_ACTOR) {
            return ractor::call_t!(master, MasterMsg::State, 5_000).map_err(|e| e.to_string());
        }
        let transport = self.transport()?;
        let mut last = "no other master is known".to_owned();
        for master in self.others_leader_first(&transport).await {
            match transport.call(&master, MASTER_NAME, &MasterQuery::State, Duration::from_secs(2)).await {
                Ok(state) => return Ok(state),
                Err(error) => last = format!("{master}: {error}"),
            }
        }
        Err(format!("no leading master answered ({last})"))
    }
}

impl Api {
    /// A Marathon request answered by the scheduler: this master's if it leads, else the
    /// first other master whose scheduler answers.
    async fn marathon(&self, request: RestRequest) -> RestResponse {
        if let Some(scheduler) = self.node.whereis_ref::<SchedulerMsg>(SCHEDULER_ACTOR) {
            return match ractor::call_t!(scheduler, SchedulerMsg::Rest, 30_000, request) {
                Ok(response) => response,
                Err(error) => RestResponse::message(503, &format!("the scheduler did not answer: {error}")),
            };
        }
        let transport = match self.transport() {
            Ok(transport) => transport,
            Err(error) => return RestResponse::message(503, &error),
        };
        let call = MarathonCall(request);
        let mut last = "no other master is known".to_owned();
        for master in self.others_leader_first(&transport).await {
            match transport.call(&master, MARATHON_NAME, &call, Duration::from_secs(30)).await {
                Ok(response) => return response,
                Err(error) => last = format!("{master}: {error}"),
            }
        }
        RestResponse::message(503, &format!("no leading master answered ({last})"))
    }
}

/// Every Marathon route: the request as the pure API sees it, the answer as HTTP.
async fn marathon(api: web::Data<Api>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let path = strip_prefix(request.path()).to_owned();
    match path.trim_end_matches('/') {
        "/v2/events" => return events(&api, &request).await,
        // Liveness of this master's HTTP server, whoever leads (Marathon's `/ping`).
        "/ping" => return HttpResponse::Ok().content_type("text/plain").body("pong"),
        _ => {}
    }
    let request = RestRequest {
        method: request.method().as_str().to_owned(),
        path,
        query: request.query_string().to_owned(),
        body: body.to_vec(),
    };
    let answer = api.marathon(request).await;
    let mut response = HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK));
    response.content_type(answer.content_type.as_str());
    for (name, value) in &answer.headers {
        response.insert_header((name.as_str(), value.as_str()));
    }
    response.body(answer.body)
}

/// `GET /v2/events`: Server-Sent Events from this master's scheduler (`event_type=` filters;
/// Marathon answers 405 without `Accept: text/event-stream`'s consent, we serve it anyway).
async fn events(api: &Api, request: &HttpRequest) -> HttpResponse {
    let Some(scheduler) = api.node.whereis_ref::<SchedulerMsg>(SCHEDULER_ACTOR) else {
        return redirect_to_leader(api, request).await;
    };
    let receiver = match ractor::call_t!(scheduler, SchedulerMsg::Events, 5_000) {
        Ok(receiver) => receiver,
        Err(error) => {
            return HttpResponse::ServiceUnavailable().json(serde_json::json!({ "message": error.to_string() }));
        }
    };
    let query = flotilla_actors::marathon::core::rest::Query::parse(request.query_string());
    let wanted: Vec<String> = query.all("event_type").map(str::to_owned).collect();
    // This node's chaos events, when it runs the chaos actor, join the scheduler's.
    let chaos = crate::chaos_http::event_stream(&api.node).await;
    let receiver = crate::chaos_http::merge_events(receiver, chaos);
    let attached = format!(
        "event: event_stream_attached\ndata: {}\n\n",
        serde_json::json!({ "eventType": "event_stream_attached", "remoteAddress": request.peer_addr().map(|a| a.to_string()) })
    );
    let first = futures::stream::iter([Ok::<_, actix_web::Error>(web::Bytes::from(attached))]);
    let rest = futures::stream::unfold((receiver, wanted), |(mut receiver, wanted)| async move {
        loop {
            let (event_type, json) = receiver.recv().await?;
            if wanted.is_empty() || wanted.contains(&event_type) {
                let frame = format!("event: {event_type}\ndata: {json}\n\n");
                return Some((Ok(web::Bytes::from(frame)), (receiver, wanted)));
            }
        }
    });
    use futures::StreamExt;
    HttpResponse::Ok().content_type("text/event-stream").streaming(first.chain(rest))
}

/// A follower sends event-stream clients to the leader's HTTP API (`307`, the same path and
/// query): the stream lives on the leader, and a client that follows redirects — curl -L,
/// Python's requests, Go's net/http — reads it there.
async fn redirect_to_leader(api: &Api, request: &HttpRequest) -> HttpResponse {
    let ask =
        RestRequest { method: "GET".to_owned(), path: "/v2/leader".to_owned(), query: String::new(), body: Vec::new() };
    let answer = api.marathon(ask).await;
    let leader = (answer.status == 200).then(|| answer.json_body()["leader"].as_str().map(str::to_owned)).flatten();
    let Some(leader) = leader else {
        return HttpResponse::ServiceUnavailable().json(
            serde_json::json!({ "message": "the event stream is served by the leading master, and none answered" }),
        );
    };
    let query = request.query_string();
    let location = match query {
        "" => format!("http://{leader}{}", request.path()),
        query => format!("http://{leader}{}?{query}", request.path()),
    };
    HttpResponse::TemporaryRedirect().insert_header(("Location", location)).finish()
}

async fn state(api: web::Data<Api>) -> HttpResponse {
    match api.master_state().await {
        Ok(state) => HttpResponse::Ok().json(master_state_json(&state)),
        Err(message) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "message": message })),
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// A running HTTP server; stop it with [`HttpApi::stop`].
pub struct HttpApi {
    pub address: SocketAddr,
    handle: ServerHandle,
}

/// A listening socket whose address is known before the node that serves it starts (the
/// scheduler reports it as the leader's address).
pub struct BoundApi {
    pub address: SocketAddr,
    listener: std::net::TcpListener,
}

impl BoundApi {
    /// Binds `listen` (port 0 picks a free one).
    pub fn bind(listen: SocketAddr) -> anyhow::Result<BoundApi> {
        let listener =
            std::net::TcpListener::bind(listen).with_context(|| format!("binding the HTTP API to {listen}"))?;
        let address = listener.local_addr().context("the HTTP API has no address")?;
        Ok(BoundApi { address, listener })
    }
}

impl HttpApi {
    /// Serves on `listen` (port 0 picks a free one).
    pub fn start(
        listen: SocketAddr,
        node: Node,
        transport: CurrentTransport,
        masters: Vec<String>,
    ) -> anyhow::Result<HttpApi> {
        HttpApi::serve(BoundApi::bind(listen)?, node, transport, masters)
    }

    /// Serves on an already bound socket.
    pub fn serve(
        bound: BoundApi,
        node: Node,
        transport: CurrentTransport,
        masters: Vec<String>,
    ) -> anyhow::Result<HttpApi> {
        let api = web::Data::new(Api { node, transport, masters });
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(api.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route("/health", web::get().to(health));
            app = app.service(crate::chaos_http::scope());
            for path in ["/master/state", "/master/state.json", "/state", "/state.json"] {
                app = app.route(path, web::get().to(state));
            }
            for prefix in ["", "/marathon", "/service/marathon"] {
                app = app
                    .route(&format!("{prefix}/v2/{{tail:.*}}"), web::route().to(marathon))
                    .route(&format!("{prefix}/ping"), web::route().to(marathon))
                    .route(&format!("{prefix}/metrics"), web::route().to(marathon))
                    .route(&format!("{prefix}/metrics/prometheus"), web::route().to(marathon));
            }
            app
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(bound.listener)
        .context("serving the HTTP API")?;
        let address = bound.address;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(HttpApi { address, handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The largest request body accepted (a group of many apps fits well within it).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The masters other than `me`, in the order a follower forwards a request to them: the known
/// `leader` first, then those `connected` (a session up), then the rest, each group in the
/// configured order. A call to a master that is down waits out its whole timeout (the
/// transport keeps it for a reconnection), so a dead master listed before the leader must not
/// be asked first: after a failover that made every forwarded request wait 30 s.
fn forward_order(masters: &[String], me: &str, leader: Option<&str>, connected: impl Fn(&str) -> bool) -> Vec<String> {
    let mut others: Vec<String> = masters.iter().filter(|master| *master != me).cloned().collect();
    others.sort_by_key(|master| (leader != Some(master.as_str()), !connected(master)));
    others
}

#[cfg(test)]
mod tests {
    use super::forward_order;

    fn masters() -> Vec<String> {
        ["m1", "m2", "m3", "m4"].map(str::to_owned).to_vec()
    }

    #[test]
    fn the_known_leader_is_asked_first_and_a_dead_master_last() {
        // m1 died (no session) and m3 leads: m3, then m4 (connected), then m1.
        let order = forward_order(&masters(), "m2", Some("m3"), |master| master != "m1");
        assert_eq!(order, ["m3", "m4", "m1"]);
    }

    #[test]
    fn without_a_known_leader_connected_masters_come_first_in_configured_order() {
        let order = forward_order(&masters(), "m4", None, |master| master != "m2");
        assert_eq!(order, ["m1", "m3", "m2"]);
        let order = forward_order(&masters(), "m4", None, |_| false);
        assert_eq!(order, ["m1", "m2", "m3"]);
    }

    #[test]
    fn this_master_is_never_asked_even_when_it_is_the_known_leader() {
        let order = forward_order(&masters(), "m2", Some("m2"), |_| true);
        assert_eq!(order, ["m1", "m3", "m4"]);
    }
}

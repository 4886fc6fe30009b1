//! The HTTP API of a master (actix-web, inside the node's tokio runtime): for now Mesos's
//! state endpoints, `/master/state` and `/state` (and their `.json` forms), answered with the
//! leading master's state whichever master is asked (a follower asks the leader over the
//! transport), plus `/health`. The Marathon API joins it later.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use flotilla_actors::master::actor::{MASTER_ACTOR, MasterMsg};
use flotilla_actors::mesos::protocol::{MASTER_NAME, MasterQuery, MasterState};
use flotilla_supervisors::Node;
use flotilla_transport::Transport;

use crate::state_json::master_state_json;

/// What the handlers reach the cluster through.
#[derive(Clone)]
struct Api {
    node: Node,
    transport: Transport,
    masters: Vec<String>,
}

impl Api {
    /// The leading master's state: this node's master actor if it leads, else the leader's.
    async fn master_state(&self) -> Result<MasterState, String> {
        if let Some(master) = self.node.whereis_ref::<MasterMsg>(MASTER_ACTOR) {
            return ractor::call_t!(master, MasterMsg::State, 5_000).map_err(|e| e.to_string());
        }
        let mut last = "no other master is known".to_owned();
        for master in self.masters.iter().filter(|m| *m != self.transport.node()) {
            match self.transport.call(master, MASTER_NAME, &MasterQuery::State, Duration::from_secs(2)).await {
                Ok(state) => return Ok(state),
                Err(error) => last = format!("{master}: {error}"),
            }
        }
        Err(format!("no leading master answered ({last})"))
    }
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

impl HttpApi {
    /// Serves on `listen` (port 0 picks a free one).
    pub fn start(
        listen: SocketAddr,
        node: Node,
        transport: Transport,
        masters: Vec<String>,
    ) -> anyhow::Result<HttpApi> {
        let api = web::Data::new(Api { node, transport, masters });
        let server = HttpServer::new(move || {
            let mut app = App::new().app_data(api.clone()).route("/health", web::get().to(health));
            for path in ["/master/state", "/master/state.json", "/state", "/state.json"] {
                app = app.route(path, web::get().to(state));
            }
            app
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(listen)
        .with_context(|| format!("binding the HTTP API to {listen}"))?;
        let address = server.addrs().first().copied().context("the HTTP API has no address")?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(HttpApi { address, handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

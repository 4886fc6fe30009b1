//! Mesos-DNS's HTTP API on a node that runs the DNS server (`[dns] http_listen`, Mesos-DNS's
//! port 8123 by default): `/v1/version`, `/v1/config`, `/v1/hosts/{host}`,
//! `/v1/services/{service}` and `/v1/enumerate`, also under `/mesos_dns/` as DC/OS's Admin
//! Router serves them. The bodies are the DNS core's (`dns::core::http_api`), answered by
//! the node's DNS actor from the index it serves queries from.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use flotilla_actors::dns::{DNS_ACTOR, DnsMsg};
use flotilla_supervisors::Node;

/// How long the DNS actor may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Mesos-DNS HTTP server; stop it with [`DnsHttp::stop`].
pub struct DnsHttp {
    pub address: SocketAddr,
    handle: ServerHandle,
}

async fn answer(node: web::Data<Node>, request: HttpRequest) -> HttpResponse {
    let path = request.path().strip_prefix("/mesos_dns").unwrap_or(request.path()).to_owned();
    let Some(dns) = node.whereis_ref::<DnsMsg>(DNS_ACTOR) else {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "message": "the DNS server is not running" }));
    };
    let ask = |reply| DnsMsg::Http { path, reply };
    match dns.call(ask, Some(ANSWER_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success((status, body))) => {
            HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)).json(body)
        }
        _ => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "message": "the DNS server did not answer" })),
    }
}

impl DnsHttp {
    /// Serves on `listen` (port 0 picks a free one) for the DNS actor of `node`.
    pub fn serve(listen: SocketAddr, node: Node) -> anyhow::Result<DnsHttp> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding Mesos-DNS's HTTP API ([dns] http_listen) to {listen}"))?;
        let address = listener.local_addr().context("the Mesos-DNS HTTP API has no address")?;
        let node = web::Data::new(node);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(node.clone())
                .route("/v1/{tail:.*}", web::get().to(answer))
                .route("/mesos_dns/v1/{tail:.*}", web::get().to(answer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(2)
        .listen(listener)
        .context("serving Mesos-DNS's HTTP API")?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(DnsHttp { address, handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

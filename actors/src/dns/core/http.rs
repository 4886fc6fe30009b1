//! Mesos-DNS's HTTP API as a pure function of the index: the node's HTTP server mounts
//! [`http_api`] under `/v1/`. Shapes follow Mesos-DNS (`resolver.go`): an unknown host or
//! service gives one entry of empty strings, not an empty list.

use serde_json::{Value, json};

use super::config::DnsConfig;
use super::index::{Data, Index};

/// What `/v1/version` reports as the source of this implementation.
pub const SOURCE_URL: &str = "https://example.invalid/flotilla";

/// The status and JSON body for a `GET` of `path` (`/v1/hosts/nginx.marathon.mesos`).
pub fn http_api(index: &Index, config: &DnsConfig, path: &str) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or(path);
    match path.trim_end_matches('/') {
        "/v1/version" => (200, version()),
        "/v1/config" => (200, config_json(config)),
        "/v1/enumerate" => (200, enumerate(index)),
        other => match (other.strip_prefix("/v1/hosts/"), other.strip_prefix("/v1/services/")) {
            (Some(host), _) if !host.is_empty() => (200, hosts(index, host)),
            (_, Some(service)) if !service.is_empty() => (200, services(index, service)),
            _ => (404, json!({ "message": format!("no such resource: {path}") })),
        },
    }
}

fn version() -> Value {
    json!({ "Service": "Mesos-DNS", "Version": env!("CARGO_PKG_VERSION"), "URL": SOURCE_URL })
}

fn config_json(config: &DnsConfig) -> Value {
    let domain = config.normalized_domain();
    let resolvers: Vec<String> = config.upstreams.iter().flatten().map(|upstream| upstream.ip().to_string()).collect();
    let ip_sources: Vec<&str> = config
        .ip_sources
        .iter()
        .map(|source| match source {
            super::config::IpSource::Host => "host",
            super::config::IpSource::Container => "netinfo",
        })
        .collect();
    json!({
        "Domain": domain,
        "Port": config.listen.port(),
        "Listener": config.listen.ip().to_string(),
        "TTL": config.ttl,
        "Timeout": config.forward_timeout_ms.div_ceil(1000),
        "Resolvers": resolvers,
        "RecurseOn": config.upstreams.as_ref().is_none_or(|u| !u.is_empty()),
        "DnsOn": config.enabled,
        "ExternalOn": config.upstreams.as_ref().is_none_or(|u| !u.is_empty()),
        "IPSources": ip_sources,
        "EnforceRFC952": config.rfc952,
        "SRVRecordDefaultWeight": config.srv_weight,
        "SOAMname": format!("ns1.{domain}."),
        "SOARname": format!("root.ns1.{domain}."),
        "SOARefresh": config.soa_refresh,
        "SOARetry": config.soa_retry,
        "SOAExpire": config.soa_expire,
        "SOAMinttl": config.soa_minttl,
        "EnumerationOn": true,
    })
}

fn fqdn(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    format!("{name}.")
}

fn addresses<'a>(index: &'a Index, name: &str) -> impl Iterator<Item = String> + 'a {
    index.records(name).filter_map(|data| match data {
        Data::A(ip) => Some(ip.to_string()),
        Data::Aaaa(ip) => Some(ip.to_string()),
        Data::Srv { .. } => None,
    })
}

fn hosts(index: &Index, host: &str) -> Value {
    let dom = fqdn(host);
    let entries: Vec<Value> = addresses(index, &dom).map(|ip| json!({ "host": dom, "ip": ip })).collect();
    if entries.is_empty() {
        return json!([{ "host": "", "ip": "" }]);
    }
    Value::Array(entries)
}

fn services(index: &Index, service: &str) -> Value {
    let dom = fqdn(service);
    let mut entries = Vec::new();
    for data in index.records(&dom) {
        let Data::Srv { port, target } = data else { continue };
        let host = fqdn(target);
        for ip in addresses(index, target) {
            entries.push(json!({ "service": dom, "host": host, "ip": ip, "port": port.to_string() }));
        }
    }
    if entries.is_empty() {
        return json!([{ "service": "", "host": "", "ip": "", "port": "" }]);
    }
    Value::Array(entries)
}

/// Every framework with its tasks and each task's records (Mesos-DNS `EnumerationData`).
fn enumerate(index: &Index) -> Value {
    let mut frameworks: std::collections::BTreeMap<&str, Vec<Value>> =
        index.frameworks().values().map(|f| (f.name.as_str(), Vec::new())).collect();
    for (id, task) in index.tasks() {
        let records: Vec<Value> = index
            .task_records(id)
            .iter()
            .map(|(name, data)| {
                let (host, rtype) = match data {
                    Data::A(ip) => (ip.to_string(), "A"),
                    Data::Aaaa(ip) => (ip.to_string(), "AAAA"),
                    Data::Srv { port, target } => (format!("{}:{port}", fqdn(target)), "SRV"),
                };
                json!({ "name": fqdn(name), "host": host, "rtype": rtype })
            })
            .collect();
        let entry = json!({ "name": task.name, "id": id, "records": records });
        frameworks.entry(task.framework.as_str()).or_default().push(entry);
    }
    let frameworks: Vec<Value> =
        frameworks.into_iter().map(|(name, tasks)| json!({ "name": name, "tasks": tasks })).collect();
    json!({ "frameworks": frameworks })
}

//! The chaos API and CLI as a user meets them: `flotilla dev --chaos`, faults injected and
//! healed over HTTP (`/chaos/v1`) and with `flotilla chaos`, bad faults refused with their
//! reason, and the events on `/v2/events`.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use flotilla::local_cluster::http_request;

const BOUND: Duration = Duration::from_secs(60);

struct Dev {
    child: Child,
    api: SocketAddr,
    pki_dir: String,
    master: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flotilla dev --chaos` and waits for it to be ready (bounded).
fn start_dev() -> Dev {
    let data_dir = std::env::temp_dir().join(format!("flotilla-chaos-dev-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["dev", "--chaos"])
        .env("FLOTILLA_DATA_DIR", &data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flotilla runs");
    let seen = support::lines_until_ready(&support::stdout_lines(&mut child), BOUND);
    assert!(seen.iter().any(|l| l.starts_with("chaos: enabled on dev and dev-agent")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.trim_start() == "chaos (worker, running)"),
        "the chaos actor is in the tree: {seen:?}"
    );
    let api = seen.iter().find_map(|l| l.strip_prefix("api: http://")).unwrap().trim_end_matches("/master/state");
    let cli = seen.iter().find_map(|l| l.strip_prefix("cli: flotilla task list ")).unwrap();
    let words: Vec<&str> = cli.split_whitespace().collect();
    Dev { child, api: api.parse().unwrap(), pki_dir: words[1].to_owned(), master: words[3].to_owned() }
}

impl Dev {
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, body) = http_request(self.api, method, path, body).expect("the API answers");
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["chaos", "--pki-dir", &self.pki_dir, "--master", &self.master])
            .args(args)
            .output()
            .expect("flotilla chaos runs")
    }
}

fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Reads the event stream until a line contains `needle` (bounded by the socket's timeout).
fn read_until(stream: &mut std::net::TcpStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = stream.read(&mut buf).expect("the event stream keeps coming");
        assert!(n > 0, "the event stream ended before {needle}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn faults_are_injected_listed_and_healed_over_http_and_the_cli() {
    let dev = start_dev();

    // Bad input: 400 with the reason, nothing injected.
    let (status, body) = dev.http("POST", "/chaos/v1/faults", "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not JSON"), "{body}");
    let bad = r#"{"Drop": {"links": {"from": "All", "to": "All"}, "probability": 2.0}}"#;
    let (status, body) = dev.http("POST", "/chaos/v1/faults", bad);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("probability 2"), "{body}");
    let (status, body) = dev.http("POST", "/chaos/v1/faults", r#"{"Explode": {}}"#);
    assert_eq!((status, body["message"].as_str().unwrap().contains("unknown variant")), (400, true), "{body}");

    // The event stream, attached before the fault.
    let mut events = std::net::TcpStream::connect(dev.api).unwrap();
    events.set_read_timeout(Some(BOUND)).unwrap();
    write!(events, "GET /v2/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", dev.api).unwrap();
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "event_stream_attached");

    // A delay on the dev master's links to its agent, held by the master.
    let delay = r#"{"fault": {"Delay": {"links": {"from": {"Only": ["dev"]}, "to": {"Only": ["dev-agent"]}},
        "base": {"secs": 0, "nanos": 20000000}, "jitter": {"secs": 0, "nanos": 0}}}, "durationMs": 600000}"#;
    let (status, body) = dev.http("POST", "/chaos/v1/faults", delay);
    assert_eq!(status, 201, "{body}");
    let id = body["faults"][0]["id"].as_u64().unwrap();
    assert_eq!(body["faults"][0]["node"], "dev");
    read_until(&mut events, &mut seen, "event: chaos_fault_injected");
    let (status, body) = dev.http("GET", "/chaos/v1/faults", "");
    assert_eq!((status, body["faults"].as_array().unwrap().len()), (200, 1), "{body}");
    assert!(body["faults"][0]["healsInMs"].as_u64().unwrap() > 500_000, "{body}");

    // Healed by id: listed no more, and the stream says so.
    let (status, body) = dev.http("DELETE", &format!("/chaos/v1/faults/{id}"), "");
    assert_eq!(status, 200, "{body}");
    read_until(&mut events, &mut seen, "event: chaos_fault_healed");
    assert_eq!(dev.http("GET", "/chaos/v1/faults", "").1["faults"], serde_json::json!([]));
    assert_eq!(dev.http("DELETE", &format!("/chaos/v1/faults/{id}"), "").0, 404);

    // The CLI: a skew of the agent's clock, forwarded by the master to the agent's chaos actor.
    let injected = dev.cli(&["inject", "--for", "600", "--json", "skew", "dev-agent", "-1500"]);
    assert!(injected.status.success(), "{}", String::from_utf8_lossy(&injected.stderr));
    assert_eq!(stdout_json(&injected)["faults"][0]["node"], "dev-agent");
    let listed = dev.cli(&["list", "--node", "dev-agent", "--json"]);
    assert_eq!(stdout_json(&listed)["faults"][0]["fault"]["ClockSkew"]["skew_nanos"], -1_500_000_000i64);
    let table = dev.cli(&["list", "--node", "dev-agent"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("ID") && table.contains("ClockSkew"), "{table}");
    let healed = dev.cli(&["heal", "--all", "--node", "dev-agent"]);
    assert!(healed.status.success(), "{}", String::from_utf8_lossy(&healed.stderr));
    assert_eq!(stdout_json(&dev.cli(&["list", "--node", "dev-agent", "--json"]))["faults"], serde_json::json!([]));

    // Usage errors exit 2; a refused fault exits 1 with the reason.
    assert_eq!(dev.cli(&["inject", "explode", "now"]).status.code(), Some(2));
    let unknown = dev.cli(&["inject", "kill", "dev", "no-such-actor"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no actor is registered as no-such-actor"));
}

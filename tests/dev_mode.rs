//! The first command of the README: `flotilla dev` starts, prints its tree, and stops
//! cleanly on SIGTERM (here with JSON logs, as a log collector would ask for them).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla::local_cluster::http_request;

const BOUND: Duration = Duration::from_secs(30);

/// The body of `GET path` from `address`, retried until the agent has registered (the body
/// names it) or the bound passes.
fn http_get(address: &str, path: &str) -> String {
    let address = address.parse().expect("dev prints a socket address");
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let body = http_request(address, "GET", path, "").map(|(_, body)| body).unwrap_or_default();
        if body.contains("dev-agent") || std::time::Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flotilla_dev_starts_prints_its_tree_and_stops_on_sigterm() {
    let data_dir = std::env::temp_dir().join(format!("flotilla-dev-mode-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--log-format", "json", "dev"])
        .env("FLOTILLA_DATA_DIR", &data_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flotilla runs");
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let lines = support::stdout_lines(&mut child);
    let seen = support::lines_until_ready(&lines, BOUND);
    assert_eq!(seen[0], "node dev (rest_for_one)");
    assert!(seen.iter().any(|l| l == "node dev-agent (rest_for_one)"), "{seen:?}");
    for subtree in ["transport", "control-plane", "agent", "discovery", "api"] {
        assert!(
            seen.iter().any(|l| l.trim_start().starts_with(&format!("{subtree} (supervisor, running)"))),
            "{seen:?}"
        );
    }

    assert!(seen.iter().any(|l| l.trim_start() == "endpoint (worker, running)"), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("transport: quic://127.0.0.1:")), "{seen:?}");
    assert!(seen.iter().any(|l| l.trim_start() == "mesos-agent (worker, running)"), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("tasks: ")), "{seen:?}");
    let api = seen.iter().find_map(|l| l.strip_prefix("api: http://")).expect("dev prints its API");
    let state = http_get(api.trim_end_matches("/master/state"), "/master/state");
    assert!(state.contains("\"slaves\"") && state.contains("dev-agent"), "{state}");
    assert!(data_dir.join("pki/ca.crt").exists() && data_dir.join("pki/dev.key").exists(), "dev made its certificates");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done.recv_timeout(BOUND).expect("flotilla dev exits within the bound").unwrap();
    assert!(status.success(), "exit status {status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(rest, ["flotilla dev: stopping", "flotilla dev: stopped"]);
    let logs = logs.join().expect("stderr read");
    assert!(!logs.is_empty(), "RUST_LOG=info logs something");
    for line in &logs {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string() && entry["target"].is_string() && entry["fields"].is_object(), "{line}");
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

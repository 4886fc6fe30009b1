//! `flotilla chaos inject|list|heal|monkey`: the chaos actor of a running cluster, asked over
//! the transport as an operator (the first master that answers carries out its part and
//! forwards the rest), as tables for people and `--json` for scripts.
//!
//! A fault is given as JSON (a `Fault`, or `{"fault": ..., "durationMs": ..., "node": ...}`,
//! the same bodies as `POST /chaos/v1/faults`), as `-` (that JSON on standard input), or in
//! shorthand ([`parse_shorthand`]).

use std::io::Read;
use std::time::Duration;

use anyhow::bail;
use flotilla_actors::chaos::actor::reply_message;
use flotilla_actors::chaos::core::faults::kind;
use flotilla_actors::chaos::protocol::{
    CHAOS_NAME, ChaosReply, ChaosRequest, FaultView, Injection, MonkeyRequest, MonkeyStatus,
};
use flotilla_transport::core::fault::Links;
use flotilla_transport::core::wire::RemoteError;
use flotilla_transport::{CallError, Fault, NodeSet};
use serde_json::json;

use crate::chaos_http::{CHAOS_DISABLED, parse_injection};
use crate::cli::{ChaosCommand, ClusterConnection, MonkeyCommand};
use crate::client::{ClusterClient, NoAnswer};

/// A command line that does not say a valid fault (exit status 2, as clap's usage errors).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

const SHORTHAND_HELP: &str = "shorthands: heal | partition A B | partition-one-way A B | drop FROM TO P | \
    duplicate FROM TO P | delay FROM TO BASE_MS [JITTER_MS] | reorder FROM TO P WINDOW_MS | clog FROM TO | \
    kill NODE ACTOR | crash NODE | restart NODE | pause NODE MS | skew NODE MS \
    (a node set is `*` or ids separated by commas)";

/// A fault in shorthand, e.g. `["partition", "m1", "m2,m3"]` or `["skew", "m1", "-2000"]`.
pub fn parse_shorthand(words: &[String]) -> Result<Fault, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let fault = match words.as_slice() {
        ["heal"] => Fault::Heal,
        ["partition", a, b] => Fault::Partition { a: nodes(a)?, b: nodes(b)?, one_way: false },
        ["partition-one-way", a, b] => Fault::Partition { a: nodes(a)?, b: nodes(b)?, one_way: true },
        ["drop", from, to, p] => Fault::Drop { links: links(from, to)?, probability: number(p)? },
        ["duplicate", from, to, p] => Fault::Duplicate { links: links(from, to)?, probability: number(p)? },
        ["delay", from, to, base] => {
            Fault::Delay { links: links(from, to)?, base: millis(base)?, jitter: Duration::ZERO }
        }
        ["delay", from, to, base, jitter] => {
            Fault::Delay { links: links(from, to)?, base: millis(base)?, jitter: millis(jitter)? }
        }
        ["reorder", from, to, p, window] => {
            Fault::Reorder { links: links(from, to)?, probability: number(p)?, window: millis(window)? }
        }
        ["clog", from, to] => Fault::Clog { links: links(from, to)? },
        ["kill", node, name] => Fault::KillActor { node: (*node).to_owned(), name: (*name).to_owned() },
        ["crash", node] => Fault::CrashNode { node: (*node).to_owned() },
        ["restart", node] => Fault::RestartNode { node: (*node).to_owned() },
        ["pause", node, ms] => Fault::PauseNode { node: (*node).to_owned(), for_: millis(ms)? },
        ["skew", node, ms] => {
            let ms: i64 = ms.parse().map_err(|_| format!("{ms:?} is not a whole number of milliseconds"))?;
            Fault::ClockSkew { node: (*node).to_owned(), skew_nanos: ms.saturating_mul(1_000_000) }
        }
        _ => return Err(format!("{:?} is not a fault; {SHORTHAND_HELP}", words.join(" "))),
    };
    Ok(fault)
}

fn nodes(text: &str) -> Result<NodeSet, String> {
    if text == "*" {
        return Ok(NodeSet::All);
    }
    let ids: Vec<&str> = text.split(',').filter(|id| !id.is_empty()).collect();
    if ids.is_empty() {
        return Err(format!("{text:?} names no node (use `*` for every node)"));
    }
    Ok(NodeSet::of(ids))
}

fn links(from: &str, to: &str) -> Result<Links, String> {
    Ok(Links::new(nodes(from)?, nodes(to)?))
}

fn number(text: &str) -> Result<f64, String> {
    text.parse().map_err(|_| format!("{text:?} is not a number"))
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse().map(Duration::from_millis).map_err(|_| format!("{text:?} is not a whole number of milliseconds"))
}

/// The injection the command line asks for.
fn injection(words: &[String], for_secs: Option<f64>, node: Option<String>) -> Result<Injection, Usage> {
    let mut injection = match words {
        [dash] if dash == "-" => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).map_err(|e| Usage(format!("reading standard input: {e}")))?;
            parse_injection(&body, None).map_err(Usage)?
        }
        [json] if json.trim_start().starts_with(['{', '"']) => parse_injection(json.as_bytes(), None).map_err(Usage)?,
        words => Injection { fault: parse_shorthand(words).map_err(Usage)?, duration: None, node: None },
    };
    if let Some(secs) = for_secs {
        let duration =
            Duration::try_from_secs_f64(secs).map_err(|_| Usage(format!("--for {secs}: not a duration in seconds")))?;
        injection.duration = Some(duration);
    }
    injection.node = node.or(injection.node);
    Ok(injection)
}

/// `flotilla chaos ...`.
pub async fn chaos(connection: ClusterConnection, command: ChaosCommand) -> anyhow::Result<()> {
    let (request, json_out) = match command {
        ChaosCommand::Inject { fault, for_secs, node, json } => {
            (ChaosRequest::Inject(injection(&fault, for_secs, node)?), json)
        }
        ChaosCommand::List { node, json } => (ChaosRequest::List { node }, json),
        ChaosCommand::Heal { id, all: _, node, json } => (ChaosRequest::Heal { node, id }, json),
        ChaosCommand::Monkey { command } => match command {
            MonkeyCommand::Start { seed, rate, span_secs, actors, json } => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(Usage(format!("--rate {rate}: faults per minute must be more than zero")).into());
                }
                let mean_interval = Duration::from_secs_f64(60.0 / rate);
                let span = Duration::from_secs(span_secs);
                (ChaosRequest::MonkeyStart(MonkeyRequest { seed, mean_interval, span, actors }), json)
            }
            MonkeyCommand::Stop { json } => (ChaosRequest::MonkeyStop, json),
            MonkeyCommand::Status { json } => (ChaosRequest::MonkeyStatus, json),
        },
    };
    let reply = ask(&connection, &request).await?;
    print_reply(&reply, json_out)?;
    match reply {
        ChaosReply::Faults { failed, .. } if failed.is_empty() => Ok(()),
        ChaosReply::Monkey(_) => Ok(()),
        other => bail!("{}", reply_message(&other)),
    }
}

/// Sends the request to the first master that answers.
async fn ask(connection: &ClusterConnection, request: &ChaosRequest) -> anyhow::Result<ChaosReply> {
    let client = ClusterClient::connect(&connection.pki_dir, &connection.name, &connection.masters).await?;
    let deadline = Duration::from_secs(connection.timeout_secs);
    let mut last = String::from("no master listed");
    let mut outcome = None;
    for (master, _) in &connection.masters {
        match client.transport.call(master, CHAOS_NAME, request, deadline).await {
            Ok(reply) => {
                outcome = Some(Ok(reply));
                break;
            }
            Err(CallError::Remote(RemoteError::UnknownActor { .. })) => {
                outcome = Some(Err(anyhow::anyhow!("{master}: {CHAOS_DISABLED}")));
                break;
            }
            Err(error) => last = format!("{master}: {error}"),
        }
    }
    client.close().await;
    outcome.unwrap_or_else(|| Err(anyhow::Error::new(NoAnswer(format!("no master answered ({last})")))))
}

fn print_reply(reply: &ChaosReply, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        let value = match reply {
            ChaosReply::Faults { faults, failed } => json!({ "faults": faults, "failed": failed }),
            ChaosReply::Monkey(status) => serde_json::to_value(status)?,
            other => json!({ "message": reply_message(other) }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match reply {
        ChaosReply::Faults { faults, failed } => {
            print!("{}", fault_table(faults));
            for failure in failed {
                eprintln!("{}: {}", failure.node, failure.error);
            }
        }
        ChaosReply::Monkey(status) => println!("{}", monkey_line(status)),
        _ => {}
    }
    Ok(())
}

/// Faults as a table for people.
pub fn fault_table(faults: &[FaultView]) -> String {
    let mut out = format!("{:<6} {:<16} {:<12} {:<8} {:<10} {}\n", "ID", "NODE", "KIND", "ACTIVE", "HEALS IN", "FAULT");
    for view in faults {
        let heals = view.heals_in_ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let fault = serde_json::to_string(&view.fault).unwrap_or_default();
        let active = if view.active { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<6} {:<16} {:<12} {:<8} {:<10} {fault}\n",
            view.id,
            view.node,
            kind(&view.fault),
            active,
            heals
        ));
    }
    out
}

fn monkey_line(status: &MonkeyStatus) -> String {
    match status.seed {
        Some(seed) => format!(
            "monkey: {} (seed {seed}; {} injected, {} failed, {} to come)",
            if status.running { "running" } else { "done" },
            status.injected,
            status.failed,
            status.remaining
        ),
        None => "monkey: not started".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn shorthands_say_every_fault() {
        assert_eq!(parse_shorthand(&words("heal")), Ok(Fault::Heal));
        assert_eq!(
            parse_shorthand(&words("partition m1 m2,m3")),
            Ok(Fault::Partition { a: NodeSet::one("m1"), b: NodeSet::of(["m2", "m3"]), one_way: false })
        );
        assert_eq!(
            parse_shorthand(&words("drop a1 * 0.3")),
            Ok(Fault::Drop { links: Links::new(NodeSet::one("a1"), NodeSet::All), probability: 0.3 })
        );
        assert_eq!(
            parse_shorthand(&words("delay a b 100 20")),
            Ok(Fault::Delay {
                links: Links::one("a", "b"),
                base: Duration::from_millis(100),
                jitter: Duration::from_millis(20)
            })
        );
        assert_eq!(
            parse_shorthand(&words("skew m1 -2000")),
            Ok(Fault::ClockSkew { node: "m1".into(), skew_nanos: -2_000_000_000 })
        );
        assert_eq!(
            parse_shorthand(&words("kill a1 dns")),
            Ok(Fault::KillActor { node: "a1".into(), name: "dns".into() })
        );
        assert_eq!(
            parse_shorthand(&words("pause a1 500")),
            Ok(Fault::PauseNode { node: "a1".into(), for_: Duration::from_millis(500) })
        );
    }

    #[test]
    fn bad_shorthands_say_why() {
        assert!(parse_shorthand(&words("explode a1")).unwrap_err().contains("shorthands:"));
        assert!(parse_shorthand(&words("drop a b lots")).unwrap_err().contains("\"lots\" is not a number"));
        assert!(parse_shorthand(&words("partition , b")).unwrap_err().contains("names no node"));
        assert!(parse_shorthand(&words("pause a -5")).unwrap_err().contains("milliseconds"));
    }

    #[test]
    fn a_duration_and_a_node_join_the_fault() {
        let injection = injection(&words("drop a b 0.5"), Some(1.5), Some("a".into())).unwrap();
        assert_eq!((injection.duration, injection.node), (Some(Duration::from_millis(1500)), Some("a".into())));
        assert!(injection_err(&words("{bad"), None).contains("not JSON"));
        assert!(injection_err(&words("heal"), Some(-1.0)).contains("--for -1"));
    }

    fn injection_err(words: &[String], for_secs: Option<f64>) -> String {
        injection(words, for_secs, None).unwrap_err().0
    }
}

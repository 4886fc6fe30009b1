//! Health checks run on the agent, next to the task (never from the scheduler): one linked
//! actor per checked task probes it on the schedule of its [`HealthTracker`] and tells the
//! agent when its health changes or when it must be killed. The probes:
//!
//! - HTTP(S): `GET path` on `127.0.0.1:port` (tasks share the host's network), the status line
//!   read; healthy on 200–399. HTTPS does not verify the task's certificate, as Mesos does not:
//!   the check is about liveness, and tasks rarely hold certificates for 127.0.0.1.
//! - TCP: a connection to `127.0.0.1:port`.
//! - Command: `/bin/sh -c` in the task's sandbox with the task's environment, in a process
//!   group of its own so that a timeout kills everything it started. It runs in the agent's
//!   namespaces, not the task's: the task sees the host's file system, so only its pid
//!   namespace differs.
//!
//! Each probe is bounded by the check's timeout; a probe that overruns fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_supervisors::Node;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;

use super::actor::AgentMsg;
use super::core::health::{HealthTracker, ProbeResult};
use super::http::{http_head, status_code};
use crate::mesos::core::health::{HealthCheck, Probe};

pub struct HealthArgs {
    pub task_id: String,
    pub check: HealthCheck,
    pub sandbox: PathBuf,
    pub env: BTreeMap<String, String>,
    pub agent: ActorRef<AgentMsg>,
    pub node: Node,
}

pub struct HealthState {
    args: HealthArgs,
    tracker: HealthTracker,
}

/// The message that starts the next probe.
#[derive(Debug)]
pub struct ProbeNow;

#[derive(Debug, Default)]
pub struct HealthChecker;

fn now_ms(node: &Node) -> u64 {
    node.now().since_origin().as_millis() as u64
}

impl Actor for HealthChecker {
    type Msg = ProbeNow;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(&self, myself: ActorRef<ProbeNow>, args: HealthArgs) -> Result<HealthState, ActorProcessingErr> {
        let tracker = HealthTracker::new(&args.check, now_ms(&args.node));
        let state = HealthState { args, tracker };
        state.schedule(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeNow>,
        _: ProbeNow,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        let timeout = Duration::from_millis(args.check.timeout_ms);
        let result = match tokio::time::timeout(timeout, probe(&args.check.probe, &args.sandbox, &args.env)).await {
            Ok(result) => result,
            Err(_) => ProbeResult::Failed(format!("no answer within {} ms", args.check.timeout_ms)),
        };
        let verdict = state.tracker.record(now_ms(&args.node), result);
        let task_id = args.task_id.clone();
        if verdict.report.is_some() || verdict.kill.is_some() {
            let healthy = state.tracker.healthy().unwrap_or(false);
            let _ = args.agent.send_message(AgentMsg::Health { task_id, healthy, kill: verdict.kill.clone() });
        }
        if verdict.kill.is_some() {
            myself.stop(None);
        } else {
            state.schedule(&myself);
        }
        Ok(())
    }
}

impl HealthState {
    fn schedule(&self, myself: &ActorRef<ProbeNow>) {
        let wait = self.tracker.next_probe_ms().saturating_sub(now_ms(&self.args.node));
        myself.send_after(Duration::from_millis(wait), || ProbeNow);
    }
}

/// Runs one probe (unbounded: the caller applies the timeout).
async fn probe(probe: &Probe, sandbox: &std::path::Path, env: &BTreeMap<String, String>) -> ProbeResult {
    let outcome = match probe {
        Probe::Tcp { port } => TcpStream::connect(("127.0.0.1", *port)).await.map(|_| ProbeResult::Passed),
        Probe::Http { tls, port, path, ignore_1xx } => {
            http_head("127.0.0.1", *port, path, *tls).await.map(|head| judge_status_line(&head, *ignore_1xx))
        }
        Probe::Command { value } => command(value, sandbox, env).await,
    };
    outcome.unwrap_or_else(|error| ProbeResult::Failed(error.to_string()))
}

/// Healthy on 200–399; a 1xx is ignored when asked; anything else, or no status line, fails.
fn judge_status_line(answer: &[u8], ignore_1xx: bool) -> ProbeResult {
    let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    match status_code(answer) {
        Some(200..=399) => ProbeResult::Passed,
        Some(100..=199) if ignore_1xx => ProbeResult::Ignored,
        Some(code) => ProbeResult::Failed(format!("HTTP status {code}")),
        None if line.is_empty() => ProbeResult::Failed("the connection closed without an answer".into()),
        None => {
            ProbeResult::Failed(format!("not an HTTP status line: {:?}", line.chars().take(80).collect::<String>()))
        }
    }
}

async fn command(
    value: &str,
    sandbox: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> std::io::Result<ProbeResult> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(value)
        .current_dir(sandbox)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    // On a timeout the caller drops this future: the group goes with it.
    let group = child.id().map(|pid| GroupGuard(pid as i32));
    let status = child.wait().await?;
    if let Some(group) = group {
        group.disarm();
    }
    Ok(if status.success() {
        ProbeResult::Passed
    } else {
        ProbeResult::Failed(match status.code() {
            Some(code) => format!("the command exited with status {code}"),
            None => "the command was killed by a signal".to_owned(),
        })
    })
}

/// Kills a command's process group when dropped, unless disarmed (the fetcher's extractions
/// use it too).
pub(crate) struct GroupGuard(pub(crate) i32);

impl GroupGuard {
    pub(crate) fn disarm(mut self) {
        self.0 = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn status_lines_are_judged_as_mesos_does() {
        assert_eq!(judge_status_line(b"HTTP/1.1 200 OK\r\n", false), ProbeResult::Passed);
        assert_eq!(judge_status_line(b"HTTP/1.0 302 Found\r\n", false), ProbeResult::Passed);
        assert_eq!(judge_status_line(b"HTTP/1.1 100 Continue\r\n", true), ProbeResult::Ignored);
        assert!(matches!(judge_status_line(b"HTTP/1.1 100 Continue\r\n", false), ProbeResult::Failed(_)));
        assert_eq!(judge_status_line(b"HTTP/1.1 503 Busy\r\n", false), ProbeResult::Failed("HTTP status 503".into()));
        assert!(matches!(judge_status_line(b"", false), ProbeResult::Failed(m) if m.contains("without an answer")));
        assert!(
            matches!(judge_status_line(b"SSH-2.0-OpenSSH\r\n", false), ProbeResult::Failed(m) if m.contains("not an HTTP"))
        );
    }

    #[tokio::test]
    async fn probes_pass_and_fail_against_real_sockets_and_commands() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = async {
            for status in ["200 OK", "500 Oops"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 512];
                let _ = socket.read(&mut request).await.unwrap();
                socket.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
            }
        };
        let sandbox = std::env::temp_dir();
        let env = BTreeMap::from([("WANT".to_owned(), "yes".to_owned())]);
        let http = Probe::Http { tls: false, port, path: "/health".into(), ignore_1xx: false };
        let client = async {
            let ok = super::probe(&http, &sandbox, &env).await;
            let bad = super::probe(&http, &sandbox, &env).await;
            (ok, bad)
        };
        let ((ok, bad), ()) = tokio::join!(client, server);
        assert_eq!(ok, ProbeResult::Passed);
        assert_eq!(bad, ProbeResult::Failed("HTTP status 500".into()));
        assert_eq!(super::probe(&Probe::Tcp { port }, &sandbox, &env).await, ProbeResult::Passed);
        drop(listener);
        assert!(matches!(super::probe(&Probe::Tcp { port }, &sandbox, &env).await, ProbeResult::Failed(_)));
        let command = |value: &str| Probe::Command { value: value.into() };
        assert_eq!(super::probe(&command("test \"$WANT\" = yes"), &sandbox, &env).await, ProbeResult::Passed);
        assert_eq!(
            super::probe(&command("exit 4"), &sandbox, &env).await,
            ProbeResult::Failed("the command exited with status 4".into())
        );
    }

    #[tokio::test]
    async fn a_command_that_overruns_its_timeout_is_killed_with_what_it_started() {
        let marker = std::env::temp_dir().join(format!("flotilla-health-{}", std::process::id()));
        let value = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let probe = Probe::Command { value };
        let sandbox = std::env::temp_dir();
        let no_env = BTreeMap::new();
        let run = super::probe(&probe, &sandbox, &no_env);
        assert!(tokio::time::timeout(Duration::from_secs(1), run).await.is_err(), "the probe overran");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        let _ = std::fs::remove_file(&marker);
        // The group was killed when the probe was dropped: the sleep dies (gone, or a zombie
        // until its new parent reaps it) within the bound.
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')').next().unwrap_or_default().split_whitespace().next().unwrap_or("gone").to_owned()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !matches!(state().as_str(), "gone" | "Z") {
            assert!(std::time::Instant::now() < deadline, "the background sleep survived (state {})", state());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

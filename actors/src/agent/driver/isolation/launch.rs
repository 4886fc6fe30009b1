//! The agent's side of a launch: start the shim, hand it the plan, wait for its handshake.
//!
//! The agent is a multithreaded tokio process, and `unshare(CLONE_NEWNS)` refuses a
//! multithreaded caller, so the namespaces are made in a freshly exec'd, single-threaded
//! process: the shim (`flotilla __task-init`, see [`super::shim`]), which becomes the task's
//! supervisor. It reads the plan from stdin, starts its own session (so it lives on when the
//! agent dies) and says `ready` once the command has started. It is the launching agent's
//! child, but nothing here relies on that: a task from an earlier agent process is watched
//! exactly like a fresh one (by pid and start time), and the agent reaps its own children
//! when it sees them exit ([`super::process::reap_child`]). One exec per launch, as process
//! creation is the dominant cost of a launch.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};

use super::IsolationConfig;
use super::core::records::{Handshake, ShimArgs};
use crate::agent::driver::{DriverError, LaunchSpec};

/// What the shim is told on its stdin (postcard): the spec, whether to isolate, and the
/// cgroup directories its init joins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShimPlan {
    pub spec: LaunchSpec,
    pub isolate: bool,
    pub cgroups: Vec<PathBuf>,
}

/// A started supervisor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started {
    pub pid: i32,
    pub start_ticks: u64,
}

/// Starts the shim for `plan` and returns once the task's command has started (exec'd), or
/// with why it could not start.
pub(crate) fn start(config: &IsolationConfig, plan: &ShimPlan) -> Result<Started, DriverError> {
    let spec = &plan.spec;
    let args = ShimArgs {
        driver_root: config.cgroup_root.clone(),
        task_id: spec.task_id.clone(),
        run_dir: spec.run_dir.clone(),
    };
    let bytes =
        postcard::to_stdvec(plan).map_err(|e| DriverError::Launch(format!("cannot encode the launch plan ({e})")))?;
    let mut child = Command::new(&config.shim_program)
        .args(&config.shim_args)
        .args(args.to_args())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The shim reports launch errors in its handshake and writes later trouble to
        // <run_dir>/shim.log itself, only when there is any: a file created per launch costs.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            DriverError::Launch(format!(
                "cannot start the task shim {} ({e}): check IsolationConfig::shim_program",
                config.shim_program.display()
            ))
        })?;
    hand_over(&mut child, &bytes, config.launch_timeout).map_err(|message| {
        // The supervisor gave up (and exits) or hangs: either way it is ended and reaped here.
        let _ = child.kill();
        let _ = child.wait();
        DriverError::Launch(message)
    })
}

/// Writes the plan, then reads the supervisor's handshake line: ready or error.
fn hand_over(child: &mut Child, plan: &[u8], timeout: Duration) -> Result<Started, String> {
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(plan));
    if let Some(Err(error)) = written {
        return Err(format!("cannot hand the plan to the shim ({error})"));
    }
    let Some(stdout) = child.stdout.take() else { return Err("the shim has no stdout pipe".to_owned()) };
    let mut reader = LineReader { stdout, buffer: Vec::new(), deadline: Instant::now() + timeout };
    let line = reader.next_line()?;
    match Handshake::decode(&line) {
        Some(Handshake::Ready { pid, start_ticks }) => Ok(Started { pid, start_ticks }),
        Some(Handshake::Error(message)) => Err(message),
        None => {
            Err(format!("the shim said {line:?}, which is not a handshake line: is shim_program a flotilla binary?"))
        }
    }
}

/// Reads a line from the shim's stdout with a deadline.
struct LineReader {
    stdout: ChildStdout,
    buffer: Vec<u8>,
    deadline: Instant,
}

impl LineReader {
    fn next_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err("the shim did not report within the launch timeout".to_owned()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(error) => return Err(format!("cannot wait for the shim ({error})")),
            }
            let mut chunk = [0u8; 512];
            match nix::unistd::read(&self.stdout, &mut chunk) {
                Ok(0) => return Err("the shim exited without starting the task".to_owned()),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(error) => return Err(format!("cannot read the shim's handshake ({error})")),
            }
        }
    }
}

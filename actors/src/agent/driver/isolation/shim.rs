//! The task shim: the hidden `flotilla __task-init` subcommand (or the small
//! `flotilla-task-init` binary), run in a fresh, single-threaded process — both dispatch it
//! before anything could start a thread.
//!
//! Two roles, one binary image:
//! 1. **supervisor** (exec'd by the agent; host namespaces, outside the task's cgroups, so a
//!    kill of the cgroups or an OOM kill never takes it): reads the plan from stdin, makes
//!    its own session (so it outlives the agent); when isolating, unshares a pid namespace
//!    for its next child; starts the leader (below); writes the leader record (plain only)
//!    and `ready`;
//!    then copies the task's stdout/stderr into the sandbox with rotation, forwards SIGTERM,
//!    and when the leader ends writes the exit record (with the OOM counter read from the
//!    memory cgroup) by temp file + rename.
//! 2. **init** (isolating only): forked after the unshare, so it is pid 1 of the new pid
//!    namespace — the task's command never is, since pid 1 ignores SIGTERM without a
//!    handler. It waits until the supervisor has moved it into the cgroups, makes its own
//!    mount, uts and ipc namespaces (every mount private first, so the fresh /proc it mounts
//!    does not propagate to the host; the hostname set), starts the command, forwards
//!    SIGTERM to every process of the namespace, reaps orphans, and hands the command's
//!    status to the supervisor before it exits (which kills whatever is left in the
//!    namespace).
//!
//! Without isolation (the plain driver) the leader is the command itself, in its own
//! process group; when it exits the supervisor kills the rest of the group, as the isolating
//! driver's namespace does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{ForkResult, Pid, getpid, pipe2, sethostname, setsid};

use super::cgroups;
use super::core::logs::{LogStep, plan_append, rotated_name, rotation_renames};
use super::core::procfs::parse_stat;
use super::core::records::{
    EXIT_FILE, Handshake, LEADER_FILE, LeaderKind, LeaderRecord, SHIM_LOG_FILE, ShimArgs, TASK_INIT_SUBCOMMAND,
    decode_exit, encode_exit, with_oom,
};
use super::launch::ShimPlan;
use super::process;
use crate::agent::driver::{LaunchSpec, LogRotation, TaskExit};

/// How long the supervisor keeps copying output after the leader ended, for writers that
/// escaped it (only possible without a pid namespace).
const DRAIN: Duration = Duration::from_secs(1);

/// What the init says once the command started (anything else is why it did not).
const STARTED: &[u8] = b"+";

/// The read size of the output copy.
const CHUNK: usize = 64 * 1024;

/// The shim's entry point: `args` are the arguments after the subcommand; returns the
/// supervisor's exit status (0 once it wrote the exit record).
pub fn task_init_main(args: &[String]) -> i32 {
    let Some(shim) = ShimArgs::find(args) else {
        eprintln!(
            "flotilla {TASK_INIT_SUBCOMMAND}: an internal command of the agent's task driver, not for direct use \
             (expected --driver-root ROOT --task ID --run-dir DIR and a plan on stdin)"
        );
        return 2;
    };
    let plan = match read_plan(&shim) {
        Ok(plan) => plan,
        Err(message) => {
            say(&Handshake::Error(message));
            return 1;
        }
    };
    supervise(&shim, &plan)
}

/// `fork(2)`.
#[allow(unsafe_code)]
fn fork_process() -> nix::Result<ForkResult> {
    // SAFETY: the shim is single-threaded (the flotilla binary dispatches it before it starts
    // any runtime or thread), so the child may run any code after the fork.
    unsafe { nix::unistd::fork() }
}

fn read_plan(shim: &ShimArgs) -> Result<ShimPlan, String> {
    let mut bytes = Vec::new();
    io::stdin().lock().read_to_end(&mut bytes).map_err(|e| format!("cannot read the launch plan ({e})"))?;
    let plan: ShimPlan = postcard::from_bytes(&bytes).map_err(|e| {
        format!("cannot decode the launch plan ({e}): the shim program must be the same flotilla build as the agent")
    })?;
    if plan.spec.task_id != shim.task_id {
        return Err(format!("the plan is for task {:?}, the command line for {:?}", plan.spec.task_id, shim.task_id));
    }
    Ok(plan)
}

/// Writes one handshake line on stdout, unbuffered (a buffered line would be copied into
/// the forked init).
fn say(line: &Handshake) {
    let _ = nix::unistd::write(io::stdout(), line.encode().as_bytes());
}

// -------------------------------------------------------------------------------------------
// The supervisor.
// -------------------------------------------------------------------------------------------

fn supervise(shim: &ShimArgs, plan: &ShimPlan) -> i32 {
    // Its own session: the agent's death, or a signal to its group, leaves the task alone.
    if let Err(error) = setsid() {
        say(&Handshake::Error(format!("cannot start a session ({error})")));
        return 1;
    }
    let start_ticks = match own_start_ticks() {
        Ok(ticks) => ticks,
        Err(message) => {
            say(&Handshake::Error(message));
            return 1;
        }
    };
    let mut task = match Supervised::start(plan) {
        Ok(task) => task,
        Err(message) => {
            say(&Handshake::Error(message));
            return 1;
        }
    };
    // A plain command leads the task on its own; an init is found as the supervisor's only
    // child (see `process::find_leader`).
    let record =
        if plan.isolate { Ok(()) } else { write_atomically(&shim.run_dir, LEADER_FILE, &task.leader.encode()) };
    if let Err(error) = record {
        let _ = process::signal_leader(&task.leader, Signal::SIGKILL);
        say(&Handshake::Error(format!("cannot write the leader record in {} ({error})", shim.run_dir.display())));
        return 1;
    }
    say(&Handshake::Ready { pid: getpid().as_raw(), start_ticks });
    detach_stdio();
    let exit = task.run();
    let exit = with_oom(exit, cgroups::oom_kills(&plan.cgroups) > 0);
    match write_atomically(&shim.run_dir, EXIT_FILE, &encode_exit(&exit)) {
        Ok(()) => 0,
        Err(error) => {
            note(&shim.run_dir, &format!("cannot write the exit record in {} ({error})", shim.run_dir.display()));
            1
        }
    }
}

/// The supervisor's start time, read before any /proc is mounted over.
fn own_start_ticks() -> Result<u64, String> {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map(|stat| stat.start_ticks)
        .ok_or_else(|| "cannot read /proc/self/stat: is /proc mounted?".to_owned())
}

/// Appends a line to `<run_dir>/shim.log`: the shim's trouble after the handshake, for the
/// operator (the file exists only if there was any).
fn note(run_dir: &Path, message: &str) {
    let log = OpenOptions::new().create(true).append(true).open(run_dir.join(SHIM_LOG_FILE));
    if let Ok(mut log) = log {
        let _ = writeln!(log, "{message}");
    }
}

/// Points stdin and stdout at /dev/null, so the agent's handshake pipe is not held open.
fn detach_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Writes `dir/name` through a temporary file and a rename, so a reader never sees half.
fn write_atomically(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let temporary = dir.join(format!(".{name}.tmp"));
    fs::write(&temporary, content)?;
    fs::rename(&temporary, dir.join(name))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe ({e})"))
}

/// A running task as its supervisor holds it.
struct Supervised {
    leader: LeaderRecord,
    signals: SignalFd,
    outputs: Vec<Output>,
    /// From the init: the command's status (isolating only).
    status: Option<OwnedFd>,
}

/// One captured stream: the pipe's read end (until EOF) and the sandbox file.
struct Output {
    pipe: Option<OwnedFd>,
    log: LogFile,
}

impl Supervised {
    fn start(plan: &ShimPlan) -> Result<Supervised, String> {
        let spec = &plan.spec;
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
            mask.add(signal);
        }
        mask.thread_block().map_err(|e| format!("cannot block signals ({e})"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("cannot create a signalfd ({e})"))?;
        let stdout_log = LogFile::open(spec, "stdout")?;
        let stderr_log = LogFile::open(spec, "stderr")?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let streams = Streams { stdout: out_w, stderr: err_w };
        let (leader, status) =
            if plan.isolate { start_isolated(plan, streams, &signals)? } else { (start_plain(spec, streams)?, None) };
        let outputs =
            vec![Output { pipe: Some(out_r), log: stdout_log }, Output { pipe: Some(err_r), log: stderr_log }];
        Ok(Supervised { leader, signals, outputs, status })
    }

    /// Copies output and handles signals until the leader has ended and the output is
    /// drained; returns how the task ended.
    fn run(&mut self) -> TaskExit {
        let mut ended: Option<(TaskExit, Instant)> = None;
        loop {
            let open = self.outputs.iter().any(|o| o.pipe.is_some());
            if let Some((exit, drained_by)) = &ended
                && (!open || Instant::now() >= *drained_by)
            {
                return exit.clone();
            }
            let timeout = match &ended {
                Some((_, by)) => {
                    PollTimeout::try_from(by.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::ZERO)
                }
                None => PollTimeout::NONE,
            };
            let (signalled, readable) = self.poll(timeout);
            for index in readable {
                self.outputs[index].copy_chunk();
            }
            if signalled && ended.is_none() {
                ended = self.handle_signals().map(|exit| (exit, Instant::now() + DRAIN));
            }
        }
    }

    /// Waits for a signal or output; returns whether the signalfd is readable and which
    /// outputs are.
    fn poll(&self, timeout: PollTimeout) -> (bool, Vec<usize>) {
        let open: Vec<(usize, &OwnedFd)> =
            self.outputs.iter().enumerate().filter_map(|(i, o)| o.pipe.as_ref().map(|p| (i, p))).collect();
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(open.iter().map(|(_, pipe)| PollFd::new(pipe.as_fd(), PollFlags::POLLIN)));
        if poll(&mut fds, timeout).is_err() {
            return (false, Vec::new());
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let readable = open.iter().zip(&fds[1..]).filter(|(_, fd)| ready(fd)).map(|((i, _), _)| *i).collect();
        (ready(&fds[0]), readable)
    }

    /// Forwards stop requests to the leader; returns the task's exit once the leader ended.
    fn handle_signals(&mut self) -> Option<TaskExit> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signal = i32::try_from(info.ssi_signo).ok().and_then(|s| Signal::try_from(s).ok());
            if matches!(signal, Some(Signal::SIGTERM | Signal::SIGINT)) {
                let _ = process::signal_leader(&self.leader, Signal::SIGTERM);
            }
        }
        self.reap_leader()
    }

    /// The task's exit if the leader has ended. The init hands over the command's status;
    /// without it (the init itself was killed) the init's own status stands. A plain
    /// command's group is killed before the command is reaped, so its pgid cannot be reused
    /// meanwhile.
    fn reap_leader(&mut self) -> Option<TaskExit> {
        let pid = Pid::from_raw(self.leader.pid);
        if self.status.is_none() {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            if matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive) | Err(_)) {
                return None;
            }
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let own = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => TaskExit::exited(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => TaskExit::signalled(signal as i32),
            Ok(_) => return None,
            Err(_) => TaskExit::signalled(Signal::SIGKILL as i32),
        };
        let mut handed = String::new();
        if let Some(status) = self.status.take() {
            let _ = File::from(status).read_to_string(&mut handed);
        }
        Some(decode_exit(&handed).unwrap_or(own))
    }
}

impl Output {
    fn copy_chunk(&mut self) {
        let Some(pipe) = &self.pipe else { return };
        let mut chunk = vec![0u8; CHUNK];
        match nix::unistd::read(pipe, &mut chunk) {
            Ok(0) => self.pipe = None,
            Ok(n) => self.log.append(&chunk[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.pipe = None,
        }
    }
}

/// The write ends the command's stdout and stderr go to.
struct Streams {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The command as Mesos runs it: `/bin/sh -c value` for a shell command, else `value` with
/// `arguments` as its argv (argv[0] included); exactly the spec's environment, the sandbox
/// as working directory, stdin from /dev/null.
fn task_command(spec: &LaunchSpec, streams: Streams) -> Command {
    let command = &spec.command;
    let mut cmd = if command.shell {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&command.value);
        cmd
    } else {
        let mut cmd = Command::new(&command.value);
        if let Some((argv0, rest)) = command.arguments.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd
    };
    cmd.env_clear()
        .envs(&spec.env)
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::from(streams.stdout))
        .stderr(Stdio::from(streams.stderr));
    cmd
}

fn cannot_run(spec: &LaunchSpec, error: &io::Error) -> String {
    let what = if spec.command.shell { "/bin/sh" } else { spec.command.value.as_str() };
    format!("cannot run {what:?} in {} ({error})", spec.sandbox.display())
}

/// Without isolation: the command leads its own process group.
fn start_plain(spec: &LaunchSpec, streams: Streams) -> Result<LeaderRecord, String> {
    let child = task_command(spec, streams).process_group(0).spawn().map_err(|e| cannot_run(spec, &e))?;
    let pid = i32::try_from(child.id()).map_err(|_| "impossible pid".to_owned())?;
    // Not reaped yet, so its stat is there even if it already exited.
    let start_ticks =
        process::stat(pid).map(|s| s.start_ticks).ok_or_else(|| format!("cannot read /proc/{pid}/stat"))?;
    Ok(LeaderRecord { kind: LeaderKind::Group, pid, start_ticks })
}

/// With isolation: new namespaces, then the init as pid 1 of the new pid namespace.
fn start_isolated(
    plan: &ShimPlan,
    streams: Streams,
    signals: &SignalFd,
) -> Result<(LeaderRecord, Option<OwnedFd>), String> {
    let spec = &plan.spec;
    // Only the pid namespace is the supervisor's own (it applies to its next child); the
    // init makes the others for itself, so the supervisor keeps the host's /proc.
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot create the task's pid namespace ({e}): the agent must run as root"))?;
    let (go_r, go_w) = pipe()?;
    let (started_r, started_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    match fork_process().map_err(|e| format!("cannot fork the task's init ({e})"))? {
        ForkResult::Child => {
            drop((go_w, started_r, status_r));
            let ends = InitEnds { go: go_r, started: started_w, status: status_w };
            std::process::exit(init_main(spec, streams, ends, signals));
        }
        ForkResult::Parent { child: init } => {
            drop((go_r, started_w, status_w, streams));
            let start_ticks = process::stat(init.as_raw()).map(|s| s.start_ticks);
            let joined = start_ticks
                .ok_or_else(|| format!("cannot read /proc/{init}/stat"))
                .and_then(|ticks| cgroups::join(&plan.cgroups, init.as_raw()).map(|()| ticks));
            let start_ticks = match joined {
                Ok(ticks) => ticks,
                Err(message) => {
                    let _ = kill(init, Signal::SIGKILL);
                    let _ = waitpid(init, None);
                    return Err(message);
                }
            };
            let _ = nix::unistd::write(&go_w, b"g");
            let mut message = String::new();
            let _ = File::from(started_r).read_to_string(&mut message);
            if message.as_bytes() != STARTED {
                let _ = kill(init, Signal::SIGKILL);
                let _ = waitpid(init, None);
                if message.is_empty() {
                    return Err("the task's init ended before it started the command".to_owned());
                }
                return Err(message);
            }
            Ok((LeaderRecord { kind: LeaderKind::Init, pid: init.as_raw(), start_ticks }, Some(status_r)))
        }
    }
}

// -------------------------------------------------------------------------------------------
// The init (pid 1 of the task's pid namespace).
// -------------------------------------------------------------------------------------------

/// The init's ends of its pipes to the supervisor.
struct InitEnds {
    /// Readable once the supervisor has moved the init into the task's cgroups.
    go: OwnedFd,
    /// [`STARTED`] once the command started; an error message otherwise.
    started: OwnedFd,
    /// The command's exit status, as an exit record.
    status: OwnedFd,
}

fn init_main(spec: &LaunchSpec, streams: Streams, ends: InitEnds, signals: &SignalFd) -> i32 {
    // Dies with the supervisor, and with it the whole namespace. (The supervisor is outside
    // the namespace, so getppid() says 0 here; had it died before this line, the go pipe
    // below reads end-of-file.)
    if prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return 1;
    }
    detach_stdio();
    let mut go = [0u8; 1];
    if !matches!(nix::unistd::read(&ends.go, &mut go), Ok(1)) {
        return 1;
    }
    if let Err(message) = enter_namespaces(spec) {
        let _ = nix::unistd::write(&ends.started, message.as_bytes());
        return 1;
    }
    let child = match task_command(spec, streams).spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = nix::unistd::write(&ends.started, cannot_run(spec, &error).as_bytes());
            return 127;
        }
    };
    let _ = nix::unistd::write(&ends.started, STARTED);
    drop(ends.started);
    let task = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::NONE);
        while let Ok(Some(info)) = signals.read_signal() {
            let signal = i32::try_from(info.ssi_signo).ok().and_then(|s| Signal::try_from(s).ok());
            if matches!(signal, Some(Signal::SIGTERM | Signal::SIGINT)) {
                // -1 from pid 1: every process of the namespace but the init itself.
                let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
            }
        }
        if let Some(exit) = reap_all(task) {
            let _ = nix::unistd::write(&ends.status, encode_exit(&exit).as_bytes());
            return 0;
        }
    }
}

/// The init's own namespaces: mount (private, with a fresh /proc of the new pid namespace),
/// uts (the task's hostname) and ipc.
fn enter_namespaces(spec: &LaunchSpec) -> Result<(), String> {
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    unshare(flags).map_err(|e| format!("cannot create the task's mount, uts and ipc namespaces ({e})"))?;
    // Private first: the /proc mounted below must not propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("cannot make the task's mounts private ({e})"))?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), proc_flags, None::<&str>)
        .map_err(|e| format!("cannot mount /proc in the task's namespace ({e})"))?;
    sethostname(&spec.hostname).map_err(|e| format!("cannot set the hostname {:?} ({e})", spec.hostname))
}

/// Reaps every exited child (orphans are re-parented to the init); the command's exit if it
/// was among them.
fn reap_all(task: Pid) -> Option<TaskExit> {
    let mut exit = None;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == task => exit = Some(TaskExit::exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == task => exit = Some(TaskExit::signalled(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return exit,
            Ok(_) => {}
        }
    }
}

// -------------------------------------------------------------------------------------------
// Output files with rotation.
// -------------------------------------------------------------------------------------------

/// A sandbox output file (`stdout` or `stderr`) and its rotation.
struct LogFile {
    dir: PathBuf,
    /// Where a write error is noted (the task's run directory).
    run_dir: PathBuf,
    name: &'static str,
    file: File,
    size: u64,
    rotation: LogRotation,
    /// A write error is reported once, then output is dropped (the task must not block on
    /// a full disk).
    failed: bool,
}

impl LogFile {
    fn open(spec: &LaunchSpec, name: &'static str) -> Result<LogFile, String> {
        let dir = &spec.sandbox;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {} ({e}): the sandbox must exist and be writable", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            dir: dir.clone(),
            run_dir: spec.run_dir.clone(),
            name,
            file,
            size,
            rotation: spec.logs,
            failed: false,
        })
    }

    fn append(&mut self, mut bytes: &[u8]) {
        for step in plan_append(self.size, bytes.len(), self.rotation.max_bytes) {
            let result = match step {
                LogStep::Write(n) => {
                    let (now, rest) = bytes.split_at(n);
                    bytes = rest;
                    self.size += n as u64;
                    self.file.write_all(now)
                }
                LogStep::Rotate => self.rotate(),
            };
            if let Err(error) = result
                && !self.failed
            {
                self.failed = true;
                let message =
                    format!("cannot write {} in {} ({error}); dropping output", self.name, self.dir.display());
                note(&self.run_dir, &message);
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        for (from, to) in rotation_renames(self.rotation.keep) {
            let from = self.dir.join(rotated_name(self.name, from));
            match fs::rename(&from, self.dir.join(rotated_name(self.name, to))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = OpenOptions::new().create(true).write(true).truncate(true).open(self.dir.join(self.name))?;
        self.size = 0;
        Ok(())
    }
}

//! Host processes by pid and start time: liveness, waiting for an exit without being the
//! parent (pidfd, with a short poll where pidfds are unavailable), signals, and finding a
//! driver's shims by their command line.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::core::procfs::{ProcStat, parse_cmdline, parse_stat};
use super::core::records::{LEADER_FILE, LeaderKind, LeaderRecord, ShimArgs};

/// How often a wait re-checks a process when no pidfd can be had (kernels before 5.3, or a
/// runtime without an I/O driver).
const POLL: Duration = Duration::from_millis(20);

/// `/proc/<pid>/stat`, if the process exists.
pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse_stat(&s))
}

/// Whether `pid` is still the process that started at `start_ticks`, and has not exited.
pub(crate) fn is_alive(pid: i32, start_ticks: u64) -> bool {
    pid > 0 && stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.is_live())
}

/// Resolves once the process `pid` that started at `start_ticks` has exited (at once if it
/// already has, or if the pid now names another process).
pub(crate) async fn exited(pid: i32, start_ticks: u64) {
    if pid <= 0 {
        return;
    }
    match pidfd_open(pid) {
        // Checked after the open: the process was alive then, so the fd names it.
        Ok(_) if !is_alive(pid, start_ticks) => return,
        Ok(fd) => {
            if let Ok(fd) = register(fd) {
                // A pidfd turns readable when its process exits; an error means the fd is
                // unusable, and the poll below takes over.
                if fd.readable().await.is_ok() {
                    return;
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return,
        Err(_) => {}
    }
    while is_alive(pid, start_ticks) {
        tokio::time::sleep(POLL).await;
    }
}

/// Registers a pidfd with the runtime's reactor (the agent's runtime, like every tokio
/// runtime built with I/O enabled, has one; without it tokio panics).
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor until
    // the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

/// `pidfd_open(2)`: an fd that turns readable when the process exits, for any process, not
/// only a child.
#[allow(unsafe_code)]
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned an impossible fd"))?;
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps `pid` if it is an exited child of this process that started at `start_ticks` (the
/// supervisor of a task this agent process launched); a no-op for anyone else's process.
pub(crate) fn reap_child(pid: i32, start_ticks: u64) {
    let ours = stat(pid).is_some_and(|s| s.start_ticks == start_ticks && !s.is_live() && s.ppid == own_pid());
    if ours {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(0)
}

/// The leader record in a task's run directory (plain tasks only).
pub(crate) fn leader_record(run_dir: &Path) -> Option<LeaderRecord> {
    fs::read_to_string(run_dir.join(LEADER_FILE)).ok().and_then(|s| LeaderRecord::decode(&s))
}

/// A task's leader: the leader record in its run directory (a plain task's command), or
/// else the supervisor's only child — an isolated task's init, for which the supervisor
/// writes no record (one file less per launch): the child cannot be reaped, so its pid not
/// reused, by anyone but the supervisor. `None` once the leader is gone.
pub(crate) fn find_leader(supervisor: i32, start_ticks: u64, run_dir: &Path) -> Option<LeaderRecord> {
    if let Some(record) = leader_record(run_dir) {
        return Some(record);
    }
    if !is_alive(supervisor, start_ticks) {
        return None;
    }
    let children = fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).ok()?;
    let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
    let stat = stat(pid).filter(ProcStat::is_live)?;
    Some(LeaderRecord { kind: LeaderKind::Init, pid, start_ticks: stat.start_ticks })
}

/// Signals a task's leader the way its kind asks: the init alone (it forwards SIGTERM inside
/// its namespace, and its death ends the namespace), or the command's whole process group.
/// A leader that is gone is not an error.
pub(crate) fn signal_leader(leader: &LeaderRecord, signal: Signal) -> Result<(), Errno> {
    let pid = Pid::from_raw(leader.pid);
    let sent = match leader.kind {
        LeaderKind::Init if is_alive(leader.pid, leader.start_ticks) => kill(pid, signal),
        LeaderKind::Init => Ok(()),
        // The group outlives its leader while any member lives, so it is signalled even when
        // the leader itself has exited.
        LeaderKind::Group => killpg(pid, signal),
    };
    match sent {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// SIGKILL to one process, if it is still the one that started at `start_ticks`.
pub(crate) fn kill_process(pid: i32, start_ticks: u64) {
    if is_alive(pid, start_ticks) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Waits (up to `timeout`, re-checking every millisecond) until none of the processes is
/// alive any more: a SIGKILL takes effect a moment after `kill` returns. Returns whether
/// they all are gone.
pub(crate) fn wait_gone(processes: &[(i32, u64)], timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if processes.iter().all(|(pid, ticks)| !is_alive(*pid, *ticks)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every live process whose command line is a shim of the driver with this cgroup root (the
/// supervisor and the init forked from it both match).
pub(crate) fn shims(driver_root: &str) -> Vec<(i32, u64, ShimArgs)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let Some(args) = ShimArgs::find(&parse_cmdline(&cmdline)) else { continue };
        if args.driver_root != driver_root {
            continue;
        }
        if let Some(stat) = stat(pid).filter(ProcStat::is_live) {
            found.push((pid, stat.start_ticks, args));
        }
    }
    found
}

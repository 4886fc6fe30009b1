//! `/proc/<pid>/stat` and the flat-keyed cgroup files, parsed.

/// The fields of `/proc/<pid>/stat` the drivers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Field 22: clock ticks after boot at which the process started. A pid and this value
    /// together name one process for the life of the machine (pids are reused, start times
    /// of a reused pid differ).
    pub start_ticks: u64,
}

impl ProcStat {
    /// Whether the process still runs: a zombie has exited and only waits to be reaped.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first, so field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start_ticks = fields.get(22 - 3)?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp, start_ticks })
}

/// The value of `key` in a flat-keyed file (`key value` per line), such as v2
/// `memory.events` and `cgroup.events` or v1 `memory.oom_control`.
pub fn flat_keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        if name == key { value.trim().parse().ok() } else { None }
    })
}

/// The pids listed in a `cgroup.procs` file (one per line).
pub fn parse_pids(content: &str) -> Vec<i32> {
    content.lines().filter_map(|line| line.trim().parse().ok()).filter(|pid| *pid > 0).collect()
}

/// A process's arguments from `/proc/<pid>/cmdline` (NUL-separated, NUL-terminated).
pub fn parse_cmdline(cmdline: &[u8]) -> Vec<String> {
    let args = cmdline.strip_suffix(&[0]).unwrap_or(cmdline);
    if args.is_empty() {
        return Vec::new();
    }
    args.split(|b| *b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect()
}

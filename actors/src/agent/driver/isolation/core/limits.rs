//! A task's cpu and memory limits as cgroup file writes, for v1 and for v2.
//!
//! The values follow what Mesos and the OCI runtimes write, so a task sees the same limits
//! under Flotilla as under them:
//! - cpu: a CFS quota of `cpus × period` per 100 ms period (a hard cap), plus a proportional
//!   weight for contention — v1 `cpu.shares = 1024 × cpus`, v2 `cpu.weight` converted from
//!   those shares the way runc and crun convert them;
//! - memory: a hard limit with no swap on top of it (v1 `memory.memsw.limit_in_bytes` equal
//!   to the limit, v2 `memory.swap.max = 0`), and on v2 `memory.oom.group = 1` so an OOM kill
//!   takes the whole task, as the v1 path's init exit does.
//!
//! A limit of 0 means "no limit" and writes nothing for that resource.

/// The CFS period both versions use, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The smallest CFS quota the kernel accepts, in microseconds.
const MIN_CFS_QUOTA_US: u64 = 1_000;

/// The smallest v1 `cpu.shares` the kernel accepts.
const MIN_SHARES: u64 = 2;

/// The largest v1 `cpu.shares` the kernel accepts.
const MAX_SHARES: u64 = 262_144;

/// Which v1 hierarchy a file lives in (on v2 every file is in the task's one directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Cpu,
    Memory,
}

/// One write to a cgroup file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// `false` for files a kernel may lack (swap accounting off, an older kernel): the write
    /// is skipped when the file does not exist.
    pub required: bool,
}

impl LimitWrite {
    fn new(controller: Controller, file: &'static str, value: impl ToString, required: bool) -> LimitWrite {
        LimitWrite { controller, file, value: value.to_string(), required }
    }
}

/// The CFS quota for `cpu_millis` thousandths of a CPU, per [`CFS_PERIOD_US`].
pub fn cfs_quota_us(cpu_millis: u64) -> u64 {
    cpu_millis.saturating_mul(CFS_PERIOD_US / 1000).max(MIN_CFS_QUOTA_US)
}

/// v1 `cpu.shares`: 1024 per CPU, within the kernel's bounds.
pub fn cpu_shares(cpu_millis: u64) -> u64 {
    (cpu_millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// v2 `cpu.weight` (1..=10000) from v1 shares (2..=262144), linearly, as runc and crun map
/// them: 2 → 1, 1024 → 39, 262144 → 10000.
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - MIN_SHARES) * 9_999) / (MAX_SHARES - MIN_SHARES)
}

/// The writes for a v1 host, in order (`memory.memsw.limit_in_bytes` must follow
/// `memory.limit_in_bytes`: the kernel refuses a memsw limit below the memory limit).
pub fn v1_limits(cpu_millis: u64, mem_bytes: u64) -> Vec<LimitWrite> {
    let mut writes = Vec::new();
    if cpu_millis > 0 {
        writes.push(LimitWrite::new(Controller::Cpu, "cpu.cfs_period_us", CFS_PERIOD_US, true));
        writes.push(LimitWrite::new(Controller::Cpu, "cpu.cfs_quota_us", cfs_quota_us(cpu_millis), true));
        writes.push(LimitWrite::new(Controller::Cpu, "cpu.shares", cpu_shares(cpu_millis), true));
    }
    if mem_bytes > 0 {
        writes.push(LimitWrite::new(Controller::Memory, "memory.limit_in_bytes", mem_bytes, true));
        writes.push(LimitWrite::new(Controller::Memory, "memory.memsw.limit_in_bytes", mem_bytes, false));
    }
    writes
}

/// The writes for a v2 host (every file in the task's one directory).
pub fn v2_limits(cpu_millis: u64, mem_bytes: u64) -> Vec<LimitWrite> {
    let mut writes = Vec::new();
    if cpu_millis > 0 {
        let max = format!("{} {CFS_PERIOD_US}", cfs_quota_us(cpu_millis));
        writes.push(LimitWrite::new(Controller::Cpu, "cpu.max", max, true));
        writes.push(LimitWrite::new(Controller::Cpu, "cpu.weight", cpu_weight(cpu_shares(cpu_millis)), true));
    }
    if mem_bytes > 0 {
        writes.push(LimitWrite::new(Controller::Memory, "memory.max", mem_bytes, true));
        writes.push(LimitWrite::new(Controller::Memory, "memory.swap.max", 0, false));
        writes.push(LimitWrite::new(Controller::Memory, "memory.oom.group", 1, false));
    }
    writes
}

//! Cgroup hierarchies from `/proc/self/mountinfo`.
//!
//! Paths are taken from the mount table, never assumed: a v1 host may co-mount `cpu,cpuacct`
//! or mount each controller on its own (the development machine does the latter), and a
//! hybrid host mounts a cgroup2 hierarchy beside the v1 ones (usually at
//! `/sys/fs/cgroup/unified`), which brings `cgroup.kill` and `cgroup.events` even when it
//! holds no controllers.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The v1 controllers the kernel knows; anything else in a v1 mount's super options
/// (`rw`, `clone_children`, `name=systemd`, ...) is an option, not a controller.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// How the host mounts cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies, one or more controllers each.
    V1,
    /// One cgroup2 hierarchy holds every controller.
    V2,
    /// v1 hierarchies hold the controllers, and a cgroup2 hierarchy is mounted beside them.
    Hybrid,
}

/// The cgroup mounts of a mount table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 controller → the mountpoint of its hierarchy (the first mount if it is mounted
    /// more than once).
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mountpoint, if any (the first one).
    pub unified: Option<PathBuf>,
}

impl CgroupMounts {
    /// Parses a mountinfo text; lines that are not cgroup mounts, or are malformed, are
    /// skipped.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some(mount) = parse_line(line) else { continue };
            match mount.fstype {
                "cgroup2" => {
                    mounts.unified.get_or_insert(mount.mountpoint);
                }
                "cgroup" => {
                    for option in mount.super_options.split(',') {
                        if V1_CONTROLLERS.contains(&option) {
                            mounts.v1.entry(option.to_owned()).or_insert_with(|| mount.mountpoint.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The mode these mounts make, `None` when no cgroup hierarchy is mounted.
    pub fn mode(&self) -> Option<CgroupMode> {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (false, true) => Some(CgroupMode::Hybrid),
            (false, false) => Some(CgroupMode::V1),
            (true, true) => Some(CgroupMode::V2),
            (true, false) => None,
        }
    }
}

/// The fields of one mountinfo line that matter here.
struct MountLine<'a> {
    mountpoint: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: field 5
/// is the mountpoint; after the `-` separator come the fstype, the source and the super
/// options (proc(5)).
fn parse_line(line: &str) -> Option<MountLine<'_>> {
    let (before, after) = line.split_once(" - ")?;
    let mountpoint = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let _source = after.next()?;
    let super_options = after.next().unwrap_or("");
    Some(MountLine { mountpoint: PathBuf::from(unescape(mountpoint)), fstype, super_options })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`...).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

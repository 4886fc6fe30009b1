use std::path::PathBuf;

use super::limits::{Controller, LimitWrite, cfs_quota_us, cpu_shares, cpu_weight, v1_limits, v2_limits};
use super::logs::{LogStep, plan_append, rotated_name, rotation_renames};
use super::mountinfo::{CgroupMode, CgroupMounts, unescape};
use super::procfs::{flat_keyed, parse_cmdline, parse_pids, parse_stat};
use super::records::{
    Handshake, LeaderKind, LeaderRecord, ShimArgs, check_cgroup_root, check_task_id, decode_exit, encode_exit, with_oom,
};
use crate::agent::driver::TaskExit;

/// The development machine's table: each v1 controller on its own, cgroup2 at `unified`.
const HYBRID: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A classic systemd v1 host: cpu and cpuacct co-mounted, optional fields present.
const V1: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid shared:14 - cgroup cgroup rw,freezer
";

/// A current Debian host: one cgroup2 at /sys/fs/cgroup.
const V2: &str = "\
22 28 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn hybrid_mounts_are_read_from_the_table() {
    let mounts = CgroupMounts::parse(HYBRID);
    assert_eq!(mounts.mode(), Some(CgroupMode::Hybrid));
    assert_eq!(mounts.v1.get("cpu"), Some(&PathBuf::from("/sys/fs/cgroup/cpu")));
    assert_eq!(mounts.v1.get("cpuacct"), Some(&PathBuf::from("/sys/fs/cgroup/cpuacct")));
    assert_eq!(mounts.v1.get("memory"), Some(&PathBuf::from("/sys/fs/cgroup/memory")));
    assert_eq!(mounts.unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    // name=systemd is a named hierarchy, not a controller.
    assert_eq!(mounts.v1.len(), 4);
}

#[test]
fn co_mounted_v1_controllers_share_a_mountpoint() {
    let mounts = CgroupMounts::parse(V1);
    assert_eq!(mounts.mode(), Some(CgroupMode::V1));
    assert_eq!(mounts.v1.get("cpu"), Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
    assert_eq!(mounts.v1.get("cpuacct"), mounts.v1.get("cpu"));
    assert_eq!(mounts.unified, None);
}

#[test]
fn a_unified_only_table_is_v2() {
    let mounts = CgroupMounts::parse(V2);
    assert_eq!(mounts.mode(), Some(CgroupMode::V2));
    assert!(mounts.v1.is_empty());
    assert_eq!(mounts.unified, Some(PathBuf::from("/sys/fs/cgroup")));
}

#[test]
fn no_cgroup_mount_has_no_mode_and_garbage_is_skipped() {
    let mounts = CgroupMounts::parse("garbage\n\n1 2 3\n22 28 0:20 / /proc rw - proc proc rw\n");
    assert_eq!(mounts, CgroupMounts::default());
    assert_eq!(mounts.mode(), None);
}

#[test]
fn the_first_mount_of_a_controller_wins() {
    let table = format!("{HYBRID}90 31 0:32 / /mnt/memory rw - cgroup cgroup rw,memory\n");
    assert_eq!(CgroupMounts::parse(&table).v1.get("memory"), Some(&PathBuf::from("/sys/fs/cgroup/memory")));
}

#[test]
fn escaped_mountpoints_are_unescaped() {
    assert_eq!(unescape(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
    assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    let table = "41 31 0:38 / /sys/fs/cgroup/my\\040unified rw - cgroup2 cgroup2 rw\n";
    assert_eq!(CgroupMounts::parse(table).unified, Some(PathBuf::from("/sys/fs/cgroup/my unified")));
}

fn find<'a>(writes: &'a [LimitWrite], file: &str) -> &'a LimitWrite {
    writes.iter().find(|w| w.file == file).unwrap_or_else(|| panic!("no write to {file}"))
}

#[test]
fn v1_limits_are_cfs_quota_shares_and_memory_without_swap() {
    let writes = v1_limits(1500, 64 << 20);
    assert_eq!(find(&writes, "cpu.cfs_period_us").value, "100000");
    assert_eq!(find(&writes, "cpu.cfs_quota_us").value, "150000");
    assert_eq!(find(&writes, "cpu.shares").value, "1536");
    assert_eq!(find(&writes, "cpu.shares").controller, Controller::Cpu);
    assert_eq!(find(&writes, "memory.limit_in_bytes").value, (64u64 << 20).to_string());
    let memsw = find(&writes, "memory.memsw.limit_in_bytes");
    assert_eq!((memsw.value.as_str(), memsw.required, memsw.controller), ("67108864", false, Controller::Memory));
    // The memsw limit must come after the memory limit.
    let position = |file: &str| writes.iter().position(|w| w.file == file);
    assert!(position("memory.limit_in_bytes") < position("memory.memsw.limit_in_bytes"));
}

#[test]
fn v2_limits_are_cpu_max_weight_and_memory_max_without_swap() {
    let writes = v2_limits(250, 32 << 20);
    assert_eq!(find(&writes, "cpu.max").value, "25000 100000");
    assert_eq!(find(&writes, "cpu.weight").value, cpu_weight(256).to_string());
    assert_eq!(find(&writes, "memory.max").value, "33554432");
    assert_eq!(find(&writes, "memory.swap.max").value, "0");
    assert_eq!(find(&writes, "memory.oom.group").value, "1");
    assert!(find(&writes, "memory.max").required && !find(&writes, "memory.swap.max").required);
}

#[test]
fn zero_means_no_limit() {
    assert!(v1_limits(0, 0).is_empty());
    assert!(v2_limits(0, 0).is_empty());
    assert!(v1_limits(0, 1 << 20).iter().all(|w| w.controller == Controller::Memory));
    assert!(v2_limits(1000, 0).iter().all(|w| w.controller == Controller::Cpu));
}

#[test]
fn cpu_values_stay_within_kernel_bounds() {
    assert_eq!(cfs_quota_us(1), 1_000, "quota has a 1 ms floor");
    assert_eq!(cfs_quota_us(2000), 200_000);
    assert_eq!(cfs_quota_us(u64::MAX), u64::MAX, "saturates instead of overflowing");
    assert_eq!(cpu_shares(1), 2);
    assert_eq!(cpu_shares(1000), 1024);
    assert_eq!(cpu_shares(u64::MAX), 262_144);
    assert_eq!(cpu_weight(2), 1);
    assert_eq!(cpu_weight(1024), 39);
    assert_eq!(cpu_weight(262_144), 10_000);
    assert_eq!(cpu_weight(0), 1);
}

/// A real stat line of a process whose name holds a space and a parenthesis.
const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 104 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    2322432 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

#[test]
fn stat_fields_are_counted_from_the_last_parenthesis() {
    let stat = parse_stat(STAT).expect("parses");
    assert_eq!((stat.state, stat.ppid, stat.pgrp, stat.start_ticks), ('S', 1, 4242, 987_654));
    assert!(stat.is_live());
    let zombie = parse_stat(&STAT.replace(") S ", ") Z ")).expect("parses");
    assert!(!zombie.is_live());
}

#[test]
fn malformed_stat_is_none() {
    assert_eq!(parse_stat(""), None);
    assert_eq!(parse_stat("12 (x) S 1 2"), None);
    assert_eq!(parse_stat("12 (x) S one 2 3"), None);
}

#[test]
fn oom_counters_are_read_in_both_versions() {
    let v1_oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    let v2_memory_events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 1\n";
    assert_eq!(flat_keyed(v1_oom_control, "oom_kill"), Some(1));
    assert_eq!(flat_keyed(v2_memory_events, "oom_kill"), Some(2));
    assert_eq!(flat_keyed("populated 0\nfrozen 0\n", "populated"), Some(0));
    assert_eq!(flat_keyed("oom_kill_disable 0\n", "oom_kill"), None, "a key is matched whole");
}

#[test]
fn pids_and_cmdlines_parse() {
    assert_eq!(parse_pids("12\n345\n\nx\n0\n"), vec![12, 345]);
    assert_eq!(parse_cmdline(b"/bin/sh\0-c\0\0echo\0"), vec!["/bin/sh", "-c", "", "echo"]);
    assert!(parse_cmdline(b"").is_empty());
}

#[test]
fn appends_split_at_the_limit_and_rotate() {
    assert_eq!(plan_append(0, 10, 100), vec![LogStep::Write(10)]);
    assert_eq!(plan_append(95, 10, 100), vec![LogStep::Write(5), LogStep::Rotate, LogStep::Write(5)]);
    assert_eq!(plan_append(100, 3, 100), vec![LogStep::Rotate, LogStep::Write(3)]);
    assert_eq!(
        plan_append(0, 250, 100),
        vec![LogStep::Write(100), LogStep::Rotate, LogStep::Write(100), LogStep::Rotate, LogStep::Write(50)]
    );
    assert_eq!(plan_append(7, 0, 100), vec![]);
    assert_eq!(plan_append(1 << 40, 10, 0), vec![LogStep::Write(10)], "max 0 never rotates");
}

#[test]
fn rotation_shifts_oldest_first() {
    assert_eq!(rotation_renames(3), vec![(2, 3), (1, 2), (0, 1)]);
    assert_eq!(rotation_renames(1), vec![(0, 1)]);
    assert!(rotation_renames(0).is_empty());
    assert_eq!(rotated_name("stdout", 0), "stdout");
    assert_eq!(rotated_name("stderr", 4), "stderr.4");
}

#[test]
fn exit_records_round_trip() {
    for exit in
        [TaskExit::exited(0), TaskExit::exited(137), TaskExit::signalled(9), with_oom(TaskExit::exited(137), true)]
    {
        assert_eq!(decode_exit(&encode_exit(&exit)), Some(exit.clone()), "{exit:?}");
    }
    let oom = decode_exit("signal 9\noom 1\n").expect("decodes");
    assert!(oom.oom_killed && !oom.succeeded() && oom.message.starts_with("Memory limit exceeded"));
    assert_eq!(decode_exit(""), None);
    assert_eq!(decode_exit("code x\n"), None);
    assert_eq!(decode_exit("code 0\nweird 1\n"), None);
}

#[test]
fn leader_records_round_trip() {
    for kind in [LeaderKind::Init, LeaderKind::Group] {
        let record = LeaderRecord { kind, pid: 77, start_ticks: 123_456 };
        assert_eq!(LeaderRecord::decode(&record.encode()), Some(record));
    }
    assert_eq!(LeaderRecord::decode("init 0 5"), None, "pid 0 would signal the driver's own group");
    assert_eq!(LeaderRecord::decode("other 5 5"), None);
    assert_eq!(LeaderRecord::decode("init 5"), None);
}

#[test]
fn shim_args_are_found_after_leading_arguments() {
    let args = ShimArgs { driver_root: "flotilla".into(), task_id: "web.1".into(), run_dir: "/var/run/t 1".into() };
    let mut argv = vec!["/usr/bin/flotilla".to_owned(), "__task-init".to_owned()];
    argv.extend(args.to_args());
    assert_eq!(ShimArgs::find(&argv), Some(args));
    assert_eq!(ShimArgs::find(&argv[..5]), None);
    assert_eq!(ShimArgs::find(&["sleep".to_owned(), "10".to_owned()]), None);
}

#[test]
fn handshake_lines_round_trip() {
    for line in [Handshake::Ready { pid: 12, start_ticks: 99 }, Handshake::Error("cannot run ./x: no such file".into())]
    {
        assert_eq!(Handshake::decode(&line.encode()), Some(line.clone()));
    }
    assert_eq!(Handshake::decode(&Handshake::Error("a\nb".into()).encode()), Some(Handshake::Error("a b".into())));
    assert_eq!(Handshake::decode("ready 1\n"), None);
    assert_eq!(Handshake::decode("hello\n"), None);
}

#[test]
fn task_ids_and_roots_are_checked() {
    assert!(check_task_id("web.instance-1f2e").is_ok());
    for bad in ["", ".", "..", "a/b", "a\nb", &"x".repeat(201)] {
        assert!(check_task_id(bad).is_err(), "{bad:?}");
    }
    assert!(check_cgroup_root("flotilla").is_ok());
    assert!(check_cgroup_root("flotilla/agent-1").is_ok());
    for bad in ["", "/flotilla", "a//b", "a/../b", "a/."] {
        assert!(check_cgroup_root(bad).is_err(), "{bad:?}");
    }
}

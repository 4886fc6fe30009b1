//! Task launch through the isolating driver, side by side with `crun run`.
//!
//! **Running** means the task's command has started: each task runs `/usr/bin/date +%s%N`
//! (not through a shell), which prints the wall clock as soon as it runs, and the latency is
//! that time minus the wall clock just before the launch was asked for (`launch()` for
//! Flotilla; the request to the crun loop, below, for crun). Both sides print through a pipe
//! and are read afterwards, so the measure is the same event on the same clock.
//!
//! (a) **Throughput**: 1,000 isolated tasks (own pid, mount, uts and ipc namespaces, cpu,
//!     memory and cgroup2 directories with limits) launched by 4 threads sharing one
//!     driver, as fast as `launch` returns: tasks/s over the launches, then launch-to-running
//!     p50/p99. Waiting for the tasks and cleaning them up (cgroups removed) is timed apart.
//! (b) **One task at a time**, alternating Flotilla and crun, 100 rounds each: p50/p99 of
//!     launch-to-running and the ratio of the medians.
//!
//! The crun side: an OCI bundle made in a temporary directory from `crun spec`, edited to
//! the same isolation (no network namespace — Flotilla tasks share the host network —,
//! not a terminal, `date +%s%N`, cpu 1 and memory 256 MiB limits in a cgroup of its own), its
//! rootfs an empty directory with the host's `/usr` bind-mounted read-only and the usual
//! `bin`/`lib` symlinks into it. crun 1.8 refuses a hybrid host whose cgroup2 hierarchy holds
//! a controller (this machine's has `hugetlb`), so crun runs in a loop inside a private mount
//! namespace with `/sys/fs/cgroup/unified` unmounted, where it sees a v1 host; the loop reads
//! container ids on stdin and runs `crun run` for each, so a round costs crun only its own
//! exec and work.
//!
//! The shim is the small `flotilla-task-init` binary cargo builds for benches
//! (`CARGO_BIN_EXE_flotilla-task-init`), as `IsolationConfig::for_flotilla_binary` picks it
//! when installed; `FLOTILLA_LAUNCH_SHIM=flotilla` uses `flotilla __task-init` instead.
//! Needs root and writable cgroups; skips with a message otherwise.
//!
//! Run: `cargo bench --bench launch` (crun: `benches/peers/install.sh` first).
//! `FLOTILLA_BENCH_QUICK=1` runs 100 tasks and 10 rounds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_actors::agent::driver::isolation::core::mountinfo::unescape;
use flotilla_actors::agent::driver::isolation::{IsolatingDriver, IsolationConfig, TASK_INIT_SUBCOMMAND};
use flotilla_actors::agent::driver::{LaunchSpec, LogRotation, TaskCommand, TaskDriver, TaskHandle};
use support::{micros, percentile, quick};

/// Launching threads sharing the driver, as an agent launching several tasks at once
/// (`FLOTILLA_LAUNCH_THREADS` to change).
fn threads() -> usize {
    std::env::var("FLOTILLA_LAUNCH_THREADS").ok().and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(4)
}
const CRUN_CGROUP_PARENT: &str = "flotilla-bench-crun";

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("launch: skipped, not running as root (the isolating driver needs it)");
        return;
    }
    let (tasks, rounds) = if quick() { (100, 10) } else { (1000, 100) };
    let mut config = match std::env::var("FLOTILLA_LAUNCH_SHIM").as_deref() {
        Ok("flotilla") => IsolationConfig::new(env!("CARGO_BIN_EXE_flotilla"), vec![TASK_INIT_SUBCOMMAND.to_owned()]),
        _ => IsolationConfig::new(env!("CARGO_BIN_EXE_flotilla-task-init"), Vec::new()),
    };
    println!("shim: {} {}", config.shim_program.display(), config.shim_args.join(" "));
    // Launches are process creation, so the figures move with whatever else the cores run.
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    config.cgroup_root = format!("flotilla-bench-{}", std::process::id());
    let driver = match IsolatingDriver::new(config.clone()) {
        Ok(driver) => driver,
        Err(why) => {
            println!("launch: skipped, cannot isolate here: {why}");
            return;
        }
    };
    let work = std::env::temp_dir().join(&config.cgroup_root);
    let _ = fs::remove_dir_all(&work);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    throughput(&driver, &runtime, &work.join("many"), tasks);
    side_by_side(&driver, &runtime, &work, rounds);
    driver.reap_orphans(&BTreeSet::new());
    remove_roots(&[config.cgroup_root.as_str(), CRUN_CGROUP_PARENT]);
    let _ = fs::remove_dir_all(&work);
}

/// CPU time used so far, from `/proc/self/stat`: this process's own (the agent side of
/// launches, waits and cleanups) and its reaped children's (each supervisor, and through it
/// the init and the task). A launch's CPU cost does not depend on what else the machine runs,
/// unlike its latency.
#[derive(Clone, Copy)]
struct Cpu {
    own: Duration,
    children: Duration,
}

impl Cpu {
    fn now() -> Cpu {
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        // utime, stime, cutime, cstime are fields 14 to 17; the list starts at field 3.
        let ticks = |field: usize| fields.get(field - 3).copied().unwrap_or(0);
        let time = |ticks: u64| Duration::from_millis(ticks * 1000 / CLOCK_TICKS);
        Cpu { own: time(ticks(14) + ticks(15)), children: time(ticks(16) + ticks(17)) }
    }

    /// Milliseconds of CPU per item since `earlier`: (own, children).
    fn per(&self, earlier: Cpu, items: usize) -> (f64, f64) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / items as f64;
        (ms(self.own - earlier.own), ms(self.children - earlier.children))
    }
}

/// `getconf CLK_TCK` on Linux.
const CLOCK_TICKS: u64 = 100;

/// Wall-clock nanoseconds, the clock `date +%s%N` prints.
fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

fn date_command() -> TaskCommand {
    TaskCommand { shell: false, value: "/usr/bin/date".into(), arguments: vec!["date".into(), "+%s%N".into()] }
}

fn spec(dir: &Path, task_id: &str) -> LaunchSpec {
    let sandbox = dir.join(task_id).join("sandbox");
    let run_dir = dir.join(task_id).join("run");
    fs::create_dir_all(&sandbox).expect("a sandbox");
    fs::create_dir_all(&run_dir).expect("a run directory");
    LaunchSpec {
        task_id: task_id.to_owned(),
        command: date_command(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        sandbox,
        run_dir,
        cpu_millis: 1000,
        mem_bytes: 256 << 20,
        hostname: "bench".to_owned(),
        logs: LogRotation::default(),
    }
}

/// The clock the task printed, minus when its launch was asked for.
fn started_after(spec: &LaunchSpec, asked_ns: i128) -> Duration {
    let printed = fs::read_to_string(spec.sandbox.join("stdout")).unwrap_or_default();
    let started: i128 = printed.trim().parse().unwrap_or_else(|_| panic!("task {} printed {printed:?}", spec.task_id));
    Duration::from_nanos(u64::try_from(started - asked_ns).unwrap_or(0))
}

struct Launched {
    spec: LaunchSpec,
    handle: TaskHandle,
    asked_ns: i128,
    returned: Duration,
}

/// (a): `tasks` launches from [`threads`] threads.
fn throughput(driver: &IsolatingDriver, runtime: &tokio::runtime::Runtime, dir: &Path, tasks: usize) {
    let specs: Vec<LaunchSpec> = (0..tasks).map(|i| spec(dir, &format!("t{i:04}"))).collect();
    let next = AtomicUsize::new(0);
    let launched = Mutex::new(Vec::with_capacity(tasks));
    let cpu = Cpu::now();
    let started = Instant::now();
    let threads = threads();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(spec) = specs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let asked_ns = now_ns();
                    let asked = Instant::now();
                    let handle = driver.launch(spec).expect("launch");
                    let returned = asked.elapsed();
                    launched.lock().expect("lock").push(Launched { spec: spec.clone(), handle, asked_ns, returned });
                }
            });
        }
    });
    let launching = started.elapsed();
    let launched = launched.into_inner().expect("lock");
    let finishing = Instant::now();
    for task in &launched {
        let exit = runtime.block_on(driver.wait(&task.handle));
        assert!(exit.succeeded(), "task {}: {exit:?}", task.spec.task_id);
        driver.cleanup(&task.handle);
    }
    let finished = finishing.elapsed();
    let (own, children) = Cpu::now().per(cpu, tasks);
    let mut running: Vec<Duration> = launched.iter().map(|t| started_after(&t.spec, t.asked_ns)).collect();
    let mut returns: Vec<Duration> = launched.iter().map(|t| t.returned).collect();
    running.sort();
    returns.sort();
    println!(
        "launch throughput: {tasks} isolated tasks by {threads} threads in {:.2} s = {:.0} tasks/s (goal >= 200)",
        launching.as_secs_f64(),
        tasks as f64 / launching.as_secs_f64()
    );
    println!(
        "  launch-to-running: p50 {:.0} us, p99 {:.0} us; launch() returned: p50 {:.0} us, p99 {:.0} us",
        micros(percentile(&running, 0.50)),
        micros(percentile(&running, 0.99)),
        micros(percentile(&returns, 0.50)),
        micros(percentile(&returns, 0.99)),
    );
    println!(
        "  then wait + cleanup of all {tasks}: {:.2} s = {:.0} tasks/s",
        finished.as_secs_f64(),
        tasks as f64 / finished.as_secs_f64()
    );
    println!(
        "  CPU per task: {own:.2} ms in the agent (launch, wait, cleanup) + {children:.2} ms in shim, init and task"
    );
}

/// (b): one task at a time, Flotilla and crun alternating.
fn side_by_side(driver: &IsolatingDriver, runtime: &tokio::runtime::Runtime, work: &Path, rounds: usize) {
    let mut crun = match Crun::start(&work.join("crun")) {
        Ok(crun) => Some(crun),
        Err(why) => {
            println!("crun: not measured: {why}");
            None
        }
    };
    let dir = work.join("single");
    let cpu = Cpu::now();
    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let spec = spec(&dir, &format!("s{round:04}"));
        let asked_ns = now_ns();
        let handle = driver.launch(&spec).expect("launch");
        let exit = runtime.block_on(driver.wait(&handle));
        assert!(exit.succeeded(), "{exit:?}");
        ours.push(started_after(&spec, asked_ns));
        driver.cleanup(&handle);
        if let Some(crun) = crun.as_mut() {
            theirs.push(crun.run_once(round));
        }
    }
    ours.sort();
    theirs.sort();
    let median = percentile(&ours, 0.50);
    println!(
        "single launch-to-running, {rounds} rounds: flotilla p50 {:.0} us, p99 {:.0} us",
        micros(median),
        micros(percentile(&ours, 0.99))
    );
    if !theirs.is_empty() {
        let crun_median = percentile(&theirs, 0.50);
        println!(
            "                                     crun p50 {:.0} us, p99 {:.0} us; flotilla/crun = {:.2}x (goal <= 1.0)",
            micros(crun_median),
            micros(percentile(&theirs, 0.99)),
            median.as_secs_f64() / crun_median.as_secs_f64()
        );
    }
    // Every supervisor is reaped by now; the crun loop's children are counted when it ends.
    let before_crun = Cpu::now();
    let (own, children) = before_crun.per(cpu, rounds);
    println!("  CPU per launch: flotilla {own:.2} ms in the agent + {children:.2} ms in shim, init and task");
    if let Some(crun) = crun {
        crun.stop();
        let (_, crun_cpu) = Cpu::now().per(before_crun, rounds);
        println!("                  crun {crun_cpu:.2} ms (crun, its container process and the task)");
    }
}

/// `crun run` in a loop, in a mount namespace where crun sees a v1 host (see the module
/// documentation).
struct Crun {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
    dir: PathBuf,
}

impl Crun {
    fn start(dir: &Path) -> Result<Crun, String> {
        let bundle = dir.join("bundle");
        make_bundle(&bundle)?;
        let state = dir.join("state");
        let script = format!(
            "umount /sys/fs/cgroup/unified 2>/dev/null; \
             while read id; do crun --root {state} run --bundle {bundle} \"$id\" || echo failed; done",
            state = state.display(),
            bundle = bundle.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start unshare ({e})"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Crun { child, lines: BufReader::new(stdout), dir: dir.to_path_buf() })
    }

    /// One container: asks the loop for it, returns launch-to-running.
    fn run_once(&mut self, round: usize) -> Duration {
        let asked_ns = now_ns();
        let stdin = self.child.stdin.as_mut().expect("the loop's stdin");
        writeln!(stdin, "bench-{}-{round}", std::process::id()).expect("asking the crun loop");
        stdin.flush().expect("asking the crun loop");
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("the crun loop answers");
        let started: i128 = line.trim().parse().unwrap_or_else(|_| panic!("crun printed {line:?}"));
        Duration::from_nanos(u64::try_from(started - asked_ns).unwrap_or(0))
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An OCI bundle from `crun spec`, edited as the module documentation says.
fn make_bundle(bundle: &Path) -> Result<(), String> {
    let rootfs = bundle.join("rootfs");
    for dir in ["usr", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(dir)).map_err(|e| format!("cannot create the rootfs ({e})"))?;
    }
    for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
        let _ = std::os::unix::fs::symlink(target, rootfs.join(link));
    }
    let status = Command::new("crun")
        .arg("spec")
        .current_dir(bundle)
        .status()
        .map_err(|e| format!("crun is not available ({e}); run benches/peers/install.sh"))?;
    if !status.success() {
        return Err("crun spec failed".to_owned());
    }
    let path = bundle.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
    let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("crun spec's JSON: {e}"))?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/usr/bin/date", "+%s%N"]);
    if let Some(mounts) = config["mounts"].as_array_mut() {
        mounts.push(
            serde_json::json!({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}),
        );
    }
    if let Some(namespaces) = config["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "network");
    }
    config["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 100000, "period": 100000, "shares": 1024});
    config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 256 << 20, "swap": 256 << 20});
    config["linux"]["cgroupsPath"] = format!("/{CRUN_CGROUP_PARENT}/bench").into();
    fs::write(&path, config.to_string()).map_err(|e| format!("cannot write {} ({e})", path.display()))
}

/// Removes the benchmark's cgroup roots (empty by now) from every cgroup hierarchy, named
/// ones included (crun also makes its cgroup in `name=systemd`).
fn remove_roots(roots: &[&str]) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = mountinfo.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mountpoint = before.split(' ').nth(4)?;
        let cgroup = after.starts_with("cgroup ") || after.starts_with("cgroup2 ");
        cgroup.then(|| PathBuf::from(unescape(mountpoint)))
    });
    for mount in mounts.collect::<Vec<_>>() {
        for root in roots {
            let dir = mount.join(root);
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    let _ = fs::remove_dir(entry.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

//! The native task drivers on real processes, namespaces and cgroups, with the built
//! flotilla binary as the task shim.
//!
//! The isolating tests need root and writable cgroups with cpu and memory controllers; where
//! those are missing they print why and pass without running. The plain driver's tests run
//! as any user. Every test uses a cgroup root of its own and a guard that, even when the test
//! fails, kills whatever the test started (`reap_orphans` with nothing kept) and removes its
//! cgroups and directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_actors::agent::driver::isolation::core::mountinfo::CgroupMounts;
use flotilla_actors::agent::driver::isolation::{
    IsolatingDriver, IsolationConfig, PlainDriver, TASK_INIT_SUBCOMMAND, detect,
};
use flotilla_actors::agent::driver::{
    LaunchSpec, LogRotation, StopSignal, TaskCommand, TaskDriver, TaskExit, TaskHandle,
};

/// The longest any condition below is waited for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One test's world: its cgroup root, its directories, and a driver that cleans up.
struct Fixture {
    config: IsolationConfig,
    dir: PathBuf,
    /// Kills and removes everything under the root when the fixture drops.
    janitor: Box<dyn TaskDriver>,
}

impl Fixture {
    fn config(name: &str) -> IsolationConfig {
        let mut config = IsolationConfig::new(env!("CARGO_BIN_EXE_flotilla"), vec![TASK_INIT_SUBCOMMAND.to_owned()]);
        config.cgroup_root = format!("flotilla-test-{}-{name}", std::process::id());
        config
    }

    fn directory(config: &IsolationConfig) -> PathBuf {
        let dir = std::env::temp_dir().join(&config.cgroup_root);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the test directory");
        dir
    }

    /// An isolating fixture, or `None` (after saying why) where this host cannot isolate.
    fn isolating(name: &str, ignore_unified: bool) -> Option<(Fixture, IsolatingDriver)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping {name}: not running as root (namespaces and cgroups need it)");
            return None;
        }
        let mut config = Fixture::config(name);
        config.ignore_unified = ignore_unified;
        let driver = match IsolatingDriver::new(config.clone()) {
            Ok(driver) => driver,
            Err(why) => {
                eprintln!("skipping {name}: cannot isolate here: {why}");
                return None;
            }
        };
        let janitor = Box::new(IsolatingDriver::new(config.clone()).expect("a second driver on the same root"));
        let dir = Fixture::directory(&config);
        Some((Fixture { config, dir, janitor }, driver))
    }

    fn plain(name: &str) -> (Fixture, PlainDriver) {
        let config = Fixture::config(name);
        let dir = Fixture::directory(&config);
        let janitor = Box::new(PlainDriver::new(config.clone(), "forced by the test"));
        (Fixture { config: config.clone(), dir, janitor }, PlainDriver::new(config, "forced by the test"))
    }

    /// A spec for a shell command, with its own sandbox and run directory.
    fn spec(&self, task_id: &str, script: &str) -> LaunchSpec {
        let command = TaskCommand { shell: true, value: script.to_owned(), arguments: Vec::new() };
        self.spec_with(task_id, command)
    }

    fn spec_with(&self, task_id: &str, command: TaskCommand) -> LaunchSpec {
        let sandbox = self.dir.join(task_id).join("sandbox");
        let run_dir = self.dir.join(task_id).join("run");
        fs::create_dir_all(&sandbox).expect("creating the sandbox");
        fs::create_dir_all(&run_dir).expect("creating the run directory");
        LaunchSpec {
            task_id: task_id.to_owned(),
            command,
            env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
            sandbox,
            run_dir,
            cpu_millis: 1000,
            mem_bytes: 256 << 20,
            hostname: "task-host".to_owned(),
            logs: LogRotation::default(),
        }
    }

    /// The cgroup directories of the root in every mounted hierarchy.
    fn root_dirs(&self) -> Vec<PathBuf> {
        let mounts = CgroupMounts::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let mut all: Vec<PathBuf> = mounts.v1.into_values().chain(mounts.unified).collect();
        all.dedup();
        all.into_iter().map(|mount| mount.join(&self.config.cgroup_root)).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.janitor.reap_orphans(&BTreeSet::new());
        for dir in self.root_dirs() {
            let _ = fs::remove_dir(dir);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Polls an external condition until it holds, failing the test after [`PATIENCE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

async fn wait(driver: &dyn TaskDriver, handle: &TaskHandle) -> TaskExit {
    tokio::time::timeout(PATIENCE, driver.wait(handle)).await.expect("the task ended in time")
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_default()
}

fn stdout(spec: &LaunchSpec) -> String {
    read(spec.sandbox.join("stdout"))
}

/// The cgroup directory of the handle that has `file`.
fn cgroup_with(handle: &TaskHandle, file: &str) -> PathBuf {
    handle.cgroups.iter().find(|dir| dir.join(file).exists()).cloned().unwrap_or_else(|| panic!("no cgroup has {file}"))
}

fn pids_in(dir: &Path) -> Vec<i32> {
    read(dir.join("cgroup.procs")).lines().filter_map(|l| l.parse().ok()).collect()
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The host pid of the task's leader: the plain command (from its leader record), or the
/// init (the supervisor's only child).
fn leader_pid(handle: &TaskHandle) -> i32 {
    let record = read(handle.run_dir.join("leader"));
    let children = read(format!("/proc/{0}/task/{0}/children", handle.pid));
    let from_record = record.split_whitespace().nth(1).and_then(|pid| pid.parse().ok());
    from_record.or_else(|| children.split_whitespace().next()?.parse().ok()).expect("a leader")
}

#[tokio::test]
async fn a_task_gets_its_own_namespaces_with_an_init_as_pid_1() {
    let Some((fixture, driver)) = Fixture::isolating("namespaces", false) else { return };
    let host_mounts = read("/proc/self/mountinfo").lines().count();
    let script = "echo host=$(hostname); echo pid=$$; echo init=$(tr '\\0' ' ' < /proc/1/cmdline); \
                  echo procs=$(ls /proc | grep -E '^[0-9]+$' | wc -l); echo ready; sleep 1000";
    let spec = fixture.spec("ns", script);
    let handle = driver.launch(&spec).expect("launch");
    wait_until("the task reports", || stdout(&spec).contains("ready"));
    let out = stdout(&spec);
    assert!(out.contains("host=task-host\n"), "{out}");
    assert!(!out.contains("pid=1\n"), "the task must not be pid 1: {out}");
    assert!(out.contains("pid=2\n"), "the init's first child is the command: {out}");
    assert!(out.contains(&format!("init={} {TASK_INIT_SUBCOMMAND}", env!("CARGO_BIN_EXE_flotilla"))), "{out}");
    let procs: usize = out.lines().find_map(|l| l.strip_prefix("procs=")).and_then(|n| n.parse().ok()).expect("procs");
    assert!(procs <= 6, "/proc shows only the task's processes (init, sh, the pipeline), not {procs}: {out}");
    // Every namespace but the network differs from the host's.
    let init = leader_pid(&handle);
    for ns in ["pid", "mnt", "uts", "ipc"] {
        let task_ns = fs::read_link(format!("/proc/{init}/ns/{ns}")).expect("the init's namespace");
        let host_ns = fs::read_link(format!("/proc/self/ns/{ns}")).expect("our namespace");
        if ns == "pid" {
            // The init's own pid namespace link is that of its parent's; its children's is new.
            let for_children = fs::read_link(format!("/proc/{init}/ns/pid_for_children")).expect("pid_for_children");
            assert_ne!(for_children, host_ns);
        } else {
            assert_ne!(task_ns, host_ns, "{ns} namespace");
        }
    }
    assert_eq!(read("/proc/self/mountinfo").lines().count(), host_mounts, "the task's /proc must not reach the host");
    driver.signal(&handle, StopSignal::Kill).expect("kill");
    wait(&driver, &handle).await;
    driver.cleanup(&handle);
}

#[tokio::test]
async fn the_environment_is_exactly_the_spec_and_the_cwd_the_sandbox() {
    let Some((fixture, driver)) = Fixture::isolating("env", false) else { return };
    let env_cmd = TaskCommand { shell: false, value: "/usr/bin/env".into(), arguments: vec!["env".into()] };
    let mut spec = fixture.spec_with("env", env_cmd);
    spec.env = BTreeMap::from([("GREETING".into(), "hello world".into()), ("MESOS_SANDBOX".into(), "/x".into())]);
    let handle = driver.launch(&spec).expect("launch");
    assert!(wait(&driver, &handle).await.succeeded());
    assert_eq!(stdout(&spec), "GREETING=hello world\nMESOS_SANDBOX=/x\n");
    driver.cleanup(&handle);

    let pwd = TaskCommand { shell: false, value: "/bin/pwd".into(), arguments: vec!["pwd".into()] };
    let spec = fixture.spec_with("cwd", pwd);
    let handle = driver.launch(&spec).expect("launch");
    assert!(wait(&driver, &handle).await.succeeded());
    let sandbox = spec.sandbox.canonicalize().expect("the sandbox exists");
    assert_eq!(stdout(&spec), format!("{}\n", sandbox.display()));
    driver.cleanup(&handle);
}

#[tokio::test]
async fn output_is_captured_and_rotated() {
    let Some((fixture, driver)) = Fixture::isolating("logs", false) else { return };
    rotation_works(&fixture, &driver).await;
}

async fn rotation_works(fixture: &Fixture, driver: &dyn TaskDriver) {
    // 100 lines of 40 bytes = 4000 bytes into files of 1000: stdout.3 (dropped), .2, .1, current.
    let script = "i=0; while [ $i -lt 100 ]; do printf 'line-%03d-%030d\\n' $i 0; i=$((i+1)); done; echo oops >&2";
    let mut spec = fixture.spec("logs", script);
    spec.logs = LogRotation { max_bytes: 1000, keep: 2 };
    let handle = driver.launch(&spec).expect("launch");
    assert!(wait(driver, &handle).await.succeeded());
    let file = |name: &str| spec.sandbox.join(name);
    assert_eq!(read(file("stderr")), "oops\n");
    assert!(!file("stdout.3").exists(), "only `keep` rotated files are kept");
    for name in ["stdout", "stdout.1", "stdout.2"] {
        assert_eq!(read(file(name)).len(), 1000, "{name} is full");
    }
    assert!(read(file("stdout")).ends_with("line-099-000000000000000000000000000000\n"));
    assert!(read(file("stdout.2")).starts_with("line-025-"), "the oldest kept file starts where the dropped one ended");
    driver.cleanup(&handle);
}

#[tokio::test]
async fn cpu_and_memory_limits_are_written() {
    let Some((fixture, driver)) = Fixture::isolating("limits", false) else { return };
    let mut spec = fixture.spec("limits", "sleep 1000");
    spec.cpu_millis = 500;
    spec.mem_bytes = 64 << 20;
    let handle = driver.launch(&spec).expect("launch");
    if let Some(cpu) = handle.cgroups.iter().find(|dir| dir.join("cpu.cfs_quota_us").exists()) {
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")).trim(), "100000");
        assert_eq!(read(cpu.join("cpu.shares")).trim(), "512");
        let memory = cgroup_with(&handle, "memory.limit_in_bytes");
        assert_eq!(read(memory.join("memory.limit_in_bytes")).trim(), "67108864");
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(memory.join("memory.memsw.limit_in_bytes")).trim(), "67108864", "no swap");
        }
    } else {
        let dir = cgroup_with(&handle, "cpu.max");
        assert_eq!(read(dir.join("cpu.max")).trim(), "50000 100000");
        assert_eq!(read(dir.join("memory.max")).trim(), "67108864");
    }
    // The init (and so the command) is in every cgroup of the task.
    let init = leader_pid(&handle);
    for dir in &handle.cgroups {
        assert!(pids_in(dir).contains(&init), "{} holds the init", dir.display());
    }
    driver.signal(&handle, StopSignal::Kill).expect("kill");
    wait(&driver, &handle).await;
    driver.cleanup(&handle);
    assert!(handle.cgroups.iter().all(|dir| !dir.exists()), "cleanup removes the cgroups");
    assert!(!handle.run_dir.join("exit").exists() && !handle.run_dir.join("leader").exists(), "and the run files");
}

#[tokio::test]
async fn a_task_past_its_memory_limit_is_reported_oom_killed() {
    let Some((fixture, driver)) = Fixture::isolating("oom", false) else { return };
    // tail keeps every byte of a stream without newlines: it must grow past the limit.
    let mut spec = fixture.spec("oom", "head -c 200M /dev/zero | tail");
    spec.mem_bytes = 32 << 20;
    let handle = driver.launch(&spec).expect("launch");
    let exit = wait(&driver, &handle).await;
    assert!(exit.oom_killed, "{exit:?}");
    assert!(!exit.succeeded());
    assert!(exit.message.starts_with("Memory limit exceeded"), "{}", exit.message);
    driver.cleanup(&handle);
}

#[tokio::test]
async fn exit_codes_and_launch_errors_are_reported() {
    let Some((fixture, driver)) = Fixture::isolating("exits", false) else { return };
    exit_codes_work(&fixture, &driver).await;
}

async fn exit_codes_work(fixture: &Fixture, driver: &dyn TaskDriver) {
    for (id, script, code) in [("zero", "exit 0", 0), ("three", "exit 3", 3)] {
        let handle = driver.launch(&fixture.spec(id, script)).expect("launch");
        let exit = wait(driver, &handle).await;
        assert_eq!((exit.code, exit.signal, exit.oom_killed), (Some(code), None, false), "{exit:?}");
        assert!(!driver.is_running(&handle));
        driver.cleanup(&handle);
    }
    let missing = TaskCommand { shell: false, value: "/no/such/program".into(), arguments: vec!["x".into()] };
    let error = driver.launch(&fixture.spec_with("missing", missing)).expect_err("no such program");
    assert!(error.to_string().contains("/no/such/program"), "{error}");
    let mut bad = fixture.spec("bad-id", "true");
    bad.task_id = "a/b".into();
    assert!(driver.launch(&bad).is_err(), "a task id with '/' cannot name a cgroup");
}

#[tokio::test]
async fn terminate_reaches_the_task_and_kill_ends_a_tree_that_ignores_it() {
    let Some((fixture, driver)) = Fixture::isolating("grace", false) else { return };
    let handle = grace_then_kill(&fixture, &driver).await;
    // Every process that was in the task's cgroups is gone.
    assert!(handle.cgroups.iter().all(|dir| pids_in(dir).is_empty()));
    driver.cleanup(&handle);
}

#[tokio::test]
async fn the_v1_freezer_kill_ends_a_forking_tree() {
    let Some((fixture, driver)) = Fixture::isolating("freezer", true) else { return };
    if !driver.isolation().provided.iter().any(|p| p.contains("freezer")) {
        eprintln!("skipping the freezer test: no v1 freezer hierarchy");
        return;
    }
    assert!(!handle_has_unified(&fixture, &driver));
    let handle = grace_then_kill(&fixture, &driver).await;
    assert!(handle.cgroups.iter().all(|dir| pids_in(dir).is_empty()));
    driver.cleanup(&handle);
}

fn handle_has_unified(fixture: &Fixture, driver: &IsolatingDriver) -> bool {
    let handle = driver.launch(&fixture.spec("probe", "true")).expect("launch");
    let unified = handle.cgroups.iter().any(|dir| dir.join("cgroup.kill").exists());
    driver.cleanup(&handle);
    unified
}

/// A shell that traps TERM, with a child that ignores it and a loop that forks: TERM reaches
/// them all (the trap runs) but ends nothing; KILL ends every process.
async fn grace_then_kill(fixture: &Fixture, driver: &dyn TaskDriver) -> TaskHandle {
    let script = "trap 'echo got-term' TERM; sh -c \"trap '' TERM; sleep 1000\" & \
                  echo ready; while :; do sleep 0.01; done";
    let spec = fixture.spec("grace", script);
    let handle = driver.launch(&spec).expect("launch");
    wait_until("the traps are set", || stdout(&spec).contains("ready"));
    let pids = task_pids(&handle);
    assert!(pids.len() >= 3, "the tree is up: {pids:?}");
    driver.signal(&handle, StopSignal::Terminate).expect("terminate");
    wait_until("the shell's trap runs", || stdout(&spec).contains("got-term"));
    assert!(driver.is_running(&handle), "a task that ignores TERM keeps running through the grace period");
    driver.signal(&handle, StopSignal::Kill).expect("kill");
    let exit = wait(driver, &handle).await;
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    wait_until("every process of the tree is gone", || pids.iter().all(|pid| !process_exists(*pid)));
    handle
}

/// The task's processes as the host sees them: from its cgroup, or (plain) its group.
fn task_pids(handle: &TaskHandle) -> Vec<i32> {
    if let Some(dir) = handle.cgroups.first() {
        return pids_in(dir);
    }
    let group = leader_pid(handle);
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let stat = read(format!("/proc/{pid}/stat"));
        let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok());
        if pgrp == Some(group) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn terminate_ends_a_task_that_honours_it() {
    let Some((fixture, driver)) = Fixture::isolating("term", false) else { return };
    let spec = fixture.spec("term", "echo ready; sleep 1000");
    let handle = driver.launch(&spec).expect("launch");
    wait_until("the task runs", || stdout(&spec).contains("ready"));
    driver.signal(&handle, StopSignal::Terminate).expect("terminate");
    let exit = wait(&driver, &handle).await;
    assert!(exit.signal == Some(15) || exit.code == Some(143), "{exit:?}");
    driver.cleanup(&handle);
}

#[tokio::test]
async fn a_new_driver_adopts_a_running_task() {
    let Some((fixture, driver)) = Fixture::isolating("adopt", false) else { return };
    let spec = fixture.spec("adopt", "echo ready; sleep 1000");
    let handle = driver.launch(&spec).expect("launch");
    adoption_works(&spec, handle, Box::new(driver), || {
        Box::new(IsolatingDriver::new(fixture.config.clone()).expect("a new driver"))
    })
    .await;
}

/// The launching driver goes away (as the agent process would); a new one sees the task
/// running, signals it and collects its exit.
async fn adoption_works(
    spec: &LaunchSpec,
    handle: TaskHandle,
    first: Box<dyn TaskDriver>,
    second: impl FnOnce() -> Box<dyn TaskDriver>,
) {
    wait_until("the task runs", || stdout(spec).contains("ready"));
    drop(first);
    let driver = second();
    assert!(driver.is_running(&handle));
    let waiting = driver.wait(&handle);
    driver.signal(&handle, StopSignal::Terminate).expect("terminate");
    let exit = tokio::time::timeout(PATIENCE, waiting).await.expect("the adopted task ended");
    assert!(exit.signal == Some(15) || exit.code == Some(143), "{exit:?}");
    assert!(!driver.is_running(&handle));
    assert!(driver.signal(&handle, StopSignal::Kill).is_err(), "an ended task cannot be signalled");
    driver.cleanup(&handle);
}

/// The environment variable that turns [`helper_launches_a_task_and_waits_to_be_killed`] on:
/// the driver's cgroup root, the task's spec and where to write the handle, as JSON.
const HELPER: &str = "FLOTILLA_ISOLATION_HELPER";

/// Not a test of its own: the "earlier agent process" of
/// [`a_task_outlives_the_agent_process_that_launched_it`], which runs this test binary again
/// with only this test and [`HELPER`] set. Without it, it does nothing.
#[tokio::test]
async fn helper_launches_a_task_and_waits_to_be_killed() {
    let Ok(request) = std::env::var(HELPER) else { return };
    let (root, spec, handle_file): (String, LaunchSpec, PathBuf) =
        serde_json::from_str(&request).expect("a helper request");
    let mut config = Fixture::config("helper");
    config.cgroup_root = root;
    let driver = IsolatingDriver::new(config).expect("a driver");
    let handle = driver.launch(&spec).expect("launch");
    let temporary = handle_file.with_extension("tmp");
    fs::write(&temporary, serde_json::to_string(&handle).expect("a handle in JSON")).expect("writing the handle");
    fs::rename(&temporary, &handle_file).expect("publishing the handle");
    // Blocks until the parent test kills this process.
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
}

#[tokio::test]
async fn a_task_outlives_the_agent_process_that_launched_it() {
    let Some((fixture, driver)) = Fixture::isolating("earlier", false) else { return };
    let spec = fixture.spec("earlier", "echo ready; sleep 1000");
    let handle_file = fixture.dir.join("handle.json");
    let request = serde_json::to_string(&(&fixture.config.cgroup_root, &spec, &handle_file)).expect("JSON");
    let mut helper = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "helper_launches_a_task_and_waits_to_be_killed", "--test-threads=1"])
        .env(HELPER, request)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the helper process");
    wait_until("the helper launched the task", || handle_file.exists());
    let handle: TaskHandle = serde_json::from_str(&read(&handle_file)).expect("a handle");
    // The launching "agent" dies without a word; its task does not.
    helper.kill().expect("SIGKILL to the helper");
    helper.wait().expect("the helper is reaped");
    assert!(driver.is_running(&handle), "the supervisor lives on after its agent's SIGKILL");
    wait_until("the task runs", || stdout(&spec).contains("ready"));
    let waiting = driver.wait(&handle);
    driver.signal(&handle, StopSignal::Terminate).expect("terminate");
    let exit = tokio::time::timeout(PATIENCE, waiting).await.expect("the task ended");
    assert!(exit.signal == Some(15) || exit.code == Some(143), "{exit:?}");
    driver.cleanup(&handle);
    assert!(handle.cgroups.iter().all(|dir| !dir.exists()));
}

#[tokio::test]
async fn orphans_are_killed_and_their_cgroups_removed() {
    let Some((fixture, driver)) = Fixture::isolating("orphans", false) else { return };
    let kept = driver.launch(&fixture.spec("kept", "sleep 1000")).expect("launch");
    let orphan = driver.launch(&fixture.spec("orphan", "sleep 1000")).expect("launch");
    // A cgroup left by a task whose supervisor is long gone.
    let ghost: Vec<PathBuf> = fixture.root_dirs().into_iter().filter(|d| d.exists()).map(|d| d.join("ghost")).collect();
    for dir in &ghost {
        fs::create_dir(dir).expect("a ghost cgroup");
    }
    let orphan_pids = task_pids(&orphan);
    let reaped = driver.reap_orphans(&BTreeSet::from(["kept".to_owned()]));
    assert_eq!(reaped, vec!["ghost".to_owned(), "orphan".to_owned()]);
    assert!(!driver.is_running(&orphan));
    // Killed processes linger as zombies until their new parent reaps them.
    wait_until("the orphan's processes are gone", || orphan_pids.iter().all(|pid| !process_exists(*pid)));
    assert!(orphan.cgroups.iter().chain(&ghost).all(|dir| !dir.exists()), "and its cgroups");
    assert!(driver.is_running(&kept), "a kept task runs on");
    driver.signal(&kept, StopSignal::Kill).expect("kill");
    wait(&driver, &kept).await;
    driver.cleanup(&kept);
}

#[tokio::test]
async fn the_small_shim_binary_runs_tasks_too() {
    let Some((mut fixture, _)) = Fixture::isolating("small-shim", false) else { return };
    fixture.config.shim_program = env!("CARGO_BIN_EXE_flotilla-task-init").into();
    fixture.config.shim_args = Vec::new();
    let driver = IsolatingDriver::new(fixture.config.clone()).expect("a driver");
    let spec = fixture.spec("small", "echo hello from $(hostname); exit 7");
    let handle = driver.launch(&spec).expect("launch");
    assert_eq!(wait(&driver, &handle).await.code, Some(7));
    assert_eq!(stdout(&spec), "hello from task-host\n");
    driver.cleanup(&handle);
}

#[tokio::test]
async fn detect_picks_the_isolating_driver_as_root() {
    let Some((fixture, _driver)) = Fixture::isolating("detect", false) else { return };
    let driver = detect(fixture.config.clone());
    assert_eq!(driver.name(), "isolating");
    let report = driver.isolation();
    assert!(report.provided.iter().any(|p| p.starts_with("pid namespace")), "{report:?}");
    assert!(report.provided.iter().any(|p| p.starts_with("memory limit")), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// The plain driver (forced, so these run as root too).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn detect_falls_back_to_plain_and_says_why() {
    let (mut fixture, _) = Fixture::plain("fallback");
    fixture.config.shim_program = "/no/such/shim".into();
    let driver = detect(fixture.config.clone());
    assert_eq!(driver.name(), "plain");
    let missing = driver.isolation().missing;
    let why =
        if nix::unistd::geteuid().is_root() { "a probe task could not be isolated" } else { "not running as root" };
    assert!(missing[0].contains(why), "{missing:?}");
}

#[tokio::test]
async fn plain_reports_what_is_missing() {
    let (_fixture, driver) = Fixture::plain("plain-report");
    assert_eq!(driver.name(), "plain");
    let missing = driver.isolation().missing;
    assert!(
        missing.iter().any(|m| m.starts_with("pid, mount, uts and ipc namespaces: forced by the test")),
        "{missing:?}"
    );
    assert!(missing.iter().any(|m| m.starts_with("cpu and memory limits")), "{missing:?}");
}

#[tokio::test]
async fn plain_runs_with_exact_env_sandbox_and_logs() {
    let (fixture, driver) = Fixture::plain("plain-env");
    let env_cmd = TaskCommand { shell: false, value: "/usr/bin/env".into(), arguments: vec!["env".into()] };
    let mut spec = fixture.spec_with("env", env_cmd);
    spec.env = BTreeMap::from([("ONLY".into(), "this".into())]);
    let handle = driver.launch(&spec).expect("launch");
    assert!(wait(&driver, &handle).await.succeeded());
    assert_eq!(stdout(&spec), "ONLY=this\n");
    assert!(handle.cgroups.is_empty());
    driver.cleanup(&handle);
    rotation_works(&fixture, &driver).await;
    exit_codes_work(&fixture, &driver).await;
}

#[tokio::test]
async fn plain_kill_ends_the_process_group() {
    let (fixture, driver) = Fixture::plain("plain-grace");
    let handle = grace_then_kill(&fixture, &driver).await;
    driver.cleanup(&handle);
}

#[tokio::test]
async fn plain_tasks_are_adopted_and_orphans_reaped() {
    let (fixture, driver) = Fixture::plain("plain-adopt");
    let spec = fixture.spec("adopt", "echo ready; sleep 1000");
    let handle = driver.launch(&spec).expect("launch");
    let orphan = driver.launch(&fixture.spec("orphan", "sleep 1000")).expect("launch");
    let orphan_pids = task_pids(&orphan);
    let reaped = driver.reap_orphans(&BTreeSet::from(["adopt".to_owned()]));
    assert_eq!(reaped, vec!["orphan".to_owned()]);
    wait_until("the orphan's processes are gone", || orphan_pids.iter().all(|pid| !process_exists(*pid)));
    let config = fixture.config.clone();
    adoption_works(&spec, handle, Box::new(driver), || Box::new(PlainDriver::new(config, "forced by the test"))).await;
}

//! The agent's checkpoint: what it must know after a restart to re-adopt its tasks (Mesos's
//! agent recovery). One file per task under `<work_dir>/meta/tasks/`, rewritten atomically
//! (temp file, rename) on every change that matters, plus the newest leader term the agent
//! has seen. Each file is `FLTASK02`, a CRC-32C, then the postcard body: a torn or corrupted
//! record is reported and never half-read. Files an earlier version wrote (`FLTASK01`, tasks
//! without fetch URIs and discovery info) are read and converted.
//!
//! What each write must survive decides whether it is fsync'd. Task records are there for a
//! restarted agent *process*, whose tasks kept running: the page cache outlives a process, so
//! a renamed file is there for its successor without an fsync. A machine crash takes the
//! tasks down with the records; after it the leader's reconciliation reports whatever the
//! agent no longer knows. Skipping those fsyncs (about ten per task: launch, `TASK_RUNNING`,
//! its acknowledgement, the exit, the last acknowledgement) is what lets one agent launch
//! hundreds of tasks a second. The term is different: it fences deposed leaders and must
//! outlive a machine crash, so it is fsync'd, file and directory, as are the rare writes of
//! anything else that must.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::driver::TaskHandle;
use crate::mesos::core::TaskStatus;
use crate::mesos::legacy::TaskInfoV1;
use crate::mesos::protocol::TaskInfo;
use crate::storage::core::crc32c;

const MAGIC: &[u8; 8] = b"FLTASK02";
/// The format before `TaskInfo` had fetch URIs and discovery info.
const MAGIC_V1: &[u8; 8] = b"FLTASK01";

/// Everything the agent keeps about one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub info: TaskInfo,
    /// Set once the driver launched it.
    pub handle: Option<TaskHandle>,
    /// The newest status (acknowledged or not).
    pub latest: TaskStatus,
    /// A kill was asked for (its end is then `TASK_KILLED`).
    pub killing: bool,
    /// Updates not yet acknowledged, oldest first.
    pub pending: Vec<TaskStatus>,
}

/// A [`TaskRecord`] as `FLTASK01` files hold it.
#[derive(Serialize, Deserialize)]
struct TaskRecordV1 {
    info: TaskInfoV1,
    handle: Option<TaskHandle>,
    latest: TaskStatus,
    killing: bool,
    pending: Vec<TaskStatus>,
}

impl From<TaskRecordV1> for TaskRecord {
    fn from(v1: TaskRecordV1) -> TaskRecord {
        let TaskRecordV1 { info, handle, latest, killing, pending } = v1;
        TaskRecord { info: info.into(), handle, latest, killing, pending }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {0}: corrupt record")]
    Corrupt(PathBuf),
}

/// The checkpoint directory of one agent.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    tasks: PathBuf,
    runs: PathBuf,
    term: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_owned(), source }
}

/// A task id as a file name: unreserved characters kept, everything else `%XX`.
fn file_name(task_id: &str) -> String {
    let mut out = String::with_capacity(task_id.len());
    for byte in task_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') && !(out.is_empty() && byte == b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(value).expect("checkpoint records serialize");
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A checkpointed value, and what an earlier version wrote in its place.
trait Versioned: for<'de> Deserialize<'de> {
    type V1: for<'de> Deserialize<'de> + Into<Self>;
}

impl Versioned for u64 {
    type V1 = u64;
}

impl Versioned for TaskRecord {
    type V1 = TaskRecordV1;
}

fn decode<T: Versioned>(path: &Path, bytes: &[u8]) -> Result<T, CheckpointError> {
    let corrupt = || CheckpointError::Corrupt(path.to_owned());
    if bytes.len() < 12 {
        return Err(corrupt());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| corrupt())?);
    let body = &bytes[12..];
    if crc32c(body) != crc {
        return Err(corrupt());
    }
    match &bytes[..8] {
        magic if magic == MAGIC => postcard::from_bytes(body).map_err(|_| corrupt()),
        magic if magic == MAGIC_V1 => postcard::from_bytes::<T::V1>(body).map(Into::into).map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

/// What a write must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Survives {
    /// The agent process's crash: the page cache keeps it.
    ProcessCrash,
    /// The machine's crash: fsync'd, file and directory.
    MachineCrash,
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8], survives: Survives) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = path.with_extension("tmp");
    let mut file = fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    if survives == Survives::MachineCrash {
        file.sync_all().map_err(io(&temp))?;
    }
    fs::rename(&temp, path).map_err(io(path))?;
    if survives == Survives::MachineCrash {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

impl Checkpoint {
    /// Opens (creating) the checkpoint under `work_dir`.
    pub fn open(work_dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let meta = work_dir.join("meta");
        let checkpoint = Checkpoint { tasks: meta.join("tasks"), runs: meta.join("runs"), term: meta.join("term") };
        for dir in [&checkpoint.tasks, &checkpoint.runs] {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(checkpoint)
    }

    /// The newest leader term seen (0 if none).
    pub fn load_term(&self) -> Result<u64, CheckpointError> {
        match fs::read(&self.term) {
            Ok(bytes) => decode(&self.term, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&self.term)(e)),
        }
    }

    pub fn save_term(&self, term: u64) -> Result<(), CheckpointError> {
        write_atomically(&self.term, &encode(&term), Survives::MachineCrash)
    }

    /// Every readable task record, and the files that could not be read (corrupt or torn:
    /// their tasks are treated as unknown and their processes reaped).
    pub fn load_tasks(&self) -> Result<(Vec<TaskRecord>, Vec<CheckpointError>), CheckpointError> {
        let (mut records, mut broken) = (Vec::new(), Vec::new());
        for entry in fs::read_dir(&self.tasks).map_err(io(&self.tasks))? {
            let path = entry.map_err(io(&self.tasks))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path).map_err(io(&path)).and_then(|bytes| decode::<TaskRecord>(&path, &bytes)) {
                Ok(record) => records.push(record),
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    broken.push(e);
                }
            }
        }
        records.sort_by(|a, b| a.info.task_id.cmp(&b.info.task_id));
        Ok((records, broken))
    }

    pub fn save_task(&self, record: &TaskRecord) -> Result<(), CheckpointError> {
        write_atomically(&self.tasks.join(file_name(&record.info.task_id)), &encode(record), Survives::ProcessCrash)
    }

    /// Forgets a task: its record and its driver run directory.
    pub fn remove_task(&self, task_id: &str) -> Result<(), CheckpointError> {
        let path = self.tasks.join(file_name(task_id));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let run = self.run_dir(task_id);
        if run.exists() {
            fs::remove_dir_all(&run).map_err(io(&run))?;
        }
        Ok(())
    }

    /// The driver's private directory for a task.
    pub fn run_dir(&self, task_id: &str) -> PathBuf {
        self.runs.join(file_name(task_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("web.1-a_b"), "web.1-a_b");
        assert_eq!(file_name("../x/y"), "%2E.%2Fx%2Fy");
        assert_ne!(file_name("a/b"), file_name("a%2Fb"));
    }

    #[test]
    fn a_flipped_byte_is_reported_not_read() {
        let bytes = encode(&42u64);
        assert_eq!(decode::<u64>(Path::new("t"), &bytes).unwrap(), 42);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode::<u64>(Path::new("t"), &bad).is_err(), "byte {i}");
        }
        assert!(decode::<u64>(Path::new("t"), &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_record_of_the_previous_format_is_read_and_converted() {
        use crate::agent::driver::TaskCommand;
        use crate::mesos::core::{Resources, TaskState, UpdateSource};
        let info = TaskInfoV1 {
            task_id: "web.1".to_owned(),
            name: "web".to_owned(),
            framework_id: "fw".to_owned(),
            role: "*".to_owned(),
            command: TaskCommand { shell: true, value: "sleep 1".to_owned(), arguments: Vec::new() },
            resources: Resources::default(),
            env: Default::default(),
            labels: Default::default(),
            kill_grace_ms: 3_000,
            health_check: None,
        };
        let latest = TaskStatus {
            task_id: "web.1".to_owned(),
            agent_id: "a1".to_owned(),
            state: TaskState::Running,
            source: UpdateSource::Agent,
            reason: None,
            message: String::new(),
            uuid: Some(7),
            timestamp_ms: 1,
            healthy: None,
        };
        let v1 = TaskRecordV1 {
            info: info.clone(),
            handle: None,
            latest: latest.clone(),
            killing: false,
            pending: Vec::new(),
        };
        let mut bytes = encode(&v1);
        bytes[..8].copy_from_slice(MAGIC_V1);
        let record: TaskRecord = decode(Path::new("t"), &bytes).unwrap();
        assert_eq!(record.info, TaskInfo::from(info));
        assert!(record.info.fetch.is_empty() && record.info.discovery.is_none());
        assert_eq!(record.latest, latest);
        // The current format is written with the current magic.
        assert_eq!(&encode(&record)[..8], MAGIC);
    }
}

//! The Mesos fetcher: before a task's command starts, every URI of the task (`TaskInfo::fetch`,
//! Mesos's `CommandInfo.URI`) is brought into its sandbox — downloaded over HTTP(S), or
//! copied from a file on the agent — then made executable or extracted as asked. The plan
//! (scheme, file name, archive kind, cache key) is the pure `core/fetch.rs`; this module
//! carries it out.
//!
//! - Downloads stream to disk (never a whole file in memory) under a temporary name in the
//!   sandbox and are renamed into place once complete, so the task never sees half a file;
//!   each is bounded by `max_download_bytes` and a stall timeout. `https` verifies the server
//!   against the CA bundle (`ca_file`, the system's by default).
//! - Extraction runs the tools Mesos runs: `tar -C <sandbox> -xf` (tar detects gzip, bzip2
//!   and xz itself), `unzip -o -d <sandbox>`, `gzip -dc` for a lone `.gz`. The archive stays
//!   in the sandbox, as Mesos leaves it.
//! - URIs marked `cache` go through the agent's cache directory (under its work directory):
//!   the first fetch downloads into the cache, every fetch copies from it. The sandbox gets a
//!   copy, not a hard link, so a task that writes to or chmods its file cannot change what
//!   the next task gets. The cache is bounded in bytes with least-recently-used eviction
//!   (`core/fetch_cache.rs`); its index lives in memory, so the directory is emptied when
//!   the fetcher starts, as Mesos's is when its agent starts.
//!
//! Dropping a fetch (the task was killed) stops it: an extraction's process group is killed
//! and temporary files are removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::core::fetch::{ArchiveKind, FetchStep, Finish, PlanError, Source, extract_command, plan_fetch};
use super::core::fetch_cache::{Admission, DEFAULT_CACHE_BYTES, FetchCache};
use super::health::GroupGuard;
use super::http::{HttpError, get, verified_tls};
use crate::mesos::protocol::FetchUri;

/// The CA bundle of Debian and its derivatives.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How much of an extraction tool's error output goes into the task's message.
const MAX_TOOL_ERROR: usize = 2 * 1024;
/// How much is moved from the socket to the file at a time.
const COPY_BUFFER: usize = 64 * 1024;

/// How the fetcher behaves.
#[derive(Clone, Debug)]
pub struct FetcherConfig {
    /// The cache directory (emptied when the fetcher starts).
    pub cache_dir: PathBuf,
    /// The cache's size bound (Mesos's `--fetcher_cache_size`, 2 GiB by default).
    pub cache_max_bytes: u64,
    /// The largest file fetched; a bigger one fails the task.
    pub max_download_bytes: u64,
    /// A download that makes no progress for this long fails (Mesos's
    /// `--fetcher_stall_timeout`, 60 s by default).
    pub stall_timeout: Duration,
    pub max_redirects: u8,
    /// The PEM CA bundle `https` servers are verified against.
    pub ca_file: PathBuf,
}

impl FetcherConfig {
    pub fn new(cache_dir: PathBuf) -> FetcherConfig {
        FetcherConfig {
            cache_dir,
            cache_max_bytes: DEFAULT_CACHE_BYTES,
            max_download_bytes: 16 * 1024 * 1024 * 1024,
            stall_timeout: Duration::from_secs(60),
            max_redirects: 5,
            ca_file: PathBuf::from(SYSTEM_CA_FILE),
        }
    }
}

/// Why a task's fetch failed; its `Display` is the task's status message.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Failed to fetch all URIs for the task: {0}")]
    Plan(#[from] PlanError),
    #[error("Failed to fetch all URIs for the task: '{uri}': {reason}")]
    Step { uri: String, reason: StepError },
}

/// Why one URI could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("cannot read {}: {error}", .path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot write {}: {error}", .path.display())]
    Write { path: PathBuf, error: std::io::Error },
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("not a regular file: {}", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot make {} executable: {error}", .path.display())]
    Chmod { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Extract(String),
}

/// The agent's fetcher, shared by every task's launch; see the module documentation.
pub struct Fetcher {
    config: FetcherConfig,
    cache: Mutex<FetchCache>,
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl Fetcher {
    /// A fetcher with an empty cache: whatever an earlier agent process left in the cache
    /// directory is removed, since no index says what it is.
    pub fn start(config: FetcherConfig) -> Fetcher {
        match std::fs::remove_dir_all(&config.cache_dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => warn!(dir = %config.cache_dir.display(), %error, "cannot empty the fetcher cache"),
        }
        let cache = Mutex::new(FetchCache::new(config.cache_max_bytes));
        Fetcher { config, cache, tls: OnceLock::new() }
    }

    /// Fetches every URI into `sandbox`, in order; the first failure ends the fetch.
    pub async fn fetch_all(&self, uris: &[FetchUri], sandbox: &Path) -> Result<(), FetchError> {
        for step in plan_fetch(uris)? {
            debug!(uri = %step.uri, output = %step.output, "fetching");
            self.fetch_one(&step, sandbox)
                .await
                .map_err(|reason| FetchError::Step { uri: step.uri.clone(), reason })?;
        }
        Ok(())
    }

    async fn fetch_one(&self, step: &FetchStep, sandbox: &Path) -> Result<(), StepError> {
        let target = sandbox.join(&step.output);
        match &step.cache_key {
            Some(key) => self.through_cache(step, key, &target).await?,
            None => {
                let temp = TempFile::beside(&target);
                self.download(&step.source, temp.path()).await?;
                temp.persist_as(&target).await?;
            }
        }
        finish(step, sandbox, &target).await
    }

    /// A cached URI: a copy of the cached file, downloaded into the cache first on a miss.
    async fn through_cache(&self, step: &FetchStep, key: &str, target: &Path) -> Result<(), StepError> {
        let hit = self.cache().hit(key);
        if let Some(file) = hit {
            let cached = self.config.cache_dir.join(&file);
            match copy_into(&cached, target).await {
                Ok(()) => return Ok(()),
                // Evicted or damaged under us: forget it and download again.
                Err(error) => {
                    warn!(uri = %step.uri, %error, "cannot use the cached copy; downloading again");
                    if self.cache().forget(key, &file) {
                        let _ = tokio::fs::remove_file(&cached).await;
                    }
                }
            }
        }
        let dir = &self.config.cache_dir;
        tokio::fs::create_dir_all(dir).await.map_err(|error| StepError::Write { path: dir.clone(), error })?;
        let file = self.cache().new_file();
        let download = TempFile(Some(dir.join(&file)));
        let size = self.download(&step.source, download.path()).await?;
        let admission = self.cache().admit(key, size, &file);
        match admission {
            Admission::Store { evict } => {
                let kept = download.keep();
                for old in evict {
                    let _ = tokio::fs::remove_file(dir.join(old)).await;
                }
                copy_into(&kept, target).await
            }
            Admission::TooLarge => {
                debug!(uri = %step.uri, size, "bigger than the whole cache; not cached");
                download.persist_as(target).await
            }
        }
    }

    fn cache(&self) -> MutexGuard<'_, FetchCache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Brings the source's bytes into `dest`; returns how many.
    async fn download(&self, source: &Source, dest: &Path) -> Result<u64, StepError> {
        match source {
            Source::Local(path) => self.copy_local(path, dest).await,
            Source::Http(url) => {
                let tls = || self.tls.get_or_init(|| verified_tls(&self.config.ca_file)).clone();
                let mut response = get(url, tls, self.config.stall_timeout, self.config.max_redirects).await?;
                debug!(from = %response.url, length = ?response.content_length(), "downloading");
                let limit = self.config.max_download_bytes;
                if response.content_length().is_some_and(|length| length > limit) {
                    return Err(StepError::TooLarge { limit });
                }
                let write = |error| StepError::Write { path: dest.to_owned(), error };
                let mut file = tokio::fs::File::create(dest).await.map_err(write)?;
                let mut buffer = vec![0u8; COPY_BUFFER];
                let mut total = 0u64;
                loop {
                    let count = response.read(&mut buffer).await?;
                    if count == 0 {
                        break;
                    }
                    total += count as u64;
                    if total > limit {
                        return Err(StepError::TooLarge { limit });
                    }
                    file.write_all(&buffer[..count]).await.map_err(write)?;
                }
                // tokio's file writes in the background: flushing waits for the last write.
                file.flush().await.map_err(write)?;
                Ok(total)
            }
        }
    }

    async fn copy_local(&self, path: &Path, dest: &Path) -> Result<u64, StepError> {
        let read = |error| StepError::Read { path: path.to_owned(), error };
        let metadata = tokio::fs::metadata(path).await.map_err(read)?;
        if !metadata.is_file() {
            return Err(StepError::NotAFile(path.to_owned()));
        }
        if metadata.len() > self.config.max_download_bytes {
            return Err(StepError::TooLarge { limit: self.config.max_download_bytes });
        }
        tokio::fs::copy(path, dest).await.map_err(|error| copy_error(path, dest, error))
    }
}

/// A copy of `from` at `target`, written under a temporary name and renamed into place.
async fn copy_into(from: &Path, target: &Path) -> Result<(), StepError> {
    let temp = TempFile::beside(target);
    tokio::fs::copy(from, temp.path()).await.map_err(|error| copy_error(from, temp.path(), error))?;
    temp.persist_as(target).await
}

/// Blames the side of a failed copy that the error is about.
fn copy_error(from: &Path, to: &Path, error: std::io::Error) -> StepError {
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied if !from.exists() => {
            StepError::Read { path: from.to_owned(), error }
        }
        _ => StepError::Write { path: to.to_owned(), error },
    }
}

/// Makes the fetched file executable or extracts it, as planned.
async fn finish(step: &FetchStep, sandbox: &Path, target: &Path) -> Result<(), StepError> {
    match step.finish {
        Finish::Keep => Ok(()),
        Finish::Executable => {
            use std::os::unix::fs::PermissionsExt;
            let permissions = std::fs::Permissions::from_mode(0o755);
            tokio::fs::set_permissions(target, permissions)
                .await
                .map_err(|error| StepError::Chmod { path: target.to_owned(), error })
        }
        Finish::Extract(kind) => extract(kind, sandbox, &step.output).await,
    }
}

/// Runs the extraction tool in the sandbox; its error output becomes the message.
async fn extract(kind: ArchiveKind, sandbox: &Path, archive: &str) -> Result<(), StepError> {
    let sandbox_text =
        sandbox.to_str().ok_or_else(|| StepError::Extract(format!("the sandbox path {sandbox:?} is not UTF-8")))?;
    let plan = extract_command(kind, sandbox_text, archive);
    let stdout = match &plan.stdout_to {
        Some(name) => {
            let path = sandbox.join(name);
            let file = std::fs::File::create(&path).map_err(|error| StepError::Write { path, error })?;
            std::process::Stdio::from(file)
        }
        None => std::process::Stdio::null(),
    };
    let spawned = tokio::process::Command::new(plan.program)
        .args(&plan.args)
        .current_dir(sandbox)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(StepError::Extract(format!(
                "cannot extract {archive}: {} is not installed on the agent",
                plan.program
            )));
        }
        Err(error) => return Err(StepError::Extract(format!("cannot run {} for {archive}: {error}", plan.program))),
    };
    // A dropped fetch (a kill) takes the tool's whole group with it (tar runs its
    // decompressor as a child).
    let group = child.id().map(|pid| GroupGuard(pid as i32));
    let errors = read_bounded(child.stderr.take()).await;
    let status = child.wait().await;
    if let Some(group) = group {
        group.disarm();
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(StepError::Extract(format!(
            "cannot extract {archive}: {} {}: {}",
            plan.program,
            match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_owned(),
            },
            errors.trim()
        ))),
        Err(error) => Err(StepError::Extract(format!("cannot wait for {}: {error}", plan.program))),
    }
}

/// The start of a pipe's output (the rest is drained, so the writer never blocks on it).
async fn read_bounded(pipe: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else { return String::new() };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(count) = pipe.read(&mut chunk).await {
        if count == 0 {
            break;
        }
        let room = MAX_TOOL_ERROR.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..count.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A file being written: removed when dropped (a failure or a kill) unless kept or
/// persisted.
struct TempFile(Option<PathBuf>);

impl TempFile {
    /// A hidden temporary name next to `target` (same directory, so the rename is atomic).
    fn beside(target: &Path) -> TempFile {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        TempFile(Some(target.with_file_name(format!(".{name}.fetching"))))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }

    /// Renames it to `target` (copying when the two are on different file systems).
    async fn persist_as(self, target: &Path) -> Result<(), StepError> {
        let write = |error| StepError::Write { path: target.to_owned(), error };
        match tokio::fs::rename(self.path(), target).await {
            Ok(()) => {
                self.keep();
                Ok(())
            }
            Err(error) if error.raw_os_error() == Some(nix::libc::EXDEV) => {
                tokio::fs::copy(self.path(), target).await.map(|_| ()).map_err(write)
            }
            Err(error) => Err(write(error)),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

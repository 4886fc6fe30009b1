//! The Mesos fetcher's plan, pure: for each URI of a task (Mesos's `CommandInfo.URI`), where
//! it comes from, the file it becomes in the sandbox, what happens to that file afterwards
//! (made executable, extracted, or left as it is) and whether it goes through the agent's
//! cache. The shell (`agent/fetch.rs`) carries the plan out.
//!
//! Mesos's rules kept here: a URI is `http://`, `https://`, `file://` or an absolute path on
//! the agent (other schemes need Hadoop or a URI fetcher plugin, which Flotilla does not
//! have); the file's name is `output_file` or the last segment of the URI's path,
//! percent-decoded; `executable` wins over `extract` (Mesos's fetcher chmods and skips
//! extraction); `extract` of a name that is no archive leaves the file as it is; the cache is
//! keyed by the URI.

use std::path::PathBuf;

use super::http::{HttpUrl, UrlError};
use crate::mesos::protocol::FetchUri;

/// Where a URI's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Http(HttpUrl),
    /// A file on the agent (`file://` or an absolute path).
    Local(PathBuf),
}

/// The archive formats the fetcher extracts, named by their suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`/`.tbz2`, `.tar.xz`/`.txz` (tar detects the
    /// compression itself).
    Tar,
    Zip,
    /// A single gzipped file (`.gz` not after `.tar`): decompressed beside itself, without
    /// the suffix.
    Gzip,
}

/// What happens to the fetched file once it is in the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Keep,
    /// `chmod 0755`.
    Executable,
    /// Unpacked into the sandbox; the archive itself stays, as Mesos leaves it.
    Extract(ArchiveKind),
}

/// One URI's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchStep {
    /// The URI as the task gave it, for messages.
    pub uri: String,
    pub source: Source,
    /// The file's name in the sandbox: a single plain name.
    pub output: String,
    pub finish: Finish,
    /// The cache key when the URI is to be cached (the URI itself, as Mesos keys it).
    pub cache_key: Option<String>,
}

/// A command that extracts an archive: the program, its arguments, and the sandbox file its
/// standard output goes to (for `gzip -dc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractCommand {
    pub program: &'static str,
    pub args: Vec<String>,
    pub stdout_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("'{uri}': unsupported scheme '{scheme}' (the fetcher takes http://, https://, file:// and absolute paths)")]
    UnsupportedScheme { uri: String, scheme: String },
    #[error("'{uri}': a relative path (the fetcher takes http://, https://, file:// and absolute paths)")]
    RelativePath { uri: String },
    #[error("'{uri}': {error}")]
    BadUrl { uri: String, error: UrlError },
    #[error("'{uri}': a file:// URI must name an absolute path on the agent (file:///path)")]
    BadFileUri { uri: String },
    #[error("'{uri}': the output file name {name:?} {why}")]
    BadOutputName { uri: String, name: String, why: &'static str },
    #[error("'{uri}': the path names no file (it ends with '/'); set output_file")]
    NoFileName { uri: String },
}

/// The plan of every URI of a task, in order; the first bad URI is the error.
pub fn plan_fetch(uris: &[FetchUri]) -> Result<Vec<FetchStep>, PlanError> {
    uris.iter().map(plan_uri).collect()
}

pub fn plan_uri(fetch: &FetchUri) -> Result<FetchStep, PlanError> {
    let uri = fetch.uri.trim();
    let source = source(uri)?;
    let output = match &fetch.output_file {
        Some(name) => checked_name(uri, name.clone())?,
        None => checked_name(uri, default_name(uri, &source)?)?,
    };
    let finish = if fetch.executable {
        Finish::Executable
    } else if fetch.extract {
        archive_kind(&output).map_or(Finish::Keep, Finish::Extract)
    } else {
        Finish::Keep
    };
    let cache_key = fetch.cache.then(|| uri.to_owned());
    Ok(FetchStep { uri: uri.to_owned(), source, output, finish, cache_key })
}

fn source(uri: &str) -> Result<Source, PlanError> {
    if uri.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(uri)));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(PlanError::RelativePath { uri: uri.to_owned() });
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            HttpUrl::parse(uri).map(Source::Http).map_err(|error| PlanError::BadUrl { uri: uri.to_owned(), error })
        }
        // `file:///path` or `file://localhost/path`; the path is percent-decoded.
        "file" => {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            let path = percent_decode(path).filter(|p| p.starts_with('/'));
            path.map(|p| Source::Local(PathBuf::from(p))).ok_or_else(|| PlanError::BadFileUri { uri: uri.to_owned() })
        }
        _ => Err(PlanError::UnsupportedScheme { uri: uri.to_owned(), scheme: scheme.to_owned() }),
    }
}

/// The last segment of the URI's path (percent-decoded for URLs).
fn default_name(uri: &str, source: &Source) -> Result<String, PlanError> {
    let segment = match source {
        Source::Http(url) => {
            let last = url.path().rsplit('/').next().unwrap_or_default();
            percent_decode(last).ok_or_else(|| PlanError::BadOutputName {
                uri: uri.to_owned(),
                name: last.to_owned(),
                why: "is not valid percent-encoded UTF-8",
            })?
        }
        Source::Local(path) => path.to_string_lossy().rsplit('/').next().unwrap_or_default().to_owned(),
    };
    if segment.is_empty() {
        return Err(PlanError::NoFileName { uri: uri.to_owned() });
    }
    Ok(segment)
}

/// A sandbox file name must be one plain name: no '/', not '.' or '..' (which would leave the
/// sandbox or name the sandbox itself), not empty, no NUL.
fn checked_name(uri: &str, name: String) -> Result<String, PlanError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/' (it must be a file name in the sandbox)")
    } else if name == "." || name == ".." {
        Some("names a directory, not a file")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match why {
        Some(why) => Err(PlanError::BadOutputName { uri: uri.to_owned(), name, why }),
        None => Ok(name),
    }
}

/// The archive a file name announces, by its suffix (as Mesos's fetcher decides).
pub fn archive_kind(name: &str) -> Option<ArchiveKind> {
    const TAR: [&str; 7] = [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"];
    if TAR.iter().any(|suffix| name.ends_with(suffix)) {
        Some(ArchiveKind::Tar)
    } else if name.ends_with(".zip") {
        Some(ArchiveKind::Zip)
    } else if name.ends_with(".gz") && name.len() > ".gz".len() {
        Some(ArchiveKind::Gzip)
    } else {
        None
    }
}

/// The command that extracts `archive` (a file name in the sandbox) into `sandbox`, as Mesos
/// runs it: `tar -C <sandbox> -xf`, `unzip -o -d <sandbox>`, `gzip -dc` into the name without
/// `.gz`.
pub fn extract_command(kind: ArchiveKind, sandbox: &str, archive: &str) -> ExtractCommand {
    let archive_path = format!("{}/{archive}", sandbox.trim_end_matches('/'));
    match kind {
        ArchiveKind::Tar => ExtractCommand {
            program: "tar",
            args: vec!["-C".into(), sandbox.into(), "-xf".into(), archive_path],
            stdout_to: None,
        },
        ArchiveKind::Zip => ExtractCommand {
            program: "unzip",
            args: vec!["-o".into(), "-d".into(), sandbox.into(), archive_path],
            stdout_to: None,
        },
        ArchiveKind::Gzip => ExtractCommand {
            program: "gzip",
            args: vec!["-dc".into(), archive_path],
            stdout_to: Some(archive.strip_suffix(".gz").unwrap_or(archive).to_owned()),
        },
    }
}

/// Percent-decodes `text`; `None` when an escape is malformed or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(uri: &str) -> FetchUri {
        FetchUri { uri: uri.into(), extract: false, executable: false, cache: false, output_file: None }
    }

    fn plan(fetch: FetchUri) -> FetchStep {
        plan_uri(&fetch).unwrap()
    }

    #[test]
    fn schemes_map_to_sources() {
        let http = plan(fetch("http://h:8080/dl/app.tgz?v=2"));
        assert!(
            matches!(&http.source, Source::Http(url) if !url.tls && url.port == 8080 && url.target == "/dl/app.tgz?v=2")
        );
        assert_eq!(http.output, "app.tgz");
        assert!(matches!(plan(fetch("https://h/x")).source, Source::Http(url) if url.tls));
        assert_eq!(plan(fetch("file:///opt/a%20b.txt")).source, Source::Local("/opt/a b.txt".into()));
        assert_eq!(plan(fetch("file://localhost/opt/x")).source, Source::Local("/opt/x".into()));
        assert_eq!(plan(fetch("/opt/tool")).source, Source::Local("/opt/tool".into()));
        assert_eq!(plan(fetch("/opt/tool")).output, "tool");
    }

    #[test]
    fn other_schemes_and_relative_paths_are_errors_naming_the_uri() {
        let error = plan_uri(&fetch("s3://bucket/key")).unwrap_err();
        assert_eq!(error, PlanError::UnsupportedScheme { uri: "s3://bucket/key".into(), scheme: "s3".into() });
        assert!(error.to_string().starts_with("'s3://bucket/key': unsupported scheme 's3'"), "{error}");
        assert_eq!(plan_uri(&fetch("tools/x")), Err(PlanError::RelativePath { uri: "tools/x".into() }));
        assert_eq!(plan_uri(&fetch("file://host/x")), Err(PlanError::BadFileUri { uri: "file://host/x".into() }));
        assert!(matches!(
            plan_uri(&fetch("http://u@h/x")),
            Err(PlanError::BadUrl { error: UrlError::Credentials, .. })
        ));
    }

    #[test]
    fn output_names_come_from_output_file_or_the_decoded_last_segment() {
        assert_eq!(plan(fetch("http://h/a/my%20file.txt")).output, "my file.txt");
        let named = FetchUri { output_file: Some("renamed".into()), ..fetch("http://h/dir/") };
        assert_eq!(plan(named).output, "renamed");
        assert_eq!(plan_uri(&fetch("http://h/dir/")), Err(PlanError::NoFileName { uri: "http://h/dir/".into() }));
        assert_eq!(plan_uri(&fetch("http://h")), Err(PlanError::NoFileName { uri: "http://h".into() }));
        assert!(matches!(plan_uri(&fetch("http://h/%ZZ")), Err(PlanError::BadOutputName { .. })));
    }

    #[test]
    fn names_that_leave_the_sandbox_are_refused() {
        for (name, why) in [
            ("", "is empty"),
            ("../etc/passwd", "contains '/'"),
            ("a/b", "contains '/'"),
            ("..", "names a directory"),
            (".", "names a directory"),
            ("a\0b", "NUL"),
        ] {
            let uri = FetchUri { output_file: Some(name.into()), ..fetch("http://h/x") };
            let error = plan_uri(&uri).unwrap_err();
            assert!(matches!(&error, PlanError::BadOutputName { .. }), "{name:?}: {error}");
            assert!(error.to_string().contains(why), "{name:?}: {error}");
        }
        // A decoded segment is checked too: %2F would smuggle a '/' in.
        assert!(matches!(plan_uri(&fetch("http://h/..%2Fx")), Err(PlanError::BadOutputName { .. })));
        assert!(matches!(plan_uri(&fetch("http://h/%2E%2E")), Err(PlanError::BadOutputName { .. })));
        // Dots inside a name are harmless.
        assert_eq!(plan(fetch("http://h/app-1.0..tgz")).output, "app-1.0..tgz");
    }

    #[test]
    fn archive_kinds_follow_the_suffix() {
        for name in ["a.tar", "a.tar.gz", "a.tgz", "a.tar.bz2", "a.tbz2", "a.tar.xz", "a.txz"] {
            assert_eq!(archive_kind(name), Some(ArchiveKind::Tar), "{name}");
        }
        assert_eq!(archive_kind("a.zip"), Some(ArchiveKind::Zip));
        assert_eq!(archive_kind("data.csv.gz"), Some(ArchiveKind::Gzip));
        for name in ["a.txt", ".gz", "tar", "a.tar.zst"] {
            assert_eq!(archive_kind(name), None, "{name}");
        }
    }

    #[test]
    fn executable_wins_over_extract_and_non_archives_are_kept() {
        let extract = FetchUri { extract: true, ..fetch("http://h/app.tar.gz") };
        assert_eq!(plan(extract.clone()).finish, Finish::Extract(ArchiveKind::Tar));
        assert_eq!(plan(FetchUri { executable: true, ..extract }).finish, Finish::Executable);
        assert_eq!(plan(FetchUri { extract: true, ..fetch("http://h/run.sh") }).finish, Finish::Keep);
        assert_eq!(plan(fetch("http://h/app.tar.gz")).finish, Finish::Keep, "extract not asked");
    }

    #[test]
    fn the_cache_key_is_the_uri_when_caching() {
        assert_eq!(plan(fetch("http://h/x")).cache_key, None);
        let cached = FetchUri { cache: true, ..fetch(" http://h/x ") };
        assert_eq!(plan(cached).cache_key.as_deref(), Some("http://h/x"));
    }

    #[test]
    fn a_task_plan_stops_at_the_first_bad_uri() {
        let uris = [fetch("http://h/a"), fetch("ftp://h/b"), fetch("gopher://c")];
        assert!(matches!(plan_fetch(&uris), Err(PlanError::UnsupportedScheme { uri, .. }) if uri == "ftp://h/b"));
        assert_eq!(plan_fetch(&uris[..1]).unwrap().len(), 1);
        assert_eq!(plan_fetch(&[]), Ok(Vec::new()));
    }

    #[test]
    fn extract_commands_are_mesos_s() {
        let tar = extract_command(ArchiveKind::Tar, "/sb", "a.tgz");
        assert_eq!((tar.program, tar.args.join(" ")), ("tar", "-C /sb -xf /sb/a.tgz".to_owned()));
        let zip = extract_command(ArchiveKind::Zip, "/sb/", "a.zip");
        assert_eq!((zip.program, zip.args.join(" ")), ("unzip", "-o -d /sb/ /sb/a.zip".to_owned()));
        let gz = extract_command(ArchiveKind::Gzip, "/sb", "data.csv.gz");
        assert_eq!(
            (gz.program, gz.args.join(" "), gz.stdout_to),
            ("gzip", "-dc /sb/data.csv.gz".into(), Some("data.csv".into()))
        );
    }

    #[test]
    fn percent_decoding_refuses_malformed_escapes() {
        assert_eq!(percent_decode("a%20b%2f"), Some("a b/".into()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
        assert_eq!(percent_decode("caf%C3%A9"), Some("café".into()));
    }
}

//! Marathon's path ids: apps and groups are named by `/`-separated paths (`/prod/db/mysql`), a
//! group being a prefix of the ids inside it.
//!
//! Rules, as Marathon's `PathId` applies them:
//! - The text is split on `/`; empty segments (leading, trailing or doubled slashes) are
//!   dropped, so `/a//b/` is `/a/b`. Text starting with `/` is absolute, anything else is
//!   relative to a base group (the root group `/` when there is none).
//! - Each segment is `.`, `..`, or a name: one or more labels joined by `.`, each label made of
//!   lowercase ASCII letters, digits and `-`, neither starting nor ending with `-`
//!   (`my-app`, `v1.db`). Anything else is refused with Marathon's message.
//! - Canonical form: the base's segments followed by the relative ones (or the absolute ones
//!   alone), with `.` dropped and `..` removing the segment before it; `..` at the root stays at
//!   the root, as in Marathon. A [`PathId`] is always canonical and absolute, so parsing its
//!   text again gives it back unchanged.
//! - Ids order by their segments, element by element (`/a` < `/a/b` < `/b`).
//!
//! Which ids an *app* may have (not the root, not ending in a reserved word such as `tasks`) is
//! the app validator's business (`validation.rs`), because groups use the same ids.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The segment grammar, in the words Marathon's error message uses.
pub const SEGMENT_PATTERN: &str =
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// Last segments an app id may not have: they would collide with REST sub-resources.
pub const RESERVED_KEYWORDS: [&str; 5] = ["restart", "tasks", "versions", ".", ".."];

/// An absolute, canonical path id: `/` (the root group) or `/seg/seg/...`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId {
    segments: Vec<String>,
}

/// Why a path id was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A segment breaks the grammar; the message is Marathon's.
    #[error("must fully match regular expression '{pattern}'", pattern = SEGMENT_PATTERN)]
    InvalidSegment { segment: String },
}

impl PathId {
    /// The root group `/`.
    pub fn root() -> PathId {
        PathId::default()
    }

    /// Parses `text`, resolving a relative id against the root group.
    pub fn parse(text: &str) -> Result<PathId, PathError> {
        PathId::parse_relative_to(text, &PathId::root())
    }

    /// Parses `text`, resolving a relative id against `base` (an absolute id is unaffected).
    pub fn parse_relative_to(text: &str, base: &PathId) -> Result<PathId, PathError> {
        let raw = split(text);
        if let Some(bad) = raw.iter().find(|segment| !is_valid_segment(segment)) {
            return Err(PathError::InvalidSegment { segment: (*bad).to_owned() });
        }
        let start: &[String] = if is_absolute(text) { &[] } else { &base.segments };
        Ok(PathId { segments: resolve(start, &raw) })
    }

    /// An id from segments that are already names (no `.` or `..`), such as a group's child.
    pub fn from_segments<I, S>(segments: I) -> Result<PathId, PathError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segments: Vec<String> = segments.into_iter().map(Into::into).collect();
        match segments.iter().find(|segment| !is_name(segment)) {
            Some(bad) => Err(PathError::InvalidSegment { segment: bad.clone() }),
            None => Ok(PathId { segments }),
        }
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// True for an id directly under the root (`/app`).
    pub fn is_top_level(&self) -> bool {
        self.segments.len() == 1
    }

    /// The enclosing group; the root is its own parent, as in Marathon.
    pub fn parent(&self) -> PathId {
        let keep = self.segments.len().saturating_sub(1);
        PathId { segments: self.segments[..keep].to_vec() }
    }

    /// Every enclosing group, nearest first, ending with the root; empty for the root.
    pub fn ancestors(&self) -> Vec<PathId> {
        (0..self.segments.len()).rev().map(|len| PathId { segments: self.segments[..len].to_vec() }).collect()
    }

    /// The last segment, or `None` for the root.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// True if `other` is this id or lies inside it.
    pub fn includes(&self, other: &PathId) -> bool {
        other.segments.starts_with(&self.segments)
    }

    /// This id with `child` (relative, may contain `..`) resolved against it.
    pub fn join(&self, child: &str) -> Result<PathId, PathError> {
        PathId::parse_relative_to(child.trim_start_matches('/'), self)
    }

    /// The segments in reverse joined with dots (`/prod/db` is `db.prod`), the shape DNS names use.
    pub fn to_hostname(&self) -> String {
        self.segments.iter().rev().map(String::as_str).collect::<Vec<_>>().join(".")
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PathId::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn is_absolute(text: &str) -> bool {
    text.starts_with('/')
}

/// The non-empty `/`-separated segments of `text`.
fn split(text: &str) -> Vec<&str> {
    text.split('/').filter(|segment| !segment.is_empty()).collect()
}

/// `start` followed by `raw`, with `.` dropped and `..` removing the previous segment.
fn resolve(start: &[String], raw: &[&str]) -> Vec<String> {
    let mut out = start.to_vec();
    for segment in raw {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name.to_owned()),
        }
    }
    out
}

/// A segment Marathon accepts: `.`, `..` or a name.
pub fn is_valid_segment(segment: &str) -> bool {
    segment == "." || segment == ".." || is_name(segment)
}

/// Dot-separated labels of `[a-z0-9-]`, each non-empty and not starting or ending with `-`.
pub fn is_name(segment: &str) -> bool {
    !segment.is_empty() && segment.split('.').all(is_label)
}

fn is_label(label: &str) -> bool {
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !label.is_empty() && label.as_bytes().iter().all(allowed) && !label.starts_with('-') && !label.ends_with('-')
}

/// The `strings.PathId` pattern of Marathon's RAML, applied to JSON strings before anything
/// else: `/`-separated pieces, each empty, `..` or a name (a lone `.` is refused here).
pub fn matches_raml_pattern(text: &str) -> bool {
    text.split('/').all(|piece| piece.is_empty() || piece == ".." || is_name(piece))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(text: &str) -> PathId {
        PathId::parse(text).unwrap()
    }

    #[test]
    fn parses_and_canonicalises() {
        let table = [
            ("/prod/db/mysql", "/prod/db/mysql"),
            ("prod/db", "/prod/db"),
            ("/a//b/", "/a/b"),
            ("///", "/"),
            ("", "/"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../a", "/a"),
            ("/a/../..", "/"),
            ("/v1.db/x-y", "/v1.db/x-y"),
        ];
        for (text, canonical) in table {
            assert_eq!(id(text).to_string(), canonical, "{text}");
        }
    }

    #[test]
    fn resolves_relative_ids_against_a_base() {
        let base = id("/prod/db");
        assert_eq!(PathId::parse_relative_to("mysql", &base).unwrap().to_string(), "/prod/db/mysql");
        assert_eq!(PathId::parse_relative_to("../web", &base).unwrap().to_string(), "/prod/web");
        assert_eq!(PathId::parse_relative_to("./x/../y", &base).unwrap().to_string(), "/prod/db/y");
        assert_eq!(PathId::parse_relative_to("/abs", &base).unwrap().to_string(), "/abs");
        assert_eq!(PathId::parse_relative_to("../../../up", &base).unwrap().to_string(), "/up");
        assert_eq!(base.join("/child").unwrap().to_string(), "/prod/db/child");
    }

    #[test]
    fn refuses_bad_segments_with_marathons_message() {
        for bad in ["/Prod", "/a_b", "/-a", "/a-", "/a..b", "/a./b", "/ä", "/a b", "/.a"] {
            let err = PathId::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("must fully match regular expression '^(([a-z0-9]"), "{bad}");
        }
        assert_eq!(PathId::parse("/ok/Bad").unwrap_err(), PathError::InvalidSegment { segment: "Bad".to_owned() });
    }

    #[test]
    fn parent_ancestors_and_predicates() {
        let mysql = id("/prod/db/mysql");
        assert_eq!(mysql.parent(), id("/prod/db"));
        assert_eq!(PathId::root().parent(), PathId::root());
        assert_eq!(mysql.ancestors(), vec![id("/prod/db"), id("/prod"), PathId::root()]);
        assert!(PathId::root().ancestors().is_empty());
        assert!(PathId::root().is_root() && !mysql.is_root());
        assert!(id("/app").is_top_level() && !mysql.is_top_level() && !PathId::root().is_top_level());
        assert!(id("/prod").includes(&mysql) && mysql.includes(&mysql) && !mysql.includes(&id("/prod")));
        assert!(!id("/pro").includes(&id("/prod")));
        assert_eq!(mysql.name(), Some("mysql"));
        assert_eq!(mysql.to_hostname(), "mysql.db.prod");
    }

    #[test]
    fn orders_by_segments() {
        let mut ids = [id("/b"), id("/a/b"), id("/a"), PathId::root(), id("/a/a")];
        ids.sort();
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["/", "/a", "/a/a", "/a/b", "/b"]);
    }

    #[test]
    fn serde_is_the_string_form() {
        assert_eq!(serde_json::to_string(&id("/a/b")).unwrap(), "\"/a/b\"");
        assert_eq!(serde_json::from_str::<PathId>("\"a/../c/\"").unwrap(), id("/c"));
        assert!(serde_json::from_str::<PathId>("\"/A\"").is_err());
    }

    #[test]
    fn raml_pattern_accepts_dot_dot_but_not_dot() {
        assert!(matches_raml_pattern("/a/../b"));
        assert!(matches_raml_pattern("a//b/"));
        assert!(!matches_raml_pattern("/a/./b"));
        assert!(!matches_raml_pattern("/A"));
    }

    #[test]
    fn from_segments_takes_names_only() {
        assert_eq!(PathId::from_segments(["a", "b"]).unwrap(), id("/a/b"));
        assert!(PathId::from_segments([".."]).is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?",
            1 => Just(".".to_owned()),
            1 => Just("..".to_owned()),
            1 => Just(String::new()),
        ]
    }

    proptest! {
        #[test]
        fn canonical_form_is_idempotent(absolute in any::<bool>(), segments in prop::collection::vec(segment(), 0..8), trailing in any::<bool>()) {
            let mut text = if absolute { "/".to_owned() } else { String::new() };
            text.push_str(&segments.join("/"));
            if trailing { text.push('/'); }
            let once = PathId::parse(&text).unwrap();
            let twice = PathId::parse(&once.to_string()).unwrap();
            prop_assert_eq!(&once, &twice);
            prop_assert!(once.segments().iter().all(|s| is_name(s)));
            prop_assert!(once.ancestors().iter().all(|a| a.includes(&once)));
        }

        #[test]
        fn relative_resolution_stays_under_base_without_dot_dot(base in prop::collection::vec("[a-z]{1,4}", 0..4), child in prop::collection::vec("[a-z]{1,4}", 1..4)) {
            let base = PathId::from_segments(base).unwrap();
            let resolved = PathId::parse_relative_to(&child.join("/"), &base).unwrap();
            prop_assert!(base.includes(&resolved));
            prop_assert_eq!(resolved.segments().len(), base.segments().len() + child.len());
        }
    }
}

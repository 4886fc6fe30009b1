//! Tidy: the architecture's layering rules, checked on every `cargo test`.
//!
//! DESIGN.md (§1, §2) fixes how Flotilla is layered, and rules that live only in a document
//! erode one convenient shortcut at a time. This test makes them fail the build instead:
//!
//! 1. Crate layering: dependencies point one way, `flotilla` → `flotilla-actors` →
//!    `flotilla-transport` → `flotilla-supervisors` (and `flotilla-actors` →
//!    `flotilla-supervisors`). Every `[*dependencies]` table of each member's Cargo.toml is
//!    checked, and every workspace member must have a place in [`LAYERS`].
//! 2. Source layering: no crate's `src` names a flotilla crate it may not depend on, so a
//!    dependency cannot sneak in through a path the manifests do not show.
//! 3. Pure cores: core modules (`src/**/core/**` and `src/**/core.rs`) use no runtime, no I/O,
//!    no clock, no RNG construction and no randomly ordered collection, so they can be unit
//!    tested exhaustively and replayed from a seed.
//! 4. Unsafe isolation: the workspace denies `unsafe_code`; only modules named `isolation` may
//!    lift that, so every `unsafe` block sits where reviewers expect it.
//! 5. Supervised tasks: no detached `tokio::spawn` in `supervisors/src` or `actors/src`; every
//!    task there is a supervised actor, so a crash is seen and restarted.
//! 6. Code map: `ARCHITECTURE.md` names every member folder and every module directly under a
//!    crate's `src`, so the map cannot silently go stale.
//!
//! The checks scan text rather than parse Rust or TOML: comments are skipped, string literals
//! are not, and a token counts only as a whole word or followed by `_` (`extractor` is not
//! `ractor` and `self.awaiting` is not `.await`, but `tokio_util` is still `tokio`). Each
//! checker is a pure function of paths and contents with its own unit tests;
//! `workspace_obeys_architecture_rules` runs them over the real tree.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const RULE_CRATE_LAYERING: &str = "rule 1, crate layering";
const RULE_SOURCE_LAYERING: &str = "rule 2, source layering";
const RULE_PURE_CORES: &str = "rule 3, pure cores";
const RULE_UNSAFE_ISOLATION: &str = "rule 4, unsafe isolation";
const RULE_SUPERVISED_TASKS: &str = "rule 5, supervised tasks";
const RULE_CODE_MAP: &str = "rule 6, code map";

/// A member crate and the flotilla crates it may depend on.
#[derive(Debug)]
struct Layer {
    dir: &'static str,
    package: &'static str,
    may_depend_on: &'static [&'static str],
}

/// The root package sits on top of every layer and may use all of them.
const ROOT_PACKAGE: &str = "flotilla";
const ROOT_SRC: &str = "src";

/// Lowest layer first. A new member crate must be added here, which forces a decision about
/// where it sits.
const LAYERS: &[Layer] = &[
    Layer { dir: "supervisors", package: "flotilla-supervisors", may_depend_on: &[] },
    Layer { dir: "transport", package: "flotilla-transport", may_depend_on: &["flotilla-supervisors"] },
    Layer { dir: "actors", package: "flotilla-actors", may_depend_on: &["flotilla-transport", "flotilla-supervisors"] },
];

const LAYERING_SUMMARY: &str =
    "dependencies point down: flotilla → flotilla-actors → flotilla-transport → flotilla-supervisors";

/// What a core module must not name, and why.
const CORE_FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "core modules are plain state machines driven by an actor shell; tokio is an async runtime"),
    ("quinn", "core modules do no I/O; quinn is the QUIC stack, known only to transport shells"),
    ("ractor", "core modules return decisions for a shell to carry out; ractor actors are the shell"),
    ("Instant::now", "core modules take time as an argument; Instant::now reads a clock"),
    ("SystemTime::now", "core modules take time as an argument; SystemTime::now reads the wall clock"),
    ("thread_rng", "core modules take randomness as an argument; thread_rng constructs an unseeded RNG"),
    ("rand::rng", "core modules take randomness as an argument; rand::rng constructs an unseeded RNG"),
    ("async fn", "core modules are synchronous so a test can step them; async fn needs an executor"),
    (".await", "core modules are synchronous so a test can step them; .await needs an executor"),
    ("std::net", "core modules do no I/O; std::net opens sockets"),
    ("HashMap", "core outputs must replay identically from a seed; HashMap iterates in random order (use BTreeMap)"),
    ("HashSet", "core outputs must replay identically from a seed; HashSet iterates in random order (use BTreeSet)"),
    ("std::thread::sleep", "core modules return delays as decisions; std::thread::sleep blocks on a clock"),
    ("std::fs", "core modules do no I/O; std::fs touches the disk"),
];

const UNSAFE_LINT: &str = "unsafe_code";

/// Lint levels weaker than the workspace's `deny`: any of them lets `unsafe` compile.
const LIFTING_LEVELS: &[&str] = &["allow", "expect", "warn"];

/// The actor layers. The rule is scoped to them because that is where DESIGN.md §1.6 requires
/// every task to be a supervised actor.
const SUPERVISED_TASK_SOURCES: &[&str] = &["supervisors/src/", "actors/src/"];

const DETACHED_TASK_WHY: &str =
    "a detached task outlives its owner and nobody sees it crash; run it as a supervised actor";

/// Tokens also match when followed by `_`, which catches `spawn_blocking` and `spawn_local` too.
const DETACHED_SPAWNS: &[(&str, &str)] =
    &[("tokio::spawn", DETACHED_TASK_WHY), ("tokio::task::spawn", DETACHED_TASK_WHY)];

const ARCHITECTURE_DOC: &str = "ARCHITECTURE.md";

/// Files that are a crate root or a module's body, not a module of their own.
const NON_MODULE_FILES: &[&str] = &["lib.rs", "main.rs", "mod.rs"];

/// One broken rule, rendered as `path:line: [rule] message`.
#[derive(Debug)]
struct Violation {
    path: String,
    /// `None` when the violation is an absence, which has no line to point at.
    line: Option<usize>,
    rule: &'static str,
    message: String,
}

impl Violation {
    fn at(path: &str, line: usize, rule: &'static str, message: String) -> Self {
        Violation { path: path.to_owned(), line: Some(line), rule, message }
    }

    fn in_file(path: &str, rule: &'static str, message: String) -> Self {
        Violation { path: path.to_owned(), line: None, rule, message }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: [{}] {}", self.path, self.rule, self.message),
            None => write!(f, "{}: [{}] {}", self.path, self.rule, self.message),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 1: crate layering, from the Cargo.toml files.
// ---------------------------------------------------------------------------------------------

/// Violations of the layering by the flotilla dependencies in one member's Cargo.toml.
fn check_manifest(layer: &Layer, manifest_path: &str, manifest: &str) -> Vec<Violation> {
    declared_dependencies(manifest)
        .into_iter()
        .filter(|dependency| is_flotilla_package(&dependency.package))
        .filter(|dependency| {
            dependency.package != layer.package && !layer.may_depend_on.contains(&&*dependency.package)
        })
        .map(|dependency| {
            let message = format!(
                "{} must not depend on {} (in {}); {}; {LAYERING_SUMMARY}",
                layer.package,
                dependency.package,
                dependency.table,
                allowed_dependencies(layer)
            );
            Violation::at(manifest_path, dependency.line, RULE_CRATE_LAYERING, message)
        })
        .collect()
}

/// A member that does not inherit the workspace lints could allow `unsafe_code` in its own
/// `[lints]` table and escape rule 4, so every manifest must say `[lints] workspace = true`.
fn check_inherits_workspace_lints(manifest_path: &str, manifest: &str) -> Vec<Violation> {
    let mut in_lints = false;
    for line in manifest.lines().map(strip_toml_comment) {
        if let Some(header) = table_header(line) {
            in_lints = header == ["lints"];
        } else if in_lints
            && let Some((key, value)) = split_key_value(line)
            && key == ["workspace"]
            && value.trim() == "true"
        {
            return Vec::new();
        }
    }
    let message = "must contain `[lints] workspace = true`, or it can lift the workspace's deny of unsafe_code".into();
    vec![Violation::in_file(manifest_path, RULE_UNSAFE_ISOLATION, message)]
}

/// Workspace members missing from [`LAYERS`]: the other rules would silently skip them.
fn check_workspace_members(root_manifest: &str) -> Vec<Violation> {
    workspace_members(root_manifest)
        .into_iter()
        .filter(|(_, member)| !LAYERS.iter().any(|layer| layer.dir == member))
        .map(|(line, member)| {
            let message = format!(
                "workspace member `{member}` has no place in the layering; add it to LAYERS in tests/tidy.rs \
                 with the flotilla crates it may depend on"
            );
            Violation::at("Cargo.toml", line, RULE_CRATE_LAYERING, message)
        })
        .collect()
}

fn allowed_dependencies(layer: &Layer) -> String {
    if layer.may_depend_on.is_empty() {
        "it may depend on no other flotilla crate".to_owned()
    } else {
        format!("it may depend only on {}", layer.may_depend_on.join(" and "))
    }
}

fn is_flotilla_package(name: &str) -> bool {
    name == ROOT_PACKAGE || name.starts_with("flotilla-")
}

/// A dependency declared in a Cargo.toml, by the package it resolves to.
#[derive(Debug)]
struct Dependency {
    package: String,
    line: usize,
    /// The table header it was declared under, for the message.
    table: String,
}

/// What a TOML table header means for dependencies.
enum Table {
    /// `[dependencies]`, `[dev-dependencies]`, `[target.'cfg(..)'.build-dependencies]`, ...
    Dependencies,
    /// `[dependencies.<name>]`: a table that declares one dependency.
    OneDependency,
    Other,
}

/// The dependencies of a manifest, read line by line: enough TOML for how Cargo.toml files are
/// written here, not a parser.
fn declared_dependencies(manifest: &str) -> Vec<Dependency> {
    let mut dependencies = Vec::new();
    let mut table = Table::Other;
    let mut header = String::new();
    for (index, raw_line) in manifest.lines().enumerate() {
        let line = strip_toml_comment(raw_line).trim();
        let number = index + 1;
        if let Some(keys) = table_header(line) {
            header = line.to_owned();
            table = classify_table(&keys);
            if let (Table::OneDependency, Some(name)) = (&table, keys.last()) {
                dependencies.push(Dependency {
                    package: normalized_package(name),
                    line: number,
                    table: header.clone(),
                });
            }
            continue;
        }
        let Some((key, value)) = split_key_value(line) else { continue };
        let package = match table {
            Table::Dependencies => Some(dependency_package(&key, value)),
            Table::OneDependency => (key == ["package"]).then(|| unquote(value)),
            Table::Other => None,
        };
        if let Some(package) = package {
            dependencies.push(Dependency {
                package: normalized_package(&package),
                line: number,
                table: header.clone(),
            });
        }
    }
    dependencies
}

fn classify_table(keys: &[String]) -> Table {
    // Platform-specific tables nest the usual ones under `target.<cfg>`.
    let keys = match keys {
        [target, _cfg, rest @ ..] if target == "target" => rest,
        _ => keys,
    };
    match keys {
        [kind] if is_dependency_kind(kind) => Table::Dependencies,
        [kind, _name] if is_dependency_kind(kind) => Table::OneDependency,
        _ => Table::Other,
    }
}

fn is_dependency_kind(key: &str) -> bool {
    // Cargo still accepts the old underscore spellings.
    matches!(
        key,
        "dependencies" | "dev-dependencies" | "build-dependencies" | "dev_dependencies" | "build_dependencies"
    )
}

/// The package a `[dependencies]` entry resolves to: its key, unless it is renamed with
/// `package = "..."` (inline or dotted).
fn dependency_package(key: &[String], value: &str) -> String {
    match key {
        [_, field] if field == "package" => unquote(value),
        _ => inline_table_package(value).unwrap_or_else(|| key.first().cloned().unwrap_or_default()),
    }
}

fn inline_table_package(value: &str) -> Option<String> {
    let inner = value.trim().strip_prefix('{')?.strip_suffix('}')?;
    split_unquoted(inner, ',').into_iter().find_map(|entry| {
        let (key, value) = split_key_value(entry)?;
        (key == ["package"]).then(|| unquote(value))
    })
}

/// Cargo treats `-` and `_` in package names alike.
fn normalized_package(name: &str) -> String {
    name.replace('_', "-")
}

/// The `members` of `[workspace]`, each with its line, whether the array spans one line or many.
fn workspace_members(root_manifest: &str) -> Vec<(usize, String)> {
    let mut members = Vec::new();
    let mut in_workspace = false;
    let mut in_members = false;
    for (index, raw_line) in root_manifest.lines().enumerate() {
        let line = strip_toml_comment(raw_line).trim();
        if let Some(keys) = table_header(line) {
            in_workspace = keys == ["workspace"];
            in_members = false;
            continue;
        }
        if !in_workspace {
            continue;
        }
        let mut array_text = line;
        if let Some((key, value)) = split_key_value(line) {
            in_members = key == ["members"];
            array_text = value;
        }
        if in_members {
            let found = quoted_strings(array_text).map(|member| (index + 1, normalized_member(member)));
            members.extend(found);
            in_members = !array_text.contains(']');
        }
    }
    members
}

fn normalized_member(member: &str) -> String {
    member.trim_start_matches("./").trim_end_matches('/').to_owned()
}

fn quoted_strings(text: &str) -> impl Iterator<Item = &str> {
    text.split('"').skip(1).step_by(2)
}

/// The dotted keys of a `[table]` or `[[array]]` header line, or `None` for any other line.
fn table_header(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('[')?.trim_start_matches('[');
    let inner = inner.trim_end().strip_suffix(']')?.trim_end_matches(']');
    Some(key_path(inner))
}

/// A `key = value` line split into its dotted key path and its raw value.
fn split_key_value(line: &str) -> Option<(Vec<String>, &str)> {
    let equals = *unquoted_positions(line, '=').first()?;
    Some((key_path(&line[..equals]), line[equals + 1..].trim()))
}

fn key_path(key: &str) -> Vec<String> {
    split_unquoted(key, '.').into_iter().map(unquote).collect()
}

fn unquote(text: &str) -> String {
    text.trim().trim_matches(|c| c == '"' || c == '\'').to_owned()
}

fn strip_toml_comment(line: &str) -> &str {
    match unquoted_positions(line, '#').first() {
        Some(&hash) => &line[..hash],
        None => line,
    }
}

fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for position in unquoted_positions(text, separator) {
        parts.push(&text[start..position]);
        start = position + separator.len_utf8();
    }
    parts.push(&text[start..]);
    parts
}

/// Byte offsets of `separator` in `text` outside TOML strings (`cfg(..)` keys are quoted and
/// may hold dots).
fn unquoted_positions(text: &str, separator: char) -> Vec<usize> {
    let mut open_quote = None;
    let mut positions = Vec::new();
    for (offset, c) in text.char_indices() {
        match open_quote {
            Some(quote) if c == quote => open_quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => open_quote = Some(c),
            None if c == separator => positions.push(offset),
            None => {}
        }
    }
    positions
}

// ---------------------------------------------------------------------------------------------
// Rules 2 to 5: Rust sources.
// ---------------------------------------------------------------------------------------------

/// Every source-level rule applied to one `.rs` file.
fn check_source_file(path: &str, source: &str) -> Vec<Violation> {
    let mut violations = check_source_imports(path, source);
    violations.extend(check_core_purity(path, source));
    violations.extend(check_unsafe_isolation(path, source));
    violations.extend(check_supervised_tasks(path, source));
    violations
}

/// Rule 2: a crate's sources name no flotilla crate above it (nor the root package).
fn check_source_imports(path: &str, source: &str) -> Vec<Violation> {
    let Some(layer) = layer_of(path) else { return Vec::new() };
    let why = format!("{} must not use the crates above it; {LAYERING_SUMMARY}", layer.package);
    let forbidden: Vec<(String, &str)> =
        forbidden_crate_paths(layer).into_iter().map(|crate_path| (crate_path, why.as_str())).collect();
    find_tokens(path, source, RULE_SOURCE_LAYERING, &forbidden)
}

/// Rule 3: core modules name nothing that reads a clock, draws randomness, does I/O or needs a
/// runtime.
fn check_core_purity(path: &str, source: &str) -> Vec<Violation> {
    if !is_core_module(path) {
        return Vec::new();
    }
    find_tokens(path, source, RULE_PURE_CORES, CORE_FORBIDDEN)
}

/// Rule 4: only `isolation` modules lift the workspace's deny of unsafe code.
fn check_unsafe_isolation(path: &str, source: &str) -> Vec<Violation> {
    if is_isolation_module(path) {
        return Vec::new();
    }
    let code = strip_comments(source);
    let message = format!(
        "lifts the workspace's deny of `{UNSAFE_LINT}`; unsafe code belongs in a module named `isolation`, \
         where reviewers expect it"
    );
    lifted_lint_offsets(&code, UNSAFE_LINT)
        .into_iter()
        .map(|offset| Violation::at(path, line_of(&code, offset), RULE_UNSAFE_ISOLATION, message.clone()))
        .collect()
}

/// Rule 5: no detached tasks in the actor layers.
fn check_supervised_tasks(path: &str, source: &str) -> Vec<Violation> {
    if !SUPERVISED_TASK_SOURCES.iter().any(|prefix| path.starts_with(prefix)) {
        return Vec::new();
    }
    find_tokens(path, source, RULE_SUPERVISED_TASKS, DETACHED_SPAWNS)
}

/// The layer whose `src` holds `path`; the root package and other folders have none.
fn layer_of(path: &str) -> Option<&'static Layer> {
    LAYERS.iter().find(|layer| path.strip_prefix(layer.dir).is_some_and(|rest| rest.starts_with("/src/")))
}

/// How sources name each flotilla crate `layer` must not use: the root by its path (a bare
/// `flotilla` would also match `flotilla_transport`), the others by their crate name.
fn forbidden_crate_paths(layer: &Layer) -> Vec<String> {
    let higher_layers = LAYERS
        .iter()
        .filter(|other| other.package != layer.package && !layer.may_depend_on.contains(&other.package))
        .map(|other| other.package.replace('-', "_"));
    std::iter::once(format!("{ROOT_PACKAGE}::")).chain(higher_layers).collect()
}

fn is_core_module(path: &str) -> bool {
    let components: Vec<&str> = path.split('/').collect();
    let Some(src) = components.iter().position(|component| *component == "src") else { return false };
    let Some((file, dirs)) = components[src + 1..].split_last() else { return false };
    file.ends_with(".rs") && (*file == "core.rs" || dirs.contains(&"core"))
}

fn is_isolation_module(path: &str) -> bool {
    path.split('/').any(|component| component == "isolation" || component == "isolation.rs")
}

/// Offsets in `code` of `lint` inside an `allow(..)`, `expect(..)` or `warn(..)` list, which
/// may span lines when rustfmt wraps a long attribute.
fn lifted_lint_offsets(code: &str, lint: &str) -> Vec<usize> {
    let mut offsets = Vec::new();
    for level in LIFTING_LEVELS {
        for start in token_offsets(code, level) {
            let after_level = code[start + level.len()..].trim_start();
            let Some(after_paren) = after_level.strip_prefix('(') else { continue };
            let lint_names = &after_paren[..after_paren.find(')').unwrap_or(after_paren.len())];
            // `after_level` is a suffix of `code`, so its position follows from the lengths.
            let names_start = code.len() - after_level.len() + 1;
            offsets.extend(token_offsets(lint_names, lint).map(|offset| names_start + offset));
        }
    }
    offsets.sort_unstable();
    offsets
}

/// One violation per (line, token) where a token occurs in code outside comments; each token
/// comes with the reason it is forbidden.
fn find_tokens<T: AsRef<str>>(path: &str, source: &str, rule: &'static str, tokens: &[(T, &str)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (line, code) in code_lines(source) {
        for (token, why) in tokens {
            let token = token.as_ref();
            if contains_token(&code, token) {
                violations.push(Violation::at(path, line, rule, format!("found `{token}`: {why}")));
            }
        }
    }
    violations
}

/// Lines of code outside comments, numbered from 1, with whitespace runs collapsed so that
/// `async  fn` still reads as `async fn`.
fn code_lines(source: &str) -> Vec<(usize, String)> {
    strip_comments(source)
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// `source` with `//` and (nested) `/* */` comments blanked out; newlines are kept so line
/// numbers stay true. String literals are not recognised, so a comment opener inside one hides
/// what follows it (the rest of the line for `//`, up to the next `*/` for `/*`): the scan errs
/// towards silence there, never towards a false report.
fn strip_comments(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut block_depth = 0_usize;
    let mut in_line_comment = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            in_line_comment = false;
            code.push('\n');
            continue;
        }
        if in_line_comment {
            continue;
        }
        match (c, chars.peek().copied()) {
            ('/', Some('*')) => {
                chars.next();
                block_depth += 1;
                // A space, not nothing, so that `async/**/fn` does not glue into one word.
                code.push(' ');
            }
            ('*', Some('/')) if block_depth > 0 => {
                chars.next();
                block_depth -= 1;
            }
            ('/', Some('/')) if block_depth == 0 => in_line_comment = true,
            _ if block_depth > 0 => {}
            _ => code.push(c),
        }
    }
    code
}

fn contains_token(text: &str, token: &str) -> bool {
    token_offsets(text, token).next().is_some()
}

/// Where `token` occurs in `text` as a whole word, so `extractor` does not count as `ractor` nor
/// `awaiting` as `await`. A `_` may follow, because that is how companions are named: `tokio_util`
/// is still `tokio`, `spawn_blocking` still a spawn.
fn token_offsets<'a>(text: &'a str, token: &'a str) -> impl Iterator<Item = usize> + 'a {
    let needs_word_start = token.starts_with(is_identifier_char);
    let needs_word_end = token.ends_with(is_identifier_char);
    let continues_word = |c: char| is_identifier_char(c) && c != '_';
    text.match_indices(token).map(|(offset, _)| offset).filter(move |&offset| {
        let starts_word = !needs_word_start || !text[..offset].ends_with(is_identifier_char);
        let ends_word = !needs_word_end || !text[offset + token.len()..].starts_with(continues_word);
        starts_word && ends_word
    })
}

fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

// ---------------------------------------------------------------------------------------------
// Rule 6: the code map in ARCHITECTURE.md.
// ---------------------------------------------------------------------------------------------

/// Rule 6: `doc` (ARCHITECTURE.md, `None` if missing) names every entry of the code map that
/// the workspace's `files` imply.
fn check_code_map(doc: Option<&str>, files: &[String]) -> Vec<Violation> {
    let mut violations = Vec::new();
    if doc.is_none() {
        let message = "is missing; it must hold the code map (DESIGN.md §1.12)".to_owned();
        violations.push(Violation::in_file(ARCHITECTURE_DOC, RULE_CODE_MAP, message));
    }
    // A missing map is reported entry by entry too, so its author gets the full list to write.
    let doc = doc.unwrap_or_default();
    for entry in code_map_entries(files) {
        if !mentions_path(doc, path_stem(&entry)) {
            let message =
                format!("does not mention `{entry}`; the code map must name every member folder and top-level module");
            violations.push(Violation::in_file(ARCHITECTURE_DOC, RULE_CODE_MAP, message));
        }
    }
    violations
}

/// What the code map must name: each member folder (`supervisors/`, and `src/` for the root)
/// and each module directly under a crate's `src`, as `<src>/<dir>/` or `<src>/<file>.rs`.
fn code_map_entries(files: &[String]) -> BTreeSet<String> {
    let members = std::iter::once(ROOT_SRC).chain(LAYERS.iter().map(|layer| layer.dir));
    let mut entries: BTreeSet<String> = members.map(|member| format!("{member}/")).collect();
    for src in crate_src_dirs() {
        let modules = files.iter().filter_map(|file| top_level_module(&src, file));
        entries.extend(modules.map(|module| format!("{src}/{module}")));
    }
    entries
}

fn crate_src_dirs() -> Vec<String> {
    std::iter::once(ROOT_SRC.to_owned()).chain(LAYERS.iter().map(|layer| format!("{}/src", layer.dir))).collect()
}

/// The module of `src` that `file` belongs to, as `dir/` or `file.rs`, if it is a module.
fn top_level_module(src: &str, file: &str) -> Option<String> {
    let inside = file.strip_prefix(src)?.strip_prefix('/')?;
    match inside.split_once('/') {
        Some((dir, _)) => Some(format!("{dir}/")),
        None if inside.ends_with(".rs") && !NON_MODULE_FILES.contains(&inside) => Some(inside.to_owned()),
        None => None,
    }
}

/// `supervisors/src/core/` → `supervisors/src/core`; `src/config.rs` → `src/config`.
fn path_stem(entry: &str) -> &str {
    entry.strip_suffix('/').or_else(|| entry.strip_suffix(".rs")).unwrap_or(entry)
}

/// Whether `doc` names the path `stem` as a whole: as `stem/`, `stem.rs` or `` stem` ``, and not
/// as the tail of a longer path (`src/` must not be satisfied by `supervisors/src/`).
fn mentions_path(doc: &str, stem: &str) -> bool {
    doc.match_indices(stem).any(|(offset, _)| {
        let starts_path = !doc[..offset].ends_with(is_path_char);
        let rest = &doc[offset + stem.len()..];
        starts_path && (rest.starts_with('/') || rest.starts_with(".rs") || rest.starts_with('`'))
    })
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/')
}

// ---------------------------------------------------------------------------------------------
// The real workspace.
// ---------------------------------------------------------------------------------------------

/// Cargo sets the manifest dir; a plain `rustc --test` build runs from the workspace root.
fn workspace_root() -> PathBuf {
    PathBuf::from(option_env!("CARGO_MANIFEST_DIR").unwrap_or("."))
}

/// Build output, VCS data (`.git`) and other hidden folders hold none of our sources.
fn is_skipped_dir(name: &str) -> bool {
    name == "target" || name.starts_with('.')
}

/// Every file of the workspace as a sorted, `/`-separated path relative to `root`.
fn workspace_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending_dirs = vec![String::new()];
    while let Some(relative_dir) = pending_dirs.pop() {
        let dir = root.join(&relative_dir);
        let entries = fs::read_dir(&dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|error| panic!("cannot read an entry of {}: {error}", dir.display()));
            let name = entry
                .file_name()
                .into_string()
                .unwrap_or_else(|name| panic!("non-UTF-8 file name {name:?} in {}", dir.display()));
            let is_dir = entry
                .file_type()
                .unwrap_or_else(|error| panic!("cannot stat {name} in {}: {error}", dir.display()))
                .is_dir();
            if is_dir && is_skipped_dir(&name) {
                continue;
            }
            let path = if relative_dir.is_empty() { name } else { format!("{relative_dir}/{name}") };
            if is_dir {
                pending_dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read_text(root: &Path, relative: &str) -> String {
    read_optional_text(root, relative).unwrap_or_else(|| panic!("{relative} is missing under {}", root.display()))
}

fn read_optional_text(root: &Path, relative: &str) -> Option<String> {
    let path = root.join(relative);
    match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

#[test]
fn workspace_obeys_architecture_rules() {
    let root = workspace_root();
    let files = workspace_files(&root);
    let mut violations = check_workspace_members(&read_text(&root, "Cargo.toml"));
    for layer in LAYERS {
        let manifest_path = format!("{}/Cargo.toml", layer.dir);
        let manifest = read_text(&root, &manifest_path);
        violations.extend(check_manifest(layer, &manifest_path, &manifest));
        violations.extend(check_inherits_workspace_lints(&manifest_path, &manifest));
    }
    violations.extend(check_inherits_workspace_lints("Cargo.toml", &read_text(&root, "Cargo.toml")));
    for path in files.iter().filter(|path| path.ends_with(".rs")) {
        violations.extend(check_source_file(path, &read_text(&root, path)));
    }
    let architecture_doc = read_optional_text(&root, ARCHITECTURE_DOC);
    violations.extend(check_code_map(architecture_doc.as_deref(), &files));

    let report: Vec<String> = violations.iter().map(Violation::to_string).collect();
    assert!(violations.is_empty(), "{} architecture violation(s):\n{}", violations.len(), report.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Unit tests of the checkers, on in-memory inputs.
// ---------------------------------------------------------------------------------------------

fn layer(dir: &str) -> &'static Layer {
    LAYERS.iter().find(|layer| layer.dir == dir).unwrap_or_else(|| panic!("no layer {dir} in LAYERS"))
}

mod workspace_lints {
    use super::*;

    #[test]
    fn a_manifest_without_inherited_lints_is_reported() {
        let manifest = "[package]\nname = \"flotilla-x\"\n\n[lints.rust]\nunsafe_code = \"allow\"\n";
        assert_eq!(check_inherits_workspace_lints("x/Cargo.toml", manifest).len(), 1);
    }

    #[test]
    fn a_manifest_inheriting_the_lints_is_clean() {
        let manifest = "[package]\nname = \"flotilla-x\"\n\n[lints]\nworkspace = true # shared\n";
        assert!(check_inherits_workspace_lints("x/Cargo.toml", manifest).is_empty());
    }
}

mod crate_layering {
    use super::*;

    const MANIFEST_HEAD: &str =
        "[package]\nname = \"flotilla-x\"\nversion.workspace = true\n\n[lints]\nworkspace = true\n";

    fn check(dir: &str, tables: &str) -> Vec<Violation> {
        check_manifest(layer(dir), &format!("{dir}/Cargo.toml"), &format!("{MANIFEST_HEAD}{tables}"))
    }

    #[test]
    fn dev_dependency_on_a_higher_layer_is_reported() {
        let violations = check("supervisors", "\n[dev-dependencies]\nflotilla-transport.workspace = true\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        let message = violations[0].to_string();
        assert!(message.starts_with("supervisors/Cargo.toml:9: [rule 1, crate layering]"), "{message}");
        assert!(message.contains("flotilla-transport") && message.contains("[dev-dependencies]"), "{message}");
    }

    #[test]
    fn dependency_on_the_root_package_is_reported() {
        let violations = check("actors", "[dependencies]\nflotilla = { path = \"..\" }\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("must not depend on flotilla "), "{violations:?}");
    }

    #[test]
    fn build_dependency_on_a_higher_layer_is_reported() {
        let violations = check("transport", "[build-dependencies]\nflotilla-actors = { path = \"../actors\" }\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn dependency_declared_as_its_own_table_is_reported() {
        let violations = check("transport", "[dependencies.flotilla-actors]\npath = \"../actors\"\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].line, Some(7));
    }

    #[test]
    fn renamed_dependency_is_reported_by_its_package() {
        let inline =
            check("transport", "[dependencies]\nupper = { package = \"flotilla-actors\", path = \"../actors\" }\n");
        assert_eq!(inline.len(), 1, "{inline:?}");
        let dotted =
            check("transport", "[dependencies]\nupper.package = \"flotilla-actors\"\nupper.path = \"../actors\"\n");
        assert_eq!(dotted.len(), 1, "{dotted:?}");
    }

    #[test]
    fn platform_specific_dependency_is_reported() {
        let violations = check("supervisors", "[target.'cfg(unix)'.dependencies]\nflotilla-actors.workspace = true\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn allowed_dependencies_are_clean() {
        let tables = concat!(
            "[dependencies]\n",
            "flotilla-transport.workspace = true\n",
            "flotilla-supervisors = { path = \"../supervisors\" }\n",
            "tokio.workspace = true\n",
            "\n[dev-dependencies]\n",
            "flotilla-actors = { path = \".\" }\n",
        );
        let violations = check("actors", tables);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn other_tables_and_comments_are_clean() {
        let tables = concat!(
            "[features]\n",
            "flotilla-actors = []\n",
            "\n[dependencies]\n",
            "# flotilla-actors.workspace = true\n",
            "ractor.workspace = true # not flotilla-actors\n",
        );
        let violations = check("supervisors", tables);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn workspace_member_without_a_layer_is_reported() {
        let manifest =
            "[workspace]\nmembers = [\n    \"supervisors\",\n    \"scheduler\",\n]\n\n[package]\nname = \"flotilla\"\n";
        let violations = check_workspace_members(manifest);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].line, Some(4));
        assert!(violations[0].message.contains("`scheduler`"), "{violations:?}");
    }

    #[test]
    fn layered_workspace_members_are_clean() {
        let manifest = concat!(
            "[workspace]\n",
            "members = [\"supervisors\", \"transport\", \"actors\"]\n",
            "default-members = [\".\", \"supervisors\"]\n",
            "\n[package]\nname = \"flotilla\"\n",
        );
        let violations = check_workspace_members(manifest);
        assert!(violations.is_empty(), "{violations:?}");
    }
}

mod source_layering {
    use super::*;

    #[test]
    fn import_of_a_higher_layer_is_reported() {
        let violations =
            check_source_imports("supervisors/src/node.rs", "use std::fmt;\nuse flotilla_transport::Session;\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].to_string().starts_with("supervisors/src/node.rs:2: [rule 2, source layering]"));
        let violations = check_source_imports("transport/src/peer.rs", "fn f(x: flotilla_actors::Dns) {}\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn import_of_the_root_package_is_reported() {
        let violations = check_source_imports("actors/src/dns/mod.rs", "use flotilla::sim::Cluster;\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn imports_of_lower_layers_are_clean() {
        let source = "use flotilla_transport::Session;\nuse flotilla_supervisors::core::exit::ExitReason;\n";
        assert!(check_source_imports("actors/src/dns/mod.rs", source).is_empty());
        let root_source = "use flotilla_actors::dns;\nuse flotilla_transport::Session;\n";
        assert!(check_source_imports("src/main.rs", root_source).is_empty());
    }

    #[test]
    fn crate_named_in_a_comment_is_clean() {
        let source = "//! Unlike flotilla_actors, this crate knows no component.\n/* flotilla::sim */\n";
        assert!(check_source_imports("supervisors/src/lib.rs", source).is_empty());
    }
}

mod pure_cores {
    use super::*;

    #[test]
    fn clock_read_in_a_core_directory_is_reported() {
        let violations = check_core_purity("supervisors/src/core/x.rs", "let t = Instant::now();\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        let message = violations[0].to_string();
        assert!(message.starts_with("supervisors/src/core/x.rs:1: [rule 3, pure cores]"), "{message}");
        assert!(message.contains("core modules take time as an argument; Instant::now reads a clock"), "{message}");
    }

    #[test]
    fn every_forbidden_token_is_reported() {
        for (token, _) in CORE_FORBIDDEN {
            let violations = check_core_purity("actors/src/election/core/raft.rs", &format!("fn f() {{ {token} }}\n"));
            assert_eq!(violations.len(), 1, "{token}: {violations:?}");
            assert!(violations[0].message.contains(token), "{token}: {violations:?}");
        }
    }

    #[test]
    fn reported_line_counts_block_comments() {
        let source = "/* a comment\n   over two lines */\nuse tokio::sync::mpsc;\n";
        let violations = check_core_purity("src/scheduler/core.rs", source);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].line, Some(3));
    }

    #[test]
    fn core_modules_are_recognised() {
        let core_modules = [
            "supervisors/src/core/exit.rs",
            "supervisors/src/core/mod.rs",
            "actors/src/election/core/raft.rs",
            "src/scheduler/core.rs",
        ];
        for path in core_modules {
            assert!(is_core_module(path), "{path}");
        }
        let other_files = [
            "supervisors/src/node.rs",
            "tests/core/sim.rs",
            "actors/src/corefile.rs",
            "supervisors/src/core/README.md",
        ];
        for path in other_files {
            assert!(!is_core_module(path), "{path}");
        }
    }

    #[test]
    fn tokens_in_comments_are_clean() {
        let source = concat!(
            "//! No tokio here, and no HashMap.\n",
            "/* Instant::now() /* nested */ .await */\n",
            "use std::collections::BTreeMap; // not HashMap\n",
        );
        let violations = check_core_purity("supervisors/src/core/x.rs", source);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn token_inside_a_longer_identifier_is_clean() {
        let source = "let extractor = MyHashMapLike::default();\nlet votes = self.awaiting_votes;\n";
        let violations = check_core_purity("supervisors/src/core/x.rs", source);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn companion_crate_counts_as_its_crate() {
        let violations = check_core_purity("supervisors/src/core/x.rs", "use tokio_util::sync::CancellationToken;\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn runtime_outside_a_core_module_is_clean() {
        assert!(
            check_core_purity("supervisors/src/node.rs", "use tokio::sync::mpsc;\nlet t = Instant::now();\n")
                .is_empty()
        );
    }
}

mod unsafe_isolation {
    use super::*;

    /// Built at run time so that this file never spells out the attribute it forbids.
    fn lint_attribute(level: &str) -> String {
        format!("#![{level}({UNSAFE_LINT})]\n")
    }

    #[test]
    fn lifting_the_lint_outside_isolation_is_reported() {
        for level in LIFTING_LEVELS {
            let source = format!("//! Cgroups.\n{}", lint_attribute(level));
            let violations = check_unsafe_isolation("actors/src/executor/cgroups.rs", &source);
            assert_eq!(violations.len(), 1, "{level}: {violations:?}");
            assert!(
                violations[0].to_string().starts_with("actors/src/executor/cgroups.rs:2: [rule 4, unsafe isolation]")
            );
        }
    }

    #[test]
    fn lint_in_a_wrapped_or_conditional_list_is_reported() {
        let wrapped = format!("#[allow(\n    dead_code,\n    {UNSAFE_LINT}\n)]\nfn f() {{}}\n");
        let violations = check_unsafe_isolation("src/main.rs", &wrapped);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].line, Some(3));
        let conditional = format!("#![cfg_attr(test, allow(clippy::all, {UNSAFE_LINT}))]\n");
        assert_eq!(check_unsafe_isolation("tests/sim.rs", &conditional).len(), 1);
    }

    #[test]
    fn lifting_the_lint_in_isolation_is_clean() {
        let source = lint_attribute("allow");
        assert!(check_unsafe_isolation("actors/src/executor/isolation/namespaces.rs", &source).is_empty());
        assert!(check_unsafe_isolation("actors/src/executor/isolation.rs", &source).is_empty());
    }

    #[test]
    fn other_lints_levels_and_comments_are_clean() {
        let source = format!(
            "#![deny({UNSAFE_LINT})]\n#![allow(dead_code)]\n// {}\nfn allowed(x: u8) {{}}\n",
            lint_attribute("allow")
        );
        let violations = check_unsafe_isolation("supervisors/src/lib.rs", &source);
        assert!(violations.is_empty(), "{violations:?}");
    }
}

mod supervised_tasks {
    use super::*;

    #[test]
    fn detached_spawns_in_actor_layers_are_reported() {
        let violations = check_supervised_tasks("supervisors/src/shell.rs", "let _ = tokio::spawn(async move {});\n");
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].to_string().starts_with("supervisors/src/shell.rs:1: [rule 5, supervised tasks]"));
        let source = "use std::fmt;\nlet handle = tokio::task::spawn(fut);\nlet b = tokio::task::spawn_blocking(f);\n";
        let violations = check_supervised_tasks("actors/src/dns/mod.rs", source);
        assert_eq!(violations.iter().map(|v| v.line).collect::<Vec<_>>(), [Some(2), Some(3)], "{violations:?}");
    }

    #[test]
    fn spawns_outside_actor_layers_are_clean() {
        let source = "tokio::spawn(endpoint.run());\n";
        assert!(check_supervised_tasks("transport/src/endpoint.rs", source).is_empty());
        assert!(check_supervised_tasks("src/main.rs", source).is_empty());
        assert!(check_supervised_tasks("tests/cluster.rs", source).is_empty());
    }

    #[test]
    fn supervised_spawns_and_comments_are_clean() {
        let source = concat!(
            "// never tokio::spawn here\n",
            "let (actor, _) = ractor::Actor::spawn_linked(None, Dns, (), sup).await?;\n",
            "use tokio::sync::mpsc;\n",
        );
        let violations = check_supervised_tasks("actors/src/dns/mod.rs", source);
        assert!(violations.is_empty(), "{violations:?}");
    }
}

mod code_map {
    use super::*;

    fn files() -> Vec<String> {
        [
            "Cargo.toml",
            "src/lib.rs",
            "src/main.rs",
            "src/config.rs",
            "supervisors/Cargo.toml",
            "supervisors/src/lib.rs",
            "supervisors/src/clock.rs",
            "supervisors/src/core/mod.rs",
            "supervisors/src/core/exit.rs",
            "transport/src/lib.rs",
            "actors/src/lib.rs",
            "actors/src/election/core/raft.rs",
            "tests/tidy.rs",
        ]
        .map(String::from)
        .to_vec()
    }

    const COMPLETE_MAP: &str = concat!(
        "## Code map\n\n",
        "### `src/`\n`src/config.rs` parses configuration.\n\n",
        "### `supervisors/`\n`supervisors/src/clock.rs`, `supervisors/src/core/`\n\n",
        "### `transport/`\n\n",
        "### `actors/`\n`actors/src/election` holds Raft.\n",
    );

    #[test]
    fn entries_are_member_folders_and_top_level_modules() {
        let expected = [
            "actors/",
            "actors/src/election/",
            "src/",
            "src/config.rs",
            "supervisors/",
            "supervisors/src/clock.rs",
            "supervisors/src/core/",
            "transport/",
        ];
        assert_eq!(code_map_entries(&files()), expected.map(String::from).into());
    }

    #[test]
    fn missing_doc_is_reported_with_every_entry() {
        let violations = check_code_map(None, &files());
        assert_eq!(violations.len(), 1 + code_map_entries(&files()).len(), "{violations:?}");
        assert!(violations[0].to_string().starts_with("ARCHITECTURE.md: [rule 6, code map] is missing"));
    }

    #[test]
    fn unmentioned_module_is_reported() {
        let doc = COMPLETE_MAP.replace("`supervisors/src/core/`", "`supervisors/src/core_extra/`");
        let violations = check_code_map(Some(&doc), &files());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].message.contains("`supervisors/src/core/`"), "{violations:?}");
    }

    #[test]
    fn path_counts_only_as_a_whole() {
        assert!(mentions_path("`src/`", "src"));
        assert!(!mentions_path("`supervisors/src/core/`", "src"), "a member's src is not the root's");
        assert!(!mentions_path("`supervisors/src/core_extra/`", "supervisors/src/core"));
        assert!(mentions_path("`supervisors/src/core`", "supervisors/src/core"));
        assert!(mentions_path("supervisors/src/clock.rs", "supervisors/src/clock"));
    }

    #[test]
    fn complete_map_is_clean() {
        let violations = check_code_map(Some(COMPLETE_MAP), &files());
        assert!(violations.is_empty(), "{violations:?}");
    }
}

mod workspace_walk {
    use super::*;

    #[test]
    fn build_output_and_hidden_folders_are_skipped() {
        for name in ["target", ".git", ".ci", ".idea"] {
            assert!(is_skipped_dir(name), "{name}");
        }
        for name in ["src", "core", "targets", "tests"] {
            assert!(!is_skipped_dir(name), "{name}");
        }
    }
}

//! Reading Marathon app JSON into an [`AppSpec`], answering bad input as Marathon does.
//!
//! Marathon reads requests in two stages, and so does this module:
//!
//! 1. The text must be JSON. If it is not, Marathon answers HTTP 400
//!    `{"message":"Invalid JSON","details":"<parser message>"}` (the details are the parser's
//!    words, here serde_json's instead of Jackson's); an empty body answers 400
//!    `{"message":"Please specify data in JSON format","details":"..."}`.
//! 2. The JSON must fit the RAML types (`app.raml` and the files it uses). Every field is
//!    checked and every problem collected, each reported at the JSON path of the offending
//!    value with Play-JSON's error keys: `error.expected.jsstring`, `error.expected.jsnumber`,
//!    `error.expected.int` (a number that is not a 32-bit integer), `error.expected.long`,
//!    `error.expected.jsboolean`, `error.expected.jsarray`, `error.expected.jsobject`,
//!    `error.path.missing` (a required field), `error.unknown.enum.literal`, and the RAML
//!    constraints `error.min`, `error.max`, `error.minLength`, `error.maxLength` (also for
//!    `minItems`/`maxItems`), `error.pattern`. Marathon 1.10 answers these with HTTP **422**
//!    and `{"message":"Invalid JSON","details":[{"path":"/id","errors":["error.expected.jsstring"]}]}`
//!    (`MarathonExceptionMapper`: a `JsResultException` whose errors are all validation errors
//!    is a 422; its RAML docs say 400, its code and tests say 422).
//!
//! Paths are written as Play writes a `JsPath`, which is also how Marathon writes the paths of
//! its semantic validation errors: `/` before each field name and `(i)` for an array index,
//! e.g. `/container/portMappings(0)/hostPort`.
//!
//! Marathon's readers ignore fields they do not know (at every level), treat `null` like an
//! absent optional field, and read `uniqueItems` arrays (`acceptedResourceRoles`,
//! `constraints`, `dependencies`, `healthChecks`, ...) into sets, so duplicates vanish; all three
//! are matched here. Deliberate difference: where Marathon's reader meets a non-object where an
//! object belongs it reports the nested required fields as missing (or nothing at all); here the
//! value's own path gets `error.expected.jsobject`, which says what is wrong.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::app::{
    AppCheck, AppHttpCheck, AppSpec, AppTcpCheck, Artifact, CommandCheck, Container, DiscoveryPort, DockerContainer,
    DockerCredential, DockerNetwork, DockerParameter, EngineType, EnvValue, ExecutorResources, ExternalVolumeInfo,
    HealthCheck, HealthCheckProtocol, HttpScheme, IpAddress, IpProtocol, IpcInfo, IpcMode, KillSelection, LinuxInfo,
    MesosCommand, Network, NetworkMode, PersistentVolumeInfo, PersistentVolumeType, PortDefinition, PortMapping,
    PortProtocol, ReadMode, ReadinessCheck, Residency, ResourceLimit, ResourceLimits, Seccomp, SecretDef,
    TaskLostBehavior, UnreachableStrategy, UpgradeStrategy, Volume,
};
use super::path::matches_raml_pattern;
use super::timestamp::Timestamp;

/// Bad request JSON, in one of Marathon's three shapes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// An empty body (400, "Please specify data in JSON format").
    #[error("Please specify data in JSON format: {0}")]
    Empty(String),
    /// Not JSON (400, "Invalid JSON" with the parser's message as details).
    #[error("Invalid JSON: {0}")]
    Syntax(String),
    /// JSON of the wrong shape (422, "Invalid JSON" with one detail per offending path).
    #[error("Invalid JSON: {}", render_details(.0))]
    Fields(Vec<JsonErrorDetail>),
}

/// The errors found at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonErrorDetail {
    pub path: String,
    pub errors: Vec<String>,
}

fn render_details(details: &[JsonErrorDetail]) -> String {
    details.iter().map(|d| format!("{}: {}", d.path, d.errors.join(", "))).collect::<Vec<_>>().join("; ")
}

impl JsonError {
    pub fn status(&self) -> u16 {
        match self {
            JsonError::Empty(_) | JsonError::Syntax(_) => 400,
            JsonError::Fields(_) => 422,
        }
    }

    /// The response body, exactly as Marathon shapes it.
    pub fn to_json(&self) -> Value {
        match self {
            JsonError::Empty(details) => json!({ "message": "Please specify data in JSON format", "details": details }),
            JsonError::Syntax(details) => json!({ "message": "Invalid JSON", "details": details }),
            JsonError::Fields(details) => json!({
                "message": "Invalid JSON",
                "details": details.iter().map(|d| json!({ "path": d.path, "errors": d.errors })).collect::<Vec<_>>(),
            }),
        }
    }

    /// The errors reported at `path` (empty if none), for tests and logs.
    pub fn errors_at(&self, path: &str) -> Vec<String> {
        match self {
            JsonError::Fields(details) => {
                details.iter().filter(|d| d.path == path).flat_map(|d| d.errors.clone()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// `POST /v2/apps`, `PUT /v2/apps/{id}?partialUpdate=false`: an app; `id` is required.
pub fn parse_app(text: &str) -> Result<AppSpec, JsonError> {
    let value = parse_value(text)?;
    finish(|r| read_app(r, &value, "", true))
}

/// `PATCH /v2/apps/{id}`, `PUT /v2/apps/{id}`: an app update; every field is optional.
pub fn parse_app_update(text: &str) -> Result<AppSpec, JsonError> {
    let value = parse_value(text)?;
    finish(|r| read_app(r, &value, "", false))
}

/// `PUT`/`PATCH /v2/apps`: an array of app updates (paths start with the index, `(0)/cpus`).
pub fn parse_app_updates(text: &str) -> Result<Vec<AppSpec>, JsonError> {
    let value = parse_value(text)?;
    finish(|r| r.array(&value, "", |r, v, p| read_app(r, v, p, false)))
}

/// An app from an already parsed JSON value (e.g. one app inside a group).
pub fn read_app_value(value: &Value, path: &str, require_id: bool) -> Result<AppSpec, JsonError> {
    finish(|r| read_app(r, value, path, require_id))
}

fn parse_value(text: &str) -> Result<Value, JsonError> {
    if text.trim().is_empty() {
        return Err(JsonError::Empty("No content to map due to end-of-input".to_owned()));
    }
    serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))
}

fn finish<T>(read: impl FnOnce(&mut Reader) -> Option<T>) -> Result<T, JsonError> {
    let mut reader = Reader::default();
    let result = read(&mut reader);
    match result {
        Some(value) if reader.details.is_empty() => Ok(value),
        _ if reader.details.is_empty() => Err(JsonError::Fields(vec![JsonErrorDetail {
            path: "/".to_owned(),
            errors: vec!["error.invalid".to_owned()],
        }])),
        _ => Err(JsonError::Fields(reader.details)),
    }
}

/// Collects errors while reading; a read that failed returns `None` after recording why.
#[derive(Default)]
struct Reader {
    details: Vec<JsonErrorDetail>,
}

/// The fields of a JSON object and where it sits.
struct Obj<'v> {
    fields: &'v Map<String, Value>,
    path: String,
}

impl<'v> Obj<'v> {
    /// The value of `key`, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'v Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }
}

impl Reader {
    fn fail<T>(&mut self, path: &str, key: &str) -> Option<T> {
        let path = if path.is_empty() { "/" } else { path };
        match self.details.iter_mut().find(|d| d.path == path) {
            Some(detail) if detail.errors.iter().any(|e| e == key) => {}
            Some(detail) => detail.errors.push(key.to_owned()),
            None => self.details.push(JsonErrorDetail { path: path.to_owned(), errors: vec![key.to_owned()] }),
        }
        None
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str) -> Option<Obj<'v>> {
        match value {
            Value::Object(fields) => Some(Obj { fields, path: path.to_owned() }),
            _ => self.fail(path, "error.expected.jsobject"),
        }
    }

    /// An optional field: absent or `null` gives `None` without an error.
    fn opt<T>(
        &mut self,
        o: &Obj<'_>,
        key: &str,
        read: impl FnOnce(&mut Reader, &Value, &str) -> Option<T>,
    ) -> Option<T> {
        let value = o.get(key)?;
        read(self, value, &o.at(key))
    }

    /// A required field: absent is `error.path.missing`; `null` is read (and refused) as a value.
    fn req<T>(
        &mut self,
        o: &Obj<'_>,
        key: &str,
        read: impl FnOnce(&mut Reader, &Value, &str) -> Option<T>,
    ) -> Option<T> {
        match o.fields.get(key) {
            Some(value) => read(self, value, &o.at(key)),
            None => self.fail(&o.at(key), "error.path.missing"),
        }
    }

    fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            _ => self.fail(path, "error.expected.jsstring"),
        }
    }

    fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => self.fail(path, "error.expected.jsboolean"),
        }
    }

    fn double(&mut self, value: &Value, path: &str) -> Option<f64> {
        match value.as_f64() {
            Some(n) if value.is_number() => Some(n),
            _ => self.fail(path, "error.expected.jsnumber"),
        }
    }

    fn int(&mut self, value: &Value, path: &str) -> Option<i32> {
        let n = self.whole_number(value, path, "error.expected.int")?;
        i32::try_from(n).ok().or_else(|| self.fail(path, "error.expected.int"))
    }

    fn long(&mut self, value: &Value, path: &str) -> Option<i64> {
        self.whole_number(value, path, "error.expected.long")
    }

    /// A JSON number with no fraction (`2.0` counts, as Play's `BigDecimal.isValidInt` says).
    fn whole_number(&mut self, value: &Value, path: &str, key: &str) -> Option<i64> {
        if !value.is_number() {
            return self.fail(path, "error.expected.jsnumber");
        }
        if let Some(n) = value.as_i64() {
            return Some(n);
        }
        match value.as_f64() {
            Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Some(f as i64),
            _ => self.fail(path, key),
        }
    }

    fn array<T>(
        &mut self,
        value: &Value,
        path: &str,
        read: impl Fn(&mut Reader, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(items) = value else {
            return self.fail(path, "error.expected.jsarray");
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            match read(self, item, &format!("{path}({index})")) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A `uniqueItems` array: read as a set, keeping the first of equal items.
    fn set<T: PartialEq>(
        &mut self,
        value: &Value,
        path: &str,
        read: impl Fn(&mut Reader, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(value, path, read)?;
        let mut out: Vec<T> = Vec::with_capacity(items.len());
        for item in items {
            if !out.contains(&item) {
                out.push(item);
            }
        }
        Some(out)
    }

    fn map<T>(
        &mut self,
        value: &Value,
        path: &str,
        read: impl Fn(&mut Reader, &Value, &str) -> Option<T>,
    ) -> Option<BTreeMap<String, T>> {
        let o = self.object(value, path)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, item) in o.fields {
            match read(self, item, &o.at(key)) {
                Some(v) => {
                    out.insert(key.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn labels(&mut self, value: &Value, path: &str) -> Option<BTreeMap<String, String>> {
        self.map(value, path, Reader::string)
    }

    fn strings(&mut self, value: &Value, path: &str) -> Option<Vec<String>> {
        self.array(value, path, Reader::string)
    }

    fn enumeration<T>(&mut self, value: &Value, path: &str, from_wire: fn(&str) -> Option<T>) -> Option<T> {
        match value.as_str().and_then(from_wire) {
            Some(v) => Some(v),
            None => self.fail(path, "error.unknown.enum.literal"),
        }
    }

    // Constraint checks: each records its error and passes the value on either way, so that
    // all of a value's problems are reported.

    fn min_f(&mut self, v: Option<f64>, min: f64, path: &str) -> Option<f64> {
        let v = v?;
        if v < min { self.fail(path, "error.min") } else { Some(v) }
    }

    fn max_f(&mut self, v: Option<f64>, max: f64, path: &str) -> Option<f64> {
        let v = v?;
        if v > max { self.fail(path, "error.max") } else { Some(v) }
    }

    fn min_i<T: PartialOrd + Copy>(&mut self, v: Option<T>, min: T, path: &str) -> Option<T> {
        let v = v?;
        if v < min { self.fail(path, "error.min") } else { Some(v) }
    }

    fn max_i<T: PartialOrd + Copy>(&mut self, v: Option<T>, max: T, path: &str) -> Option<T> {
        let v = v?;
        if v > max { self.fail(path, "error.max") } else { Some(v) }
    }

    fn min_len(&mut self, v: Option<String>, min: usize, path: &str) -> Option<String> {
        let v = v?;
        if v.chars().count() < min { self.fail(path, "error.minLength") } else { Some(v) }
    }

    fn max_len(&mut self, v: Option<String>, max: usize, path: &str) -> Option<String> {
        let v = v?;
        if v.chars().count() > max { self.fail(path, "error.maxLength") } else { Some(v) }
    }

    fn pattern(&mut self, v: Option<String>, matches: fn(&str) -> bool, path: &str) -> Option<String> {
        let v = v?;
        if matches(&v) { Some(v) } else { self.fail(path, "error.pattern") }
    }

    fn min_items<T>(&mut self, v: Option<Vec<T>>, min: usize, path: &str) -> Option<Vec<T>> {
        let v = v?;
        if v.len() < min { self.fail(path, "error.minLength") } else { Some(v) }
    }

    fn max_items<T>(&mut self, v: Option<Vec<T>>, max: usize, path: &str) -> Option<Vec<T>> {
        let v = v?;
        if v.len() > max { self.fail(path, "error.maxLength") } else { Some(v) }
    }
}

// RAML scalar types with their constraints.

/// `numbers.AnyPort`: an int in `0..=65535`.
fn any_port(r: &mut Reader, v: &Value, path: &str) -> Option<i32> {
    let n = r.int(v, path);
    let n = r.min_i(n, 0, path);
    r.max_i(n, 65535, path)
}

/// An int32 with `minimum: 0`.
fn non_negative_int(r: &mut Reader, v: &Value, path: &str) -> Option<i32> {
    let n = r.int(v, path);
    r.min_i(n, 0, path)
}

fn non_negative_long(r: &mut Reader, v: &Value, path: &str) -> Option<i64> {
    let n = r.long(v, path);
    r.min_i(n, 0, path)
}

fn non_empty_string(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = r.string(v, path);
    r.min_len(s, 1, path)
}

/// `strings.LegacyName`: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
fn legacy_name(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = non_empty_string(r, v, path);
    r.pattern(s, is_legacy_name, path)
}

/// `strings.Name`: a legacy name of at most 63 characters.
fn name63(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = legacy_name(r, v, path);
    r.max_len(s, 63, path)
}

/// `strings.NetworkName`: like a name, with `_` allowed inside.
fn network_name(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = non_empty_string(r, v, path);
    let s = r.max_len(s, 63, path);
    r.pattern(s, is_network_name, path)
}

fn path_id(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = non_empty_string(r, v, path);
    r.pattern(s, matches_raml_pattern, path)
}

/// `strings.Uri` and `strings.Path`: 1 to 1024 characters.
fn bounded_text(r: &mut Reader, v: &Value, path: &str) -> Option<String> {
    let s = non_empty_string(r, v, path);
    r.max_len(s, 1024, path)
}

pub(crate) fn is_legacy_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first()) && edge(bytes.last()) && bytes.iter().all(inner)
}

fn is_network_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first()) && edge(bytes.last()) && bytes.iter().all(inner)
}

// The RAML object types.

fn read_app(r: &mut Reader, value: &Value, path: &str, require_id: bool) -> Option<AppSpec> {
    let o = r.object(value, path)?;
    let id = if require_id { r.req(&o, "id", path_id) } else { r.opt(&o, "id", path_id) };
    let cpus = r.opt(&o, "cpus", |r, v, p| {
        let n = r.double(v, p);
        r.min_f(n, 0.001, p)
    });
    let mem = r.opt(&o, "mem", |r, v, p| {
        let n = r.double(v, p);
        r.min_f(n, 0.0, p)
    });
    let disk = r.opt(&o, "disk", |r, v, p| {
        let n = r.double(v, p);
        r.min_f(n, 0.0, p)
    });
    let backoff_factor = r.opt(&o, "backoffFactor", |r, v, p| {
        let n = r.double(v, p);
        r.min_f(n, 1.0, p)
    });
    let cmd = r.opt(&o, "cmd", non_empty_string);
    let role = r.opt(&o, "role", non_empty_string);
    let spec = AppSpec {
        accepted_resource_roles: r.opt(&o, "acceptedResourceRoles", |r, v, p| r.set(v, p, Reader::string)),
        args: r.opt(&o, "args", Reader::strings),
        backoff_factor,
        backoff_seconds: r.opt(&o, "backoffSeconds", non_negative_int),
        check: r.opt(&o, "check", read_app_check),
        cmd,
        constraints: r.opt(&o, "constraints", |r, v, p| r.set(v, p, read_constraint)),
        container: r.opt(&o, "container", read_container),
        cpus,
        dependencies: r.opt(&o, "dependencies", |r, v, p| r.set(v, p, path_id)),
        disk,
        env: r.opt(&o, "env", |r, v, p| r.map(v, p, read_env_value)),
        executor: r.opt(&o, "executor", Reader::string),
        executor_resources: r.opt(&o, "executorResources", read_executor_resources),
        fetch: r.opt(&o, "fetch", |r, v, p| r.array(v, p, read_artifact)),
        gpus: r.opt(&o, "gpus", non_negative_int),
        health_checks: r.opt(&o, "healthChecks", |r, v, p| r.set(v, p, read_health_check)),
        instances: r.opt(&o, "instances", non_negative_int),
        ip_address: r.opt(&o, "ipAddress", read_ip_address),
        kill_selection: r.opt(&o, "killSelection", |r, v, p| r.enumeration(v, p, KillSelection::from_wire)),
        labels: r.opt(&o, "labels", Reader::labels),
        max_launch_delay_seconds: r.opt(&o, "maxLaunchDelaySeconds", non_negative_int),
        mem,
        networks: r.opt(&o, "networks", |r, v, p| r.array(v, p, read_network)),
        port_definitions: r.opt(&o, "portDefinitions", |r, v, p| r.array(v, p, read_port_definition)),
        ports: r.opt(&o, "ports", |r, v, p| r.array(v, p, any_port)),
        readiness_checks: r.opt(&o, "readinessChecks", |r, v, p| r.array(v, p, read_readiness_check)),
        require_ports: r.opt(&o, "requirePorts", Reader::boolean),
        residency: r.opt(&o, "residency", read_residency),
        resource_limits: r.opt(&o, "resourceLimits", read_resource_limits),
        role,
        secrets: r.opt(&o, "secrets", |r, v, p| r.map(v, p, read_secret_def)),
        task_kill_grace_period_seconds: r.opt(&o, "taskKillGracePeriodSeconds", non_negative_int),
        tty: r.opt(&o, "tty", Reader::boolean),
        unreachable_strategy: r.opt(&o, "unreachableStrategy", read_unreachable_strategy),
        upgrade_strategy: r.opt(&o, "upgradeStrategy", read_upgrade_strategy),
        uris: r.opt(&o, "uris", |r, v, p| r.array(v, p, bounded_text)),
        user: r.opt(&o, "user", Reader::string),
        version: r.opt(&o, "version", read_timestamp),
        id,
    };
    Some(spec)
}

fn read_timestamp(r: &mut Reader, v: &Value, path: &str) -> Option<Timestamp> {
    let text = r.string(v, path)?;
    Timestamp::parse(&text).ok().or_else(|| r.fail(path, "error.expected.date.isoformat"))
}

fn read_constraint(r: &mut Reader, v: &Value, path: &str) -> Option<Vec<String>> {
    let items = r.strings(v, path);
    let items = r.min_items(items, 2, path);
    r.max_items(items, 3, path)
}

fn read_env_value(r: &mut Reader, v: &Value, path: &str) -> Option<EnvValue> {
    match v {
        Value::String(s) => Some(EnvValue::Value(s.clone())),
        Value::Object(_) => {
            let o = r.object(v, path)?;
            r.req(&o, "secret", Reader::string).map(EnvValue::Secret)
        }
        _ => r.fail(path, "error.expected.jsstring"),
    }
}

fn read_secret_def(r: &mut Reader, v: &Value, path: &str) -> Option<SecretDef> {
    let o = r.object(v, path)?;
    r.req(&o, "source", non_empty_string).map(|source| SecretDef { source })
}

fn read_executor_resources(r: &mut Reader, v: &Value, path: &str) -> Option<ExecutorResources> {
    let o = r.object(v, path)?;
    let defaults = ExecutorResources::default();
    let bounded = |min: f64| {
        move |r: &mut Reader, v: &Value, p: &str| {
            let n = r.double(v, p);
            r.min_f(n, min, p)
        }
    };
    let cpus = r.opt(&o, "cpus", bounded(0.1));
    let mem = r.opt(&o, "mem", bounded(32.0));
    let disk = r.opt(&o, "disk", bounded(10.0));
    Some(ExecutorResources {
        cpus: cpus.unwrap_or(defaults.cpus),
        mem: mem.unwrap_or(defaults.mem),
        disk: disk.unwrap_or(defaults.disk),
    })
}

fn read_resource_limit(r: &mut Reader, v: &Value, path: &str) -> Option<ResourceLimit> {
    match v {
        Value::String(s) => Some(ResourceLimit::Text(s.clone())),
        Value::Number(_) => r.double(v, path).map(ResourceLimit::Number),
        _ => r.fail(path, "error.expected.jsnumber"),
    }
}

fn read_resource_limits(r: &mut Reader, v: &Value, path: &str) -> Option<ResourceLimits> {
    let o = r.object(v, path)?;
    Some(ResourceLimits { cpus: r.opt(&o, "cpus", read_resource_limit), mem: r.opt(&o, "mem", read_resource_limit) })
}

fn read_artifact(r: &mut Reader, v: &Value, path: &str) -> Option<Artifact> {
    let o = r.object(v, path)?;
    let uri = r.req(&o, "uri", bounded_text);
    let extract = r.opt(&o, "extract", Reader::boolean);
    let executable = r.opt(&o, "executable", Reader::boolean);
    let cache = r.opt(&o, "cache", Reader::boolean);
    let dest_path = r.opt(&o, "destPath", bounded_text);
    Some(Artifact {
        uri: uri?,
        extract: extract.unwrap_or(true),
        executable: executable.unwrap_or(false),
        cache: cache.unwrap_or(false),
        dest_path,
    })
}

fn read_protocol(r: &mut Reader, v: &Value, path: &str) -> Option<PortProtocol> {
    r.enumeration(v, path, PortProtocol::from_wire)
}

fn read_port_definition(r: &mut Reader, v: &Value, path: &str) -> Option<PortDefinition> {
    let o = r.object(v, path)?;
    Some(PortDefinition {
        port: r.opt(&o, "port", any_port).unwrap_or(0),
        labels: r.opt(&o, "labels", Reader::labels).unwrap_or_default(),
        name: r.opt(&o, "name", legacy_name),
        protocol: r.opt(&o, "protocol", read_protocol).unwrap_or(PortProtocol::Tcp),
    })
}

fn read_port_mapping(r: &mut Reader, v: &Value, path: &str) -> Option<PortMapping> {
    let o = r.object(v, path)?;
    Some(PortMapping {
        container_port: r.opt(&o, "containerPort", any_port).unwrap_or(0),
        host_port: r.opt(&o, "hostPort", any_port),
        labels: r.opt(&o, "labels", Reader::labels).unwrap_or_default(),
        name: r.opt(&o, "name", legacy_name),
        protocol: r.opt(&o, "protocol", read_protocol).unwrap_or(PortProtocol::Tcp),
        service_port: r.opt(&o, "servicePort", any_port).unwrap_or(0),
        network_names: r.opt(&o, "networkNames", |r, v, p| r.array(v, p, name63)).unwrap_or_default(),
    })
}

fn read_network(r: &mut Reader, v: &Value, path: &str) -> Option<Network> {
    let o = r.object(v, path)?;
    Some(Network {
        name: r.opt(&o, "name", network_name),
        mode: r
            .opt(&o, "mode", |r, v, p| r.enumeration(v, p, NetworkMode::from_wire))
            .unwrap_or(NetworkMode::Container),
        labels: r.opt(&o, "labels", Reader::labels).unwrap_or_default(),
    })
}

fn read_ip_address(r: &mut Reader, v: &Value, path: &str) -> Option<IpAddress> {
    let o = r.object(v, path)?;
    let discovery_ports = r.opt(&o, "discovery", |r, v, p| {
        let d = r.object(v, p)?;
        Some(r.opt(&d, "ports", |r, v, p| r.array(v, p, read_discovery_port)).unwrap_or_default())
    });
    Some(IpAddress {
        discovery_ports,
        groups: r.opt(&o, "groups", |r, v, p| r.set(v, p, Reader::string)).unwrap_or_default(),
        labels: r.opt(&o, "labels", Reader::labels).unwrap_or_default(),
        network_name: r.opt(&o, "networkName", non_empty_string),
    })
}

fn read_discovery_port(r: &mut Reader, v: &Value, path: &str) -> Option<DiscoveryPort> {
    let o = r.object(v, path)?;
    let name = r.req(&o, "name", legacy_name);
    Some(DiscoveryPort {
        number: r.opt(&o, "number", any_port).unwrap_or(0),
        name: name?,
        protocol: r.opt(&o, "protocol", read_protocol).unwrap_or(PortProtocol::Tcp),
        labels: r.opt(&o, "labels", Reader::labels).unwrap_or_default(),
    })
}

fn read_container(r: &mut Reader, v: &Value, path: &str) -> Option<Container> {
    let o = r.object(v, path)?;
    Some(Container {
        kind: r.opt(&o, "type", |r, v, p| r.enumeration(v, p, EngineType::from_wire)).unwrap_or(EngineType::Docker),
        docker: r.opt(&o, "docker", read_docker),
        linux_info: r.opt(&o, "linuxInfo", read_linux_info),
        volumes: r.opt(&o, "volumes", |r, v, p| r.array(v, p, read_volume)).unwrap_or_default(),
        port_mappings: r.opt(&o, "portMappings", |r, v, p| r.array(v, p, read_port_mapping)),
    })
}

fn read_docker(r: &mut Reader, v: &Value, path: &str) -> Option<DockerContainer> {
    let o = r.object(v, path)?;
    let image = r.req(&o, "image", non_empty_string);
    let credential = r.opt(&o, "credential", |r, v, p| {
        let c = r.object(v, p)?;
        let principal = r.req(&c, "principal", Reader::string);
        let secret = r.opt(&c, "secret", Reader::string);
        Some(DockerCredential { principal: principal?, secret })
    });
    let pull_config_secret = r.opt(&o, "pullConfig", |r, v, p| {
        let c = r.object(v, p)?;
        r.req(&c, "secret", non_empty_string)
    });
    let parameters = r.opt(&o, "parameters", |r, v, p| {
        r.array(v, p, |r, v, p| {
            let param = r.object(v, p)?;
            let key = r.req(&param, "key", non_empty_string);
            let value = r.req(&param, "value", Reader::string);
            Some(DockerParameter { key: key?, value: value? })
        })
    });
    Some(DockerContainer {
        image: image?,
        force_pull_image: r.opt(&o, "forcePullImage", Reader::boolean).unwrap_or(false),
        privileged: r.opt(&o, "privileged", Reader::boolean).unwrap_or(false),
        parameters: parameters.unwrap_or_default(),
        pull_config_secret,
        credential,
        network: r.opt(&o, "network", |r, v, p| r.enumeration(v, p, DockerNetwork::from_wire)),
        port_mappings: r.opt(&o, "portMappings", |r, v, p| r.array(v, p, read_port_mapping)),
    })
}

fn read_linux_info(r: &mut Reader, v: &Value, path: &str) -> Option<LinuxInfo> {
    let o = r.object(v, path)?;
    let seccomp = r.opt(&o, "seccomp", |r, v, p| {
        let s = r.object(v, p)?;
        Some(Seccomp {
            profile_name: r.opt(&s, "profileName", Reader::string),
            unconfined: r.opt(&s, "unconfined", Reader::boolean).unwrap_or(false),
        })
    });
    let ipc_info = r.opt(&o, "ipcInfo", |r, v, p| {
        let i = r.object(v, p)?;
        let mode = r.req(&i, "mode", |r, v, p| r.enumeration(v, p, IpcMode::from_wire));
        let shm_size = r.opt(&i, "shmSize", Reader::int);
        Some(IpcInfo { mode: mode?, shm_size })
    });
    Some(LinuxInfo { seccomp, ipc_info })
}

fn read_mode(r: &mut Reader, v: &Value, path: &str) -> Option<ReadMode> {
    r.enumeration(v, path, ReadMode::from_wire)
}

/// `AppVolume` is a union told apart by the field only one shape has.
fn read_volume(r: &mut Reader, v: &Value, path: &str) -> Option<Volume> {
    let o = r.object(v, path)?;
    let container_path = r.req(&o, "containerPath", non_empty_string);
    if o.fields.contains_key("persistent") {
        let persistent = r.req(&o, "persistent", read_persistent_info);
        let mode = r.req(&o, "mode", read_mode);
        Some(Volume::Persistent { container_path: container_path?, persistent: persistent?, mode: mode? })
    } else if o.fields.contains_key("external") {
        let external = r.req(&o, "external", read_external_info);
        let mode = r.req(&o, "mode", read_mode);
        Some(Volume::External { container_path: container_path?, external: external?, mode: mode? })
    } else if o.fields.contains_key("secret") {
        let secret = r.req(&o, "secret", non_empty_string);
        Some(Volume::Secret { container_path: container_path?, secret: secret? })
    } else {
        let host_path = r.req(&o, "hostPath", non_empty_string);
        let mode = r.req(&o, "mode", read_mode);
        Some(Volume::Host { container_path: container_path?, host_path: host_path?, mode: mode? })
    }
}

fn read_persistent_info(r: &mut Reader, v: &Value, path: &str) -> Option<PersistentVolumeInfo> {
    let o = r.object(v, path)?;
    let kind = r.opt(&o, "type", |r, v, p| r.enumeration(v, p, PersistentVolumeType::from_wire));
    let size = r.req(&o, "size", non_negative_long);
    let max_size = r.opt(&o, "maxSize", non_negative_long);
    let profile_name = r.opt(&o, "profileName", Reader::string);
    let constraints = r.opt(&o, "constraints", |r, v, p| r.set(v, p, read_constraint)).unwrap_or_default();
    Some(PersistentVolumeInfo { kind, size: size?, max_size, profile_name, constraints })
}

fn read_external_info(r: &mut Reader, v: &Value, path: &str) -> Option<ExternalVolumeInfo> {
    let o = r.object(v, path)?;
    if o.get("provider").and_then(Value::as_str) == Some("csi") {
        return read_csi_info(r, &o);
    }
    Some(ExternalVolumeInfo::Dvdi {
        size: r.opt(&o, "size", non_negative_long),
        name: r.opt(&o, "name", Reader::string),
        provider: r.opt(&o, "provider", Reader::string),
        options: r.opt(&o, "options", Reader::labels).unwrap_or_default(),
        shared: r.opt(&o, "shared", Reader::boolean).unwrap_or(false),
    })
}

const CSI_ACCESS_MODES: [&str; 5] = [
    "SINGLE_NODE_WRITER",
    "SINGLE_NODE_READER_ONLY",
    "MULTI_NODE_READER_ONLY",
    "MULTI_NODE_SINGLE_WRITER",
    "MULTI_NODE_MULTI_WRITER",
];

fn read_csi_info(r: &mut Reader, o: &Obj<'_>) -> Option<ExternalVolumeInfo> {
    let name = r.req(o, "name", Reader::string);
    let opts = match o.fields.get("options") {
        Some(value) => r.object(value, &o.at("options")),
        None => r.fail(&o.at("options"), "error.path.missing"),
    };
    let opts = opts?;
    let plugin_name = r.req(&opts, "pluginName", non_empty_string);
    let capability = r.req(&opts, "capability", |r, v, p| {
        let c = r.object(v, p)?;
        let access_mode = r.req(&c, "accessMode", |r, v, p| {
            r.enumeration(v, p, |s| CSI_ACCESS_MODES.contains(&s).then(|| s.to_owned()))
        });
        let access_type = r.req(&c, "accessType", |r, v, p| {
            r.enumeration(v, p, |s| ["block", "mount"].contains(&s).then(|| s.to_owned()))
        });
        let fs_type = r.opt(&c, "fsType", Reader::string);
        let mount_flags = r.opt(&c, "mountFlags", Reader::strings).unwrap_or_default();
        Some((access_mode?, access_type?, fs_type, mount_flags))
    });
    let node_stage_secret = r.opt(&opts, "nodeStageSecret", Reader::labels).unwrap_or_default();
    let node_publish_secret = r.opt(&opts, "nodePublishSecret", Reader::labels).unwrap_or_default();
    let volume_context = r.opt(&opts, "volumeContext", Reader::labels).unwrap_or_default();
    let (access_mode, access_type, fs_type, mount_flags) = capability?;
    Some(ExternalVolumeInfo::Csi {
        name: name?,
        plugin_name: plugin_name?,
        access_mode,
        access_type,
        fs_type,
        mount_flags,
        node_stage_secret,
        node_publish_secret,
        volume_context,
    })
}

fn read_health_check(r: &mut Reader, v: &Value, path: &str) -> Option<HealthCheck> {
    let o = r.object(v, path)?;
    let defaults = HealthCheck::default();
    let command = r.opt(&o, "command", |r, v, p| {
        let c = r.object(v, p)?;
        r.req(&c, "value", Reader::string).map(|value| CommandCheck { value })
    });
    Some(HealthCheck {
        protocol: r
            .opt(&o, "protocol", |r, v, p| r.enumeration(v, p, HealthCheckProtocol::from_wire))
            .unwrap_or(defaults.protocol),
        command,
        path: r.opt(&o, "path", Reader::string),
        port: r.opt(&o, "port", any_port),
        port_index: r.opt(&o, "portIndex", any_port),
        grace_period_seconds: r
            .opt(&o, "gracePeriodSeconds", non_negative_int)
            .unwrap_or(defaults.grace_period_seconds),
        interval_seconds: r.opt(&o, "intervalSeconds", non_negative_int).unwrap_or(defaults.interval_seconds),
        timeout_seconds: r.opt(&o, "timeoutSeconds", Reader::int).unwrap_or(defaults.timeout_seconds),
        max_consecutive_failures: r
            .opt(&o, "maxConsecutiveFailures", non_negative_int)
            .unwrap_or(defaults.max_consecutive_failures),
        delay_seconds: r.opt(&o, "delaySeconds", non_negative_int).unwrap_or(defaults.delay_seconds),
        ignore_http1xx: r.opt(&o, "ignoreHttp1xx", Reader::boolean),
        ip_protocol: r
            .opt(&o, "ipProtocol", |r, v, p| r.enumeration(v, p, IpProtocol::from_wire))
            .unwrap_or(defaults.ip_protocol),
    })
}

fn read_readiness_check(r: &mut Reader, v: &Value, path: &str) -> Option<ReadinessCheck> {
    let o = r.object(v, path)?;
    let defaults = ReadinessCheck::default();
    let path_field = r.opt(&o, "path", bounded_text);
    let timeout = r.opt(&o, "timeoutSeconds", |r, v, p| {
        let n = r.int(v, p);
        r.min_i(n, 1, p)
    });
    let codes = r.opt(&o, "httpStatusCodesForReady", |r, v, p| {
        let codes = r.set(v, p, |r, v, p| {
            let n = r.int(v, p);
            let n = r.min_i(n, 100, p);
            r.max_i(n, 999, p)
        });
        r.min_items(codes, 1, p)
    });
    Some(ReadinessCheck {
        name: r.opt(&o, "name", non_empty_string).unwrap_or(defaults.name),
        protocol: r
            .opt(&o, "protocol", |r, v, p| r.enumeration(v, p, HttpScheme::from_wire))
            .unwrap_or(defaults.protocol),
        path: path_field.unwrap_or(defaults.path),
        port_name: r.opt(&o, "portName", legacy_name).unwrap_or(defaults.port_name),
        interval_seconds: r.opt(&o, "intervalSeconds", non_negative_int).unwrap_or(defaults.interval_seconds),
        timeout_seconds: timeout.unwrap_or(defaults.timeout_seconds),
        http_status_codes_for_ready: codes.unwrap_or_default(),
        preserve_last_response: r.opt(&o, "preserveLastResponse", Reader::boolean).unwrap_or(false),
    })
}

fn read_app_check(r: &mut Reader, v: &Value, path: &str) -> Option<AppCheck> {
    let o = r.object(v, path)?;
    let http = r.opt(&o, "http", |r, v, p| {
        let h = r.object(v, p)?;
        Some(AppHttpCheck {
            port_index: r.opt(&h, "portIndex", any_port),
            port: r.opt(&h, "port", any_port),
            path: r.opt(&h, "path", bounded_text),
            scheme: r
                .opt(&h, "scheme", |r, v, p| r.enumeration(v, p, HttpScheme::from_wire))
                .unwrap_or(HttpScheme::Http),
        })
    });
    let tcp = r.opt(&o, "tcp", |r, v, p| {
        let t = r.object(v, p)?;
        Some(AppTcpCheck { port_index: r.opt(&t, "portIndex", any_port), port: r.opt(&t, "port", any_port) })
    });
    let exec = r.opt(&o, "exec", |r, v, p| {
        let e = r.object(v, p)?;
        r.req(&e, "command", read_mesos_command)
    });
    Some(AppCheck {
        http,
        tcp,
        exec,
        interval_seconds: r.opt(&o, "intervalSeconds", non_negative_int).unwrap_or(60),
        timeout_seconds: r.opt(&o, "timeoutSeconds", non_negative_int).unwrap_or(20),
        delay_seconds: r.opt(&o, "delaySeconds", non_negative_int).unwrap_or(15),
    })
}

fn read_mesos_command(r: &mut Reader, v: &Value, path: &str) -> Option<MesosCommand> {
    let o = r.object(v, path)?;
    if o.fields.contains_key("argv") {
        let argv = r.req(&o, "argv", Reader::strings);
        return r.min_items(argv, 1, &o.at("argv")).map(MesosCommand::Argv);
    }
    r.req(&o, "shell", non_empty_string).map(MesosCommand::Shell)
}

fn read_upgrade_strategy(r: &mut Reader, v: &Value, path: &str) -> Option<UpgradeStrategy> {
    let o = r.object(v, path)?;
    let fraction = |r: &mut Reader, v: &Value, p: &str| {
        let n = r.double(v, p);
        let n = r.min_f(n, 0.0, p);
        r.max_f(n, 1.0, p)
    };
    let maximum_over_capacity = r.req(&o, "maximumOverCapacity", fraction);
    let minimum_health_capacity = r.req(&o, "minimumHealthCapacity", fraction);
    Some(UpgradeStrategy {
        minimum_health_capacity: minimum_health_capacity?,
        maximum_over_capacity: maximum_over_capacity?,
    })
}

fn read_unreachable_strategy(r: &mut Reader, v: &Value, path: &str) -> Option<UnreachableStrategy> {
    match v {
        Value::String(s) if s == "disabled" => Some(UnreachableStrategy::Disabled),
        Value::Object(_) => {
            let o = r.object(v, path)?;
            let inactive = r.opt(&o, "inactiveAfterSeconds", non_negative_long).unwrap_or(0);
            let expunge = r.opt(&o, "expungeAfterSeconds", non_negative_long).unwrap_or(0);
            Some(UnreachableStrategy::Enabled { inactive_after_seconds: inactive, expunge_after_seconds: expunge })
        }
        _ => r.fail(path, "error.unknown.enum.literal"),
    }
}

fn read_residency(r: &mut Reader, v: &Value, path: &str) -> Option<Residency> {
    let o = r.object(v, path)?;
    let defaults = Residency::default();
    Some(Residency {
        relaunch_escalation_timeout_seconds: r
            .opt(&o, "relaunchEscalationTimeoutSeconds", non_negative_long)
            .unwrap_or(defaults.relaunch_escalation_timeout_seconds),
        task_lost_behavior: r
            .opt(&o, "taskLostBehavior", |r, v, p| r.enumeration(v, p, TaskLostBehavior::from_wire))
            .unwrap_or(defaults.task_lost_behavior),
    })
}

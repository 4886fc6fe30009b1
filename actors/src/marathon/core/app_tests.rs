//! Tests of the app model against Marathon's behaviour: the examples of dcos-api.md §1.8,
//! defaults, deprecated aliases, invalid definitions with Marathon's paths and messages,
//! malformed JSON, partial updates, the read model and the task environment.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::app::{
    AppConfig, AppDefinition, AppError, EngineType, EnvValue, NetworkMode, PortProtocol, TaskEnvInput,
    UnreachableStrategy, UpgradeStrategy, VersionInfo, java_double, merge_partial, normalize, replace,
    task_environment,
};
use super::app_json::{JsonError, parse_app, parse_app_update, parse_app_updates};
use super::path::PathId;
use super::timestamp::Timestamp;
use super::validation;

const SIMPLE: &str = r#"{
  "id": "/simple",
  "instances": 2,
  "cmd": "sleep 1000",
  "cpus": 0.1,
  "disk": 0,
  "mem": 16
}"#;

const BRIDGED_WEBAPP: &str = r#"{
  "id": "bridged-webapp",
  "cmd": "python3 -m http.server 8080",
  "cpus": 0.5,
  "mem": 64.0,
  "instances": 2,
  "networks": [ { "mode": "container/bridge" } ],
  "container": {
    "type": "DOCKER",
    "docker": { "image": "python:3" },
    "portMappings": [
      { "containerPort": 8080, "hostPort": 0, "servicePort": 9000, "protocol": "tcp" },
      { "containerPort": 161, "hostPort": 0, "protocol": "udp"}
    ]
  },
  "healthChecks": [
    { "protocol": "HTTP", "portIndex": 0, "path": "/", "gracePeriodSeconds": 5,
      "intervalSeconds": 20, "maxConsecutiveFailures": 3 }
  ]
}"#;

const ALL_FIELDS: &str = r#"{
  "id": "/foo", "instances": 2, "cmd": "sleep 1000", "cpus": 0.1, "disk": 0, "mem": 16,
  "acceptedResourceRoles": ["mesos_role"],
  "args": ["sleep", "100"],
  "backoffFactor": 1.15, "backoffSeconds": 1,
  "constraints": [["hostname", "LIKE", "srv2.*"]],
  "container": {
    "docker": {
      "forcePullImage": false, "image": "mesosphere:marathon/latest", "network": "BRIDGE",
      "parameters": [{"key": "name", "value": "kdc"}],
      "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "servicePort": 10019,
                        "name": "http", "labels": {"vip": "192.168.0.1:80"}}],
      "privileged": false
    },
    "type": "DOCKER",
    "volumes": [{"containerPath": "/docker_storage", "hostPath": "/hdd/tools/docker/registry", "mode": "RW"}]
  },
  "dependencies": ["/prod/group"],
  "env": {"XPS1": "Test", "XPS2": "Rest", "PASSWORD": {"secret": "/db/password"}},
  "executor": "",
  "healthChecks": [{"gracePeriodSeconds": 300, "ignoreHttp1xx": false, "intervalSeconds": 20,
                    "maxConsecutiveFailures": 3, "path": "/", "portIndex": 0, "protocol": "HTTP", "timeoutSeconds": 20}],
  "readinessChecks": [{"name": "myReadyCheck", "protocol": "HTTP", "path": "/v1/plan", "portName": "http",
                       "intervalSeconds": 10, "timeoutSeconds": 3, "httpStatusCodesForReady": [200],
                       "preserveLastResponse": true}],
  "labels": {"owner": "zeus", "note": "Away from olympus"},
  "maxLaunchDelaySeconds": 3600,
  "ipAddress": {"discovery": {"ports": [{"number": 8080, "name": "rest-endpoint", "protocol": "tcp"}]},
                "groups": ["dev"], "labels": {"environment": "dev"}},
  "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "http", "labels": {"vip": "192.168.0.1:80"}}],
  "requirePorts": false,
  "upgradeStrategy": {"maximumOverCapacity": 1, "minimumHealthCapacity": 1},
  "fetch": [{"uri": "https://foo.com/setup.py"},
            {"uri": "https://foo.com/archive.zip", "executable": false, "extract": true, "cache": true, "destPath": "newname.zip"}],
  "user": "root",
  "secrets": {"secret1": {"source": "/db/password"}, "secret3": {"source": "/foo2"}},
  "taskKillGracePeriodSeconds": 30,
  "tty": true
}"#;

const PERSISTENT: &str = r#"{
  "id": "/persistent-volume-app",
  "cmd": "env && echo 'hello' >> $MESOS_SANDBOX/data/foo && /opt/mesosphere/bin/python -m http.server $PORT_API",
  "cpus": 0.5, "mem": 32, "disk": 0, "instances": 1,
  "acceptedResourceRoles": ["*"],
  "container": {"type": "MESOS",
                "volumes": [{"containerPath": "data", "mode": "RW",
                             "persistent": {"size": 10, "type": "root", "constraints": []}}]},
  "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "api", "labels": {}}],
  "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}
}"#;

const T0: Timestamp = Timestamp::from_millis(1_443_604_157_614);
const T1: Timestamp = Timestamp::from_millis(1_443_604_999_000);

fn config() -> AppConfig {
    AppConfig::default()
}

fn app(text: &str) -> AppDefinition {
    match AppDefinition::from_json(text, &config()) {
        Ok(app) => app,
        Err(err) => panic!("{text} was refused: {}", err.to_json()),
    }
}

fn refusal(text: &str) -> AppError {
    match AppDefinition::from_json(text, &config()) {
        Ok(app) => panic!("{text} was accepted: {app:?}"),
        Err(err) => err,
    }
}

fn violations(text: &str) -> Vec<(String, String)> {
    match refusal(text) {
        AppError::Invalid(err) => err.violations.into_iter().map(|v| (v.path, v.message)).collect(),
        other => panic!("{text}: expected a validation error, got {}", other.to_json()),
    }
}

fn json_errors(text: &str) -> JsonError {
    match refusal(text) {
        AppError::Json(err) => err,
        other => panic!("{text}: expected a JSON error, got {}", other.to_json()),
    }
}

/// A minimal valid app with `extra` fields merged in (a `null` removes a field).
fn with(extra: Value) -> String {
    let mut base = json!({ "id": "/app", "cmd": "sleep 100" });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    base.to_string()
}

// ---------------------------------------------------------------------------------------------
// §1.8 examples
// ---------------------------------------------------------------------------------------------

#[test]
fn simple_app_gets_marathons_defaults_exactly() {
    let simple = app(SIMPLE);
    let read = simple.to_json(&VersionInfo::created(T0));
    let expected = json!({
        "id": "/simple",
        "backoffFactor": 1.15,
        "backoffSeconds": 1,
        "cmd": "sleep 1000",
        "cpus": 0.1,
        "disk": 0.0,
        "executor": "",
        "gpus": 0,
        "instances": 2,
        "killSelection": "YOUNGEST_FIRST",
        "labels": {},
        "maxLaunchDelaySeconds": 300,
        "mem": 16.0,
        "networks": [{ "mode": "host" }],
        "portDefinitions": [{ "port": 0, "protocol": "tcp", "name": "default" }],
        "requirePorts": false,
        "role": "*",
        "unreachableStrategy": { "inactiveAfterSeconds": 0, "expungeAfterSeconds": 0 },
        "upgradeStrategy": { "maximumOverCapacity": 1.0, "minimumHealthCapacity": 1.0 },
        "version": "2015-09-30T09:09:17.614Z",
        "versionInfo": {
            "lastScalingAt": "2015-09-30T09:09:17.614Z",
            "lastConfigChangeAt": "2015-09-30T09:09:17.614Z"
        }
    });
    assert_eq!(read, expected);
}

#[test]
fn bridged_webapp_is_accepted_verbatim() {
    let webapp = app(BRIDGED_WEBAPP);
    assert_eq!(webapp.id.to_string(), "/bridged-webapp");
    assert_eq!(webapp.networks.len(), 1);
    assert_eq!(webapp.networks[0].mode, NetworkMode::ContainerBridge);
    assert!(webapp.port_definitions.is_empty());
    let read = webapp.to_json(&VersionInfo::created(T0));
    assert_eq!(
        read["container"],
        json!({
            "type": "DOCKER",
            "docker": { "image": "python:3", "forcePullImage": false, "privileged": false, "parameters": [] },
            "volumes": [],
            "portMappings": [
                { "containerPort": 8080, "hostPort": 0, "servicePort": 9000, "protocol": "tcp", "labels": {} },
                { "containerPort": 161, "hostPort": 0, "servicePort": 0, "protocol": "udp", "labels": {} }
            ]
        })
    );
    assert_eq!(
        read["healthChecks"],
        json!([{
            "protocol": "HTTP", "portIndex": 0, "path": "/", "gracePeriodSeconds": 5, "intervalSeconds": 20,
            "maxConsecutiveFailures": 3, "timeoutSeconds": 20, "delaySeconds": 15, "ignoreHttp1xx": false,
            "ipProtocol": "IPv4"
        }])
    );
    assert!(read.get("portDefinitions").is_none(), "Marathon omits portDefinitions off host networking");
}

#[test]
fn all_fields_example_parses_verbatim() {
    let spec = parse_app(ALL_FIELDS).expect("the RAML example is well-formed");
    assert_eq!(spec.args.as_deref(), Some(&["sleep".to_owned(), "100".to_owned()][..]));
    assert_eq!(spec.ip_address.as_ref().map(|ip| ip.groups.clone()), Some(vec!["dev".to_owned()]));
    assert_eq!(spec.tty, Some(true));
    // Even unjudged, Marathon's translation cannot place its discovery ports on a Docker container.
    let normalized = normalize(spec, &PathId::root(), &config()).unwrap_err();
    assert_eq!(
        normalized,
        AppError::Normalization("ipAddress.discovery.ports do not apply for container type DOCKER".to_owned())
    );
}

#[test]
fn all_fields_example_is_refused_as_marathon_refuses_it() {
    // The RAML example is a field showcase: Marathon's deprecated-API validation refuses it.
    assert_eq!(
        violations(ALL_FIELDS),
        vec![
            ("/ipAddress".to_owned(), "ipAddress/discovery is not allowed for Docker containers".to_owned()),
            ("/".to_owned(), "cannot specify both an IP address and port".to_owned()),
        ]
    );
}

/// The all-fields example with only what makes it undeployable changed: no `args` next to
/// `cmd`, no `ipAddress` next to port definitions, the env secret naming a declared secret,
/// and the role it accepts.
fn deployable_all_fields() -> String {
    let mut value: Value = serde_json::from_str(ALL_FIELDS).unwrap();
    let o = value.as_object_mut().unwrap();
    o.remove("args");
    o.remove("ipAddress");
    o.insert("role".into(), json!("mesos_role"));
    o["env"]["PASSWORD"] = json!({ "secret": "secret1" });
    value.to_string()
}

#[test]
fn deployable_all_fields_round_trips_through_the_read_model() {
    let cfg = AppConfig { valid_roles: ["*".to_owned(), "mesos_role".to_owned()].into(), ..config() };
    let app = AppDefinition::from_json(&deployable_all_fields(), &cfg).unwrap_or_else(|e| panic!("{}", e.to_json()));
    let read = app.to_json(&VersionInfo::created(T0));
    let expected = json!({
        "id": "/foo", "instances": 2, "cmd": "sleep 1000", "cpus": 0.1, "disk": 0.0, "mem": 16.0, "gpus": 0,
        "acceptedResourceRoles": ["mesos_role"],
        "backoffFactor": 1.15, "backoffSeconds": 1,
        "constraints": [["hostname", "LIKE", "srv2.*"]],
        "container": {
            "type": "DOCKER",
            "docker": { "forcePullImage": false, "image": "mesosphere:marathon/latest",
                        "parameters": [{"key": "name", "value": "kdc"}], "privileged": false },
            "volumes": [{"containerPath": "/docker_storage", "hostPath": "/hdd/tools/docker/registry", "mode": "RW"}],
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "servicePort": 10019,
                              "name": "http", "labels": {"vip": "192.168.0.1:80"}}]
        },
        "dependencies": ["/prod/group"],
        "env": {"XPS1": "Test", "XPS2": "Rest", "PASSWORD": {"secret": "secret1"}},
        "executor": "",
        "healthChecks": [{"gracePeriodSeconds": 300, "ignoreHttp1xx": false, "intervalSeconds": 20,
                          "maxConsecutiveFailures": 3, "path": "/", "portIndex": 0, "protocol": "HTTP",
                          "timeoutSeconds": 20, "delaySeconds": 15, "ipProtocol": "IPv4"}],
        "readinessChecks": [{"name": "myReadyCheck", "protocol": "HTTP", "path": "/v1/plan", "portName": "http",
                             "intervalSeconds": 10, "timeoutSeconds": 3, "httpStatusCodesForReady": [200],
                             "preserveLastResponse": true}],
        "labels": {"owner": "zeus", "note": "Away from olympus"},
        "maxLaunchDelaySeconds": 3600,
        "networks": [{"mode": "container/bridge"}],
        "requirePorts": false,
        "upgradeStrategy": {"maximumOverCapacity": 1.0, "minimumHealthCapacity": 1.0},
        "fetch": [{"uri": "https://foo.com/setup.py", "extract": true, "executable": false, "cache": false},
                  {"uri": "https://foo.com/archive.zip", "executable": false, "extract": true, "cache": true,
                   "destPath": "newname.zip"}],
        "user": "root",
        "secrets": {"secret1": {"source": "/db/password"}, "secret3": {"source": "/foo2"}},
        "taskKillGracePeriodSeconds": 30,
        "tty": true,
        "killSelection": "YOUNGEST_FIRST",
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0},
        "role": "mesos_role",
        "version": "2015-09-30T09:09:17.614Z",
        "versionInfo": {"lastScalingAt": "2015-09-30T09:09:17.614Z", "lastConfigChangeAt": "2015-09-30T09:09:17.614Z"}
    });
    assert_eq!(read, expected);
    // And the read model is itself an acceptable request that gives the same definition back.
    let again = AppDefinition::from_json(&read.to_string(), &cfg).unwrap_or_else(|e| panic!("{}", e.to_json()));
    assert_eq!(again, app);
}

#[test]
fn persistent_volume_app_gets_resident_defaults() {
    let app = app(PERSISTENT);
    assert!(app.is_resident());
    assert_eq!(app.upgrade_strategy, UpgradeStrategy::RESIDENT);
    assert_eq!(app.unreachable_strategy, UnreachableStrategy::Disabled);
    let read = app.to_json(&VersionInfo::created(T0));
    assert_eq!(read["unreachableStrategy"], json!("disabled"));
    assert_eq!(
        read["residency"],
        json!({ "relaunchEscalationTimeoutSeconds": 3600, "taskLostBehavior": "WAIT_FOREVER" })
    );
    assert_eq!(read["portDefinitions"], json!([{ "port": 0, "protocol": "tcp", "name": "api" }]));
    assert_eq!(
        read["container"]["volumes"],
        json!([{ "containerPath": "data", "mode": "RW", "persistent": { "size": 10, "type": "root", "constraints": [] } }])
    );
    // Without an explicit upgrade strategy a resident app still gets 0.5/0.
    let mut value: Value = serde_json::from_str(PERSISTENT).unwrap();
    value.as_object_mut().unwrap().remove("upgradeStrategy");
    assert_eq!(super::app_tests::app(&value.to_string()).upgrade_strategy, UpgradeStrategy::RESIDENT);
}

#[test]
fn unknown_fields_are_ignored_at_every_level() {
    let app = app(&with(json!({
        "someFutureField": {"x": 1},
        "portDefinitions": [{"port": 8080, "whatever": true}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5, "extra": "x"}
    })));
    assert_eq!(app.port_definitions[0].port, 8080);
    assert_eq!(app.upgrade_strategy.minimum_health_capacity, 0.5);
}

#[test]
fn null_is_an_absent_optional_field() {
    let app =
        app(&with(json!({ "user": Value::Null, "labels": {"a": "b"} }))
            .replace(r#""labels""#, r#""user":null,"labels""#));
    assert_eq!(app.user, None);
}

#[test]
fn relative_ids_resolve_against_the_base_group() {
    let spec = parse_app(r#"{"id": "../web", "cmd": "sleep 10"}"#).unwrap();
    let app = AppDefinition::from_spec(spec, &PathId::parse("/prod/db").unwrap(), &config()).unwrap();
    assert_eq!(app.id.to_string(), "/prod/web");
}

// ---------------------------------------------------------------------------------------------
// Deprecated aliases
// ---------------------------------------------------------------------------------------------

#[test]
fn ports_become_port_definitions() {
    let app = app(&with(json!({ "ports": [8080, 0] })));
    let ports: Vec<(i32, Option<&str>)> = app.port_definitions.iter().map(|p| (p.port, p.name.as_deref())).collect();
    assert_eq!(ports, vec![(8080, None), (0, None)]);
    assert_eq!(app.to_json(&VersionInfo::created(T0)).get("ports"), None);
}

#[test]
fn uris_become_fetch_with_extract_for_archives() {
    let app = app(&with(json!({ "uris": ["http://x/a.tgz", "http://x/run.sh", "http://x/b.tar.gz?sig=1"] })));
    let fetch: Vec<(&str, bool)> = app.fetch.iter().map(|a| (a.uri.as_str(), a.extract)).collect();
    assert_eq!(fetch, vec![("http://x/a.tgz", true), ("http://x/run.sh", false), ("http://x/b.tar.gz?sig=1", true)]);
}

#[test]
fn docker_port_mappings_move_to_the_container() {
    let app = app(&with(json!({
        "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
            "portMappings": [{"containerPort": 80, "name": "web"}]}}
    })));
    let container = app.container.as_ref().unwrap();
    let docker = container.docker.as_ref().unwrap();
    assert_eq!(docker.port_mappings, None);
    assert_eq!(docker.network, None);
    let mappings = container.port_mappings.as_ref().unwrap();
    assert_eq!(mappings.len(), 1);
    assert_eq!(
        (mappings[0].container_port, mappings[0].host_port),
        (80, Some(0)),
        "bridge mode defaults hostPort to 0"
    );
    assert_eq!(app.networks[0].mode, NetworkMode::ContainerBridge);
}

#[test]
fn docker_network_modes_translate() {
    for (docker_network, mode) in
        [("HOST", NetworkMode::Host), ("BRIDGE", NetworkMode::ContainerBridge), ("USER", NetworkMode::Container)]
    {
        let cfg = AppConfig { default_network_name: Some("dcos".to_owned()), ..config() };
        let text =
            with(json!({ "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": docker_network}} }));
        let app = AppDefinition::from_json(&text, &cfg).unwrap_or_else(|e| panic!("{}", e.to_json()));
        assert_eq!(app.networks[0].mode, mode, "{docker_network}");
    }
    let text = with(json!({ "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "NONE"}} }));
    assert_eq!(refusal(&text), AppError::Normalization("unsupported docker network type NONE".to_owned()));
}

#[test]
fn ip_address_becomes_a_container_network() {
    let app = app(&with(json!({ "ipAddress": {"networkName": "dcos", "labels": {"a": "b"},
        "discovery": {"ports": [{"number": 80, "name": "http", "protocol": "tcp"}]}} })));
    assert_eq!(app.networks.len(), 1);
    assert_eq!(app.networks[0].mode, NetworkMode::Container);
    assert_eq!(app.networks[0].name.as_deref(), Some("dcos"));
    let container = app.container.as_ref().unwrap();
    assert_eq!(container.kind, EngineType::Mesos);
    let mapping = &container.port_mappings.as_ref().unwrap()[0];
    assert_eq!((mapping.container_port, mapping.name.as_deref(), mapping.host_port), (80, Some("http"), None));
    let bridge = self::app(&with(json!({ "ipAddress": {"networkName": "mesos-bridge"} })));
    assert_eq!(bridge.networks[0].mode, NetworkMode::ContainerBridge);
}

#[test]
fn deprecated_conflicts_are_refused() {
    assert_eq!(
        violations(&with(json!({ "uris": ["http://a"], "fetch": [{"uri": "http://b"}] }))),
        vec![("/uris".to_owned(), "may not be set in conjunction with fetch".to_owned())]
    );
    assert_eq!(
        violations(&with(json!({ "networks": [{"mode": "host"}],
            "container": {"type": "DOCKER", "docker": {"image": "x", "network": "HOST"}} }))),
        vec![("/".to_owned(), "must not specify both container.docker.network and networks".to_owned())]
    );
    assert_eq!(
        violations(&with(json!({ "ports": [80], "portDefinitions": [{"port": 81}] }))),
        vec![("/".to_owned(), "cannot specify both ports and port definitions".to_owned())]
    );
    assert_eq!(
        violations(&with(json!({ "ports": [80, 80] }))),
        vec![("/".to_owned(), "ports must be unique".to_owned())]
    );
    assert_eq!(
        refusal(&with(json!({ "container": {"type": "DOCKER", "portMappings": [{"containerPort": 1}],
            "docker": {"image": "x", "portMappings": [{"containerPort": 2}]}} }))),
        AppError::Normalization("cannot specify both portMappings and docker.portMappings".to_owned())
    );
    assert_eq!(
        violations(&with(json!({ "container": {"type": "MESOS", "docker": {"image": "x", "network": "HOST",
            "parameters": [{"key": "a", "value": "b"}], "credential": {"principal": "p"}}} }))),
        vec![
            ("/container/docker/credential".to_owned(), "must be empty".to_owned()),
            ("/container/docker/network".to_owned(), "must be empty".to_owned()),
            ("/container/docker/parameters".to_owned(), "must be empty".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Semantic validation: a table of invalid definitions
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_definitions_report_marathons_paths_and_messages() {
    let cmd_args = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";
    let table: Vec<(Value, &str, &str)> = vec![
        (json!({"cmd": Value::Null}), "/", cmd_args),
        (json!({"args": ["a"]}), "/", cmd_args),
        (json!({"cmd": "x"}), "/", "must not be an empty string"),
        (json!({"id": "/"}), "/id", "Path must contain at least one path element"),
        (json!({"id": "/"}), "/", "must not be root"),
        (
            json!({"id": "/a/tasks"}),
            "/id",
            "must not end with any of the following reserved keywords: restart, tasks, versions, ., ..",
        ),
        (
            json!({"dependencies": ["/x/versions"]}),
            "/dependencies(0)",
            "must not end with any of the following reserved keywords: restart, tasks, versions, ., ..",
        ),
        (
            json!({"executor": "a//b"}),
            "/executor",
            "must fully match regular expression '^(//cmd)|(/?[^/]+(/[^/]+)*)|$'",
        ),
        (json!({"portDefinitions": [{"port": 80}, {"port": 80}]}), "/portDefinitions", "Ports must be unique."),
        (
            json!({"portDefinitions": [{"port": 0, "name": "a"}, {"port": 0, "name": "a"}]}),
            "/portDefinitions",
            "Port names must be unique.",
        ),
        (
            json!({"healthChecks": [{"protocol": "HTTP", "portIndex": 1}]}),
            "/healthChecks(0)",
            "Health check port indices must address an element of the ports array or container port mappings.",
        ),
        (
            json!({"portDefinitions": [{"port": 1}, {"port": 2}], "healthChecks": [{"protocol": "TCP", "portIndex": 2}]}),
            "/healthChecks(0)",
            "Health check port indices must address an element of the ports array or container port mappings.",
        ),
        (
            json!({"healthChecks": [{"protocol": "COMMAND"}]}),
            "/healthChecks(0)",
            "illegal protocol COMMAND for non-command health check",
        ),
        (
            json!({"healthChecks": [{"protocol": "HTTP", "command": {"value": "true"}}]}),
            "/healthChecks(0)",
            "illegal protocol HTTP specified with command",
        ),
        (
            json!({"healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "path": "/x"}]}),
            "/healthChecks(0)",
            "Invalid combination of HealthCheck parameters",
        ),
        (
            json!({"healthChecks": [{"protocol": "MESOS_TCP"}, {"protocol": "MESOS_HTTP"}]}),
            "/",
            "AppDefinition can contain at most one Mesos health check",
        ),
        (
            json!({"healthChecks": [{"protocol": "HTTP", "ipProtocol": "IPv6"}]}),
            "/healthChecks(0)",
            "IPv6 can only be used for container type DOCKER and Mesos http/https/tcp health checks",
        ),
        (
            json!({"readinessChecks": [{"portName": "nope"}]}),
            "/readinessChecks(0)/portName",
            "No port definition reference for portName nope",
        ),
        (
            json!({"portDefinitions": [{"name": "http-api"}], "readinessChecks": [{"intervalSeconds": 5, "timeoutSeconds": 10}]}),
            "/readinessChecks(0)/timeoutSeconds",
            "got 10, expected less than 5",
        ),
        (
            json!({"portDefinitions": [{"name": "http-api"}], "readinessChecks": [{}, {"name": "b"}]}),
            "/readinessChecks",
            "has size 2, expected 1 or less",
        ),
        (
            json!({"constraints": [["hostname", "LIKE"]]}),
            "/constraints(0)",
            "LIKE and UNLIKE require a non-empty, regular expression value",
        ),
        (
            json!({"constraints": [["hostname", "UNLIKE", "(a"]]}),
            "/constraints(0)",
            "is not a valid regular expression",
        ),
        (json!({"constraints": [["hostname", "MAX_PER"]]}), "/constraints(0)", "MAX_PER requires an integer value"),
        (
            json!({"constraints": [["hostname", "MAX_PER", "x"]]}),
            "/constraints(0)",
            "MAX_PER requires an integer value",
        ),
        (
            json!({"constraints": [["hostname", "GROUP_BY", "x"]]}),
            "/constraints(0)",
            "GROUP BY must define an integer value or else no value at all",
        ),
        (json!({"constraints": [["hostname", "UNIQUE", "x"]]}), "/constraints(0)", "UNIQUE does not accept a value"),
        (
            json!({"constraints": [["rack", "IS", "a b"]]}),
            "/constraints(0)",
            "IS only supports Mesos text and float values (see http://mesos.apache.org/documentation/latest/attributes-resources/)",
        ),
        (
            json!({"constraints": [["hostname", "NEAR", "x"]]}),
            "/constraints(0)",
            "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS",
        ),
        (json!({"constraints": [["", "UNIQUE"]]}), "/constraints(0)", "illegal constraint specification"),
        (json!({"env": {"A": {"secret": "nope"}}}), "/env/A/secret", "references an undefined secret"),
        (
            json!({"fetch": [{"uri": "http://ok"}, {"uri": "http://bad uri"}]}),
            "/fetch(1)/uri",
            "URI has invalid syntax.",
        ),
        (
            json!({"networks": [{"mode": "container"}]}),
            "/networks",
            "Network name must be specified when container network is selected.",
        ),
        (
            json!({"networks": [{"mode": "host", "name": "x"}]}),
            "/networks",
            "Host networks may not have names or labels",
        ),
        (
            json!({"networks": [{"mode": "container/bridge", "name": "x"}]}),
            "/networks",
            "Bridge networks may not have names",
        ),
        (
            json!({"networks": [{"mode": "container", "name": "a"}, {"mode": "container", "name": "a"}]}),
            "/networks",
            "Duplicate networks are not allowed",
        ),
        (
            json!({"networks": [{"mode": "host"}, {"mode": "container/bridge"}]}),
            "/networks",
            "May specify a single host network, single bridge network, or else 1-to-n container networks",
        ),
        (
            json!({"container": {"type": "DOCKER", "docker": {"image": "x"}}, "networks": [{"mode": "container", "name": "a"}, {"mode": "container", "name": "b"}]}),
            "/",
            "may only specify a single container network when using the Docker container engine",
        ),
        (
            json!({"container": {"type": "MESOS", "portMappings": [{"containerPort": 1, "hostPort": 0}]}, "networks": [{"mode": "container", "name": "a"}, {"mode": "container", "name": "b"}]}),
            "/container/portMappings(0)",
            "networkNames must be a single item list when hostPort is specified and more than 1 container network is defined",
        ),
        (
            json!({"container": {"type": "MESOS", "portMappings": [{"containerPort": 1, "networkNames": ["zz"]}]}, "networks": [{"mode": "container", "name": "a"}]}),
            "/container/portMappings(0)/networkNames(0)",
            "is not one of (a)",
        ),
        (json!({"container": {"type": "DOCKER"}}), "/container/docker", "not defined"),
        (
            json!({"container": {"type": "DOCKER", "docker": {"image": "x", "pullConfig": {"secret": "s"}}}}),
            "/container/docker/pullConfig",
            "pullConfig is not supported with Docker containerizer",
        ),
        (
            json!({"container": {"type": "MESOS", "docker": {"image": "x", "pullConfig": {"secret": "s"}}}}),
            "/container/docker/pullConfig",
            "pullConfig.secret must refer to an existing secret",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "/s", "secret": "nope"}]}}),
            "/container/volumes(0)",
            "volume.secret must refer to an existing secret",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "a/b", "mode": "RW", "persistent": {"size": 1}}]}}),
            "/container/volumes(0)/containerPath",
            "value must not contain \"/\"",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RO", "persistent": {"size": 1}}]}}),
            "/container/volumes(0)/mode",
            "got RO, expected RW",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {"size": 0}}]}}),
            "/container/volumes(0)/persistent/size",
            "got 0, expected more than 0",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {"size": 5, "maxSize": 10}}]}}),
            "/container/volumes(0)/persistent",
            "Only mount volumes can have maxSize",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {"size": 5}}]}, "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}}),
            "/upgradeStrategy/maximumOverCapacity",
            "got 0.5, expected 0.0",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {"size": 5}}]}, "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 2}}),
            "/",
            "unreachableStrategy must be disabled for resident tasks",
        ),
        (
            json!({"container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {"size": 5}}]}, "acceptedResourceRoles": ["*", "other"]}),
            "/acceptedResourceRoles",
            "A resident app must have `acceptedResourceRoles = [\"*\"]`.",
        ),
        (
            json!({"unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}}),
            "/unreachableStrategy/inactiveAfterSeconds",
            "inactiveAfterSeconds (10) must be less or equal to expungeAfterSeconds, which is 5",
        ),
        (
            json!({"labels": {"MARATHON_SINGLE_INSTANCE_APP": "true"}, "instances": 2}),
            "/",
            "Single instance app may only have one instance",
        ),
        (
            json!({"labels": {"MARATHON_SINGLE_INSTANCE_APP": "true"}}),
            "/upgradeStrategy/minimumHealthCapacity",
            "got 1.0, expected 0.0",
        ),
        (
            json!({"labels": {"DCOS_MIGRATION_API_VERSION": "v2"}}),
            "/",
            "DCOS_PACKAGE_FRAMEWORK_NAME and DCOS_MIGRATION_API_PATH must be defined when using DCOS_MIGRATION_API_VERSION",
        ),
        (
            json!({"gpus": 1, "container": {"type": "DOCKER", "docker": {"image": "x"}}}),
            "/",
            "GPU resources only work with the Mesos containerizer",
        ),
        (json!({"acceptedResourceRoles": []}), "/acceptedResourceRoles", "must not be empty"),
        (
            json!({"acceptedResourceRoles": ["other"]}),
            "/acceptedResourceRoles",
            "acceptedResourceRoles can only contain *",
        ),
        (
            json!({"acceptedResourceRoles": ["a b"]}),
            "/acceptedResourceRoles(0)",
            "A role name must not include a space (\\x20) character.",
        ),
        (json!({"role": "dev"}), "/role", "got dev, expected one of: [*]"),
        (
            json!({"cpus": 1, "resourceLimits": {"cpus": 0.5}}),
            "/resourceLimits/cpus",
            "resource limit must be greater than or equal to requested resource (1.0)",
        ),
        (
            json!({"resourceLimits": {"mem": "Infinity"}}),
            "/resourceLimits/mem",
            "'Infinity' is an invalid resource limit. It must be 'unlimited' or a number",
        ),
        (
            json!({"check": {"tcp": {"portIndex": 3}}}),
            "/check",
            "check port index must address an element of the ports array or container port mappings.",
        ),
        (
            json!({"container": {"type": "DOCKER", "docker": {"image": "x"}}, "check": {"exec": {"command": {"shell": "true"}}}}),
            "/",
            "AppDefinition must not use 'checks' if using docker",
        ),
    ];
    for (extra, path, message) in table {
        let text = with(extra.clone());
        let found = violations(&text);
        assert!(
            found.iter().any(|(p, m)| p == path && m == message),
            "{extra}: expected {path}: {message}, got {found:?}"
        );
    }
}

#[test]
fn every_violation_is_collected() {
    let found = violations(&with(json!({
        "cmd": Value::Null,
        "portDefinitions": [{"port": 80}, {"port": 80}],
        "constraints": [["hostname", "MAX_PER"]],
        "env": {"A": {"secret": "nope"}}
    })));
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/", "/portDefinitions", "/constraints(0)", "/env/A/secret"]);
}

#[test]
fn validation_error_renders_marathons_body() {
    let err =
        match refusal(&with(json!({ "cmd": Value::Null, "constraints": [["a", "UNIQUE", "x"], ["b", "MAX_PER"]] }))) {
            AppError::Invalid(err) => err,
            other => panic!("{other:?}"),
        };
    assert_eq!(
        err.to_json(),
        json!({"message": "Object is not valid", "details": [
            {"path": "/", "errors": ["AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."]},
            {"path": "/constraints(0)", "errors": ["UNIQUE does not accept a value"]},
            {"path": "/constraints(1)", "errors": ["MAX_PER requires an integer value"]},
        ]})
    );
    assert_eq!(AppError::Invalid(err).status(), 422);
}

#[test]
fn valid_variants_are_accepted() {
    for extra in [
        json!({"constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"], ["rack", "CLUSTER", "a"], ["hostname", "like", "a.*"], ["zone", "IS", "us-east.1"]]}),
        json!({"args": ["/bin/sleep", "10"], "cmd": Value::Null}),
        json!({"container": {"type": "DOCKER", "docker": {"image": "nginx"}}, "cmd": Value::Null}),
        json!({"container": {"type": "MESOS"}, "cmd": Value::Null}),
        json!({"executor": "//cmd"}),
        json!({"executor": "/opt/exec/run"}),
        json!({"env": {"A": "1", "B": {"secret": "s"}}, "secrets": {"s": {"source": "/vault/s"}}}),
        json!({"healthChecks": [{"protocol": "COMMAND", "command": {"value": "curl -f localhost"}}]}),
        json!({"healthChecks": [{"protocol": "TCP", "port": 8080}], "portDefinitions": []}),
        json!({"networks": [{"mode": "container", "name": "dcos"}], "container": {"type": "MESOS"}}),
        json!({"resourceLimits": {"cpus": "unlimited", "mem": 256}}),
        json!({"unreachableStrategy": "disabled"}),
        json!({"portDefinitions": [{"port": 0}, {"port": 0}]}),
        json!({"fetch": [{"uri": "https://example.com/a%20b.tgz"}]}),
    ] {
        let text = with(extra.clone());
        if let Err(err) = AppDefinition::from_json(&text, &config()) {
            panic!("{extra} was refused: {}", err.to_json());
        }
    }
}

#[test]
fn container_network_without_container_gets_a_mesos_container_with_default_mapping() {
    let app = app(&with(json!({ "networks": [{"mode": "container", "name": "dcos"}] })));
    let container = app.container.as_ref().unwrap();
    assert_eq!(container.kind, EngineType::Mesos);
    let mappings = container.port_mappings.as_ref().unwrap();
    assert_eq!(mappings.len(), 1);
    assert_eq!(mappings[0].name.as_deref(), Some("default"));
    assert!(app.port_definitions.is_empty());
    assert!(!app.require_ports);
}

#[test]
fn host_networking_drops_port_mappings() {
    let app = app(&with(json!({ "container": {"type": "DOCKER", "docker": {"image": "x"},
        "portMappings": [{"containerPort": 80}]} })));
    assert_eq!(app.container.as_ref().unwrap().port_mappings, None);
    assert_eq!(app.port_definitions.len(), 1, "host networking still gets its default port");
}

#[test]
fn health_checks_get_port_index_zero_when_ports_are_declared() {
    let app = app(&with(
        json!({ "portDefinitions": [{"port": 0}], "healthChecks": [{"protocol": "TCP", "path": "/ignored"}] }),
    ));
    assert_eq!(app.health_checks[0].port_index, Some(0));
    assert_eq!(app.health_checks[0].path, None, "TCP checks have no path");
    assert_eq!(app.health_checks[0].ignore_http1xx, None);
}

#[test]
fn duplicates_in_set_fields_vanish() {
    let app = app(&with(json!({
        "acceptedResourceRoles": ["*", "*"],
        "constraints": [["hostname", "UNIQUE"], ["hostname", "UNIQUE"]],
        "dependencies": ["/a", "/a/../a"]
    })));
    assert_eq!(app.accepted_resource_roles, vec!["*".to_owned()]);
    assert_eq!(app.constraints.len(), 1);
    assert_eq!(app.dependencies, vec![PathId::parse("/a").unwrap()]);
}

// ---------------------------------------------------------------------------------------------
// Malformed JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn syntax_errors_and_empty_bodies_answer_400() {
    let err = json_errors(r#"{"id":"/test""#);
    assert!(matches!(err, JsonError::Syntax(_)));
    assert_eq!(err.status(), 400);
    assert_eq!(err.to_json()["message"], json!("Invalid JSON"));
    assert!(err.to_json()["details"].is_string());
    let empty = json_errors("  ");
    assert_eq!(empty.status(), 400);
    assert_eq!(empty.to_json()["message"], json!("Please specify data in JSON format"));
}

#[test]
fn wrong_types_report_play_keys_at_the_offending_path() {
    let table: Vec<(&str, &str, &str)> = vec![
        (r#"{"id": 123, "cmd": "x"}"#, "/id", "error.expected.jsstring"),
        (r#"{"cmd": "sleep 1"}"#, "/id", "error.path.missing"),
        (r#"{"id": "/Bad", "cmd": "sleep 1"}"#, "/id", "error.pattern"),
        (r#"{"id": "", "cmd": "sleep 1"}"#, "/id", "error.minLength"),
        (r#"{"id": "/a", "cmd": ""}"#, "/cmd", "error.minLength"),
        (r#"{"id": "/a", "cpus": "lots"}"#, "/cpus", "error.expected.jsnumber"),
        (r#"{"id": "/a", "cpus": 0}"#, "/cpus", "error.min"),
        (r#"{"id": "/a", "instances": 1.5}"#, "/instances", "error.expected.int"),
        (r#"{"id": "/a", "instances": -1}"#, "/instances", "error.min"),
        (r#"{"id": "/a", "backoffFactor": 0.5}"#, "/backoffFactor", "error.min"),
        (r#"{"id": "/a", "requirePorts": "yes"}"#, "/requirePorts", "error.expected.jsboolean"),
        (r#"{"id": "/a", "args": "sleep"}"#, "/args", "error.expected.jsarray"),
        (r#"{"id": "/a", "labels": []}"#, "/labels", "error.expected.jsobject"),
        (r#"{"id": "/a", "labels": {"a": 1}}"#, "/labels/a", "error.expected.jsstring"),
        (r#"{"id": "/a", "env": {"A": 1}}"#, "/env/A", "error.expected.jsstring"),
        (r#"{"id": "/a", "env": {"A": {"secrets": "x"}}}"#, "/env/A/secret", "error.path.missing"),
        (r#"{"id": "/a", "killSelection": "RANDOM"}"#, "/killSelection", "error.unknown.enum.literal"),
        (
            r#"{"id": "/a", "upgradeStrategy": {"minimumHealthCapacity": 1.2, "maximumOverCapacity": 1}}"#,
            "/upgradeStrategy/minimumHealthCapacity",
            "error.max",
        ),
        (
            r#"{"id": "/a", "upgradeStrategy": {"minimumHealthCapacity": 1}}"#,
            "/upgradeStrategy/maximumOverCapacity",
            "error.path.missing",
        ),
        (r#"{"id": "/a", "unreachableStrategy": "sometimes"}"#, "/unreachableStrategy", "error.unknown.enum.literal"),
        (r#"{"id": "/a", "portDefinitions": [{"port": 70000}]}"#, "/portDefinitions(0)/port", "error.max"),
        (r#"{"id": "/a", "portDefinitions": [{"name": "Bad_Name"}]}"#, "/portDefinitions(0)/name", "error.pattern"),
        (
            r#"{"id": "/a", "portDefinitions": [{"protocol": "tcp,udp"}]}"#,
            "/portDefinitions(0)/protocol",
            "error.unknown.enum.literal",
        ),
        (
            r#"{"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "x"}, "portMappings": [{"containerPort": 80, "hostPort": "80"}]}}"#,
            "/container/portMappings(0)/hostPort",
            "error.expected.jsnumber",
        ),
        (
            r#"{"id": "/a", "container": {"type": "DOCKER", "docker": {}}}"#,
            "/container/docker/image",
            "error.path.missing",
        ),
        (r#"{"id": "/a", "container": {"type": "ROCKET"}}"#, "/container/type", "error.unknown.enum.literal"),
        (
            r#"{"id": "/a", "container": {"type": "MESOS", "volumes": [{"containerPath": "d", "mode": "RW", "persistent": {}}]}}"#,
            "/container/volumes(0)/persistent/size",
            "error.path.missing",
        ),
        (
            r#"{"id": "/a", "container": {"type": "MESOS", "volumes": [{"containerPath": "d", "hostPath": "/x", "mode": "RX"}]}}"#,
            "/container/volumes(0)/mode",
            "error.unknown.enum.literal",
        ),
        (
            r#"{"id": "/a", "healthChecks": [{"protocol": "HTTP"}, {"protocol": "GOPHER"}]}"#,
            "/healthChecks(1)/protocol",
            "error.unknown.enum.literal",
        ),
        (
            r#"{"id": "/a", "readinessChecks": [{"httpStatusCodesForReady": []}]}"#,
            "/readinessChecks(0)/httpStatusCodesForReady",
            "error.minLength",
        ),
        (
            r#"{"id": "/a", "readinessChecks": [{"httpStatusCodesForReady": [99]}]}"#,
            "/readinessChecks(0)/httpStatusCodesForReady(0)",
            "error.min",
        ),
        (r#"{"id": "/a", "constraints": [["hostname"]]}"#, "/constraints(0)", "error.minLength"),
        (r#"{"id": "/a", "constraints": [["a", "b", "c", "d"]]}"#, "/constraints(0)", "error.maxLength"),
        (r#"{"id": "/a", "networks": [{"mode": "overlay"}]}"#, "/networks(0)/mode", "error.unknown.enum.literal"),
        (r#"{"id": "/a", "fetch": [{"extract": true}]}"#, "/fetch(0)/uri", "error.path.missing"),
        (r#"{"id": "/a", "secrets": {"s": {"source": ""}}}"#, "/secrets/s/source", "error.minLength"),
        (r#"{"id": "/a", "dependencies": ["/ok", "/No"]}"#, "/dependencies(1)", "error.pattern"),
        (r#"{"id": "/a", "version": "yesterday"}"#, "/version", "error.expected.date.isoformat"),
        (r#"[1, 2]"#, "/", "error.expected.jsobject"),
    ];
    for (text, path, key) in table {
        let err = json_errors(text);
        assert_eq!(err.status(), 422, "{text}");
        assert!(
            err.errors_at(path).contains(&key.to_owned()),
            "{text}: expected {path}: {key}, got {:?}",
            err.to_json()
        );
    }
}

#[test]
fn json_errors_are_collected_and_rendered_as_marathon_does() {
    let err = json_errors(
        r#"{"id": 5, "cpus": "x", "container": {"type": "DOCKER", "docker": {"image": "i"},
        "portMappings": [{"containerPort": 80}, {"containerPort": 80, "hostPort": true}]}}"#,
    );
    assert_eq!(
        err.to_json(),
        json!({"message": "Invalid JSON", "details": [
            {"path": "/id", "errors": ["error.expected.jsstring"]},
            {"path": "/cpus", "errors": ["error.expected.jsnumber"]},
            {"path": "/container/portMappings(1)/hostPort", "errors": ["error.expected.jsnumber"]},
        ]})
    );
}

#[test]
fn array_bodies_prefix_paths_with_the_index() {
    let updates = parse_app_updates(r#"[{"id": "/a", "instances": 2}, {"id": "/b"}]"#).unwrap();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].instances, Some(2));
    let err = parse_app_updates(r#"[{"id": "/a"}, {"instances": "two"}]"#).unwrap_err();
    assert_eq!(err.errors_at("(1)/instances"), vec!["error.expected.jsnumber".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Partial updates
// ---------------------------------------------------------------------------------------------

fn patch(current: &AppDefinition, update: &str) -> Result<AppDefinition, AppError> {
    merge_partial(current, parse_app_update(update).unwrap(), &config())
}

#[test]
fn patch_with_instances_only_is_a_scaling_change() {
    let current = app(SIMPLE);
    let scaled = patch(&current, r#"{"instances": 5}"#).unwrap();
    assert_eq!(scaled.instances, 5);
    assert!(scaled.same_config(&current));
    assert_eq!(scaled.config_fingerprint(), current.config_fingerprint());
    let info = VersionInfo::created(T0).after_change(&current, &scaled, T1);
    assert_eq!(info, VersionInfo { version: T1, last_scaling_at: T1, last_config_change_at: T0 });
}

#[test]
fn patch_replaces_whole_top_level_fields_and_keeps_the_rest() {
    let current = app(&with(json!({ "env": {"A": "1", "B": "2"}, "labels": {"x": "y"}, "cpus": 0.5 })));
    let next = patch(&current, r#"{"env": {"C": "3"}, "cmd": "sleep 200"}"#).unwrap();
    assert_eq!(next.env, BTreeMap::from([("C".to_owned(), EnvValue::Value("3".to_owned()))]));
    assert_eq!(next.labels, current.labels);
    assert_eq!(next.cpus, 0.5);
    assert_eq!(next.cmd.as_deref(), Some("sleep 200"));
    assert!(!next.same_config(&current));
    assert_ne!(next.config_fingerprint(), current.config_fingerprint());
    let info = VersionInfo::created(T0).after_change(&current, &next, T1);
    assert_eq!(info, VersionInfo::created(T1));
    assert_eq!(VersionInfo::created(T0).after_change(&current, &current, T1), VersionInfo::created(T0));
}

#[test]
fn patch_keeps_the_id_and_validates_the_result() {
    let current = app(SIMPLE);
    let next = patch(&current, r#"{"id": "/elsewhere", "mem": 64}"#).unwrap();
    assert_eq!(next.id.to_string(), "/simple");
    let err = patch(&current, r#"{"cmd": null, "args": null, "healthChecks": [{"protocol": "COMMAND"}]}"#).unwrap_err();
    assert!(matches!(err, AppError::Invalid(_)), "{err:?}");
    let err = patch(&current, r#"{"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}, "labels": {"MARATHON_SINGLE_INSTANCE_APP": "true"}}"#)
        .unwrap_err();
    assert!(
        matches!(&err, AppError::Invalid(v) if v.messages_at("/").contains(&"Single instance app may only have one instance"))
    );
}

#[test]
fn patch_translates_deprecated_fields() {
    let current = app(SIMPLE);
    let next = patch(&current, r#"{"ports": [9000, 9001], "uris": ["http://x/a.zip"]}"#).unwrap();
    let ports: Vec<i32> = next.port_definitions.iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![9000, 9001]);
    assert!(next.fetch[0].extract);
}

#[test]
fn patch_switching_to_bridge_drops_port_definitions() {
    let current = app(&with(json!({ "portDefinitions": [{"port": 0, "name": "http"}],
        "container": {"type": "DOCKER", "docker": {"image": "nginx"}} })));
    let next = patch(&current, r#"{"networks": [{"mode": "container/bridge"}]}"#).unwrap();
    assert!(next.port_definitions.is_empty());
    let mappings = next.container.as_ref().unwrap().port_mappings.as_ref().unwrap();
    assert_eq!(mappings.len(), 1, "the default mapping");
    assert_eq!(mappings[0].host_port, Some(0));
}

#[test]
fn patch_with_version_is_a_rollback_request() {
    let current = app(SIMPLE);
    let err = patch(&current, r#"{"version": "2015-09-30T09:09:17.614Z", "cpus": 2}"#).unwrap_err();
    assert!(
        matches!(&err, AppError::Invalid(v) if v.messages_at("/") == vec!["The 'version' field may only be combined with the 'id' field."])
    );
    let spec = parse_app_update(r#"{"id": "/simple", "version": "2015-09-30T09:09:17.614Z"}"#).unwrap();
    assert_eq!(spec.version, Some(T0));
    assert!(validation::validate_update_version(&spec).is_ok());
}

#[test]
fn put_without_partial_update_replaces_the_app() {
    let current_id = PathId::parse("/simple").unwrap();
    let next =
        replace(&current_id, parse_app_update(r#"{"cmd": "sleep 5", "id": "/other"}"#).unwrap(), &config()).unwrap();
    assert_eq!(next.id, current_id);
    assert_eq!(next.instances, 1, "defaults, not the old values");
    assert_eq!(next.mem, 128.0);
}

#[test]
fn read_model_is_a_fixed_point_of_patch() {
    for text in [SIMPLE, BRIDGED_WEBAPP, PERSISTENT] {
        let current = app(text);
        let mut read = current.to_json(&VersionInfo::created(T0));
        // As in Marathon, a body carrying `version` asks for a rollback; GET output minus it is an update.
        read.as_object_mut().unwrap().remove("version");
        let next = merge_partial(&current, parse_app_update(&read.to_string()).unwrap(), &config())
            .unwrap_or_else(|e| panic!("{}", e.to_json()));
        assert_eq!(next, current, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprint and serde
// ---------------------------------------------------------------------------------------------

#[test]
fn fingerprint_is_stable_and_ignores_only_instances() {
    let a = app(SIMPLE);
    let mut b = a.clone();
    b.instances = 99;
    assert_eq!(a.config_fingerprint(), b.config_fingerprint());
    b.mem = 17.0;
    assert_ne!(a.config_fingerprint(), b.config_fingerprint());
    // Fixed digest of the simple app, so that a change to the encoding is noticed.
    assert_eq!(a.config_fingerprint(), app(SIMPLE).config_fingerprint());
    assert_eq!(a.config_fingerprint().to_string().len(), 16);
}

#[test]
fn definitions_survive_serde() {
    for text in [SIMPLE, BRIDGED_WEBAPP, PERSISTENT] {
        let app = app(text);
        let stored = serde_json::to_string(&app).unwrap();
        assert_eq!(serde_json::from_str::<AppDefinition>(&stored).unwrap(), app);
    }
}

// ---------------------------------------------------------------------------------------------
// Task environment
// ---------------------------------------------------------------------------------------------

#[test]
fn task_environment_matches_marathons_variables() {
    let app = app(&with(json!({
        "cpus": 0.5, "mem": 64, "disk": 0,
        "labels": {"owner": "zeus", "a.b-c": "x", "HAPROXY_0_VHOST": "v"},
        "portDefinitions": [{"port": 0, "name": "http"}, {"port": 8080}],
        "env": {"EXTRA": "1", "PORT0": "overridden", "SECRET": {"secret": "s"}},
        "secrets": {"s": {"source": "/s"}}
    })));
    let env = task_environment(
        &app,
        &TaskEnvInput {
            version: T0,
            host_ports: &[Some(31000), Some(31001)],
            host: Some("agent-1"),
            task_id: Some("app.instance-1"),
            prefix: None,
        },
    );
    let expected: BTreeMap<String, String> = [
        ("MESOS_TASK_ID", "app.instance-1"),
        ("MARATHON_APP_ID", "/app"),
        ("MARATHON_APP_VERSION", "2015-09-30T09:09:17.614Z"),
        ("MARATHON_APP_RESOURCE_CPUS", "0.5"),
        ("MARATHON_APP_RESOURCE_MEM", "64.0"),
        ("MARATHON_APP_RESOURCE_DISK", "0.0"),
        ("MARATHON_APP_RESOURCE_GPUS", "0"),
        ("MARATHON_APP_LABELS", "A_B_C HAPROXY_0_VHOST OWNER"),
        ("MARATHON_APP_LABEL_A_B_C", "x"),
        ("MARATHON_APP_LABEL_HAPROXY_0_VHOST", "v"),
        ("MARATHON_APP_LABEL_OWNER", "zeus"),
        ("PORT0", "overridden"),
        ("PORT1", "31001"),
        ("PORT_31000", "31000"),
        ("PORT_8080", "31001"),
        ("PORT_HTTP", "31000"),
        ("PORT", "31000"),
        ("PORTS", "31000,31001"),
        ("HOST", "agent-1"),
        ("EXTRA", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, expected);
}

#[test]
fn task_environment_for_docker_container_ports() {
    let app = app(&with(json!({
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "DOCKER", "docker": {"image": "nginx:1"},
            "portMappings": [{"containerPort": 80, "name": "web"}, {"containerPort": 0}]}
    })));
    let env = task_environment(
        &app,
        &TaskEnvInput { version: T0, host_ports: &[None, None], prefix: Some("X_"), ..Default::default() },
    );
    assert_eq!(env.get("MARATHON_APP_DOCKER_IMAGE").map(String::as_str), Some("nginx:1"));
    assert_eq!(env.get("X_PORT0").map(String::as_str), Some("80"));
    assert_eq!(env.get("X_PORT_WEB").map(String::as_str), Some("80"));
    assert_eq!(env.get("X_PORT1").map(String::as_str), Some("1025"), "lowest free port for container port 0");
    assert_eq!(env.get("X_PORTS").map(String::as_str), Some("1025"));
    assert_eq!(env.get("MARATHON_APP_LABELS").map(String::as_str), Some(""));
    assert!(!env.contains_key("PORT0"));
}

#[test]
fn long_labels_are_left_out_of_the_environment() {
    let long_value = "v".repeat(512);
    let app = app(&with(json!({ "labels": {"ok": "1", "big": long_value} })));
    let env = task_environment(&app, &TaskEnvInput { version: T0, ..Default::default() });
    assert_eq!(env.get("MARATHON_APP_LABELS").map(String::as_str), Some("OK"));
    assert!(!env.contains_key("MARATHON_APP_LABEL_BIG"));
    assert!(!env.contains_key("PORTS"), "no host ports, no port variables");
}

#[test]
fn java_double_formats_like_scala() {
    assert_eq!(java_double(1.0), "1.0");
    assert_eq!(java_double(0.1), "0.1");
    assert_eq!(java_double(128.0), "128.0");
    assert_eq!(java_double(-3.0), "-3.0");
    assert_eq!(java_double(0.0001), "1.0E-4");
    assert_eq!(java_double(12_345_678.0), "1.2345678E7");
    assert_eq!(java_double(0.0), "0.0");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn arbitrary_app_json() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z0-9-]{0,8}[a-z0-9]",
        0i32..20,
        prop::sample::select(vec![0.1, 0.5, 1.0, 2.0]),
        prop::sample::select(vec![16.0, 128.0, 1024.0]),
        prop::collection::btree_map("[a-z]{1,5}", "[a-z0-9 ]{0,8}", 0..4),
        prop::option::of(prop::collection::vec(0i32..3, 0..3)),
        any::<bool>(),
    )
        .prop_map(|(name, instances, cpus, mem, labels, ports, docker)| {
            let mut app = json!({ "id": format!("/g/{name}"), "cmd": "sleep 100", "instances": instances,
                                   "cpus": cpus, "mem": mem, "labels": labels });
            if let Some(ports) = ports {
                let defs: Vec<Value> = ports
                    .iter()
                    .enumerate()
                    .map(|(i, p)| json!({"port": if *p == 0 { 0 } else { 10000 + i as i32 }}))
                    .collect();
                app["portDefinitions"] = Value::Array(defs);
            }
            if docker {
                app["container"] = json!({"type": "DOCKER", "docker": {"image": "busybox"}});
            }
            app
        })
}

proptest! {
    #[test]
    fn read_model_round_trips(request in arbitrary_app_json()) {
        let app = AppDefinition::from_json(&request.to_string(), &config()).map_err(|e| TestCaseError::fail(e.to_json().to_string()))?;
        let read = app.to_json(&VersionInfo::created(T0));
        let again = AppDefinition::from_json(&read.to_string(), &config()).map_err(|e| TestCaseError::fail(e.to_json().to_string()))?;
        prop_assert_eq!(&again, &app);
        prop_assert_eq!(again.to_json(&VersionInfo::created(T0)), read);
    }

    #[test]
    fn scaling_never_changes_the_fingerprint(request in arbitrary_app_json(), instances in 0i32..1000) {
        let app = AppDefinition::from_json(&request.to_string(), &config()).map_err(|e| TestCaseError::fail(e.to_json().to_string()))?;
        let scaled = merge_partial(&app, parse_app_update(&json!({"instances": instances}).to_string()).unwrap(), &config())
            .map_err(|e| TestCaseError::fail(e.to_json().to_string()))?;
        prop_assert_eq!(scaled.config_fingerprint(), app.config_fingerprint());
        prop_assert_eq!(scaled.instances, instances);
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,64}") {
        let _ = AppDefinition::from_json(&text, &config());
        let _ = parse_app_update(&text);
    }

    #[test]
    fn port_protocols_parse_back(protocol in prop::sample::select(PortProtocol::ALL.to_vec())) {
        prop_assert_eq!(PortProtocol::from_wire(protocol.as_str()), Some(protocol));
    }
}

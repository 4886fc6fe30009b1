//! The scheduler and its REST routes together, as a client and the master see them: requests
//! in, effects and records out, offers and status updates fed back.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::rest::{LabelSelector, RestRequest, RestResponse, ServerInfo, handle, strip_prefix};
use super::scheduler::{
    APPS_PREFIX, AppRecord, DEFAULT_KILL_RETRY_TIMEOUT_MS, DEFAULT_TASK_LAUNCH_TIMEOUT_MS, DEPLOYMENTS_PREFIX,
    DeploymentRecord, Effect, INSTANCES_PREFIX, Instance, SchedulerConfig, SchedulerCore,
};
use super::timestamp::Timestamp;
use crate::mesos::core::{Ranges, Resources, TaskState, TaskStatus, UpdateSource};
use crate::mesos::protocol::{OfferInfo, TaskInfo};

const T0: u64 = 1_700_000_000_000;

/// A scheduler with a clock, a store of its written records and the effects it asked for.
struct Harness {
    core: SchedulerCore,
    now: u64,
    store: BTreeMap<String, Vec<u8>>,
    effects: Vec<Effect>,
    offers: u32,
}

impl Harness {
    fn new() -> Harness {
        let (core, effects) =
            SchedulerCore::recover(SchedulerConfig::new("marathon"), Vec::new(), Vec::new(), Vec::new(), ts(T0), 7);
        let mut harness = Harness { core, now: T0, store: BTreeMap::new(), effects, offers: 0 };
        harness.store_writes();
        harness
    }

    fn tick(&mut self) -> Timestamp {
        self.now += 1_000;
        ts(self.now)
    }

    fn store_writes(&mut self) {
        let mut writes = self.core.take_writes();
        writes.extend(self.core.take_lazy_writes());
        for (key, value) in writes {
            match value {
                Some(value) => self.store.insert(key, value),
                None => self.store.remove(&key),
            };
        }
    }

    fn request(&mut self, method: &str, path: &str, body: Value) -> RestResponse {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
        let request = RestRequest { method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), body };
        let server = ServerInfo {
            leader: "m1:8080".to_owned(),
            framework_id: "marathon".to_owned(),
            http_port: 8080,
            version: "0.1.0".to_owned(),
        };
        let now = self.tick();
        let (response, effects) = handle(&mut self.core, &request, &server, now);
        self.store_writes();
        self.effects.extend(effects);
        response
    }

    /// One offer from agent `agent` with plenty of resources; returns the tasks launched.
    fn offer(&mut self, agent: &str) -> Vec<TaskInfo> {
        self.offers += 1;
        let offer = OfferInfo {
            id: format!("offer-{}", self.offers),
            framework_id: "marathon".to_owned(),
            agent_id: agent.to_owned(),
            hostname: format!("{agent}.example"),
            role: "*".to_owned(),
            resources: Resources::cpus_mem_disk(8.0, 8192.0, 10_000.0)
                .with_ranges("ports", Ranges::single(31000, 31999)),
            attributes: BTreeMap::from([("rack".to_owned(), agent.to_owned())]),
        };
        let now = self.tick();
        self.core.note_agents(std::slice::from_ref(&offer));
        let effects = self.core.offers(vec![offer], now);
        self.store_writes();
        let mut launched = Vec::new();
        for effect in &effects {
            if let Effect::Launch { tasks, .. } = effect {
                launched.extend(tasks.iter().cloned());
            }
        }
        self.effects.extend(effects);
        launched
    }

    fn status(&mut self, task_id: &str, state: TaskState, healthy: Option<bool>) {
        let status = TaskStatus {
            task_id: task_id.to_owned(),
            agent_id: "a1".to_owned(),
            state,
            source: UpdateSource::Agent,
            reason: None,
            message: String::new(),
            uuid: None,
            timestamp_ms: self.now,
            healthy,
        };
        let now = self.tick();
        let effects = self.core.status(&status, now);
        self.store_writes();
        self.effects.extend(effects);
    }

    /// The actor's periodic tick, one harness step later.
    fn core_tick(&mut self) {
        let now = self.tick();
        let effects = self.core.tick(now);
        self.effects.extend(effects);
    }

    fn run_all(&mut self, tasks: &[TaskInfo]) {
        for task in tasks {
            self.status(&task.task_id, TaskState::Running, None);
        }
    }

    fn kills(&mut self) -> Vec<String> {
        let kills = self
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Kill { task_id } => Some(task_id.clone()),
                _ => None,
            })
            .collect();
        self.effects.clear();
        kills
    }

    fn app(&mut self, id: &str) -> Value {
        self.request("GET", &format!("/v2/apps{id}"), Value::Null).json_body()["app"].clone()
    }

    fn deployments(&mut self) -> Vec<Value> {
        self.request("GET", "/v2/deployments", Value::Null).json_body().as_array().cloned().unwrap_or_default()
    }
}

fn ts(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis)
}

fn web_app(instances: u32) -> Value {
    json!({ "id": "/prod/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.5, "mem": 64,
            "instances": instances, "portDefinitions": [{ "port": 0, "name": "http" }] })
}

#[test]
fn an_app_is_created_placed_and_its_deployment_ends_when_its_tasks_run() {
    let mut h = Harness::new();
    let created = h.request("POST", "/v2/apps", web_app(2));
    assert_eq!(created.status, 201, "{:?}", created.json_body());
    let body = created.json_body();
    let deployment = body["deployments"][0]["id"].as_str().unwrap().to_owned();
    assert!(created.headers.contains(&("Marathon-Deployment-Id".to_owned(), deployment.clone())));
    assert_eq!(body["portDefinitions"][0]["port"], 10_000, "port 0 gets a service port");
    let events = h.core.take_events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["eventType"].as_str()).collect();
    assert_eq!(kinds, ["deployment_info", "api_post_event", "deployment_step_success", "deployment_info"]);
    assert!(h.effects.contains(&Effect::Revive), "{:?}", h.effects);
    assert!(h.store.contains_key(&format!("{APPS_PREFIX}/prod/web")));
    assert!(h.store.contains_key(&format!("{DEPLOYMENTS_PREFIX}{deployment}")));

    let tasks = h.offer("a1");
    assert_eq!(tasks.len(), 2);
    let task = &tasks[0];
    assert!(task.task_id.starts_with("prod_web."), "{}", task.task_id);
    assert_eq!(task.name, "web.prod");
    assert_eq!(task.resources.scalar("cpus"), 0.5);
    let port = task.resources.ports().iter().next().unwrap().0;
    assert_eq!(task.env.get("PORT0"), Some(&port.to_string()));
    assert_eq!(task.env.get("MARATHON_APP_ID").map(String::as_str), Some("/prod/web"));
    assert!(h.store.contains_key(&format!("{INSTANCES_PREFIX}{}", task.task_id)), "stored before launch");
    assert_eq!(h.deployments().len(), 1, "the deployment waits for running tasks");

    h.run_all(&tasks);
    assert!(h.deployments().is_empty());
    assert!(!h.store.keys().any(|k| k.starts_with(DEPLOYMENTS_PREFIX)));
    let app = h.app("/prod/web");
    assert_eq!(app["tasksRunning"], 2);
    assert_eq!(app["tasks"].as_array().unwrap().len(), 2);
    assert!(h.effects.contains(&Effect::Suppress), "nothing waits: offers stop");
    let metrics = h.request("GET", "/metrics", Value::Null).json_body();
    assert_eq!(metrics["gauges"]["marathon.instances.running.gauge"]["value"], 2);
    let exposition = String::from_utf8(h.request("GET", "/metrics/prometheus", Value::Null).body).unwrap();
    assert!(
        exposition.contains("# TYPE marathon_apps_active_gauge gauge\nmarathon_apps_active_gauge 1\n"),
        "{exposition}"
    );
}

#[test]
fn scaling_down_kills_the_youngest_and_scaling_up_launches() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(1));
    let first = h.offer("a1");
    h.run_all(&first);
    let scaled = h.request("PUT", "/v2/apps/prod/web", json!({ "instances": 3 }));
    assert_eq!(scaled.status, 200, "{:?}", scaled.json_body());
    assert!(scaled.json_body()["deploymentId"].is_string());
    let more = h.offer("a2");
    assert_eq!(more.len(), 2);
    h.run_all(&more);
    assert!(h.deployments().is_empty());
    h.kills();

    h.request("PATCH", "/v2/apps/prod/web", json!({ "instances": 1 }));
    let mut killed = h.kills();
    killed.sort();
    let mut youngest: Vec<String> = more.iter().map(|t| t.task_id.clone()).collect();
    youngest.sort();
    assert_eq!(killed, youngest, "the two youngest go first");
    for task_id in &killed {
        h.status(task_id, TaskState::Killed, None);
    }
    assert!(h.deployments().is_empty());
    assert_eq!(h.app("/prod/web")["tasksRunning"], 1);
}

#[test]
fn a_restart_replaces_every_instance_keeping_capacity() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let old = h.offer("a1");
    h.run_all(&old);
    h.kills();
    let restarted = h.request("POST", "/v2/apps/prod/web/restart", Value::Null);
    assert_eq!(restarted.status, 200);
    assert!(h.kills().is_empty(), "no old instance dies before a new one runs");
    let new = h.offer("a2");
    assert_eq!(new.len(), 2, "maximumOverCapacity 1 starts all replacements at once");
    h.run_all(&new);
    let mut killed = h.kills();
    killed.sort();
    let mut expected: Vec<String> = old.iter().map(|t| t.task_id.clone()).collect();
    expected.sort();
    assert_eq!(killed, expected);
    for task_id in &killed {
        h.status(task_id, TaskState::Killed, None);
    }
    assert!(h.deployments().is_empty());
    let versions = h.request("GET", "/v2/apps/prod/web/versions", Value::Null).json_body();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn an_update_with_health_checks_waits_for_healthy_instances() {
    let mut h = Harness::new();
    let mut app = web_app(1);
    app["healthChecks"] = json!([{ "protocol": "MESOS_HTTP", "portIndex": 0, "path": "/health" }]);
    h.request("POST", "/v2/apps", app);
    let tasks = h.offer("a1");
    let check = tasks[0].health_check.clone().expect("the agent runs the check");
    let port = tasks[0].resources.ports().iter().next().unwrap().0;
    assert!(format!("{:?}", check.probe).contains(&format!("port: {port}")), "{check:?}");
    h.run_all(&tasks);
    assert_eq!(h.deployments().len(), 1, "running is not enough");
    h.status(&tasks[0].task_id, TaskState::Running, Some(true));
    assert!(h.deployments().is_empty());
    assert_eq!(h.app("/prod/web")["tasksHealthy"], 1);
}

#[test]
fn a_failed_instance_is_replaced_after_the_backoff() {
    let mut h = Harness::new();
    let mut app = web_app(1);
    app["backoffSeconds"] = json!(60);
    h.request("POST", "/v2/apps", app);
    let tasks = h.offer("a1");
    h.run_all(&tasks);
    h.status(&tasks[0].task_id, TaskState::Failed, None);
    assert!(h.offer("a1").is_empty(), "backed off");
    let queue = h.request("GET", "/v2/queue", Value::Null).json_body();
    let item = &queue["queue"][0];
    assert_eq!(item["count"], 1);
    assert!(item["delay"]["timeLeftSeconds"].as_u64().unwrap() > 0, "{item}");
    assert_eq!(h.request("DELETE", "/v2/queue/prod/web/delay", Value::Null).status, 204);
    assert_eq!(h.offer("a1").len(), 1, "the reset delay lets it launch");
}

#[test]
fn a_locked_app_refuses_changes_unless_forced() {
    let mut h = Harness::new();
    let mut app = web_app(1);
    app["cpus"] = json!(100);
    h.request("POST", "/v2/apps", app);
    assert!(h.offer("a1").is_empty(), "no offer is big enough");
    let locked = h.request("PUT", "/v2/apps/prod/web", json!({ "cmd": "sleep 1" }));
    assert_eq!(locked.status, 409);
    let body = locked.json_body();
    assert!(body["message"].as_str().unwrap().starts_with("App is locked"), "{body}");
    assert_eq!(body["deployments"].as_array().unwrap().len(), 1);
    let forced = h.request("PUT", "/v2/apps/prod/web?force=true", json!({ "cpus": 0.1 }));
    assert_eq!(forced.status, 200);
    assert_eq!(h.deployments().len(), 1, "the forced deployment replaced the stuck one");
    assert_eq!(h.offer("a1").len(), 1);
}

#[test]
fn cancelling_a_deployment_rolls_it_back() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(1));
    let first = h.offer("a1");
    h.run_all(&first);
    let update = h.request("PUT", "/v2/apps/prod/web", json!({ "cpus": 100 })).json_body();
    let id = update["deploymentId"].as_str().unwrap();
    let rollback = h.request("DELETE", &format!("/v2/deployments/{id}"), Value::Null);
    assert_eq!(rollback.status, 200, "{:?}", rollback.json_body());
    assert_eq!(h.app("/prod/web")["cpus"], 0.5);
    assert_eq!(h.request("DELETE", "/v2/deployments/nope", Value::Null).status, 404);
}

#[test]
fn deleting_an_app_kills_its_tasks_and_forgets_it() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let tasks = h.offer("a1");
    h.run_all(&tasks);
    h.kills();
    assert_eq!(
        h.request("DELETE", "/service/marathon/v2/apps/prod/web".trim_start_matches("/service/marathon"), Value::Null)
            .status,
        200
    );
    assert_eq!(h.kills().len(), 2);
    for task in &tasks {
        h.status(&task.task_id, TaskState::Killed, None);
    }
    assert_eq!(h.request("GET", "/v2/apps/prod/web", Value::Null).status, 404);
    assert!(h.deployments().is_empty());
    assert!(!h.store.keys().any(|k| k.starts_with(INSTANCES_PREFIX)));
}

#[test]
fn killing_a_task_with_scale_lowers_the_count_and_without_relaunches() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let tasks = h.offer("a1");
    h.run_all(&tasks);
    h.kills();
    let killed = h.request("DELETE", &format!("/v2/apps/prod/web/tasks/{}", tasks[0].task_id), Value::Null);
    assert_eq!(killed.json_body()["task"]["id"], tasks[0].task_id.as_str());
    assert_eq!(h.kills(), vec![tasks[0].task_id.clone()]);
    h.status(&tasks[0].task_id, TaskState::Killed, None);
    assert_eq!(h.offer("a1").len(), 1, "a killed task is replaced");

    let scaled = h.request("POST", "/v2/tasks/delete?scale=true", json!({ "ids": [tasks[1].task_id] }));
    assert!(scaled.json_body()["deploymentId"].is_string());
    assert_eq!(h.app("/prod/web")["instances"], 1);
    assert_eq!(h.kills(), vec![tasks[1].task_id.clone()]);
    let unknown = h.request("POST", "/v2/tasks/delete", json!({ "ids": ["nope"] }));
    assert_eq!(unknown.status, 400);
}

#[test]
fn a_new_leader_recovers_the_apps_instances_and_deployments_from_the_records() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let tasks = h.offer("a1");
    h.status(&tasks[0].task_id, TaskState::Running, None);
    let decode = |prefix: &str| -> Vec<&[u8]> {
        h.store.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.as_slice()).collect()
    };
    let apps: Vec<AppRecord> = decode(APPS_PREFIX).iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    let instances: Vec<Instance> =
        decode(INSTANCES_PREFIX).iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    let deployments: Vec<DeploymentRecord> =
        decode(DEPLOYMENTS_PREFIX).iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    assert_eq!((apps.len(), instances.len(), deployments.len()), (1, 2, 1));
    let (mut core, effects) =
        SchedulerCore::recover(SchedulerConfig::new("marathon"), apps, instances, deployments, ts(h.now + 1), 9);
    let Some(Effect::Reconcile(reconciled)) = effects.first() else { panic!("{effects:?}") };
    assert_eq!(reconciled.len(), 2);
    assert_eq!(core.runs().count(), 1);
    assert!(core.scheduled().is_empty(), "both instances are already launched: no double launch");
    for task in &tasks {
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            agent_id: "a1".to_owned(),
            state: TaskState::Running,
            source: UpdateSource::Master,
            reason: None,
            message: String::new(),
            uuid: None,
            timestamp_ms: h.now,
            healthy: None,
        };
        core.status(&status, ts(h.now + 2));
    }
    assert_eq!(core.runs().count(), 1, "a deployment is observed at most every 100 ms");
    core.tick(ts(h.now + 200));
    assert_eq!(core.runs().count(), 0, "the recovered deployment completes");
}

#[test]
fn an_unknown_live_task_is_killed() {
    let mut h = Harness::new();
    h.status("ghost.1", TaskState::Running, None);
    assert_eq!(h.kills(), vec!["ghost.1".to_owned()]);
}

#[test]
fn bad_requests_get_marathons_errors_and_change_nothing() {
    let mut h = Harness::new();
    let request = RestRequest {
        method: "POST".to_owned(),
        path: "/v2/apps".to_owned(),
        query: String::new(),
        body: b"{not json".to_vec(),
    };
    let server =
        ServerInfo { leader: String::new(), framework_id: String::new(), http_port: 0, version: String::new() };
    let (malformed, _) = handle(&mut h.core, &request, &server, ts(T0 + 5));
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json_body()["message"], "Invalid JSON");
    let invalid = h.request("POST", "/v2/apps", json!({ "id": "/x", "cmd": "true", "cpus": -1 }));
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.json_body()["details"][0]["path"], "/cpus", "{:?}", invalid.json_body());
    assert_eq!(h.request("POST", "/v2/apps", web_app(1)).status, 201);
    let duplicate = h.request("POST", "/v2/apps", web_app(1));
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.json_body()["message"], "An app with id [/prod/web] already exists.");
    assert_eq!(h.request("GET", "/v2/apps/nope", Value::Null).json_body()["message"], "App '/nope' does not exist");
    assert_eq!(h.request("GET", "/v2/apps", Value::Null).json_body()["apps"].as_array().unwrap().len(), 1);
    assert_eq!(h.request("DELETE", "/v2/info", Value::Null).status, 405);
}

#[test]
fn apps_are_listed_by_id_cmd_and_label_selector() {
    let mut h = Harness::new();
    for (id, tier) in [("/a", "web"), ("/b", "db"), ("/c", "web")] {
        let app = json!({ "id": id, "cmd": format!("run {id}"), "cpus": 0.1, "mem": 16, "labels": { "tier": tier } });
        assert_eq!(h.request("POST", "/v2/apps", app).status, 201);
    }
    let ids = |h: &mut Harness, query: &str| -> Vec<String> {
        let body = h.request("GET", &format!("/v2/apps?{query}"), Value::Null).json_body();
        body["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&mut h, "label=tier%3D%3Dweb"), ["/a", "/c"]);
    assert_eq!(ids(&mut h, "label=tier+notin+(web)"), ["/b"]);
    assert_eq!(ids(&mut h, "id=b"), ["/b"]);
    assert_eq!(ids(&mut h, "cmd=run%20/c"), ["/c"]);
    let groups = h.request("GET", "/v2/groups", Value::Null).json_body();
    assert_eq!(groups["apps"].as_array().unwrap().len(), 3);
}

#[test]
fn groups_create_nested_apps_and_delete_them() {
    let mut h = Harness::new();
    let group = json!({ "id": "/shop", "apps": [{ "id": "api", "cmd": "sleep 1", "cpus": 0.1, "mem": 16 }],
                        "groups": [{ "id": "db", "apps": [{ "id": "pg", "cmd": "sleep 1", "cpus": 0.1, "mem": 16 }] }] });
    let created = h.request("POST", "/v2/groups", group);
    assert_eq!(created.status, 201, "{:?}", created.json_body());
    assert_eq!(h.app("/shop/db/pg")["id"], "/shop/db/pg");
    let tree = h.request("GET", "/v2/groups/shop", Value::Null).json_body();
    assert_eq!(tree["groups"][0]["id"], "/shop/db");
    assert_eq!(h.request("DELETE", "/v2/groups/shop", Value::Null).status, 409, "its deployment runs");
    assert_eq!(h.request("DELETE", "/v2/groups/shop?force=true", Value::Null).status, 200);
    assert_eq!(h.request("GET", "/v2/groups/shop", Value::Null).status, 404);
}

#[test]
fn label_selectors_and_prefixes_parse() {
    let labels = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "x".to_owned())]);
    assert!(LabelSelector::parse("a").unwrap().matches(&labels));
    assert!(LabelSelector::parse("a==1,b in (x, y)").unwrap().matches(&labels));
    assert!(!LabelSelector::parse("a!=1").unwrap().matches(&labels));
    assert!(LabelSelector::parse("a in x").is_err());
    assert_eq!(strip_prefix("/service/marathon/v2/apps"), "/v2/apps");
    assert_eq!(strip_prefix("/marathon/v2/apps"), "/v2/apps");
    assert_eq!(strip_prefix("/marathonx/v2"), "/marathonx/v2");
}

#[test]
fn an_app_that_needs_a_container_image_fails_its_launches_with_a_clear_reason() {
    let mut h = Harness::new();
    let app = json!({ "id": "/bridged", "cmd": "python3 -m http.server 8080", "cpus": 0.5, "mem": 64,
                      "container": { "type": "DOCKER", "docker": { "image": "python:3" } } });
    assert_eq!(h.request("POST", "/v2/apps", app).status, 201);
    assert!(h.offer("a1").is_empty(), "nothing launches");
    let app = h.app("/bridged");
    let failure = &app["lastTaskFailure"];
    assert_eq!(failure["state"], "TASK_FAILED");
    assert!(failure["message"].as_str().unwrap().contains("image 'python:3'"), "{failure}");
    let queue = h.request("GET", "/v2/queue", Value::Null).json_body();
    assert!(queue["queue"][0]["delay"]["timeLeftSeconds"].as_u64().is_some(), "{queue}");
    assert_eq!(
        h.deployments().len(),
        1,
        "the deployment waits, as Marathon's would for an image that cannot be pulled"
    );
}

/// The examples of Marathon's documentation (dcos-api.md §1.8) are accepted as they are.
#[test]
fn marathons_documented_examples_are_accepted() {
    let examples = [
        json!({ "id": "/simple", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1 }),
        json!({ "id": "bridged-webapp", "cmd": "python3 -m http.server 8080", "cpus": 0.5, "mem": 64.0,
                "instances": 2, "networks": [{ "mode": "container/bridge" }],
                "container": { "type": "DOCKER", "docker": { "image": "python:3" },
                               "portMappings": [
                                   { "containerPort": 8080, "hostPort": 0, "servicePort": 9000, "protocol": "tcp" },
                                   { "containerPort": 161, "hostPort": 0, "protocol": "udp" }] },
                "healthChecks": [{ "protocol": "HTTP", "portIndex": 0, "path": "/", "gracePeriodSeconds": 5,
                                   "intervalSeconds": 20, "maxConsecutiveFailures": 3 }] }),
        json!({ "id": "/persistent-volume-app",
                "cmd": "env && echo 'hello' >> $MESOS_SANDBOX/data/foo && /opt/mesosphere/bin/python -m http.server $PORT_API",
                "cpus": 0.5, "mem": 32, "disk": 0, "instances": 1, "acceptedResourceRoles": ["*"],
                "container": { "type": "MESOS", "volumes": [{ "containerPath": "data", "mode": "RW",
                               "persistent": { "size": 10, "type": "root", "constraints": [] } }] },
                "portDefinitions": [{ "port": 0, "protocol": "tcp", "name": "api", "labels": {} }],
                "upgradeStrategy": { "minimumHealthCapacity": 0.5, "maximumOverCapacity": 0 } }),
    ];
    let mut h = Harness::new();
    for example in examples {
        let id = example["id"].clone();
        let created = h.request("POST", "/v2/apps", example);
        assert_eq!(created.status, 201, "{id}: {:?}", created.json_body());
    }
}

#[test]
fn a_deployment_waits_for_the_readiness_checks_of_new_instances() {
    let mut h = Harness::new();
    let mut app = web_app(1);
    app["readinessChecks"] = json!([{ "name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http",
                                      "intervalSeconds": 2, "timeoutSeconds": 1 }]);
    assert_eq!(h.request("POST", "/v2/apps", app).status, 201);
    let tasks = h.offer("a1");
    h.run_all(&tasks);
    assert_eq!(h.deployments().len(), 1, "running is not ready");
    let now = h.tick();
    let probes = h.core.readiness_due(now);
    assert_eq!(probes.len(), 1);
    let port = tasks[0].resources.ports().iter().next().unwrap().0;
    assert_eq!(
        (probes[0].host.as_str(), u64::from(probes[0].port), probes[0].path.as_str()),
        ("a1.example", port, "/ready")
    );
    assert_eq!(probes[0].codes, [200]);
    assert!(h.core.readiness_due(now).is_empty(), "one probe at a time");
    h.core.readiness_result(&tasks[0].task_id, false, now);
    assert!(h.core.readiness_due(now).is_empty(), "not before the check's interval");
    let observed = h.tick();
    h.core.tick(observed);
    let results = &h.deployments()[0]["currentActions"][0]["readinessCheckResults"];
    assert_eq!(results, &json!([{ "name": "ready", "taskId": tasks[0].task_id, "ready": false }]));
    h.tick();
    let later = h.tick();
    assert_eq!(h.core.readiness_due(later).len(), 1);
    let effects = h.core.readiness_result(&tasks[0].task_id, true, ts(h.now + 200));
    h.effects.extend(effects);
    h.core.tick(ts(h.now + 400));
    assert!(h.deployments().is_empty(), "ready: the deployment is done");
}

#[test]
fn a_launch_that_never_runs_is_replaced_and_an_unknown_task_ends_its_instance() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let tasks = h.offer("a1");
    assert_eq!(tasks.len(), 2);
    h.status(&tasks[0].task_id, TaskState::Running, None);
    // The master has never heard of the second task (its launch was lost in a failover).
    h.status(&tasks[1].task_id, TaskState::Unknown, None);
    assert!(!h.store.contains_key(&format!("{INSTANCES_PREFIX}{}", tasks[1].task_id)), "its record is gone");
    let replacement = h.offer("a2");
    assert_eq!(replacement.len(), 1, "the unknown task is replaced");
    h.effects.clear();

    // A launch that stays staged past the launch timeout is killed and replaced.
    h.now += DEFAULT_TASK_LAUNCH_TIMEOUT_MS;
    let now = h.tick();
    let effects = h.core.tick(now);
    h.store_writes();
    h.effects.extend(effects);
    assert_eq!(h.kills(), vec![replacement[0].task_id.clone()]);
    assert!(!h.store.contains_key(&format!("{INSTANCES_PREFIX}{}", replacement[0].task_id)));
    let again = h.offer("a3");
    assert_eq!(again.len(), 1, "the timed-out launch is replaced");
    assert_ne!(again[0].task_id, replacement[0].task_id);
    assert_eq!(h.app("/prod/web")["tasksRunning"], 1, "the running task is untouched");
}

#[test]
fn a_dropped_launch_during_a_deployment_is_replaced() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(3));
    let tasks = h.offer("a1");
    assert_eq!(tasks.len(), 3);
    h.status(&tasks[0].task_id, TaskState::Running, None);
    // The master refused the accept (its offer was rescinded): every task of it is dropped.
    h.status(&tasks[1].task_id, TaskState::Dropped, None);
    h.status(&tasks[2].task_id, TaskState::Dropped, None);
    let now = h.tick();
    let effects = h.core.tick(now);
    h.effects.extend(effects);
    let again = h.offer("a2");
    assert_eq!(again.len(), 2, "both dropped launches are replaced");
    h.run_all(&again);
    h.tick();
    let now = h.tick();
    h.core.tick(now);
    assert!(h.deployments().is_empty(), "the deployment ends");
}

#[test]
fn a_kill_that_does_not_end_its_task_is_sent_again_until_it_does() {
    let mut h = Harness::new();
    h.request("POST", "/v2/apps", web_app(2));
    let tasks = h.offer("a1");
    h.run_all(&tasks);
    h.kills();
    h.request("PATCH", "/v2/apps/prod/web", json!({ "instances": 1 }));
    let killed = h.kills();
    assert_eq!(killed.len(), 1);
    fn tick_after(h: &mut Harness, millis: u64) -> Vec<String> {
        h.now += millis;
        let now = h.tick();
        let effects = h.core.tick(now);
        h.effects.extend(effects);
        h.kills()
    }
    // The kill was lost: no terminal status comes. The pass that first sees it stamps it...
    assert!(tick_after(&mut h, 1_000).is_empty());
    assert!(tick_after(&mut h, DEFAULT_KILL_RETRY_TIMEOUT_MS / 2).is_empty(), "not before the retry timeout");
    // ...and the kill goes again once the timeout has passed since, and again after that.
    assert_eq!(tick_after(&mut h, DEFAULT_KILL_RETRY_TIMEOUT_MS / 2), killed);
    assert!(tick_after(&mut h, 1_000).is_empty());
    assert_eq!(tick_after(&mut h, DEFAULT_KILL_RETRY_TIMEOUT_MS), killed);
    h.status(&killed[0], TaskState::Killed, None);
    assert!(tick_after(&mut h, DEFAULT_KILL_RETRY_TIMEOUT_MS).is_empty(), "an ended task is not killed again");
    assert!(h.deployments().is_empty());
}

#[test]
fn an_unreachable_instance_that_comes_back_after_its_replacement_leaves_the_count_exceeded_no_longer() {
    let mut h = Harness::new();
    let mut app = web_app(1);
    app["unreachableStrategy"] = json!({ "inactiveAfterSeconds": 1, "expungeAfterSeconds": 3600 });
    h.request("POST", "/v2/apps", app);
    let original = h.offer("a1");
    h.run_all(&original);
    h.status(&original[0].task_id, TaskState::Unreachable, None);
    // Past inactiveAfterSeconds the instance no longer counts: a replacement launches.
    h.core_tick();
    let replacement = h.offer("a2");
    assert_eq!(replacement.len(), 1, "one replacement");
    h.run_all(&replacement);
    assert!(h.kills().is_empty());
    // The original comes back: two run for a count of one, and the youngest goes.
    h.status(&original[0].task_id, TaskState::Running, None);
    h.core_tick();
    assert_eq!(h.kills(), vec![replacement[0].task_id.clone()]);
    h.status(&replacement[0].task_id, TaskState::Killed, None);
    assert_eq!(h.app("/prod/web")["tasksRunning"], 1);
    h.core_tick();
    assert!(h.kills().is_empty(), "at its count: nothing more is killed");
}

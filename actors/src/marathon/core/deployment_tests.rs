//! Tests of the deployment core: plans, rolling replacement, scaling, locks, progress, views.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use super::deployment::*;
use super::upgrade::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn path(text: &str) -> PathId {
    PathId::parse(text).expect("test path")
}

fn app(id: &str, instances: u32, fingerprint: &str) -> AppView {
    AppView::new(path(id), instances, "2024-01-01T00:00:00.000Z", fingerprint)
}

fn depending(mut view: AppView, dependencies: &[&str]) -> AppView {
    view.dependencies = dependencies.iter().map(|d| path(d)).collect();
    view
}

fn apps(views: Vec<AppView>) -> Apps {
    Apps::new(views).expect("test apps")
}

fn did(id: &str) -> DeploymentId {
    DeploymentId::new(id).expect("test id")
}

fn plan(original: &Apps, target: &Apps) -> DeploymentPlan {
    DeploymentPlan::between(original, target, did("d1"), "2024-01-02T00:00:00.000Z").expect("plan")
}

/// The plan's steps as `(action name, app)` lists.
fn shape(plan: &DeploymentPlan) -> Vec<Vec<(ActionName, String)>> {
    plan.steps().iter().map(|step| step.actions.iter().map(|a| (a.name(), a.app().to_string())).collect()).collect()
}

fn step(actions: &[(ActionName, &str)]) -> Vec<(ActionName, String)> {
    actions.iter().map(|(name, app)| (*name, (*app).to_owned())).collect()
}

use ActionName::{
    RestartApplication as Restart, ScaleApplication as Scale, StartApplication as Start, StopApplication as Stop,
};

fn iid(id: &str) -> InstanceId {
    InstanceId::new(id).expect("test instance id")
}

fn ids(list: &[&str]) -> BTreeSet<InstanceId> {
    list.iter().map(|id| iid(id)).collect()
}

fn instance(
    id: &str,
    version: InstanceVersion,
    state: InstanceState,
    healthy: bool,
    staged_at_ms: u64,
) -> InstanceView {
    InstanceView { id: iid(id), version, state, healthy, ready: healthy, staged_at_ms }
}

fn old_ok(id: &str) -> InstanceView {
    instance(id, InstanceVersion::Old, InstanceState::Running, true, 0)
}

fn new_ok(id: &str) -> InstanceView {
    instance(id, InstanceVersion::New, InstanceState::Running, true, 1)
}

fn new_staged(id: &str) -> InstanceView {
    instance(id, InstanceVersion::New, InstanceState::Staged, false, 1)
}

fn killing(mut view: InstanceView) -> InstanceView {
    view.state = InstanceState::Killing;
    view
}

fn replace_spec(instances: u32, min_health: f64, over: f64) -> ReplaceSpec {
    ReplaceSpec {
        instances,
        strategy: UpgradeStrategy::new(min_health, over).expect("strategy"),
        checks: Checks { health: true, readiness: false },
        kill_selection: KillSelection::YoungestFirst,
    }
}

fn names(kill: &[InstanceId]) -> Vec<&str> {
    kill.iter().map(InstanceId::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// Paths and app sets
// ---------------------------------------------------------------------------------------------

#[test]
fn paths_follow_marathons_grammar() {
    let cases: &[(&str, Option<&str>)] = &[
        ("/", Some("/")),
        ("/prod/db", Some("/prod/db")),
        ("/prod/db/", Some("/prod/db")),
        ("/a.b-c/x1", Some("/a.b-c/x1")),
        ("prod/db", None),
        ("/Prod", None),
        ("/prod//db", None),
        ("/-db", None),
        ("/db-", None),
        ("/a..b", None),
        ("/.", None),
        ("/..", None),
        ("/a_b", None),
        ("", None),
    ];
    for (text, expected) in cases {
        let parsed = PathId::parse(text);
        match expected {
            Some(canonical) => assert_eq!(parsed.map(|p| p.to_string()).as_deref(), Ok(*canonical), "{text}"),
            None => {
                assert!(matches!(parsed, Err(PlanError::InvalidPath { .. })), "{text} should be refused: {parsed:?}")
            }
        }
    }
}

#[test]
fn groups_contain_their_descendants_only() {
    assert!(path("/prod").contains(&path("/prod/db")));
    assert!(path("/prod").contains(&path("/prod/db/x")));
    assert!(!path("/prod").contains(&path("/prod")));
    assert!(!path("/prod").contains(&path("/production/db")));
    assert!(PathId::root().contains(&path("/a")));
    let ancestors: Vec<String> = path("/a/b/c").ancestors().map(|p| p.to_string()).collect();
    assert_eq!(ancestors, ["/a/b", "/a"]);
}

#[test]
fn app_sets_refuse_duplicates_the_root_and_apps_that_are_groups() {
    assert_eq!(Apps::new(vec![app("/a", 1, "x"), app("/a", 2, "y")]), Err(PlanError::DuplicateApp(path("/a"))));
    assert_eq!(Apps::new(vec![AppView::new(PathId::root(), 1, "v", "x")]), Err(PlanError::RootIsApp));
    // `/a-b` sorts between `/a` and `/a/x`: the check must not rely on neighbours.
    assert_eq!(
        Apps::new(vec![app("/a", 1, "x"), app("/a-b", 1, "x"), app("/a/x", 1, "x")]),
        Err(PlanError::AppIsGroup { app: path("/a"), inner: path("/a/x") })
    );
    assert!(matches!(
        Apps::new(vec![app("/a", MAX_INSTANCES + 1, "x")]),
        Err(PlanError::TooManyInstances { instances, .. }) if instances == MAX_INSTANCES + 1
    ));
}

#[test]
fn app_sets_deserialize_through_validation() {
    let good = serde_json::to_string(&apps(vec![app("/a", 1, "x")])).expect("serialize");
    assert!(serde_json::from_str::<Apps>(&good).is_ok());
    let twice = format!("[{0},{0}]", serde_json::to_string(&app("/a", 1, "x")).expect("serialize"));
    assert!(serde_json::from_str::<Apps>(&twice).is_err());
    assert!(serde_json::from_str::<PathId>("\"relative\"").is_err());
    assert!(serde_json::from_str::<Fraction>("1000001").is_err());
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_app_is_started_with_zero_instances_then_scaled() {
    let plan = plan(&Apps::empty(), &apps(vec![app("/a", 3, "x")]));
    assert_eq!(shape(&plan), vec![step(&[(Start, "/a")]), step(&[(Scale, "/a")])]);
    assert!(matches!(&plan.steps()[1].actions[0], DeploymentAction::Scale { scale_to: 3, .. }));
}

#[test]
fn changes_map_to_the_actions_marathon_takes() {
    let before =
        apps(vec![app("/same", 2, "x"), app("/scaled", 2, "x"), app("/changed", 2, "x"), app("/zeroed", 2, "x")]);
    let mut version_only = app("/same", 2, "x");
    version_only.version = "2030-01-01T00:00:00.000Z".into();
    let after = apps(vec![version_only, app("/scaled", 5, "x"), app("/changed", 2, "y"), app("/zeroed", 0, "y")]);
    let plan = plan(&before, &after);
    assert_eq!(shape(&plan), vec![step(&[(Restart, "/changed"), (Scale, "/scaled"), (Scale, "/zeroed")])]);
    assert_eq!(
        plan.affected_apps().into_iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["/changed", "/scaled", "/zeroed"]
    );
}

#[test]
fn an_unchanged_set_needs_no_steps() {
    let set = apps(vec![app("/a", 2, "x")]);
    assert!(plan(&set, &set).is_empty());
}

#[test]
fn dependencies_are_started_first_and_independent_apps_share_a_step() {
    let target = apps(vec![
        app("/db", 1, "x"),
        depending(app("/api", 2, "x"), &["/db"]),
        depending(app("/web", 2, "x"), &["/api"]),
        app("/cache", 1, "x"),
    ]);
    assert_eq!(
        shape(&plan(&Apps::empty(), &target)),
        vec![
            step(&[(Start, "/api"), (Start, "/cache"), (Start, "/db"), (Start, "/web")]),
            step(&[(Scale, "/cache"), (Scale, "/db")]),
            step(&[(Scale, "/api")]),
            step(&[(Scale, "/web")]),
        ]
    );
}

#[test]
fn upgrades_follow_the_longest_chain_through_unchanged_apps() {
    // /api changes; /db does not, yet /api still waits a step for it (Marathon layers by the
    // whole graph); the empty first layer is dropped.
    let before = apps(vec![app("/db", 1, "x"), depending(app("/api", 2, "x"), &["/db"]), app("/solo", 1, "x")]);
    let after = apps(vec![app("/db", 1, "x"), depending(app("/api", 2, "y"), &["/db"]), app("/solo", 1, "y")]);
    assert_eq!(shape(&plan(&before, &after)), vec![step(&[(Restart, "/solo")]), step(&[(Restart, "/api")])]);
}

#[test]
fn a_dependency_on_a_group_means_every_app_under_it() {
    let target = apps(vec![
        app("/prod/db", 1, "x"),
        app("/prod/cache/redis", 1, "x"),
        depending(app("/web", 1, "x"), &["/prod"]),
    ]);
    let plan = plan(&Apps::empty(), &target);
    assert_eq!(
        shape(&plan)[1..],
        [step(&[(Scale, "/prod/cache/redis"), (Scale, "/prod/db")]), step(&[(Scale, "/web")])]
    );
}

#[test]
fn removed_apps_are_stopped_dependents_first_before_anything_else() {
    let before = apps(vec![
        app("/db", 1, "x"),
        depending(app("/api", 1, "x"), &["/db"]),
        depending(app("/web", 1, "x"), &["/api"]),
        app("/other", 1, "x"),
    ]);
    let after = apps(vec![app("/other", 1, "y"), app("/new", 1, "x")]);
    assert_eq!(
        shape(&plan(&before, &after)),
        vec![
            step(&[(Stop, "/web")]),
            step(&[(Stop, "/api")]),
            step(&[(Stop, "/db")]),
            step(&[(Start, "/new")]),
            step(&[(Scale, "/new"), (Restart, "/other")]),
        ]
    );
}

#[test]
fn a_dependency_on_nothing_is_an_error() {
    let target = apps(vec![depending(app("/api", 1, "x"), &["/db"])]);
    assert_eq!(
        DeploymentPlan::between(&Apps::empty(), &target, did("d"), "v"),
        Err(PlanError::MissingDependency { app: path("/api"), dependency: path("/db") })
    );
}

#[test]
fn a_dependency_cycle_is_an_error_naming_the_cycle() {
    let target = apps(vec![
        depending(app("/a", 1, "x"), &["/b"]),
        depending(app("/b", 1, "x"), &["/c"]),
        depending(app("/c", 1, "x"), &["/a"]),
        depending(app("/d", 1, "x"), &["/a"]),
    ]);
    let Err(PlanError::DependencyCycle(cycle)) = DeploymentPlan::between(&Apps::empty(), &target, did("d"), "v") else {
        panic!("expected a cycle");
    };
    let mut members: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    members.sort();
    assert_eq!(members, ["/a", "/b", "/c"]);
    let message = PlanError::DependencyCycle(cycle).to_string();
    assert!(message.starts_with("dependency cycle: /"), "{message}");
}

#[test]
fn depending_on_ones_own_group_is_a_cycle() {
    let target = apps(vec![depending(app("/g/a", 1, "x"), &["/g"]), app("/g/b", 1, "x")]);
    assert_eq!(
        DeploymentPlan::between(&Apps::empty(), &target, did("d"), "v"),
        Err(PlanError::DependencyCycle(vec![path("/g/a")]))
    );
}

#[test]
fn a_long_dependency_chain_does_not_recurse() {
    let chain: Vec<AppView> = (0..20_000)
        .map(|i| {
            let view = app(&format!("/a{i}"), 1, "x");
            if i == 0 { view } else { depending(view, &[&format!("/a{}", i - 1)]) }
        })
        .collect();
    let plan = plan(&Apps::empty(), &apps(chain));
    assert_eq!(plan.steps().len(), 20_001);
}

#[test]
fn kills_ride_on_the_scale_action() {
    let before = apps(vec![app("/a", 3, "x")]);
    let after = apps(vec![app("/a", 2, "x")]);
    let kills = BTreeMap::from([(path("/a"), ids(&["a.1"])), (path("/unrelated"), ids(&["u.1"]))]);
    let plan = DeploymentPlan::between_with_kills(&before, &after, &kills, did("d"), "v").expect("plan");
    assert_eq!(
        plan.steps()[0].actions,
        vec![DeploymentAction::Scale { app: path("/a"), scale_to: 2, sentenced: ids(&["a.1"]) }]
    );
}

#[test]
fn the_deployments_listing_has_marathons_shape() {
    let before = apps(vec![app("/foo", 1, "x")]);
    let after = apps(vec![app("/foo", 2, "x"), app("/bar", 1, "x")]);
    let plan = DeploymentPlan::between(&before, &after, did("97c136bf"), "2015-09-30T09:09:17.614Z").expect("plan");
    let readiness = BTreeMap::from([(
        path("/foo"),
        vec![ReadinessCheckResultView {
            name: "myReadyCheck".into(),
            task_id: "foo.instance-c9de6033".into(),
            ready: false,
            last_response: Some(HttpResponseView {
                status: 500,
                content_type: "application/json".into(),
                body: "{}".into(),
            }),
        }],
    )]);
    let view = serde_json::to_value(plan.info_view(2, &readiness)).expect("serialize");
    assert_eq!(
        view,
        json!({
            "id": "97c136bf",
            "version": "2015-09-30T09:09:17.614Z",
            "affectedApps": ["/bar", "/foo"],
            "affectedPods": [],
            "steps": [
                {"actions": [{"action": "StartApplication", "app": "/bar"}]},
                {"actions": [{"action": "ScaleApplication", "app": "/bar"}, {"action": "ScaleApplication", "app": "/foo"}]}
            ],
            "currentActions": [
                {"action": "ScaleApplication", "app": "/bar", "readinessCheckResults": []},
                {"action": "ScaleApplication", "app": "/foo", "readinessCheckResults": [{
                    "name": "myReadyCheck", "taskId": "foo.instance-c9de6033", "ready": false,
                    "lastResponse": {"status": 500, "contentType": "application/json", "body": "{}"}
                }]}
            ],
            "currentStep": 2,
            "totalSteps": 2
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Fractions and bounds
// ---------------------------------------------------------------------------------------------

#[test]
fn fractions_round_exactly() {
    let f = |v| Fraction::from_f64("f", v).expect("fraction");
    assert_eq!(f(0.56).ceil_of(100), 56);
    assert_eq!(f(0.7).ceil_of(3), 3);
    assert_eq!(f(0.5).ceil_of(3), 2);
    assert_eq!(f(0.5).floor_of(3), 1);
    assert_eq!(f(1.0).ceil_of(MAX_INSTANCES), MAX_INSTANCES);
    assert_eq!(f(0.0).ceil_of(7), 0);
    for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(matches!(Fraction::from_f64("minimumHealthCapacity", bad), Err(UpgradeError::InvalidFraction { .. })));
    }
}

#[test]
fn bounds_allow_one_over_capacity_only_when_min_meets_max() {
    let cases = [
        // (n, min health, over, available) -> (min healthy, max capacity)
        ((3, 1.0, 1.0, 3), (3, 6)),
        ((3, 0.0, 0.0, 3), (0, 3)),
        ((3, 1.0, 0.0, 3), (3, 4)),
        ((3, 1.0, 0.0, 2), (3, 3)),
        ((3, 1.0, 0.2, 3), (3, 4)),
        ((10, 1.0, 0.15, 10), (10, 11)),
        ((4, 0.5, 0.0, 4), (2, 4)),
        ((3, 0.7, 0.0, 3), (3, 4)),
    ];
    for ((n, min_health, over, available), (min, max)) in cases {
        let bounds = replace_spec(n, min_health, over).bounds(available);
        assert_eq!(
            (bounds.min_healthy, bounds.max_capacity),
            (min, max),
            "n={n} {min_health}/{over} available={available}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rolling replacement
// ---------------------------------------------------------------------------------------------

#[test]
fn one_one_starts_every_new_instance_beside_the_old() {
    let spec = replace_spec(3, 1.0, 1.0);
    let decision = replace_step(&spec, &[old_ok("o1"), old_ok("o2"), old_ok("o3")]).expect("step");
    assert_eq!(decision, Decision { start: 3, kill: vec![], done: false });
    // One new instance available: one old instance may go.
    let observed = [old_ok("o1"), old_ok("o2"), old_ok("o3"), new_ok("n1"), new_staged("n2"), new_staged("n3")];
    let decision = replace_step(&spec, &observed).expect("step");
    assert_eq!((decision.start, decision.kill.len(), decision.done), (0, 1, false));
}

#[test]
fn zero_zero_kills_first_then_starts() {
    let spec = replace_spec(3, 0.0, 0.0);
    let decision = replace_step(&spec, &[old_ok("o1"), old_ok("o2"), old_ok("o3")]).expect("step");
    assert_eq!((decision.start, decision.kill.len()), (0, 3));
    let dying = [killing(old_ok("o1")), killing(old_ok("o2")), killing(old_ok("o3"))];
    assert!(replace_step(&spec, &dying).expect("step").is_waiting());
    assert_eq!(replace_step(&spec, &dying[..1]).expect("step").start, 2);
    assert_eq!(replace_step(&spec, &[]).expect("step").start, 3);
}

#[test]
fn full_health_without_over_capacity_runs_one_instance_over() {
    let spec = replace_spec(2, 1.0, 0.0);
    let decision = replace_step(&spec, &[old_ok("o1"), old_ok("o2")]).expect("step");
    assert_eq!(decision, Decision { start: 1, kill: vec![], done: false });
    let decision = replace_step(&spec, &[old_ok("o1"), old_ok("o2"), new_ok("n1")]).expect("step");
    assert_eq!((decision.start, decision.kill.len()), (0, 1));
    let decision = replace_step(&spec, &[killing(old_ok("o1")), old_ok("o2"), new_ok("n1")]).expect("step");
    assert!(decision.is_waiting());
    let decision = replace_step(&spec, &[old_ok("o2"), new_ok("n1")]).expect("step");
    assert_eq!(decision.start, 1);
}

#[test]
fn half_health_scales_the_old_version_down_to_half_first() {
    let spec = replace_spec(4, 0.5, 0.0);
    let old: Vec<InstanceView> = (1..=4).map(|i| old_ok(&format!("o{i}"))).collect();
    let decision = replace_step(&spec, &old).expect("step");
    assert_eq!((decision.start, decision.kill.len()), (0, 2));
    let decision = replace_step(&spec, &old[2..]).expect("step");
    assert_eq!((decision.start, decision.kill.len()), (2, 0));
}

#[test]
fn unavailable_old_instances_go_first_and_free() {
    let spec = replace_spec(3, 1.0, 1.0);
    let sick = instance("o-sick", InstanceVersion::Old, InstanceState::Running, false, 0);
    let staged = instance("o-staged", InstanceVersion::Old, InstanceState::Staged, false, 0);
    let decision = replace_step(&spec, &[old_ok("o1"), sick, staged]).expect("step");
    assert_eq!(names(&decision.kill), ["o-staged", "o-sick"]);
    // Total 3 of 6: room for every new instance.
    assert_eq!(decision.start, 3);
}

#[test]
fn more_old_instances_than_wanted_are_scaled_down_first() {
    let spec = replace_spec(2, 1.0, 0.0);
    let old: Vec<InstanceView> = (1..=5).map(|i| old_ok(&format!("o{i}"))).collect();
    let decision = replace_step(&spec, &old).expect("step");
    assert_eq!((decision.start, decision.kill.len()), (0, 3));
}

#[test]
fn excess_new_instances_are_killed_unavailable_first() {
    let spec = replace_spec(2, 1.0, 1.0);
    let observed = [new_ok("n1"), new_ok("n2"), new_staged("n3")];
    let decision = replace_step(&spec, &observed).expect("step");
    assert_eq!(names(&decision.kill), ["n3"]);
    assert!(!decision.done);
}

#[test]
fn zero_instances_kills_everything() {
    let spec = replace_spec(0, 1.0, 1.0);
    let decision = replace_step(&spec, &[old_ok("o1"), new_ok("n1")]).expect("step");
    assert_eq!((decision.start, decision.kill.len(), decision.done), (0, 2, false));
    assert!(replace_step(&spec, &[]).expect("step").done);
}

#[test]
fn a_failed_new_instance_is_replaced_and_the_step_waits() {
    let spec = replace_spec(2, 1.0, 1.0);
    // n2 failed (gone from the observation): start another, not done.
    let decision = replace_step(&spec, &[new_ok("n1")]).expect("step");
    assert_eq!(decision, Decision { start: 1, kill: vec![], done: false });
    assert!(replace_step(&spec, &[new_ok("n1"), new_ok("n3")]).expect("step").done);
}

#[test]
fn new_instances_count_once_healthy_and_ready() {
    let mut spec = replace_spec(1, 1.0, 1.0);
    spec.checks = Checks { health: true, readiness: true };
    let mut fresh = new_ok("n1");
    fresh.ready = false;
    let decision = replace_step(&spec, &[old_ok("o1"), fresh.clone()]).expect("step");
    assert!(decision.is_waiting(), "{decision:?}");
    // Old instances are never readiness-checked.
    let mut old = old_ok("o1");
    old.ready = false;
    fresh.ready = true;
    let decision = replace_step(&spec, &[old, fresh]).expect("step");
    assert_eq!(names(&decision.kill), ["o1"]);
}

#[test]
fn without_health_checks_running_is_enough() {
    let mut spec = replace_spec(1, 1.0, 1.0);
    spec.checks = Checks::default();
    let unchecked = instance("n1", InstanceVersion::New, InstanceState::Running, false, 1);
    assert!(replace_step(&spec, &[unchecked]).expect("step").done);
}

#[test]
fn done_needs_every_other_instance_gone() {
    let spec = replace_spec(1, 1.0, 1.0);
    assert!(!replace_step(&spec, &[new_ok("n1"), killing(old_ok("o1"))]).expect("step").done);
    assert!(!replace_step(&spec, &[new_staged("n1")]).expect("step").done);
    assert!(replace_step(&spec, &[new_ok("n1")]).expect("step").done);
}

#[test]
fn a_duplicate_instance_is_an_error() {
    let spec = replace_spec(1, 1.0, 1.0);
    assert_eq!(replace_step(&spec, &[old_ok("x"), new_ok("x")]), Err(UpgradeError::DuplicateInstance(iid("x"))));
}

// ---------------------------------------------------------------------------------------------
// Scaling
// ---------------------------------------------------------------------------------------------

fn scale_spec(scale_to: u32, kill_selection: KillSelection) -> ScaleSpec {
    ScaleSpec { scale_to, checks: Checks { health: true, readiness: false }, kill_selection }
}

fn running(id: &str, staged_at_ms: u64) -> InstanceView {
    instance(id, InstanceVersion::New, InstanceState::Running, true, staged_at_ms)
}

#[test]
fn scaling_up_starts_the_missing() {
    let decision = scale_step(
        &scale_spec(5, KillSelection::YoungestFirst),
        &[running("a", 1), running("b", 2)],
        &ids(&[]),
        &ids(&["a", "b"]),
    )
    .expect("step");
    assert_eq!(decision, Decision { start: 3, kill: vec![], done: false });
}

#[test]
fn scaling_down_follows_the_kill_selection() {
    let observed = [running("old", 10), running("mid", 20), running("young", 30)];
    let cases =
        [(KillSelection::YoungestFirst, vec!["young", "mid"]), (KillSelection::OldestFirst, vec!["old", "mid"])];
    for (selection, expected) in cases {
        let decision = scale_step(&scale_spec(1, selection), &observed, &ids(&[]), &ids(&[])).expect("step");
        assert_eq!(names(&decision.kill), expected, "{selection:?}");
        assert_eq!(decision.start, 0);
    }
}

#[test]
fn scaling_down_prefers_staging_then_unhealthy_instances() {
    let staged = instance("staged", InstanceVersion::New, InstanceState::Staged, false, 1);
    let sick = instance("sick", InstanceVersion::New, InstanceState::Running, false, 2);
    let observed = [running("young", 99), sick, staged, running("older", 50)];
    let decision =
        scale_step(&scale_spec(1, KillSelection::YoungestFirst), &observed, &ids(&[]), &ids(&[])).expect("step");
    assert_eq!(names(&decision.kill), ["staged", "sick", "young"]);
}

#[test]
fn sentenced_instances_go_first_whatever_the_count() {
    let observed = [running("a", 1), running("b", 2), running("c", 3)];
    let decision =
        scale_step(&scale_spec(3, KillSelection::YoungestFirst), &observed, &ids(&["a"]), &ids(&["a", "b", "c"]))
            .expect("step");
    assert_eq!((names(&decision.kill), decision.start), (vec!["a"], 1));
    let decision = scale_step(&scale_spec(1, KillSelection::YoungestFirst), &observed, &ids(&["a", "gone"]), &ids(&[]))
        .expect("step");
    assert_eq!(names(&decision.kill), ["a", "c"]);
}

#[test]
fn scaling_is_done_once_started_instances_are_available_and_kills_ended() {
    let spec = scale_spec(2, KillSelection::YoungestFirst);
    let baseline = ids(&["a"]);
    let fresh = instance("b", InstanceVersion::New, InstanceState::Running, false, 5);
    assert!(scale_step(&spec, &[running("a", 1), fresh], &ids(&[]), &baseline).expect("step").is_waiting());
    // An instance that was already there need not be healthy (as Marathon's TaskStartActor).
    let sick_old = instance("a", InstanceVersion::New, InstanceState::Running, false, 1);
    assert!(scale_step(&spec, &[sick_old, running("b", 5)], &ids(&[]), &baseline).expect("step").done);
    let with_kill = [running("a", 1), running("b", 5), killing(running("c", 9))];
    assert!(scale_step(&spec, &with_kill, &ids(&[]), &baseline).expect("step").is_waiting());
}

#[test]
fn kill_and_scale_lowers_the_count_by_the_active_instances_killed() {
    let observed = [running("a", 1), running("b", 2), killing(running("c", 3))];
    let result = kill_and_scale(3, &observed, &ids(&["a", "c"])).expect("kill");
    assert_eq!(result, KillAndScale { instances: 2, sentenced: ids(&["a", "c"]) });
    assert_eq!(kill_and_scale(1, &observed, &ids(&["a", "b"])).expect("kill").instances, 0);
    assert_eq!(kill_and_scale(3, &observed, &ids(&["zzz"])), Err(UpgradeError::UnknownInstance(iid("zzz"))));
}

#[test]
fn kill_and_scale_feeds_a_scale_plan() {
    let observed = [running("a", 1), running("b", 2), running("c", 3)];
    let before = apps(vec![app("/svc", 3, "x")]);
    let result = kill_and_scale(3, &observed, &ids(&["b"])).expect("kill");
    let after = before.with(app("/svc", result.instances, "x")).expect("apps");
    let kills = BTreeMap::from([(path("/svc"), result.sentenced)]);
    let plan = DeploymentPlan::between_with_kills(&before, &after, &kills, did("d"), "v").expect("plan");
    let (run, _) = DeploymentRun::start(plan, "t0");
    let mut run = run;
    let observation =
        Observation { instances: BTreeMap::from([(path("/svc"), observed.to_vec())]), ..Default::default() };
    let report = run.observe(&observation, "t1").expect("observe");
    assert_eq!(names(&report.needs[0].decision.kill), ["b"]);
    assert_eq!(report.needs[0].decision.start, 0);
}

// ---------------------------------------------------------------------------------------------
// Locks, force, rollback
// ---------------------------------------------------------------------------------------------

fn running_plans() -> (DeploymentPlan, DeploymentPlan) {
    let base = apps(vec![app("/a", 1, "x"), app("/b", 1, "x"), app("/c", 1, "x")]);
    let on_a =
        DeploymentPlan::between(&base, &base.with(app("/a", 2, "x")).expect("apps"), did("dep-a"), "v").expect("plan");
    let on_b =
        DeploymentPlan::between(&base, &base.with(app("/b", 2, "x")).expect("apps"), did("dep-b"), "v").expect("plan");
    (on_a, on_b)
}

#[test]
fn deployments_on_other_apps_do_not_conflict() {
    let (on_a, on_b) = running_plans();
    let base = on_a.original().clone();
    let on_c =
        DeploymentPlan::between(&base, &base.with(app("/c", 3, "x")).expect("apps"), did("dep-c"), "v").expect("plan");
    assert!(conflicting([&on_a, &on_b], &on_c).is_empty());
    assert_eq!(admit([&on_a, &on_b], &on_c, false, 100), Ok(Admission::Start));
}

#[test]
fn a_locked_app_is_refused_without_force_and_freed_with_it() {
    let (on_a, on_b) = running_plans();
    let base = on_a.original().clone();
    let target = base.with(app("/a", 5, "y")).expect("apps").with(app("/b", 5, "x")).expect("apps");
    let both = DeploymentPlan::between(&base, &target, did("dep-ab"), "v").expect("plan");
    let ids_of = |plans: Vec<&DeploymentPlan>| plans.into_iter().map(|p| p.id().to_string()).collect::<Vec<_>>();
    assert_eq!(ids_of(conflicting([&on_a, &on_b], &both)), ["dep-a", "dep-b"]);
    assert_eq!(
        admit([&on_a, &on_b], &both, true, 100),
        Ok(Admission::CancelThenStart(vec![did("dep-a"), did("dep-b")]))
    );
    let Ok(Admission::Locked(body)) = admit([&on_a, &on_b], &both, false, 100) else {
        panic!("expected a lock");
    };
    assert_eq!(
        serde_json::to_string(&body).expect("serialize"),
        r#"{"message":"App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.","deployments":[{"id":"dep-a"},{"id":"dep-b"}]}"#
    );
}

#[test]
fn the_running_deployments_are_capped() {
    let (on_a, on_b) = running_plans();
    let base = on_a.original().clone();
    let on_c =
        DeploymentPlan::between(&base, &base.with(app("/c", 3, "x")).expect("apps"), did("dep-c"), "v").expect("plan");
    let refusal = admit([&on_a, &on_b], &on_c, true, 2);
    assert_eq!(refusal, Err(AdmissionError::TooManyRunningDeployments(2)));
    assert!(
        refusal.err().map(|e| e.to_string()).unwrap_or_default().starts_with("Max number (2) of running deployments")
    );
    assert_eq!(admit([&on_a], &on_a, true, 100), Err(AdmissionError::DuplicateId(did("dep-a"))));
}

#[test]
fn cancelling_with_force_just_cancels() {
    let (on_a, _) = running_plans();
    let outcome = cancel([&on_a], "dep-a", true, on_a.target(), did("rb"), "v2");
    assert_eq!(outcome, Ok(Cancellation::Cancelled(did("dep-a"))));
    let missing = cancel([&on_a], "nope", true, on_a.target(), did("rb"), "v2");
    assert_eq!(missing.err().map(|e| e.to_string()).as_deref(), Some("DeploymentPlan nope does not exist"));
}

#[test]
fn cancelling_without_force_rolls_back_only_this_deployments_changes() {
    let original = apps(vec![app("/a", 2, "x"), app("/gone", 1, "x"), app("/other", 1, "x")]);
    let target = apps(vec![app("/a", 2, "y"), app("/added", 1, "x"), app("/other", 1, "x")]);
    let deploying = DeploymentPlan::between(&original, &target, did("dep"), "v1").expect("plan");
    // Meanwhile another deployment scaled /other.
    let current = target.with(app("/other", 4, "x")).expect("apps");
    let Ok(Cancellation::RolledBack { cancelled, rollback }) =
        cancel([&deploying], "dep", false, &current, did("rb"), "v2")
    else {
        panic!("expected a rollback");
    };
    assert_eq!(cancelled, did("dep"));
    assert_eq!(rollback.id(), &did("rb"));
    assert_eq!(
        shape(&rollback),
        vec![step(&[(Stop, "/added")]), step(&[(Start, "/gone")]), step(&[(Restart, "/a"), (Scale, "/gone")])]
    );
    assert_eq!(rollback.target().get(&path("/other")).map(|a| a.instances), Some(4));
    assert_eq!(revert(&deploying, deploying.target()), Ok(original));
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// A tiny cluster: starts become staged, staged become running and healthy, kills end, one
/// tick each.
#[derive(Default)]
struct Cluster {
    instances: BTreeMap<PathId, Vec<InstanceView>>,
    next_id: u64,
    clock: u64,
}

impl Cluster {
    fn observation(&self, target: &Apps) -> Observation {
        let mut instances = self.instances.clone();
        for (app, list) in &mut instances {
            let target_fingerprint = target.get(app).map(|a| a.config_fingerprint.clone());
            for instance in list.iter_mut() {
                instance.version = if Some(instance_fingerprint(instance)) == target_fingerprint.as_deref() {
                    InstanceVersion::New
                } else {
                    InstanceVersion::Old
                };
            }
        }
        Observation { instances, readiness: BTreeMap::new() }
    }

    fn apply(&mut self, report: &RunReport, target: &Apps) {
        for need in &report.needs {
            let app = need.action.app().clone();
            let fingerprint = target.get(&app).map(|a| a.config_fingerprint.clone()).unwrap_or_default();
            let list = self.instances.entry(app.clone()).or_default();
            for victim in &need.decision.kill {
                if let Some(instance) = list.iter_mut().find(|i| &i.id == victim) {
                    instance.state = InstanceState::Killing;
                }
            }
            for _ in 0..need.decision.start {
                self.next_id += 1;
                let id = format!("{}#{}#{}", app.as_str().trim_start_matches('/'), fingerprint, self.next_id);
                list.push(instance(&id, InstanceVersion::New, InstanceState::Staged, false, self.clock));
            }
        }
    }

    fn tick(&mut self) {
        self.clock += 1;
        for list in self.instances.values_mut() {
            list.retain(|i| i.state != InstanceState::Killing);
            for instance in list.iter_mut() {
                if instance.state == InstanceState::Staged {
                    instance.state = InstanceState::Running;
                    instance.healthy = true;
                    instance.ready = true;
                }
            }
        }
    }
}

/// The fingerprint an instance was launched with, written into its id by [`Cluster`].
fn instance_fingerprint(instance: &InstanceView) -> &str {
    instance.id.as_str().split('#').nth(1).unwrap_or("")
}

fn event_types(events: &[DeploymentEvent]) -> Vec<&str> {
    events.iter().map(DeploymentEvent::event_type).collect()
}

#[test]
fn a_run_walks_its_steps_and_reports_each() {
    let before = apps(vec![app("/db", 1, "x")]);
    let after = apps(vec![app("/db", 1, "y"), depending(app("/api", 2, "x"), &["/db"])]);
    let plan = plan(&before, &after);
    assert_eq!(shape(&plan), vec![step(&[(Start, "/api")]), step(&[(Restart, "/db")]), step(&[(Scale, "/api")])]);

    let mut cluster = Cluster::default();
    cluster
        .instances
        .insert(path("/db"), vec![instance("db#x#0", InstanceVersion::Old, InstanceState::Running, true, 0)]);
    let (mut run, events) = DeploymentRun::start(plan, "t0");
    assert_eq!(event_types(&events), ["deployment_info"]);
    assert_eq!(run.info_view().current_step, 1);

    let mut all_events = Vec::new();
    for round in 0..20 {
        let report = run.observe(&cluster.observation(run.plan().target()), &format!("t{round}")).expect("observe");
        all_events.extend(report.events.clone());
        if report.state == RunState::Succeeded {
            break;
        }
        assert!(!report.needs.is_empty(), "a running step always names its actions");
        cluster.apply(&report, run.plan().target());
        cluster.tick();
    }
    assert_eq!(run.state(), RunState::Succeeded);
    assert_eq!(
        event_types(&all_events),
        [
            "deployment_step_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_success"
        ]
    );
    let db = &cluster.instances[&path("/db")];
    assert!(db.len() == 1 && instance_fingerprint(&db[0]) == "y", "{db:?}");
    assert_eq!(cluster.instances[&path("/api")].len(), 2);
}

#[test]
fn a_run_shows_the_current_step_and_its_readiness() {
    let target = apps(vec![app("/a", 1, "x")]);
    let (mut run, _) = DeploymentRun::start(plan(&Apps::empty(), &target), "t0");
    let result =
        ReadinessCheckResultView { name: "r".into(), task_id: "a.1".into(), ready: false, last_response: None };
    let observation =
        Observation { instances: BTreeMap::new(), readiness: BTreeMap::from([(path("/a"), vec![result.clone()])]) };
    let report = run.observe(&observation, "t1").expect("observe");
    assert_eq!(report.state, RunState::Running { step: 2 });
    assert_eq!(report.needs.len(), 1);
    assert_eq!(report.needs[0].decision.start, 1);
    let view = run.info_view();
    assert_eq!((view.current_step, view.total_steps), (2, 2));
    assert_eq!(view.current_actions[0].readiness_check_results, vec![result]);
    // The same observation again asks for the same thing: level-triggered.
    assert_eq!(run.observe(&observation, "t2").expect("observe").needs, report.needs);
}

#[test]
fn an_empty_plan_succeeds_at_once() {
    let set = apps(vec![app("/a", 1, "x")]);
    let (run, events) = DeploymentRun::start(plan(&set, &set), "t0");
    assert_eq!(event_types(&events), ["deployment_success"]);
    assert_eq!(run.state(), RunState::Succeeded);
}

#[test]
fn cancelling_and_failing_a_run_publish_marathons_events() {
    let target = apps(vec![app("/a", 1, "x")]);
    let (mut run, _) = DeploymentRun::start(plan(&Apps::empty(), &target), "t0");
    let events = run.cancel("t1");
    assert_eq!(event_types(&events), ["deployment_failed"]);
    assert_eq!(
        serde_json::to_value(&events[0]).expect("serialize"),
        json!({
            "id": "d1",
            "plan": {"id": "d1", "steps": [
                {"actions": [{"action": "StartApplication", "app": "/a"}]},
                {"actions": [{"action": "ScaleApplication", "app": "/a"}]}
            ], "version": "2024-01-02T00:00:00.000Z"},
            "eventType": "deployment_failed",
            "timestamp": "t1",
            "reason": "The upgrade has been cancelled"
        })
    );
    assert_eq!(run.state(), RunState::Failed(CANCELLED_REASON.into()));
    assert!(run.cancel("t2").is_empty(), "a finished run publishes nothing more");
    assert!(run.observe(&Observation::default(), "t3").expect("observe").needs.is_empty());

    let (mut run, _) = DeploymentRun::start(plan(&Apps::empty(), &target), "t0");
    assert_eq!(event_types(&run.fail("no offers", "t1")), ["deployment_step_failure", "deployment_failed"]);
    assert_eq!(run.state(), RunState::Failed("no offers".into()));
    assert_eq!(run.info_view().current_step, 1, "the view shows the step the run stopped on");
}

#[test]
fn step_events_have_marathons_shape() {
    let target = apps(vec![app("/a", 0, "x")]);
    let (mut run, events) = DeploymentRun::start(plan(&Apps::empty(), &target), "t0");
    assert_eq!(
        serde_json::to_value(&events[0]).expect("serialize"),
        json!({
            "plan": {"id": "d1", "steps": [
                {"actions": [{"action": "StartApplication", "app": "/a"}]},
                {"actions": [{"action": "ScaleApplication", "app": "/a"}]}
            ], "version": "2024-01-02T00:00:00.000Z"},
            "currentStep": {"actions": [{"action": "StartApplication", "app": "/a"}]},
            "eventType": "deployment_info",
            "timestamp": "t0"
        })
    );
    // Scaling to zero an app with no instances is done at once: both steps finish.
    let report = run.observe(&Observation::default(), "t1").expect("observe");
    assert_eq!(
        event_types(&report.events),
        ["deployment_step_success", "deployment_info", "deployment_step_success", "deployment_success"]
    );
    let success = serde_json::to_value(report.events.last().expect("event")).expect("serialize");
    assert_eq!(success["eventType"], "deployment_success");
    assert_eq!(success["id"], "d1");
}

#[test]
fn a_stop_kills_everything_and_waits_for_the_end() {
    let before = apps(vec![app("/a", 2, "x")]);
    let (mut run, _) = DeploymentRun::start(plan(&before, &Apps::empty()), "t0");
    let observation =
        |list: Vec<InstanceView>| Observation { instances: BTreeMap::from([(path("/a"), list)]), ..Default::default() };
    let report = run.observe(&observation(vec![running("a1", 1), killing(running("a2", 2))]), "t1").expect("observe");
    assert_eq!(names(&report.needs[0].decision.kill), ["a1"]);
    let report = run.observe(&observation(vec![killing(running("a1", 1))]), "t2").expect("observe");
    assert!(report.needs[0].decision.is_waiting());
    assert_eq!(run.observe(&observation(vec![]), "t3").expect("observe").state, RunState::Succeeded);
}

#[test]
fn a_malformed_observation_is_an_error() {
    let before = apps(vec![app("/a", 2, "x")]);
    let (mut run, _) = DeploymentRun::start(plan(&before, &Apps::empty()), "t0");
    let twice = Observation {
        instances: BTreeMap::from([(path("/a"), vec![running("x", 1), running("x", 2)])]),
        ..Default::default()
    };
    assert_eq!(run.observe(&twice, "t1"), Err(RunError::Instances(UpgradeError::DuplicateInstance(iid("x")))));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// One rolling replacement driven against a world that misbehaves for a while (slow starts,
/// failing and flapping new instances, slow kills, old instances turning unhealthy) and then
/// behaves.
struct ReplaceWorld {
    spec: ReplaceSpec,
    instances: Vec<InstanceView>,
    next_id: u64,
}

impl ReplaceWorld {
    fn new(spec: ReplaceSpec, old: &[bool]) -> Self {
        let instances = old
            .iter()
            .enumerate()
            .map(|(i, healthy)| {
                instance(&format!("old{i}"), InstanceVersion::Old, InstanceState::Running, *healthy, i as u64)
            })
            .collect();
        ReplaceWorld { spec, instances, next_id: 0 }
    }

    fn available(&self) -> u32 {
        self.instances.iter().filter(|i| self.spec.checks.is_available(i)).count() as u32
    }

    /// Decide, check the capacity rules against the decision, and carry it out.
    fn step(&mut self, round: u64) -> Result<Decision, TestCaseError> {
        let decision = replace_step(&self.spec, &self.instances).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let n = self.spec.instances;
        let min_healthy = (u64::from(n) * u64::from(self.spec.strategy.minimum_health_capacity.millionths()))
            .div_ceil(1_000_000) as u32;
        let limit =
            n + (u64::from(n) * u64::from(self.spec.strategy.maximum_over_capacity.millionths()) / 1_000_000) as u32;
        let over_one = u32::from(min_healthy == limit);

        let available_before = self.available();
        let killed: BTreeSet<&InstanceId> = decision.kill.iter().collect();
        prop_assert_eq!(killed.len(), decision.kill.len(), "a kill is listed once");
        for victim in &decision.kill {
            let found = self.instances.iter().find(|i| &i.id == victim);
            prop_assert!(found.is_some_and(|i| i.state != InstanceState::Killing), "kills only active instances");
        }
        let available_after =
            self.instances.iter().filter(|i| self.spec.checks.is_available(i) && !killed.contains(&i.id)).count()
                as u32;
        prop_assert!(
            available_after >= min_healthy.min(available_before),
            "kills keep {} available (had {}, left {})",
            min_healthy,
            available_before,
            available_after
        );
        let total = self.instances.len() as u32;
        if decision.start > 0 {
            prop_assert!(
                total + decision.start <= limit + over_one,
                "starts stay within capacity: {} + {} > {}",
                total,
                decision.start,
                limit + over_one
            );
            let new_active = self
                .instances
                .iter()
                .filter(|i| i.version == InstanceVersion::New && i.state != InstanceState::Killing)
                .count() as u32;
            prop_assert!(new_active + decision.start <= n, "never more than n new instances");
        }
        if decision.done {
            prop_assert!(decision.kill.is_empty() && decision.start == 0);
            prop_assert_eq!(total, n);
        }

        for instance in &mut self.instances {
            if killed.contains(&instance.id) {
                instance.state = InstanceState::Killing;
            }
        }
        for _ in 0..decision.start {
            self.next_id += 1;
            self.instances.push(instance(
                &format!("new{}", self.next_id),
                InstanceVersion::New,
                InstanceState::Staged,
                false,
                round,
            ));
        }
        Ok(decision)
    }

    /// Let the world move; `chaos` bits choose misbehaviour while `calm` is false.
    fn evolve(&mut self, chaos: &[u8], calm: bool) {
        let mut bits = chaos.iter().cycle();
        let mut next = || if calm { 0 } else { *bits.next().unwrap_or(&0) };
        self.instances.retain_mut(|instance| {
            let roll = next();
            match instance.state {
                InstanceState::Killing => roll % 3 == 1,
                InstanceState::Staged => {
                    if roll % 4 == 3 {
                        return false; // failed to launch
                    }
                    if roll % 4 != 1 {
                        instance.state = InstanceState::Running;
                        instance.healthy = roll % 5 != 2 || calm;
                        instance.ready = roll % 7 != 3 || calm;
                    }
                    true
                }
                InstanceState::Running => {
                    if roll % 11 == 5 && instance.version == InstanceVersion::New {
                        return false; // crashed
                    }
                    if calm {
                        instance.healthy = true;
                        instance.ready = true;
                    } else if roll % 6 == 4 {
                        instance.healthy = !instance.healthy;
                    }
                    true
                }
            }
        });
    }
}

fn fraction() -> impl Strategy<Value = Fraction> {
    prop_oneof![
        Just(Fraction::ZERO),
        Just(Fraction::ONE),
        (0u32..=1_000_000).prop_map(|m| Fraction::from_millionths(m).expect("in range")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn replacement_keeps_capacity_and_terminates(
        n in 0u32..8,
        min_health in fraction(),
        over in fraction(),
        health in any::<bool>(),
        readiness in any::<bool>(),
        old in proptest::collection::vec(any::<bool>(), 0..12),
        chaos in proptest::collection::vec(any::<u8>(), 1..64),
        chaos_rounds in 0u64..30,
    ) {
        let spec = ReplaceSpec {
            instances: n,
            strategy: UpgradeStrategy { minimum_health_capacity: min_health, maximum_over_capacity: over },
            checks: Checks { health, readiness },
            kill_selection: KillSelection::YoungestFirst,
        };
        let mut world = ReplaceWorld::new(spec, &old);
        let bound = chaos_rounds + 4 * (u64::from(n) + old.len() as u64) + 8;
        let mut finished = false;
        for round in 0..bound {
            let decision = world.step(round)?;
            if decision.done {
                finished = true;
                break;
            }
            let skew = (round as usize) % chaos.len();
            world.evolve(&chaos[skew..], round >= chaos_rounds);
        }
        prop_assert!(finished, "not done after {} rounds: {:?}", bound, world.instances);
        prop_assert!(world.instances.iter().all(|i| i.version == InstanceVersion::New && spec.checks.is_available(i)));
        prop_assert_eq!(world.instances.len() as u32, n);
    }

    #[test]
    fn scaling_reaches_the_target_and_kills_in_order(
        scale_to in 0u32..10,
        states in proptest::collection::vec((0u8..3, any::<bool>(), 0u64..100), 0..12),
        sentenced_mask in any::<u16>(),
        oldest_first in any::<bool>(),
    ) {
        let observed: Vec<InstanceView> = states
            .iter()
            .enumerate()
            .map(|(i, (state, healthy, staged))| {
                let state = [InstanceState::Staged, InstanceState::Running, InstanceState::Killing][usize::from(*state)];
                instance(&format!("i{i}"), InstanceVersion::New, state, *healthy, *staged)
            })
            .collect();
        let sentenced: BTreeSet<InstanceId> =
            observed.iter().enumerate().filter(|(i, _)| sentenced_mask & (1 << i) != 0).map(|(_, v)| v.id.clone()).collect();
        let selection = if oldest_first { KillSelection::OldestFirst } else { KillSelection::YoungestFirst };
        let spec = ScaleSpec { scale_to, checks: Checks { health: true, readiness: false }, kill_selection: selection };
        let decision = scale_step(&spec, &observed, &sentenced, &BTreeSet::new()).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let active: Vec<&InstanceView> = observed.iter().filter(|i| i.state != InstanceState::Killing).collect();
        let killed: BTreeSet<&InstanceId> = decision.kill.iter().collect();
        let named_active = active.iter().filter(|i| sentenced.contains(&i.id)).count();
        let kept = active.len() - killed.len();
        prop_assert_eq!(kept, (scale_to as usize).min(active.len() - named_active), "kills bring the count down to the target, or below it for named tasks");
        prop_assert_eq!(kept + decision.start as usize, scale_to as usize, "starts make up the rest");
        for instance in &active {
            if sentenced.contains(&instance.id) {
                prop_assert!(killed.contains(&instance.id), "sentenced {} survives", instance.id);
            }
        }
        // Every victim chosen for the count ranks before every survivor.
        let order = kill_order(&active.iter().copied().filter(|i| !sentenced.contains(&i.id)).collect::<Vec<_>>(), spec.checks, selection);
        let chosen: Vec<bool> = order.iter().map(|i| killed.contains(&i.id)).collect();
        prop_assert!(chosen.windows(2).all(|w| w[0] || !w[1]), "kills follow the kill order: {:?}", chosen);
    }

    #[test]
    fn plans_respect_dependencies_and_ignore_input_order(
        specs in proptest::collection::vec((0u8..4, 0u8..4, proptest::collection::vec(any::<proptest::sample::Index>(), 0..3)), 1..12),
        seed in any::<u64>(),
    ) {
        // App i may depend only on apps with a lower index: a DAG. Kind 0 = only before,
        // 1 = only after, 2 = rescaled, 3 = reconfigured.
        let mut before = Vec::new();
        let mut after = Vec::new();
        for (i, (kind, _, deps)) in specs.iter().enumerate() {
            let id = format!("/app{i}");
            let dependencies: Vec<String> = if i == 0 {
                Vec::new()
            } else {
                deps.iter().map(|d| format!("/app{}", d.index(i))).collect()
            };
            let deps_of = |view: AppView, keep: &dyn Fn(usize) -> bool| {
                let kept: Vec<&str> = dependencies
                    .iter()
                    .filter(|d| d.trim_start_matches("/app").parse::<usize>().is_ok_and(keep))
                    .map(String::as_str)
                    .collect();
                depending(view, &kept)
            };
            let in_before = |j: usize| specs.get(j).is_some_and(|(k, _, _)| *k != 1);
            let in_after = |j: usize| specs.get(j).is_some_and(|(k, _, _)| *k != 0);
            if *kind != 1 {
                before.push(deps_of(app(&id, 2, "x"), &in_before));
            }
            if *kind != 0 {
                let (instances, fingerprint) = match kind { 2 => (3, "x"), 3 => (2, "y"), _ => (2, "x") };
                after.push(deps_of(app(&id, instances, fingerprint), &in_after));
            }
        }
        let original = apps(before.clone());
        let target = apps(after.clone());
        let plan = DeploymentPlan::between(&original, &target, did("p"), "v").map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut step_of: BTreeMap<(ActionName, PathId), usize> = BTreeMap::new();
        for (index, step) in plan.steps().iter().enumerate() {
            prop_assert!(!step.actions.is_empty());
            for action in &step.actions {
                prop_assert!(step_of.insert((action.name(), action.app().clone()), index).is_none(), "one action per app and kind");
            }
        }
        for view in target.iter() {
            let Some(&mine) = step_of.get(&(ActionName::ScaleApplication, view.id.clone())).or(step_of.get(&(ActionName::RestartApplication, view.id.clone()))) else { continue };
            for dependency in &view.dependencies {
                for kind in [ActionName::ScaleApplication, ActionName::RestartApplication] {
                    if let Some(&theirs) = step_of.get(&(kind, dependency.clone())) {
                        prop_assert!(theirs < mine, "{} must change before {}", dependency, view.id);
                    }
                }
            }
        }
        for view in original.iter() {
            let Some(&mine) = step_of.get(&(ActionName::StopApplication, view.id.clone())) else { continue };
            for dependency in &view.dependencies {
                if let Some(&theirs) = step_of.get(&(ActionName::StopApplication, dependency.clone())) {
                    prop_assert!(mine < theirs, "{} must stop before its dependency {}", view.id, dependency);
                }
            }
        }
        // The same apps in another order make the same plan.
        let shuffle = |mut list: Vec<AppView>| {
            let mut state = seed | 1;
            for i in (1..list.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                list.swap(i, (state % (i as u64 + 1)) as usize);
            }
            list
        };
        let again = DeploymentPlan::between(&apps(shuffle(before)), &apps(shuffle(after)), did("p"), "v");
        prop_assert_eq!(again.as_ref().map(DeploymentPlan::steps), Ok(plan.steps()));
    }

    #[test]
    fn runs_converge_the_cluster_to_the_target(
        specs in proptest::collection::vec((0u8..5, 0u32..4, 0u32..4, 0u8..3, any::<bool>()), 1..6),
    ) {
        // Per app: kind (0 only before, 1 only after, 2 both same config, 3-4 both new config),
        // counts before and after, a strategy, and whether app i depends on app i-1.
        let strategies = [(1.0, 1.0), (0.0, 0.0), (0.5, 0.0)];
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut cluster = Cluster::default();
        for (i, (kind, count_before, count_after, strategy, chained)) in specs.iter().enumerate() {
            let id = format!("/app{i}");
            let (min_health, over) = strategies[usize::from(*strategy)];
            let make = |instances: u32, fingerprint: &str, present: &dyn Fn(u8) -> bool| {
                let mut view = app(&id, instances, fingerprint);
                view.upgrade_strategy = UpgradeStrategy::new(min_health, over).expect("strategy");
                view.has_health_checks = true;
                let previous = i.checked_sub(1).and_then(|j| specs.get(j));
                if *chained && previous.is_some_and(|(k, ..)| present(*k)) {
                    view = depending(view, &[&format!("/app{}", i - 1)]);
                }
                view
            };
            if *kind != 1 {
                before.push(make(*count_before, "x", &|k| k != 1));
                let list = (0..*count_before)
                    .map(|n| instance(&format!("app{i}#x#old{n}"), InstanceVersion::Old, InstanceState::Running, true, 0))
                    .collect();
                cluster.instances.insert(path(&id), list);
            }
            if *kind != 0 {
                let fingerprint = if *kind >= 3 { "y" } else { "x" };
                after.push(make(*count_after, fingerprint, &|k| k != 0));
            }
        }
        let target = apps(after);
        let plan = DeploymentPlan::between(&apps(before), &target, did("p"), "v").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let total_steps = plan.steps().len();
        let (mut run, mut events) = DeploymentRun::start(plan, "t0");
        for round in 0..200 {
            let report = run.observe(&cluster.observation(&target), &format!("t{round}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            events.extend(report.events.clone());
            if !matches!(report.state, RunState::Running { .. }) {
                break;
            }
            cluster.apply(&report, &target);
            cluster.tick();
        }
        prop_assert_eq!(run.state(), RunState::Succeeded);
        let count = |kind: &str| event_types(&events).iter().filter(|t| **t == kind).count();
        prop_assert_eq!(count("deployment_info"), total_steps);
        prop_assert_eq!(count("deployment_step_success"), total_steps);
        prop_assert_eq!(count("deployment_success"), 1);
        for (app_id, list) in &cluster.instances {
            match target.get(app_id) {
                Some(view) => {
                    prop_assert_eq!(list.len() as u32, view.instances, "{} count", app_id);
                    prop_assert!(list.iter().all(|i| instance_fingerprint(i) == view.config_fingerprint), "{} runs its target config", app_id);
                }
                None => prop_assert!(list.is_empty(), "{} was stopped", app_id),
            }
        }
    }
}

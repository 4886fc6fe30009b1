//! Tests of the Marathon cores: constraints (parsing and every operator), the launch backoff,
//! offer matching with its rejection reasons and counts, the `/v2/queue` view, and property
//! tests over random snapshots (determinism, no over-commit, constraints kept, caps kept).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::backoff::{BackoffError, BackoffStrategy, ConfigRef, InstanceEvent, LaunchDelays, QueueDelay, queue_delay};
use super::constraints::{AgentFacts, AttributeValue, Constraint, ConstraintError, Field, Rule, format_scalar};
use super::placement::{
    Demand, GpuSchedulingBehavior, HostPort, InstanceResources, LaunchAttemptStats, Outcome, PlacementError,
    PlacementOffer, PlacementPlan, PlacementSnapshot, PortRequest, Reason, declined_offer_steps, iso8601_millis, place,
};
use crate::mesos::core::{Ranges, Resources, RoleResources, TaskState, UNRESERVED, parse_resources};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn constraint(parts: &[&str]) -> Constraint {
    match Constraint::parse(&strings(parts)) {
        Ok(c) => c,
        Err(e) => panic!("{parts:?} should parse: {e}"),
    }
}

fn host(name: &str) -> AgentFacts {
    AgentFacts::new(name)
}

fn rack(host_name: &str, rack: &str) -> AgentFacts {
    AgentFacts::new(host_name).with_attribute("rack", rack)
}

fn resources(text: &str) -> RoleResources {
    match parse_resources(text) {
        Ok(r) => r,
        Err(e) => panic!("`{text}` should parse: {e}"),
    }
}

fn offer(id: &str, agent: AgentFacts, text: &str) -> PlacementOffer {
    PlacementOffer {
        id: id.to_owned(),
        agent_id: format!("agent-{}", agent.hostname),
        role: UNRESERVED.to_owned(),
        agent,
        resources: resources(text),
    }
}

fn demand(id: &str, to_launch: u32, cpus: f64, mem: f64) -> Demand {
    Demand {
        run_spec_id: id.to_owned(),
        version: "2024-01-01T00:00:00.000Z".to_owned(),
        role: UNRESERVED.to_owned(),
        instances: to_launch,
        to_launch,
        resources: InstanceResources::new(cpus, mem, 0.0, 0),
        ports: Vec::new(),
        constraints: Vec::new(),
        accepted_resource_roles: BTreeSet::new(),
        placed: Vec::new(),
        delay_until_ms: None,
    }
}

fn snapshot(offers: Vec<PlacementOffer>, demands: Vec<Demand>) -> PlacementSnapshot {
    PlacementSnapshot::new(offers, demands)
}

fn run(snapshot: &PlacementSnapshot) -> PlacementPlan {
    match place(snapshot, 1_000, 7) {
        Ok(plan) => plan,
        Err(e) => panic!("placement failed: {e}"),
    }
}

fn outcomes(plan: &PlacementPlan, demand: usize) -> Vec<(String, Outcome)> {
    plan.demands[demand].attempts.iter().map(|a| (a.offer_id.clone(), a.outcome.clone())).collect()
}

fn rejected(reasons: &[Reason]) -> Outcome {
    Outcome::Rejected(reasons.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Constraints: parsing
// ---------------------------------------------------------------------------------------------

#[test]
fn constraint_parse_errors_are_precise() {
    let cases: Vec<(Vec<&str>, ConstraintError)> = vec![
        (vec!["hostname"], ConstraintError::Shape(1)),
        (vec!["hostname", "UNIQUE", "a", "b"], ConstraintError::Shape(4)),
        (vec!["", "UNIQUE"], ConstraintError::MissingField),
        (vec!["hostname", "SPREAD"], ConstraintError::UnknownOperator("SPREAD".into())),
        (vec!["hostname", "UNIQUE", ""], ConstraintError::UniqueTakesNoValue),
        (vec!["rack", "GROUP_BY", "three"], ConstraintError::GroupByNotInteger("three".into())),
        (vec!["rack", "MAX_PER"], ConstraintError::MaxPerNotInteger(None)),
        (vec!["rack", "MAX_PER", "2.5"], ConstraintError::MaxPerNotInteger(Some("2.5".into()))),
        (vec!["rack", "LIKE"], ConstraintError::MissingRegex),
        (vec!["rack", "UNLIKE", ""], ConstraintError::MissingRegex),
        (vec!["rack", "IS"], ConstraintError::IsMissingValue),
        (vec!["rack", "IS", "rack 1"], ConstraintError::IsNotText("rack 1".into())),
        (vec!["rack", "IS", "[1-2]"], ConstraintError::IsNotText("[1-2]".into())),
    ];
    for (parts, expected) in cases {
        assert_eq!(Constraint::parse(&strings(&parts)), Err(expected), "{parts:?}");
    }
    let bad_regex = Constraint::parse(&strings(&["rack", "LIKE", "rack-[1-"]));
    assert!(
        matches!(bad_regex, Err(ConstraintError::BadRegex { ref pattern, .. }) if pattern == "rack-[1-"),
        "{bad_regex:?}"
    );
    // Java-only syntax is refused when parsed, never silently mismatched later.
    assert!(matches!(Constraint::parse(&strings(&["rack", "LIKE", "(?<=a)b"])), Err(ConstraintError::BadRegex { .. })));
    // A pathological pattern is refused by the size limit instead of being built.
    assert!(matches!(
        Constraint::parse(&strings(&["rack", "LIKE", "((((a{100}){100}){100}){100})"])),
        Err(ConstraintError::BadRegex { .. })
    ));
}

#[test]
fn constraint_parse_accepts_every_operator() {
    assert_eq!(constraint(&["hostname", "UNIQUE"]).rule(), &Rule::Unique);
    assert_eq!(constraint(&["hostname", "unique"]).rule(), &Rule::Unique, "operators are case-insensitive");
    assert_eq!(constraint(&["rack", "CLUSTER", "r1"]).rule(), &Rule::Cluster(Some("r1".into())));
    assert_eq!(constraint(&["rack", "CLUSTER"]).rule(), &Rule::Cluster(None));
    assert_eq!(constraint(&["rack", "CLUSTER", ""]).rule(), &Rule::Cluster(None));
    assert_eq!(constraint(&["rack", "GROUP_BY"]).rule(), &Rule::GroupBy(None));
    assert_eq!(constraint(&["rack", "GROUP_BY", "3"]).rule(), &Rule::GroupBy(Some(3)));
    assert_eq!(constraint(&["rack", "GROUP_BY", "0"]).rule(), &Rule::GroupBy(None));
    assert_eq!(constraint(&["rack", "GROUP_BY", "-2"]).rule(), &Rule::GroupBy(None));
    assert_eq!(constraint(&["rack", "MAX_PER", "2"]).rule(), &Rule::MaxPer(2));
    assert_eq!(constraint(&["rack", "IS", "rack-1"]).rule(), &Rule::Is("rack-1".into()));
    assert_eq!(constraint(&["level", "IS", "0.80"]).rule(), &Rule::Is("0.8".into()));
    assert!(matches!(constraint(&["rack", "LIKE", "rack-[1-3]"]).rule(), Rule::Like(r) if r.pattern() == "rack-[1-3]"));
    assert_eq!(constraint(&["hostname", "UNIQUE"]).field(), &Field::Hostname);
    assert_eq!(constraint(&["@hostname", "UNIQUE"]).field(), &Field::Hostname);
    assert_eq!(constraint(&["@region", "UNIQUE"]).field(), &Field::Region);
    assert_eq!(constraint(&["@zone", "UNIQUE"]).field(), &Field::Zone);
    assert_eq!(constraint(&["rack", "UNIQUE"]).field(), &Field::Attribute("rack".into()));
}

#[test]
fn constraint_keeps_its_written_form() {
    let c = constraint(&["hostname", "like", "srv2.*"]);
    assert_eq!(c.as_written(), strings(&["hostname", "like", "srv2.*"]).as_slice());
    assert_eq!(c.to_string(), r#"["hostname","like","srv2.*"]"#);
    let all = Constraint::parse_all(&[strings(&["hostname", "UNIQUE"]), strings(&["rack", "MAX_PER", "x"])]);
    assert_eq!(all, Err((1, ConstraintError::MaxPerNotInteger(Some("x".into())))));
}

// ---------------------------------------------------------------------------------------------
// Constraints: attribute values
// ---------------------------------------------------------------------------------------------

#[test]
fn attributes_read_and_format_as_marathon_compares_them() {
    let cases = [
        ("rack-1", "rack-1"),
        ("0.8", "0.8"),
        ("0.80", "0.8"),
        ("1", "1"),
        ("1.0", "1"),
        ("1.0005", "1"), // the double is just below the half: down
        ("1.00051", "1.001"),
        ("1.1005", "1.101"), // the double is just above the half: up
        ("1e3", "1000"),
        ("[10-20, 1-5]", "[1-5,10-20]"),
        ("[1-2,3-4]", "[1-4]"), // coalesced, as Mesos stores ranges
        ("{b,a,c}", "{a,b,c}"),
        ("[a-b]", "[a-b]"), // not ranges Mesos accepts: text
        ("inf", "inf"),
        ("nan", "nan"),
        ("a b", "ab"), // Mesos drops spaces
    ];
    for (text, expected) in cases {
        assert_eq!(AttributeValue::parse(text).constraint_text(), expected, "{text}");
    }
    assert_eq!(AttributeValue::parse("r1"), AttributeValue::Text("r1".into()));
    assert_eq!(AttributeValue::parse("2.5"), AttributeValue::Scalar(2.5));
    assert_eq!(AttributeValue::parse("[1-5]"), AttributeValue::Ranges(Ranges::single(1, 5)));
    assert_eq!(AttributeValue::parse("{x,y}"), AttributeValue::Set(vec!["x".into(), "y".into()]));
    // Ties on exact binary values round to even, as Java's HALF_EVEN does.
    assert_eq!(format_scalar(0.0625), "0.062");
    assert_eq!(format_scalar(0.1875), "0.188");
}

#[test]
fn facts_from_agent_attribute_texts() {
    let texts = BTreeMap::from([("rack".to_owned(), "r1".to_owned()), ("level".to_owned(), "2.50".to_owned())]);
    let facts = AgentFacts::from_attribute_texts("h1", &texts);
    assert_eq!(Field::from_name("rack").read(&facts), Some("r1".into()));
    assert_eq!(Field::from_name("level").read(&facts), Some("2.5".into()));
    assert_eq!(Field::from_name("missing").read(&facts), None);
    assert_eq!(Field::Region.read(&facts), None);
    let domain = facts.with_domain("eu", "eu-1");
    assert_eq!(Field::Region.read(&domain), Some("eu".into()));
    assert_eq!(Field::Zone.read(&domain), Some("eu-1".into()));
}

// ---------------------------------------------------------------------------------------------
// Constraints: operators
// ---------------------------------------------------------------------------------------------

#[test]
fn unique_refuses_a_value_already_used() {
    let unique_host = constraint(&["hostname", "UNIQUE"]);
    assert!(unique_host.allows(&host("a"), &[], 3));
    assert!(unique_host.allows(&host("b"), &[host("a")], 3));
    assert!(!unique_host.allows(&host("a"), &[host("a")], 3));

    let unique_rack = constraint(&["rack", "UNIQUE"]);
    assert!(unique_rack.allows(&rack("h3", "r2"), &[rack("h1", "r1")], 3));
    assert!(!unique_rack.allows(&rack("h3", "r1"), &[rack("h1", "r1")], 3));
    // An instance on an agent without the attribute collides with nobody...
    assert!(unique_rack.allows(&rack("h3", "r1"), &[host("h1")], 3));
    // ...and an agent without it is refused, even for the first instance.
    assert!(!unique_rack.allows(&host("h4"), &[], 3));

    let unique_region = constraint(&["@region", "UNIQUE"]);
    let eu = host("h1").with_domain("eu", "eu-1");
    let us = host("h2").with_domain("us", "us-1");
    assert!(!unique_region.allows(&host("h3").with_domain("eu", "eu-2"), std::slice::from_ref(&eu), 2));
    assert!(unique_region.allows(&us, &[eu], 2));
}

#[test]
fn cluster_with_and_without_a_value() {
    let on_r1 = constraint(&["rack", "CLUSTER", "r1"]);
    assert!(on_r1.allows(&rack("h1", "r1"), &[], 3));
    assert!(!on_r1.allows(&rack("h1", "r2"), &[], 3));
    assert!(!on_r1.allows(&host("h1"), &[], 3));

    let together = constraint(&["rack", "CLUSTER"]);
    assert!(together.allows(&rack("h1", "r2"), &[], 3), "the first instance chooses");
    assert!(together.allows(&rack("h2", "r2"), &[rack("h1", "r2")], 3));
    assert!(!together.allows(&rack("h2", "r1"), &[rack("h1", "r2")], 3));

    let same_host = constraint(&["hostname", "CLUSTER"]);
    assert!(!same_host.allows(&host("b"), &[host("a")], 3));
    assert!(same_host.allows(&host("a"), &[host("a")], 3));

    // CLUSTER compares text: a scalar attribute formats without the trailing zero.
    let jdk = constraint(&["jdk", "CLUSTER", "7.0"]);
    assert!(!jdk.allows(&host("h").with_attribute("jdk", "7.0"), &[], 1));
    assert!(constraint(&["jdk", "CLUSTER", "7"]).allows(&host("h").with_attribute("jdk", "7.0"), &[], 1));
}

#[test]
fn like_and_unlike_match_the_whole_value() {
    let like = constraint(&["rack", "LIKE", "rack-[1-3]"]);
    let unlike = constraint(&["rack", "UNLIKE", "rack-[1-3]"]);
    let table = [("rack-1", true), ("rack-3", true), ("rack-4", false), ("xrack-1", false), ("rack-12", false)];
    for (value, matches) in table {
        let agent = rack("h", value);
        assert_eq!(like.allows(&agent, &[], 1), matches, "LIKE {value}");
        assert_eq!(unlike.allows(&agent, &[], 1), !matches, "UNLIKE {value}");
    }
    // Only UNLIKE accepts an agent without the field.
    assert!(!like.allows(&host("h"), &[], 1));
    assert!(unlike.allows(&host("h"), &[], 1));
    // Ranges and sets are matched by their formatted text.
    assert!(constraint(&["jdk", "LIKE", r"\[6-7\]"]).allows(&host("h").with_attribute("jdk", "[6-7]"), &[], 1));
    assert!(constraint(&["gpu", "LIKE", r"\{0,1\}"]).allows(&host("h").with_attribute("gpu", "{1,0}"), &[], 1));
    assert!(constraint(&["hostname", "LIKE", "srv2.*"]).allows(&host("srv2.example.com"), &[], 1));
}

#[test]
fn max_per_counts_instances_per_value() {
    // Marathon's HostnameMaxPerConstraints sequence.
    let max2 = constraint(&["hostname", "MAX_PER", "2"]);
    let mut placed = Vec::new();
    assert!(max2.allows(&host("host1"), &placed, 4));
    placed.push(host("host1"));
    assert!(max2.allows(&host("host1"), &placed, 4));
    placed.push(host("host1"));
    assert!(max2.allows(&host("host2"), &placed, 4));
    placed.push(host("host2"));
    assert!(!max2.allows(&host("host1"), &placed, 4));
    assert!(max2.allows(&host("host3"), &placed, 4));
    // Scalars group by their formatted value: 1.0 and 1 are the same rack.
    let racks = constraint(&["rack", "MAX_PER", "1"]);
    let placed = [host("a").with_attribute("rack", "1.0")];
    assert!(!racks.allows(&host("b").with_attribute("rack", "1"), &placed, 2));
    assert!(racks.allows(&host("b").with_attribute("rack", "2"), &placed, 2));
}

#[test]
fn group_by_with_a_count_divides_the_target() {
    // Marathon 1.10's RackGroupedByConstraints, with a target of 5 instances.
    let r = |n: u32| rack(&format!("h{n}"), &format!("rack-{n}"));
    let by2 = constraint(&["rack", "GROUP_BY", "2"]);
    let by4 = constraint(&["rack", "GROUP_BY", "4"]);
    assert!(by2.allows(&r(1), &[], 5), "first placement");
    assert!(by2.allows(&r(1), &[r(1), r(1)], 5), "a group may take the remainder");
    assert!(by4.allows(&r(1), &[r(1)], 5));
    assert!(!by2.allows(&r(1), &[r(1), r(1), r(1)], 5), "one extra at most");
    assert!(!by4.allows(&r(1), &[r(1), r(1)], 5));
    assert!(by2.allows(&r(2), &[r(1)], 5), "second group");
    assert!(!by4.allows(&r(2), &[r(1), r(1), r(2)], 5), "the remainder is used up");
    assert!(by2.allows(&r(2), &[r(1), r(1), r(1), r(2)], 5), "final placement");
    assert!(!by2.allows(&r(3), &[r(1), r(2)], 5), "no third group when two are wanted");
    assert!(!by2.allows(&host("h"), &[], 5), "agents without the attribute are refused");
    // GROUP_BY 3 on hostnames.
    let by3 = constraint(&["hostname", "GROUP_BY", "3"]);
    assert!(by3.allows(&host("a"), &[], 5));
    assert!(by3.allows(&host("b"), &[host("a")], 5));
    assert!(by3.allows(&host("c"), &[host("a"), host("b")], 5));
    assert!(by3.allows(&host("a"), &[host("a")], 5));
    assert!(!by3.allows(&host("d"), &[host("a"), host("b"), host("c")], 5));
}

#[test]
fn group_by_without_a_count_spreads_evenly_over_values_seen() {
    let spread = constraint(&["rack", "GROUP_BY"]);
    let r = |n: u32| rack(&format!("h{n}"), &format!("rack-{n}"));
    assert!(spread.allows(&r(1), &[], 9));
    assert!(spread.allows(&r(1), &[r(1)], 9), "the only value seen is also the least used");
    assert!(spread.allows(&r(2), &[r(1)], 9), "a new value is always welcome");
    assert!(spread.allows(&r(1), &[r(1), r(2)], 9));
    assert!(!spread.allows(&r(1), &[r(1), r(1), r(2)], 9), "rack-1 holds more than the least used");
    assert!(spread.allows(&r(2), &[r(1), r(1), r(2)], 9));
    assert!(spread.allows(&r(3), &[r(1), r(1), r(2)], 9));
    assert!(!spread.allows(&host("h9"), &[r(1)], 9), "agents without the attribute are refused");
}

#[test]
fn is_compares_exactly_with_scalars_rounded() {
    assert!(constraint(&["hostname", "IS", "righthost.com"]).allows(&host("righthost.com"), &[], 1));
    assert!(!constraint(&["hostname", "IS", "righthost.com"]).allows(&host("wronghost.com"), &[], 1));
    let level = |v: &str| host("h").with_attribute("number", v);
    let table = [
        ("1.0", "1", true),
        ("1", "1.0", true),
        ("1.0", "1.0001", true),
        ("1.0", "1.0005", true),
        ("1.0", "1.00051", false),
        ("1.0", "1.001", false),
        ("0.8", "0.80", true),
        ("0.8", "0.8001", true),
    ];
    for (attribute, value, matches) in table {
        assert_eq!(
            constraint(&["number", "IS", value]).allows(&level(attribute), &[], 1),
            matches,
            "{attribute} IS {value}"
        );
    }
    assert!(!constraint(&["number", "IS", "1"]).allows(&host("h"), &[], 1));
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

fn strategy(backoff: u64, factor: f64, max: u64) -> BackoffStrategy {
    match BackoffStrategy::new(backoff, factor, max) {
        Ok(s) => s,
        Err(e) => panic!("strategy: {e}"),
    }
}

#[test]
fn backoff_grows_by_the_factor_from_each_failure_up_to_the_cap() {
    let app = ConfigRef::new("/app", "v1");
    let s = strategy(1, 2.0, 10);
    let mut delays = LaunchDelays::new();
    assert!(delays.launch_allowed(&app, 0));
    let expected = [(1_000, 2_000), (2_000, 4_000), (3_000, 7_000), (4_000, 12_000), (5_000, 15_000), (6_000, 16_000)];
    for (now, deadline) in expected {
        assert_eq!(delays.on_failure(&app, &s, now), deadline, "failure at {now}");
    }
    assert!(!delays.launch_allowed(&app, 15_999));
    assert!(delays.launch_allowed(&app, 16_000));
}

#[test]
fn backoff_uses_marathon_defaults_and_truncates_in_nanoseconds() {
    let app = ConfigRef::new("/app", "v1");
    let s = BackoffStrategy::default();
    let mut delays = LaunchDelays::new();
    assert_eq!(delays.on_failure(&app, &s, 0), 1_000);
    assert_eq!(delays.on_failure(&app, &s, 0), 1_150);
    assert_eq!(delays.on_failure(&app, &s, 0), 1_323, "1.3225 s, rounded up to the millisecond");
    let delay = delays.current(&app, 0).map(|d| d.delay_ns);
    assert_eq!(delay, Some(1_322_500_000));
}

#[test]
fn backoff_progress_restarts_the_delay_without_growing_it() {
    let app = ConfigRef::new("/app", "v1");
    let s = strategy(10, 2.0, 300);
    let mut delays = LaunchDelays::new();
    assert_eq!(delays.on_progress(&app, 0), None, "no delay, nothing to restart");
    delays.on_failure(&app, &s, 1_000);
    assert_eq!(delays.on_event(&app, &s, InstanceEvent::Progressed, 50_000), Some(60_000));
    assert_eq!(delays.current(&app, 50_000).map(|d| d.delay_ns), Some(10_000_000_000));
    assert_eq!(delays.on_event(&app, &s, InstanceEvent::Failed, 51_000), Some(71_000), "grows from the kept delay");
}

#[test]
fn backoff_is_forgotten_after_the_maximum_delay_without_failures() {
    let app = ConfigRef::new("/app", "v1");
    let s = strategy(10, 2.0, 60);
    let mut delays = LaunchDelays::new();
    delays.on_failure(&app, &s, 0);
    delays.on_failure(&app, &s, 0);
    delays.on_progress(&app, 5_000); // the instance runs from 5 s on
    assert!(delays.current(&app, 65_000).is_some(), "exactly the maximum: still kept");
    assert!(delays.current(&app, 65_001).is_none(), "past the maximum since it started: forgotten");
    assert_eq!(delays.on_failure(&app, &s, 70_000), 80_000, "a new failure starts again from backoffSeconds");
    assert_eq!(delays.clean_up_overdue(70_000), Vec::<ConfigRef>::new());
    assert_eq!(delays.clean_up_overdue(130_001), vec![app.clone()]);
    assert!(delays.current(&app, 0).is_none(), "the entry itself is gone");
}

#[test]
fn backoff_is_per_configuration_and_resets() {
    let v1 = ConfigRef::new("/app", "v1");
    let v2 = ConfigRef::new("/app", "v2");
    let s = strategy(10, 2.0, 300);
    let mut delays = LaunchDelays::new();
    delays.on_failure(&v1, &s, 0);
    assert!(!delays.launch_allowed(&v1, 1_000));
    assert!(delays.launch_allowed(&v2, 1_000), "a new configuration has no delay");
    assert!(delays.reset(&v1, 1_000));
    assert!(!delays.reset(&v1, 1_000), "nothing left to reset");
    assert!(delays.launch_allowed(&v1, 1_000));
    delays.on_failure(&v1, &s, 0);
    assert_eq!(delays.on_event(&v1, &s, InstanceEvent::AgentDraining, 1_000), None);
    assert!(delays.launch_allowed(&v1, 1_000), "draining resets the delay");
    delays.on_failure(&v1, &s, 0);
    delays.on_failure(&v2, &s, 0);
    delays.on_failure(&ConfigRef::new("/other", "v1"), &s, 0);
    assert_eq!(delays.forget_run_spec("/app", 1_000), 2);
    assert!(!delays.launch_allowed(&ConfigRef::new("/other", "v1"), 1_000));
}

#[test]
fn backoff_events_follow_marathon_conditions() {
    let failed = [
        TaskState::Failed,
        TaskState::Error,
        TaskState::Dropped,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Finished,
    ];
    let progressed = [TaskState::Staging, TaskState::Starting, TaskState::Running];
    for state in TaskState::ALL {
        let expected = if failed.contains(&state) {
            Some(InstanceEvent::Failed)
        } else if progressed.contains(&state) {
            Some(InstanceEvent::Progressed)
        } else {
            None
        };
        assert_eq!(InstanceEvent::from_task_state(state), expected, "{state:?}");
    }
}

#[test]
fn backoff_strategy_is_validated() {
    assert_eq!(BackoffStrategy::new(1, 0.5, 300), Err(BackoffError::Factor(0.5)));
    assert!(matches!(BackoffStrategy::new(1, f64::NAN, 300), Err(BackoffError::Factor(_))));
    assert!(matches!(BackoffStrategy::new(1, f64::INFINITY, 300), Err(BackoffError::Factor(_))));
    assert!(matches!(
        BackoffStrategy::new(u64::MAX, 1.15, 300),
        Err(BackoffError::TooLong { field: "backoffSeconds", .. })
    ));
    assert!(matches!(
        BackoffStrategy::new(1, 1.15, u64::MAX),
        Err(BackoffError::TooLong { field: "maxLaunchDelaySeconds", .. })
    ));
    let app = ConfigRef::new("/app", "v1");
    let mut delays = LaunchDelays::new();
    assert_eq!(delays.on_failure(&app, &strategy(30, 1.0, 5), 0), 5_000, "the first delay is capped too");
}

#[test]
fn queue_delay_truncates_like_marathon() {
    let cases = [
        (None, 0, QueueDelay { time_left_seconds: 0, overdue: true }),
        (Some(10_000), 0, QueueDelay { time_left_seconds: 10, overdue: false }),
        (Some(10_000), 500, QueueDelay { time_left_seconds: 9, overdue: false }),
        (Some(10_000), 9_999, QueueDelay { time_left_seconds: 0, overdue: false }),
        (Some(10_000), 10_000, QueueDelay { time_left_seconds: 0, overdue: false }),
        (Some(10_000), 10_999, QueueDelay { time_left_seconds: 0, overdue: false }),
        (Some(10_000), 11_000, QueueDelay { time_left_seconds: 0, overdue: true }),
    ];
    for (deadline, now, expected) in cases {
        assert_eq!(queue_delay(deadline, now), expected, "deadline {deadline:?} at {now}");
    }
    let app = ConfigRef::new("/app", "v1");
    let mut delays = LaunchDelays::new();
    delays.on_failure(&app, &strategy(5, 2.0, 60), 1_000);
    assert_eq!(delays.queue_delay(&app, 2_000), QueueDelay { time_left_seconds: 4, overdue: false });
    assert_eq!(
        serde_json::to_string(&delays.queue_delay(&app, 2_000)).ok(),
        Some(r#"{"timeLeftSeconds":4,"overdue":false}"#.into())
    );
}

proptest! {
    /// The delays follow the model: the first failure (or the first after the delay was
    /// forgotten) waits `min(backoff, max)`, each further one `min(max, previous × factor)`
    /// truncated to the nanosecond; never above the cap.
    #[test]
    fn backoff_follows_the_model_and_never_exceeds_the_cap(
        backoff in 0u64..100, factor in 1.0f64..5.0, max in 0u64..600, gaps in proptest::collection::vec(0u64..700_000, 1..30)
    ) {
        let app = ConfigRef::new("/app", "v1");
        let s = strategy(backoff, factor, max);
        let max_ns = max * 1_000_000_000;
        let mut delays = LaunchDelays::new();
        let mut now = 0;
        let mut previous: Option<(u64, u64)> = None; // (start ms, delay ns)
        for gap in gaps {
            now += gap;
            let expected_ns = match previous {
                Some((start, delay_ns)) if now <= start + max * 1_000 => ((delay_ns as f64 * factor) as u64).min(max_ns),
                _ => (backoff * 1_000_000_000).min(max_ns),
            };
            let deadline = delays.on_failure(&app, &s, now);
            prop_assert_eq!(delays.current(&app, now).map(|d| d.delay_ns), Some(expected_ns));
            prop_assert_eq!(deadline, now + expected_ns.div_ceil(1_000_000));
            prop_assert!(expected_ns <= max_ns);
            previous = Some((now, expected_ns));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Placement: launches and resources
// ---------------------------------------------------------------------------------------------

#[test]
fn launches_take_exactly_what_an_instance_needs() {
    let mut web = demand("/web", 1, 0.5, 128.0);
    web.resources.disk_milli = 10_000;
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:2;mem:1024;disk:100")], vec![web]));
    assert_eq!(plan.launches.len(), 1);
    let launch = &plan.launches[0];
    assert_eq!(
        (launch.offer_id.as_str(), launch.agent_id.as_str(), launch.hostname.as_str()),
        ("o1", "agent-h1", "h1")
    );
    assert_eq!((launch.run_spec_id.as_str(), launch.role.as_str()), ("/web", "*"));
    assert_eq!(launch.resources, resources("cpus:0.5;mem:128;disk:10"));
    assert_eq!(launch.host_ports, Vec::<Option<u64>>::new());
    assert!(plan.unused_offers.is_empty());
    assert_eq!(plan.demands[0].launched, 1);
    assert_eq!(plan.demands[0].left_to_launch, 0);
    assert_eq!(outcomes(&plan, 0), vec![("o1".to_owned(), Outcome::Matched)]);
}

#[test]
fn several_instances_share_an_offer_until_it_runs_out() {
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:1024")], vec![demand("/web", 4, 0.4, 100.0)]));
    assert_eq!(plan.launches.len(), 2, "0.4 + 0.4 of 1 cpu; a third needs 1.2");
    assert_eq!(plan.demands[0].left_to_launch, 2);
    assert_eq!(
        outcomes(&plan, 0),
        vec![
            ("o1".to_owned(), Outcome::Matched),
            ("o1".to_owned(), Outcome::Matched),
            ("o1".to_owned(), rejected(&[Reason::InsufficientCpus])),
        ]
    );
    assert_eq!(plan.demands[0].reject_summary(), BTreeMap::from([(Reason::InsufficientCpus, 1)]));
}

#[test]
fn the_per_offer_cap_counts_every_demand_and_demands_take_turns() {
    let mut s = snapshot(
        vec![offer("o1", host("h1"), "cpus:10;mem:10000"), offer("o2", host("h2"), "cpus:10;mem:10000")],
        vec![demand("/a", 3, 0.1, 10.0), demand("/b", 3, 0.1, 10.0)],
    );
    s.max_instances_per_offer = 3;
    let plan = run(&s);
    let order: Vec<(&str, &str)> =
        plan.launches.iter().map(|l| (l.offer_id.as_str(), l.run_spec_id.as_str())).collect();
    // Each offer starts from the snapshot order; a demand that launched goes to the back.
    assert_eq!(order, vec![("o1", "/a"), ("o1", "/b"), ("o1", "/a"), ("o2", "/a"), ("o2", "/b"), ("o2", "/b")]);
    assert_eq!(plan.demands[0].left_to_launch, 0);
    assert_eq!(plan.demands[1].left_to_launch, 0);
    // Demands not asked because the cap was reached record nothing.
    assert!(plan.demands.iter().all(|d| d.rejected() == 0));
}

#[test]
fn demands_without_instances_to_launch_ignore_offers() {
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128")], vec![demand("/done", 0, 0.1, 10.0)]));
    assert!(plan.launches.is_empty());
    assert_eq!(plan.unused_offers, vec!["o1".to_owned()]);
    assert!(plan.demands[0].attempts.is_empty());
}

#[test]
fn offers_of_another_allocation_role_are_ignored() {
    let mut o = offer("o1", host("h1"), "cpus:1;mem:128");
    o.role = "analytics".into();
    let plan = run(&snapshot(vec![o], vec![demand("/web", 1, 0.1, 10.0)]));
    assert!(plan.launches.is_empty());
    assert!(plan.demands[0].attempts.is_empty(), "Marathon's launchers do not even look");
}

#[test]
fn accepted_roles_default_to_unreserved_and_the_own_role_reserved_first() {
    let mut o = offer("o1", host("h1"), "cpus:1;mem:1024;cpus(web):0.5;mem(web):100;cpus(other):4");
    o.role = "web".into();
    let mut d = demand("/web", 1, 1.0, 200.0);
    d.role = "web".into();
    let plan = run(&snapshot(vec![o.clone()], vec![d.clone()]));
    assert_eq!(plan.launches.len(), 1);
    assert_eq!(plan.launches[0].resources, resources("cpus(web):0.5;mem(web):100;cpus:0.5;mem:100"));

    // Only `*` accepted: the reservation is not used, and 1 unreserved cpu suffices.
    d.accepted_resource_roles = BTreeSet::from([UNRESERVED.to_owned()]);
    let plan = run(&snapshot(vec![o.clone()], vec![d.clone()]));
    assert_eq!(plan.launches[0].resources, resources("cpus:1;mem:200"));

    // Only `other` accepted: it has cpus but no memory.
    d.accepted_resource_roles = BTreeSet::from(["other".to_owned()]);
    let plan = run(&snapshot(vec![o.clone()], vec![d.clone()]));
    assert_eq!(outcomes(&plan, 0), vec![("o1".to_owned(), rejected(&[Reason::InsufficientMemory]))]);

    // `slave_public` accepted, the offer has none: the role is unfulfilled, and so is everything.
    d.accepted_resource_roles = BTreeSet::from(["slave_public".to_owned()]);
    let plan = run(&snapshot(vec![o], vec![d]));
    assert_eq!(
        outcomes(&plan, 0),
        vec![(
            "o1".to_owned(),
            rejected(&[Reason::UnfulfilledRole, Reason::InsufficientCpus, Reason::InsufficientMemory])
        )]
    );
    assert_eq!(plan.demands[0].reject_summary(), BTreeMap::from([(Reason::UnfulfilledRole, 1)]));
}

#[test]
fn every_failing_check_is_recorded_and_counted_once_by_the_funnel() {
    let mut big = demand("/big", 1, 4.0, 4096.0);
    big.resources.disk_milli = 1_000_000;
    big.resources.gpus = 1;
    big.constraints = vec![constraint(&["hostname", "LIKE", "gpu-.*"])];
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128;disk:10")], vec![big]));
    assert_eq!(
        outcomes(&plan, 0),
        vec![(
            "o1".to_owned(),
            rejected(&[
                Reason::UnfulfilledConstraint,
                Reason::InsufficientCpus,
                Reason::InsufficientMemory,
                Reason::InsufficientDisk,
                Reason::InsufficientGpus,
            ])
        )]
    );
    assert_eq!(plan.demands[0].reject_summary(), BTreeMap::from([(Reason::UnfulfilledConstraint, 1)]));
}

#[test]
fn reject_summary_counts_each_offer_under_its_first_reason() {
    let offers = vec![
        offer("o1", host("h1"), "cpus:0.1;mem:1024"),                 // cpus
        offer("o2", host("h2"), "cpus:0.1;mem:10"),                   // cpus and memory: cpus
        offer("o3", host("h3"), "cpus:4;mem:10"),                     // memory
        offer("o4", rack("h4", "r9"), "cpus:4;mem:1024"),             // constraint
        offer("o5", rack("h5", "r1"), "cpus:4;mem:1024;ports:[1-1]"), // ports
    ];
    let mut d = demand("/app", 1, 1.0, 512.0);
    d.constraints = vec![constraint(&["rack", "UNLIKE", "r9"])];
    d.ports = vec![PortRequest::fixed(8080, Some("http"))];
    let plan = run(&snapshot(offers, vec![d]));
    assert!(plan.launches.is_empty());
    assert_eq!(plan.unused_offers.len(), 5);
    assert_eq!(
        plan.demands[0].reject_summary(),
        BTreeMap::from([
            (Reason::UnfulfilledConstraint, 1),
            (Reason::InsufficientCpus, 2),
            (Reason::InsufficientMemory, 1),
            (Reason::InsufficientPorts, 1),
        ])
    );
    // Ports are only tried once everything else fits: o1-o4 do not mention them.
    assert_eq!(outcomes(&plan, 0)[1].1, rejected(&[Reason::InsufficientCpus, Reason::InsufficientMemory]));
}

#[test]
fn constraints_count_instances_placed_earlier_in_the_plan() {
    let offers = vec![
        offer("o1", host("h1"), "cpus:4;mem:4096"),
        offer("o2", host("h1"), "cpus:4;mem:4096"), // a second offer from the same host
        offer("o3", host("h2"), "cpus:4;mem:4096"),
    ];
    let mut d = demand("/web", 3, 1.0, 100.0);
    d.constraints = vec![constraint(&["hostname", "UNIQUE"])];
    let plan = run(&snapshot(offers, vec![d]));
    let hosts: Vec<&str> = plan.launches.iter().map(|l| l.hostname.as_str()).collect();
    assert_eq!(hosts, vec!["h1", "h2"]);
    assert_eq!(
        outcomes(&plan, 0),
        vec![
            ("o1".to_owned(), Outcome::Matched),
            ("o1".to_owned(), rejected(&[Reason::UnfulfilledConstraint])),
            ("o2".to_owned(), rejected(&[Reason::UnfulfilledConstraint])),
            ("o3".to_owned(), Outcome::Matched),
            ("o3".to_owned(), rejected(&[Reason::UnfulfilledConstraint])),
        ]
    );
    assert_eq!(plan.unused_offers, vec!["o2".to_owned()]);
    assert_eq!(plan.demands[0].left_to_launch, 1);
}

#[test]
fn constraints_count_instances_already_running() {
    let mut d = demand("/web", 2, 1.0, 100.0);
    d.instances = 4;
    d.placed = vec![host("h1"), host("h1")];
    d.constraints = vec![constraint(&["hostname", "MAX_PER", "2"])];
    let plan = run(&snapshot(
        vec![offer("o1", host("h1"), "cpus:4;mem:4096"), offer("o2", host("h2"), "cpus:4;mem:4096")],
        vec![d],
    ));
    let hosts: Vec<&str> = plan.launches.iter().map(|l| l.hostname.as_str()).collect();
    assert_eq!(hosts, vec!["h2", "h2"]);
}

#[test]
fn a_delayed_demand_launches_nothing_and_says_why() {
    let mut d = demand("/crashy", 2, 0.1, 10.0);
    d.delay_until_ms = Some(5_000);
    let s =
        snapshot(vec![offer("o1", host("h1"), "cpus:4;mem:4096"), offer("o2", host("h2"), "cpus:4;mem:4096")], vec![d]);
    let plan = run(&s);
    assert!(plan.launches.is_empty());
    assert_eq!(plan.demands[0].delayed_until_ms, Some(5_000));
    assert_eq!(plan.demands[0].reject_summary(), BTreeMap::from([(Reason::Delayed, 2)]));
    assert_eq!(plan.unused_offers.len(), 2);
    // At the deadline it launches.
    let later = place(&s, 5_000, 7).map(|p| p.launches.len());
    assert_eq!(later, Ok(2));
}

#[test]
fn gpu_agents_are_kept_for_gpu_apps_when_restricted() {
    let gpu_offer = || offer("o1", host("gpu1"), "cpus:8;mem:8192;gpus:2");
    let plan = run(&snapshot(vec![gpu_offer()], vec![demand("/web", 1, 1.0, 100.0)]));
    assert_eq!(outcomes(&plan, 0), vec![("o1".to_owned(), rejected(&[Reason::DeclinedScarceResources]))]);

    let mut ml = demand("/ml", 1, 1.0, 100.0);
    ml.resources.gpus = 1;
    let plan = run(&snapshot(vec![gpu_offer()], vec![ml]));
    assert_eq!(plan.launches[0].resources, resources("cpus:1;mem:100;gpus:1"));

    let mut s = snapshot(vec![gpu_offer()], vec![demand("/web", 1, 1.0, 100.0)]);
    s.gpu_scheduling = GpuSchedulingBehavior::Unrestricted;
    assert_eq!(run(&s).launches.len(), 1);
}

#[test]
fn remote_regions_serve_only_apps_that_ask_for_regions() {
    let remote = offer("o1", host("h1").with_domain("us-west", "us-west-1"), "cpus:4;mem:4096");
    let local = offer("o2", host("h2").with_domain("eu", "eu-1"), "cpus:4;mem:4096");
    let mut s = snapshot(vec![remote, local], vec![demand("/web", 2, 1.0, 100.0)]);
    s.local_region = Some("eu".into());
    s.max_instances_per_offer = 1;
    let plan = run(&s);
    assert_eq!(plan.launches.iter().map(|l| l.offer_id.as_str()).collect::<Vec<_>>(), vec!["o2"]);
    assert_eq!(outcomes(&plan, 0)[0], ("o1".to_owned(), rejected(&[Reason::UnfulfilledConstraint])));

    let mut geo = demand("/geo", 2, 1.0, 100.0);
    geo.constraints = vec![constraint(&["@region", "UNIQUE"])];
    s.demands = vec![geo];
    assert_eq!(run(&s).launches.len(), 2);
}

#[test]
fn snapshots_with_duplicates_are_refused() {
    let o = offer("o1", host("h1"), "cpus:1;mem:128");
    let dup_offers = snapshot(vec![o.clone(), o.clone()], vec![]);
    assert_eq!(place(&dup_offers, 0, 0), Err(PlacementError::DuplicateOffer("o1".into())));
    let dup_demands = snapshot(vec![o], vec![demand("/a", 1, 0.1, 1.0), demand("/a", 1, 0.1, 1.0)]);
    assert_eq!(place(&dup_demands, 0, 0), Err(PlacementError::DuplicateDemand("/a".into())));
}

// ---------------------------------------------------------------------------------------------
// Placement: ports
// ---------------------------------------------------------------------------------------------

fn ports_demand(ports: Vec<PortRequest>) -> Demand {
    let mut d = demand("/web", 1, 0.1, 10.0);
    d.ports = ports;
    d
}

#[test]
fn required_ports_must_be_offered() {
    let o = || offer("o1", host("h1"), "cpus:1;mem:128;ports:[8000-8100]");
    let defs = [(8080, Some("http".to_owned())), (8081, None)];
    let plan = run(&snapshot(vec![o()], vec![ports_demand(PortRequest::from_port_definitions(&defs, true))]));
    assert_eq!(plan.launches[0].host_ports, vec![Some(8080), Some(8081)]);
    assert_eq!(plan.launches[0].resources, resources("cpus:0.1;mem:10;ports:[8080-8081]"));

    let plan = run(&snapshot(vec![o()], vec![ports_demand(vec![PortRequest::fixed(9000, None)])]));
    assert_eq!(outcomes(&plan, 0), vec![("o1".to_owned(), rejected(&[Reason::InsufficientPorts]))]);

    let twice = vec![PortRequest::fixed(8080, None), PortRequest::fixed(8080, None)];
    let plan = run(&snapshot(vec![o()], vec![ports_demand(twice)]));
    assert_eq!(outcomes(&plan, 0), vec![("o1".to_owned(), rejected(&[Reason::InsufficientPorts]))]);
}

#[test]
fn a_required_port_can_be_taken_once_per_offer() {
    let mut d = ports_demand(vec![PortRequest::fixed(8080, None)]);
    d.to_launch = 2;
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128;ports:[8000-8100]")], vec![d]));
    assert_eq!(plan.launches.len(), 1);
    assert_eq!(outcomes(&plan, 0)[1].1, rejected(&[Reason::InsufficientPorts]));
}

#[test]
fn random_ports_come_from_the_offer_and_depend_on_the_seed() {
    let d = ports_demand(PortRequest::from_port_definitions(&[(0, None), (0, None), (0, None)], false));
    let s = snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128;ports:[31000-31099,32000-32099]")], vec![d]);
    let mut seen = BTreeSet::new();
    for seed in 0..20 {
        let plan = place(&s, 0, seed).unwrap_or_default();
        let ports: Vec<u64> = plan.launches[0].host_ports.iter().flatten().copied().collect();
        assert_eq!(ports.len(), 3);
        let distinct: BTreeSet<u64> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 3);
        let offered = Ranges::new([(31_000, 31_099), (32_000, 32_099)]).unwrap_or_default();
        assert!(ports.iter().all(|p| offered.contains_value(*p)), "{ports:?}");
        assert_eq!(plan.launches[0].resources[UNRESERVED].ports().count(), 3);
        seen.insert(ports);
        assert_eq!(place(&s, 0, seed).unwrap_or_default(), plan, "same seed, same ports");
    }
    assert!(seen.len() > 10, "seeds choose different ports: {seen:?}");
}

#[test]
fn random_ports_skip_the_fixed_ones_and_mappings_may_have_no_host_port() {
    let requests = vec![
        PortRequest::fixed(5001, Some("admin")),
        PortRequest { name: Some("udp".into()), host_port: HostPort::None },
        PortRequest::any(Some("http")),
        PortRequest::any(None),
    ];
    let s = snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128;ports:[5000-5002]")], vec![ports_demand(requests)]);
    for seed in 0..10 {
        let plan = place(&s, 0, seed).unwrap_or_default();
        let ports = &plan.launches[0].host_ports;
        assert_eq!(ports[0], Some(5001));
        assert_eq!(ports[1], None);
        let random: BTreeSet<Option<u64>> = [ports[2], ports[3]].into();
        assert_eq!(random, BTreeSet::from([Some(5000), Some(5002)]), "seed {seed}");
        assert_eq!(plan.launches[0].resources[UNRESERVED].ports(), Ranges::single(5000, 5002));
    }
}

#[test]
fn ports_keep_their_reservation_role() {
    let mut o = offer("o1", host("h1"), "cpus:1;mem:128;ports(web):[80-80];ports:[31000-31000]");
    o.role = "web".into();
    let mut d = ports_demand(vec![PortRequest::fixed(80, None), PortRequest::any(None)]);
    d.role = "web".into();
    let plan = run(&snapshot(vec![o], vec![d]));
    assert_eq!(plan.launches[0].host_ports, vec![Some(80), Some(31000)]);
    assert_eq!(plan.launches[0].resources, resources("cpus:0.1;mem:10;ports(web):[80-80];ports:[31000-31000]"));
}

#[test]
fn ports_that_run_out_reject_the_offer() {
    let mut d = ports_demand(vec![PortRequest::any(None), PortRequest::any(None)]);
    d.to_launch = 3;
    let plan = run(&snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128;ports:[1-5]")], vec![d]));
    assert_eq!(plan.launches.len(), 2);
    assert_eq!(plan.demands[0].reject_summary(), BTreeMap::from([(Reason::InsufficientPorts, 1)]));
    let used: BTreeSet<u64> = plan.launches.iter().flat_map(|l| l.host_ports.iter().flatten().copied()).collect();
    assert_eq!(used.len(), 4, "no port given twice");
}

// ---------------------------------------------------------------------------------------------
// Launch-attempt statistics and the /v2/queue item
// ---------------------------------------------------------------------------------------------

#[test]
fn funnel_steps_shrink_by_each_reason() {
    let summary = BTreeMap::from([
        (Reason::InsufficientCpus, 75),
        (Reason::InsufficientMemory, 15),
        (Reason::InsufficientDisk, 10),
    ]);
    let steps: Vec<(&str, u32, u32)> =
        declined_offer_steps(123, &summary).iter().map(|s| (s.reason, s.declined, s.processed)).collect();
    assert_eq!(
        steps,
        vec![
            ("UnfulfilledRole", 0, 123),
            ("UnfulfilledConstraint", 0, 123),
            ("NoCorrespondingReservationFound", 0, 123),
            ("AgentMaintenance", 0, 123),
            ("InsufficientCpus", 75, 123),
            ("InsufficientMemory", 15, 48),
            ("InsufficientDisk", 10, 33),
            ("InsufficientGpus", 0, 23),
            ("InsufficientPorts", 0, 23),
            ("DeclinedScarceResources", 0, 23),
        ]
    );
}

#[test]
fn stats_accumulate_plans_and_keep_the_last_rejection_per_agent() {
    let offers = vec![offer("o1", host("h1"), "cpus:0.1;mem:1024"), offer("o2", host("h2"), "cpus:4;mem:1024")];
    let mut d = demand("/web", 3, 1.0, 100.0);
    d.constraints = vec![constraint(&["hostname", "UNIQUE"])];
    let s = snapshot(offers.clone(), vec![d.clone()]);
    let plan = run(&s);
    // o1: cpus; o2: match, then the constraint.
    let mut stats = LaunchAttemptStats::new(500);
    stats.record(&plan.demands[0], &s.offers, 1_000);
    assert_eq!((stats.processed_offers(), stats.unused_offers()), (3, 2));

    // The next round, h2 now runs one: only cpus on h1 and the constraint on h2.
    d.placed = vec![host("h2")];
    d.to_launch = 2;
    let s = snapshot(offers, vec![d]);
    let plan = run(&s);
    stats.record(&plan.demands[0], &s.offers, 2_000);
    assert_eq!((stats.processed_offers(), stats.unused_offers()), (5, 4));
    assert_eq!(
        stats.reject_summary_launch_attempt(),
        &BTreeMap::from([(Reason::UnfulfilledConstraint, 2), (Reason::InsufficientCpus, 2)])
    );
    assert_eq!(
        stats.reject_summary_last_offers(),
        BTreeMap::from([(Reason::UnfulfilledConstraint, 1), (Reason::InsufficientCpus, 1)])
    );
    let summary = stats.processed_offers_summary();
    assert_eq!(summary.last_used_offer_at.as_deref(), Some("1970-01-01T00:00:01.000Z"));
    assert_eq!(summary.last_unused_offer_at.as_deref(), Some("1970-01-01T00:00:02.000Z"));
    let last: Vec<(u32, u32)> = summary.reject_summary_last_offers.iter().map(|s| (s.declined, s.processed)).collect();
    assert_eq!(last, vec![(0, 2), (1, 2), (0, 1), (0, 1), (1, 1), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)]);
    let attempt: Vec<(u32, u32)> =
        summary.reject_summary_launch_attempt.iter().map(|s| (s.declined, s.processed)).collect();
    assert_eq!(attempt, vec![(0, 5), (2, 5), (0, 3), (0, 3), (2, 3), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]);
}

#[test]
fn stats_skip_offers_seen_while_backed_off() {
    let mut d = demand("/crashy", 1, 0.1, 10.0);
    d.delay_until_ms = Some(60_000);
    let s = snapshot(vec![offer("o1", host("h1"), "cpus:1;mem:128")], vec![d]);
    let plan = run(&s);
    let mut stats = LaunchAttemptStats::new(0);
    stats.record(&plan.demands[0], &s.offers, 1_000);
    assert_eq!((stats.processed_offers(), stats.unused_offers()), (0, 0));
    assert!(stats.last_unused_offers().is_empty());
}

#[derive(serde::Serialize)]
struct AppWrapper {
    app: serde_json::Value,
}

#[test]
fn queue_item_has_marathon_field_names() {
    let offers =
        vec![offer("o1", rack("h1", "r1").with_attribute("level", "0.5"), "cpus:0.1;mem:1024;ports:[31000-31001]")];
    let s = snapshot(offers, vec![demand("/web", 1, 1.0, 100.0)]);
    let plan = run(&s);
    let mut stats = LaunchAttemptStats::new(1_456_677_701_090);
    stats.record(&plan.demands[0], &s.offers, 1_456_677_702_000);
    let app = AppWrapper { app: serde_json::json!({"id": "/web"}) };
    let delay = QueueDelay { time_left_seconds: 0, overdue: true };
    let item = stats.queue_item(app, plan.demands[0].left_to_launch, "*", delay, true);
    let json = serde_json::to_value(&item).unwrap_or_default();
    let expected = serde_json::json!({
        "app": {"id": "/web"},
        "count": 1,
        "role": "*",
        "delay": {"timeLeftSeconds": 0, "overdue": true},
        "since": "2016-02-28T16:41:41.090Z",
        "processedOffersSummary": {
            "processedOffersCount": 1,
            "unusedOffersCount": 1,
            "lastUnusedOfferAt": "2016-02-28T16:41:42.000Z",
            "rejectSummaryLastOffers": [
                {"reason": "UnfulfilledRole", "declined": 0, "processed": 1},
                {"reason": "UnfulfilledConstraint", "declined": 0, "processed": 1},
                {"reason": "NoCorrespondingReservationFound", "declined": 0, "processed": 1},
                {"reason": "AgentMaintenance", "declined": 0, "processed": 1},
                {"reason": "InsufficientCpus", "declined": 1, "processed": 1},
                {"reason": "InsufficientMemory", "declined": 0, "processed": 0},
                {"reason": "InsufficientDisk", "declined": 0, "processed": 0},
                {"reason": "InsufficientGpus", "declined": 0, "processed": 0},
                {"reason": "InsufficientPorts", "declined": 0, "processed": 0},
                {"reason": "DeclinedScarceResources", "declined": 0, "processed": 0}
            ],
            "rejectSummaryLaunchAttempt": [
                {"reason": "UnfulfilledRole", "declined": 0, "processed": 1},
                {"reason": "UnfulfilledConstraint", "declined": 0, "processed": 1},
                {"reason": "NoCorrespondingReservationFound", "declined": 0, "processed": 1},
                {"reason": "AgentMaintenance", "declined": 0, "processed": 1},
                {"reason": "InsufficientCpus", "declined": 1, "processed": 1},
                {"reason": "InsufficientMemory", "declined": 0, "processed": 0},
                {"reason": "InsufficientDisk", "declined": 0, "processed": 0},
                {"reason": "InsufficientGpus", "declined": 0, "processed": 0},
                {"reason": "InsufficientPorts", "declined": 0, "processed": 0},
                {"reason": "DeclinedScarceResources", "declined": 0, "processed": 0}
            ]
        },
        "lastUnusedOffers": [{
            "offer": {
                "id": "o1",
                "hostname": "h1",
                "agentId": "agent-h1",
                "resources": [
                    {"name": "cpus", "role": "*", "scalar": 0.1},
                    {"name": "mem", "role": "*", "scalar": 1024.0},
                    {"name": "ports", "role": "*", "ranges": [{"begin": 31000, "end": 31001}]}
                ],
                "attributes": [
                    {"name": "level", "scalar": 0.5},
                    {"name": "rack", "text": "r1"}
                ]
            },
            "reason": ["InsufficientCpus"],
            "timestamp": "2016-02-28T16:41:42.000Z"
        }]
    });
    assert_eq!(json, expected);
    let without = stats.queue_item(AppWrapper { app: serde_json::json!({}) }, 1, "*", delay, false);
    let json = serde_json::to_value(&without).unwrap_or_default();
    assert!(json.get("lastUnusedOffers").is_none(), "only with ?embed=lastUnusedOffers");
}

#[test]
fn timestamps_are_iso8601_utc_with_milliseconds() {
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_456_677_701_090, "2016-02-28T16:41:41.090Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
    ];
    for (ms, text) in cases {
        assert_eq!(iso8601_millis(ms), text);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties over random snapshots
// ---------------------------------------------------------------------------------------------

fn arb_offer(index: usize) -> impl Strategy<Value = PlacementOffer> {
    (0u32..4, 0u32..3, 0u64..8_000, 0u64..8_192, 0u64..2_000, 0u64..3, 0u64..3, 0u64..20, prop::bool::ANY).prop_map(
        move |(host_n, rack_n, cpus, mem, reserved_cpus, gpus, port_base, port_len, public)| {
            let mut role_resources = RoleResources::new();
            let mut unreserved = Resources::new();
            unreserved.add_scalar("cpus", cpus);
            unreserved.add_scalar("mem", mem * 1_000);
            unreserved.add_scalar("gpus", gpus * 1_000 / 2); // half the offers with a GPU or so
            unreserved
                .add_ranges("ports", &Ranges::single(31_000 + port_base * 10, 31_000 + port_base * 10 + port_len));
            role_resources.insert(UNRESERVED.to_owned(), unreserved);
            let mut reserved = Resources::new();
            reserved.add_scalar("cpus", reserved_cpus);
            reserved.add_scalar("mem", 512_000);
            reserved.add_ranges("ports", &Ranges::single(80, 81));
            role_resources.insert(if public { "slave_public" } else { "web" }.to_owned(), reserved);
            PlacementOffer {
                id: format!("o{index}"),
                agent_id: format!("a{host_n}"),
                role: UNRESERVED.to_owned(),
                agent: rack(&format!("h{host_n}"), &format!("r{rack_n}")),
                resources: role_resources,
            }
        },
    )
}

fn arb_constraints() -> impl Strategy<Value = Vec<Constraint>> {
    let one = prop_oneof![
        Just(vec!["hostname", "UNIQUE"]),
        Just(vec!["rack", "UNIQUE"]),
        Just(vec!["hostname", "MAX_PER", "2"]),
        Just(vec!["rack", "MAX_PER", "3"]),
        Just(vec!["rack", "GROUP_BY", "2"]),
        Just(vec!["rack", "GROUP_BY"]),
        Just(vec!["hostname", "CLUSTER"]),
        Just(vec!["rack", "LIKE", "r[01]"]),
    ];
    prop::collection::vec(one, 0..3).prop_map(|list| list.iter().map(|parts| constraint(parts)).collect())
}

fn arb_demand(index: usize) -> impl Strategy<Value = Demand> {
    (
        1u32..6,
        1u64..3_000,
        1u64..2_048,
        0usize..3,
        arb_constraints(),
        prop::bool::ANY,
        0u32..3,
        prop::option::of(0u64..2_000),
    )
        .prop_map(move |(to_launch, cpus, mem, ports, constraints, fixed, gpus, delay)| {
            let mut d = demand(&format!("/app{index}"), to_launch, 0.0, 0.0);
            d.instances = to_launch + 1;
            d.resources = InstanceResources {
                cpus_milli: cpus,
                mem_milli: mem * 1_000,
                disk_milli: 0,
                gpus: u64::from(gpus / 2),
            };
            d.ports = (0..ports)
                .map(|i| if fixed && i == 0 { PortRequest::fixed(80, None) } else { PortRequest::any(None) })
                .collect();
            d.constraints = constraints;
            if index % 2 == 1 {
                d.accepted_resource_roles = BTreeSet::from([UNRESERVED.to_owned(), "web".to_owned()]);
            }
            d.placed = if index.is_multiple_of(3) { vec![rack("h0", "r0")] } else { Vec::new() };
            d.delay_until_ms = delay;
            d
        })
}

fn arb_snapshot() -> impl Strategy<Value = PlacementSnapshot> {
    (1usize..6, 1usize..4, 1u32..6, prop::bool::ANY).prop_flat_map(|(offers, demands, cap, restricted)| {
        let offers: Vec<_> = (0..offers).map(arb_offer).collect();
        let demands: Vec<_> = (0..demands).map(arb_demand).collect();
        (offers, demands).prop_map(move |(offers, demands)| {
            let mut s = PlacementSnapshot::new(offers, demands);
            s.max_instances_per_offer = cap;
            s.gpu_scheduling =
                if restricted { GpuSchedulingBehavior::Restricted } else { GpuSchedulingBehavior::Unrestricted };
            s
        })
    })
}

/// Every instance each demand counts, old and new, as (demand, agent facts).
fn all_instances(s: &PlacementSnapshot, plan: &PlacementPlan) -> BTreeMap<String, Vec<AgentFacts>> {
    let mut out: BTreeMap<String, Vec<AgentFacts>> = BTreeMap::new();
    for d in &s.demands {
        out.insert(d.run_spec_id.clone(), d.placed.clone());
    }
    for l in &plan.launches {
        let agent = s.offers.iter().find(|o| o.id == l.offer_id).map(|o| o.agent.clone()).unwrap_or_default();
        out.entry(l.run_spec_id.clone()).or_default().push(agent);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_snapshot_time_and_seed_give_the_same_plan(s in arb_snapshot(), now in 0u64..3_000, seed in any::<u64>()) {
        prop_assert_eq!(place(&s, now, seed), place(&s, now, seed));
    }

    #[test]
    fn a_plan_never_takes_more_than_an_offer_holds(s in arb_snapshot(), now in 0u64..3_000, seed in any::<u64>()) {
        let plan = place(&s, now, seed).unwrap_or_default();
        for o in &s.offers {
            let mut taken = RoleResources::new();
            let mut port_count = 0;
            for l in plan.launches.iter().filter(|l| l.offer_id == o.id) {
                for (role, r) in &l.resources {
                    port_count += r.ports().count();
                    taken.entry(role.clone()).or_default().add(r);
                }
            }
            for (role, r) in &taken {
                let offered = o.resources.get(role).cloned().unwrap_or_default();
                prop_assert!(offered.contains(r), "offer {} role {}: took {} of {}", o.id, role, r, offered);
            }
            let distinct: u64 = taken.values().map(|r| r.ports().count()).sum();
            prop_assert_eq!(distinct, port_count, "a port was given twice on offer {}", &o.id);
            let launched = plan.launches.iter().filter(|l| l.offer_id == o.id).count();
            prop_assert!(launched <= s.max_instances_per_offer as usize);
            prop_assert_eq!(launched == 0, plan.unused_offers.contains(&o.id));
        }
    }

    #[test]
    fn launches_match_their_demands(s in arb_snapshot(), now in 0u64..3_000, seed in any::<u64>()) {
        let plan = place(&s, now, seed).unwrap_or_default();
        for (d, report) in s.demands.iter().zip(&plan.demands) {
            let launches: Vec<_> = plan.launches.iter().filter(|l| l.run_spec_id == d.run_spec_id).collect();
            prop_assert_eq!(launches.len() as u32, report.launched);
            prop_assert_eq!(report.launched + report.left_to_launch, d.to_launch);
            if d.delay_until_ms.is_some_and(|until| now < until) {
                prop_assert!(launches.is_empty());
            }
            let roles = d.accepted_roles();
            for l in launches {
                prop_assert!(l.resources.keys().all(|role| roles.contains(role)));
                let total: Resources = l.resources.values().fold(Resources::new(), |mut acc, r| { acc.add(r); acc });
                prop_assert_eq!(total.scalar_milli("cpus"), d.resources.cpus_milli);
                prop_assert_eq!(total.scalar_milli("mem"), d.resources.mem_milli);
                prop_assert_eq!(total.scalar_milli("gpus"), d.resources.gpus * 1_000);
                prop_assert_eq!(l.host_ports.len(), d.ports.len());
                prop_assert_eq!(total.ports().count(), d.ports.iter().filter(|p| p.host_port != HostPort::None).count() as u64);
            }
            for attempt in &report.attempts {
                if let Outcome::Rejected(reasons) = &attempt.outcome {
                    prop_assert!(!reasons.is_empty());
                }
            }
        }
    }

    #[test]
    fn plans_keep_unique_and_max_per_constraints(s in arb_snapshot(), now in 0u64..3_000, seed in any::<u64>()) {
        let plan = place(&s, now, seed).unwrap_or_default();
        let instances = all_instances(&s, &plan);
        for d in &s.demands {
            let Some(agents) = instances.get(&d.run_spec_id) else { continue };
            let launched = plan.launches.iter().filter(|l| l.run_spec_id == d.run_spec_id).count();
            if launched == 0 {
                continue;
            }
            for c in &d.constraints {
                let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
                for agent in agents {
                    *counts.entry(c.field().read(agent)).or_default() += 1;
                }
                let limit = match c.rule() {
                    Rule::Unique => Some(1),
                    Rule::MaxPer(n) => Some(*n as usize),
                    _ => None,
                };
                if let Some(limit) = limit {
                    // The instances placed before the plan may already be over (here: at most one).
                    for (value, count) in counts.iter().filter(|(v, _)| v.is_some()) {
                        prop_assert!(*count <= limit.max(1), "{} {}: {:?} holds {}", d.run_spec_id, c, value, count);
                    }
                }
                if matches!(c.rule(), Rule::Cluster(None)) {
                    prop_assert!(counts.len() <= 1, "{} {}: {:?}", d.run_spec_id, c, counts);
                }
                if let Rule::Like(regex) = c.rule() {
                    let new_agents = &agents[d.placed.len()..];
                    prop_assert!(new_agents.iter().all(|a| c.field().read(a).is_some_and(|v| regex.is_match(&v))));
                }
            }
        }
    }
}

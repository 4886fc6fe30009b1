use proptest::prelude::*;

use super::resources::*;
use super::task::TaskState;

#[test]
fn parses_mesos_text_form_with_roles() {
    let parsed = parse_resources("cpus:24;gpus:2;mem:24576;disk:409600;ports:[21000-24000,30000-34000];cpus(ads):8")
        .expect("valid");
    let all = &parsed[UNRESERVED];
    assert_eq!(all.scalar_milli("cpus"), 24_000);
    assert_eq!(all.scalar("mem"), 24576.0);
    assert_eq!(all.ports(), Ranges::new([(21000, 24000), (30000, 34000)]).unwrap());
    assert_eq!(parsed["ads"].scalar("cpus"), 8.0);
    assert_eq!(all.to_string(), "cpus:24;disk:409600;gpus:2;mem:24576;ports:[21000-24000,30000-34000]");
}

#[test]
fn refuses_malformed_resources_with_the_item() {
    for (text, needle) in [
        ("cpus", "name:value"),
        ("cpus:two", "not a number"),
        ("cpus:-1", "non-negative"),
        ("ports:[1-2", "must end with ]"),
        ("ports:[5-1]", "ends before it begins"),
        ("bugs:{a,b}", "set resources"),
        ("cpus(/bad):1", "not a valid role"),
        ("c pus:1", "not a valid resource name"),
    ] {
        let err = parse_resources(text).expect_err(text).to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn milli_units_round_to_three_decimals() {
    assert_eq!(to_milli(0.1), 100);
    assert_eq!(to_milli(0.0015), 2);
    assert_eq!(format_milli(1500), "1.5");
    assert_eq!(format_milli(10), "0.01");
    assert_eq!(format_milli(3000), "3");
}

#[test]
fn task_states_carry_mesos_numbers_and_names() {
    assert_eq!(TaskState::Staging.number(), 6);
    assert_eq!(TaskState::Killing.number(), 8);
    assert_eq!(TaskState::Unknown.number(), 13);
    for state in TaskState::ALL {
        assert_eq!(TaskState::from_name(state.name()), Some(state));
    }
    assert!(TaskState::Finished.is_terminal() && !TaskState::Unreachable.is_terminal());
}

fn ranges() -> impl Strategy<Value = Ranges> {
    prop::collection::vec((0u64..200, 0u64..20), 0..6)
        .prop_map(|v| Ranges::new(v.into_iter().map(|(b, len)| (b, b + len))).unwrap())
}

fn bag() -> impl Strategy<Value = Resources> {
    (0u64..5000, 0u64..5000, ranges()).prop_map(|(c, m, p)| {
        let mut r = Resources::new();
        r.add_scalar("cpus", c);
        r.add_scalar("mem", m);
        r.add_ranges("ports", &p);
        r
    })
}

proptest! {
    #[test]
    fn add_then_subtract_is_identity_when_disjoint(a in bag(), b in bag()) {
        let mut b = b;
        b.add_ranges("ports", &Ranges::default());
        let mut b_ports = b.ports();
        b_ports.subtract(&a.ports());
        let b = {
            let mut only = Resources::new();
            for (n, v) in b.scalars() { only.add_scalar(n, v); }
            only.add_ranges("ports", &b_ports);
            only
        };
        let mut sum = a.clone();
        sum.add(&b);
        prop_assert!(sum.contains(&a) && sum.contains(&b));
        prop_assert_eq!(sum.checked_sub(&b), Ok(a));
    }

    #[test]
    fn ranges_stay_normalised(a in ranges(), b in ranges()) {
        let mut u = a.clone();
        u.union(&b);
        let pairs: Vec<_> = u.iter().collect();
        for w in pairs.windows(2) {
            prop_assert!(w[0].1 + 1 < w[1].0, "{:?}", pairs);
        }
        prop_assert!(u.contains(&a) && u.contains(&b));
        let mut d = u.clone();
        d.subtract(&b);
        prop_assert!(!b.iter().any(|(x, y)| (x..=y).any(|v| d.contains_value(v))));
        prop_assert_eq!(d.count() + b.count(), u.count());
    }

    #[test]
    fn checked_sub_never_underflows(a in bag(), b in bag()) {
        match a.checked_sub(&b) {
            Ok(left) => { let mut back = left; back.add(&b); prop_assert_eq!(back, a); }
            Err(missing) => prop_assert!(!missing.is_empty()),
        }
    }

    #[test]
    fn text_form_round_trips(a in bag()) {
        let parsed = parse_resources(&a.to_string()).unwrap();
        prop_assert_eq!(parsed.get(UNRESERVED).cloned().unwrap_or_default(), a);
    }
}

//! Which backend a new connection goes to: a pure function of the backends' active
//! connection counts and a random number the caller draws.
//!
//! The shell draws `random` from its seeded RNG (a fork of the node's), so a test or a
//! simulation that fixes the seed fixes every choice, and the core constructs no RNG.

use serde::{Deserialize, Serialize};

/// A balancing policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Power of two choices (Mitzenmacher): two backends drawn at random, the one with fewer
    /// active connections wins. Nearly as even as least connections, but a burst of new
    /// connections spreads instead of all landing on the one backend that looked least loaded
    /// a moment ago, which matters once several proxies (one per node) share backends.
    #[default]
    PowerOfTwoChoices,
    /// The backend with the fewest active connections; ties are broken from `random`, so
    /// idle backends share new connections rather than the first one taking them all.
    LeastConnections,
}

/// The index into `active` (one entry per candidate backend: its active connections) of the
/// backend to use, or `None` when there is no candidate. Every bit pattern of `random` is a
/// valid input; the low and high 32 bits are used as two independent draws.
pub fn pick(policy: Policy, active: &[u32], random: u64) -> Option<usize> {
    let n = active.len();
    match n {
        0 => None,
        1 => Some(0),
        _ => Some(match policy {
            Policy::PowerOfTwoChoices => two_choices(active, random),
            Policy::LeastConnections => least_connections(active, random),
        }),
    }
}

/// `n >= 2`: two distinct indexes, the less loaded wins, the first drawn on a tie.
fn two_choices(active: &[u32], random: u64) -> usize {
    let n = active.len();
    let first = below(random as u32, n);
    // Draw the second among the other n-1 and skip over the first, so the two always differ.
    let mut second = below((random >> 32) as u32, n - 1);
    if second >= first {
        second += 1;
    }
    if active[second] < active[first] { second } else { first }
}

/// The least loaded, scanning from a random start so ties go to a random one of them.
fn least_connections(active: &[u32], random: u64) -> usize {
    let n = active.len();
    let start = below(random as u32, n);
    (0..n).map(|offset| (start + offset) % n).min_by_key(|&i| active[i]).unwrap_or(start)
}

/// A uniform index below `n` from 32 random bits (multiply-shift: no modulo bias worth naming
/// for the backend counts a VIP has).
fn below(draw: u32, n: usize) -> usize {
    ((u64::from(draw) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn no_candidate_no_pick() {
        assert_eq!(pick(Policy::PowerOfTwoChoices, &[], 7), None);
        assert_eq!(pick(Policy::LeastConnections, &[5], u64::MAX), Some(0));
    }

    #[test]
    fn two_choices_prefers_the_less_loaded_of_the_two() {
        // With two backends both are always drawn, so the idle one always wins.
        for random in [0, 1, u64::MAX, 0x8000_0000_0000_0000, 12345] {
            assert_eq!(pick(Policy::PowerOfTwoChoices, &[3, 0], random), Some(1));
            assert_eq!(pick(Policy::PowerOfTwoChoices, &[0, 3], random), Some(0));
        }
    }

    #[test]
    fn least_connections_spreads_ties() {
        let picks: std::collections::BTreeSet<_> =
            (0..16u64).map(|i| pick(Policy::LeastConnections, &[1, 1, 1, 4], i << 30)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2)].into_iter().collect());
    }

    proptest! {
        #[test]
        fn picks_are_in_range_and_never_the_most_loaded_of_a_pair(
            active in prop::collection::vec(0..10u32, 1..20), random: u64,
        ) {
            for policy in [Policy::PowerOfTwoChoices, Policy::LeastConnections] {
                let i = pick(policy, &active, random).unwrap();
                prop_assert!(i < active.len());
                if policy == Policy::LeastConnections {
                    prop_assert_eq!(active[i], *active.iter().min().unwrap());
                }
            }
        }

        /// Filling backends one connection at a time: least connections (and two choices on two
        /// backends, which always sees both) keeps them within one of each other; two choices
        /// on more never gives a backend over twice its share.
        #[test]
        fn sequential_fills_stay_even(n in 2..8usize, seed: u64) {
            for policy in [Policy::PowerOfTwoChoices, Policy::LeastConnections] {
                let mut active = vec![0u32; n];
                let mut random = seed;
                for _ in 0..(n * 4) {
                    random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let i = pick(policy, &active, random).unwrap();
                    active[i] += 1;
                }
                let (lo, hi) = (*active.iter().min().unwrap(), *active.iter().max().unwrap());
                if policy == Policy::LeastConnections || n == 2 {
                    prop_assert!(hi - lo <= 1, "{active:?}");
                } else {
                    prop_assert!(hi <= 8, "{active:?}");
                }
            }
        }
    }
}

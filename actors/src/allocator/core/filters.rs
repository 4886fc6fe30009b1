//! Offer filters kept across rounds, indexed by agent and then framework.
//!
//! Filters pile up: in Mesos's DeclineOffers benchmark every (framework, agent) pair ends up
//! filtered. A round must not read them all, so they are kept the way a round asks for them
//! — "does `fw` have a filter on `agent` that covers this offer?" — and the master updates
//! them in place as frameworks decline, revive and time passes.

use std::collections::BTreeMap;

use super::Filter;
use crate::mesos::core::resources::Resources;

/// One filter as kept under its agent and framework.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterEntry {
    pub resources: Resources,
    pub until_ms: u64,
}

/// The filters on one agent, by framework.
///
/// Keyed by a hash of the framework's name (names with the same hash share a slot): a round
/// looks frameworks up one by one here, and a search through a tree of strings would miss
/// the cache at every comparison, while a tree of integers keeps its keys in its nodes. The
/// hash is a fixed function, so the order is the same in every process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentFilters {
    slots: BTreeMap<u64, Vec<(String, Vec<FilterEntry>)>>,
    frameworks: usize,
}

impl AgentFilters {
    /// The filters of `framework` here (empty when none).
    pub fn get(&self, framework: &str) -> &[FilterEntry] {
        self.slots
            .get(&name_hash(framework))
            .and_then(|slot| slot.iter().find(|(name, _)| name == framework))
            .map_or(&[], |(_, entries)| entries.as_slice())
    }

    /// How many frameworks have a filter here.
    pub fn len(&self) -> usize {
        self.frameworks
    }

    pub fn is_empty(&self) -> bool {
        self.frameworks == 0
    }

    /// Each framework with its filters here, in hash order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[FilterEntry])> {
        self.slots.values().flatten().map(|(name, entries)| (name.as_str(), entries.as_slice()))
    }

    fn entries_mut(&mut self, framework: &str) -> &mut Vec<FilterEntry> {
        let slot = self.slots.entry(name_hash(framework)).or_default();
        let at = match slot.iter().position(|(name, _)| name == framework) {
            Some(at) => at,
            None => {
                slot.push((framework.to_owned(), Vec::new()));
                self.frameworks += 1;
                slot.len() - 1
            }
        };
        &mut slot[at].1
    }

    /// Keeps the framework's filters that `keep` accepts; returns how many went.
    fn retain(&mut self, framework: &str, keep: impl Fn(&FilterEntry) -> bool) -> usize {
        let hash = name_hash(framework);
        let Some(slot) = self.slots.get_mut(&hash) else { return 0 };
        let Some(at) = slot.iter().position(|(name, _)| name == framework) else { return 0 };
        let entries = &mut slot[at].1;
        let before = entries.len();
        entries.retain(keep);
        let removed = before - entries.len();
        if entries.is_empty() {
            slot.swap_remove(at);
            self.frameworks -= 1;
            if slot.is_empty() {
                self.slots.remove(&hash);
            }
        }
        removed
    }
}

/// FNV-1a: small, fixed and good enough to spread framework names.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

/// Live offer filters (Mesos's DECLINE with `refuse_seconds`), by agent then framework, with
/// their expiry times in order so expiring them costs what expires.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    by_agent: BTreeMap<String, AgentFilters>,
    /// Expiry time → the (agent, framework) pairs with a filter ending then. A pair whose
    /// filters went earlier (a revive) is skipped when its time comes.
    expiry: BTreeMap<u64, Vec<(String, String)>>,
    len: usize,
}

impl Filters {
    pub fn new() -> Filters {
        Filters::default()
    }

    /// Adds a filter. A filter with the same resources for the same pair is extended to the
    /// later end instead of kept twice.
    pub fn add(&mut self, filter: Filter) {
        let Filter { framework, agent, resources, until_ms } = filter;
        let entries = self.by_agent.entry(agent.clone()).or_default().entries_mut(&framework);
        if let Some(same) = entries.iter_mut().find(|entry| entry.resources == resources) {
            if same.until_ms >= until_ms {
                return;
            }
            same.until_ms = until_ms;
        } else {
            entries.push(FilterEntry { resources, until_ms });
            self.len += 1;
        }
        self.expiry.entry(until_ms).or_default().push((agent, framework));
    }

    /// Drops every filter with `until_ms <= now_ms`; returns how many went.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let later = self.expiry.split_off(&now_ms.saturating_add(1));
        let due = std::mem::replace(&mut self.expiry, later);
        let before = self.len;
        for (agent, framework) in due.into_values().flatten() {
            self.remove_where(&agent, &framework, |entry| entry.until_ms <= now_ms);
        }
        before - self.len
    }

    /// Drops a framework's filters on every agent (Mesos's REVIVE); returns how many went.
    pub fn remove_framework(&mut self, framework: &str) -> usize {
        let before = self.len;
        let agents: Vec<String> = self
            .by_agent
            .iter()
            .filter(|(_, on)| !on.get(framework).is_empty())
            .map(|(agent, _)| agent.clone())
            .collect();
        for agent in agents {
            self.remove_where(&agent, framework, |_| true);
        }
        before - self.len
    }

    fn remove_where(&mut self, agent: &str, framework: &str, doomed: impl Fn(&FilterEntry) -> bool) {
        let Some(on_agent) = self.by_agent.get_mut(agent) else { return };
        self.len -= on_agent.retain(framework, |entry| !doomed(entry));
        if on_agent.is_empty() {
            self.by_agent.remove(agent);
        }
    }

    /// How many filters are kept (expired ones included until [`Filters::expire`] runs).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The filters on `agent`, by framework.
    pub fn on_agent(&self, agent: &str) -> Option<&AgentFilters> {
        self.by_agent.get(agent)
    }

    /// The filters by agent, in agent order.
    pub fn by_agent(&self) -> impl Iterator<Item = (&str, &AgentFilters)> {
        self.by_agent.iter().map(|(agent, on_agent)| (agent.as_str(), on_agent))
    }

    /// Every filter, by agent (in order) then framework (in hash order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &FilterEntry)> {
        self.by_agent.iter().flat_map(|(agent, on_agent)| {
            on_agent.iter().flat_map(move |(framework, entries)| {
                entries.iter().map(move |entry| (agent.as_str(), framework, entry))
            })
        })
    }
}

impl FromIterator<Filter> for Filters {
    fn from_iter<I: IntoIterator<Item = Filter>>(filters: I) -> Filters {
        let mut all = Filters::new();
        filters.into_iter().for_each(|filter| all.add(filter));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(fw: &str, agent: &str, cpus: f64, until_ms: u64) -> Filter {
        Filter {
            framework: fw.into(),
            agent: agent.into(),
            resources: Resources::new().with_scalar("cpus", cpus),
            until_ms,
        }
    }

    #[test]
    fn filters_expire_in_time_and_a_longer_one_outlives_its_first_end() {
        let mut filters: Filters = [filter("f1", "a1", 1.0, 10), filter("f2", "a1", 1.0, 20)].into_iter().collect();
        filters.add(filter("f1", "a1", 1.0, 30));
        assert_eq!(filters.len(), 2, "same resources extend the filter");
        assert_eq!(filters.expire(10), 0, "f1's filter was extended to 30");
        assert_eq!(filters.expire(25), 1);
        assert_eq!(filters.iter().map(|(a, f, e)| (a, f, e.until_ms)).collect::<Vec<_>>(), [("a1", "f1", 30)]);
        assert_eq!(filters.expire(30), 1);
        assert!(filters.is_empty() && filters.on_agent("a1").is_none());
    }

    #[test]
    fn a_revive_drops_one_frameworks_filters_everywhere() {
        let mut filters: Filters = [
            filter("f1", "a1", 1.0, 10),
            filter("f1", "a2", 2.0, 10),
            filter("f1", "a2", 3.0, 10),
            filter("f2", "a2", 1.0, 10),
        ]
        .into_iter()
        .collect();
        assert_eq!(filters.remove_framework("f1"), 3);
        assert_eq!(filters.len(), 1);
        assert_eq!(filters.expire(10), 1, "the stale expiry entries of f1 are skipped");
        assert!(filters.is_empty());
    }
}

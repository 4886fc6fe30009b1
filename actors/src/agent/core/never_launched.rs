//! The launches an agent told the master it never received (its answer to a reconciliation
//! of long stagings): should one still arrive, late, it is refused, since the master has
//! ended its task and the framework has replaced it.

use std::collections::{BTreeSet, VecDeque};

/// The most task ids remembered; the oldest go first. A launch later than that many
/// reconciliations is long past any transport's delivery.
pub const NEVER_LAUNCHED_KEPT: usize = 65_536;

/// Task ids answered as never launched, bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub struct NeverLaunched {
    ids: BTreeSet<String>,
    order: VecDeque<String>,
}

impl NeverLaunched {
    pub fn insert(&mut self, task_id: String) {
        if self.ids.insert(task_id.clone()) {
            self.order.push_back(task_id);
        }
        while self.order.len() > NEVER_LAUNCHED_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.ids.contains(task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_each_id_once_and_forgets_the_oldest_beyond_the_bound() {
        let mut never = NeverLaunched::default();
        never.insert("t0".to_owned());
        never.insert("t0".to_owned());
        assert!(never.contains("t0"));
        assert!(!never.contains("t1"));
        for i in 1..=NEVER_LAUNCHED_KEPT {
            never.insert(format!("t{i}"));
        }
        assert!(!never.contains("t0"), "the oldest is forgotten once the bound is passed");
        assert!(never.contains("t1") && never.contains(&format!("t{NEVER_LAUNCHED_KEPT}")));
    }
}

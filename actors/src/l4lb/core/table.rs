//! The VIP table: every VIP with the backends of the running, serving tasks that declare it,
//! kept up to date from discovery's changes, and the difference each change makes as
//! [`LbAction`]s for the data plane.
//!
//! A task contributes a backend to a VIP while it is in the view and [`TaskEntry::serves`]:
//! a task that turns unhealthy, ends or becomes unreachable leaves every VIP at once. A VIP
//! exists while it has at least one backend, so a VIP whose last task went away stops being
//! served (its clients are refused rather than left hanging).
//!
//! Updates are incremental: a batch of changes touches only the VIPs of the tasks it names,
//! and the actions are the net difference of the batch (a task that is re-announced with the
//! same ports yields no action, so its connections are never drained for nothing).

use std::collections::{BTreeMap, BTreeSet};

use super::vip::{Backend, VipBinding, VipKey, VipLabelError, task_vips};
use crate::discovery::{ClusterView, TaskEntry, ViewChange};

/// What the data plane must do to follow the table.
///
/// Order contract of a batch: the actions of one VIP are consecutive, in the order
/// `VipAdded`, `BackendRemoved`*, `BackendAdded`*, `VipRemoved`; VIPs come in key order. A
/// VIP is added before any backend of it and removed after all of its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbAction {
    VipAdded(VipKey),
    BackendAdded(VipKey, Backend),
    /// New connections must stop going to the backend; existing ones drain.
    BackendRemoved(VipKey, Backend),
    VipRemoved(VipKey),
}

/// One VIP: its backends and the names that declared it, each counted by the bindings that
/// hold it (two tasks may share a backend address, two names may hash to one address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VipEntry {
    backends: BTreeMap<Backend, u32>,
    names: BTreeMap<String, u32>,
}

/// The table itself. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct VipTable {
    /// The bindings each serving task holds, by task id.
    tasks: BTreeMap<String, Vec<VipBinding>>,
    vips: BTreeMap<VipKey, VipEntry>,
    /// Unreadable VIP labels, by task id, for the status.
    rejected: BTreeMap<String, Vec<VipLabelError>>,
}

/// The backends a VIP had before a batch first touched it.
type Before = BTreeMap<VipKey, BTreeSet<Backend>>;

impl VipTable {
    /// The table of a whole view.
    pub fn from_view(view: &ClusterView) -> Self {
        let mut table = VipTable::default();
        let mut before = Before::new();
        for task in view.tasks.values() {
            table.add_task(task, &mut before);
        }
        table
    }

    /// Replaces the table with the one of `view` (a subscription's first message, or a
    /// resubscription after falling behind) and returns what changed.
    pub fn reset(&mut self, view: &ClusterView) -> Vec<LbAction> {
        let fresh = VipTable::from_view(view);
        let keys: BTreeSet<VipKey> = self.vips.keys().chain(fresh.vips.keys()).copied().collect();
        let before: Before = keys.into_iter().map(|key| (key, self.backend_set(&key))).collect();
        *self = fresh;
        self.diff(before)
    }

    /// Applies a batch of changes in order and returns their net effect.
    pub fn apply(&mut self, changes: &[ViewChange]) -> Vec<LbAction> {
        let mut before = Before::new();
        for change in changes {
            match change {
                ViewChange::TaskUp(task) => {
                    self.remove_task(&task.id, &mut before);
                    self.add_task(task, &mut before);
                }
                ViewChange::TaskGone { id } => self.remove_task(id, &mut before),
                // Masters, agents and frameworks do not change a backend: a task carries its
                // agent's address and its framework's name itself.
                _ => {}
            }
        }
        self.diff(before)
    }

    /// The VIPs, in key order.
    pub fn vips(&self) -> impl Iterator<Item = &VipKey> {
        self.vips.keys()
    }

    /// A VIP's backends, in order (empty for an unknown VIP).
    pub fn backends(&self, key: &VipKey) -> Vec<Backend> {
        self.vips.get(key).map(|entry| entry.backends.keys().copied().collect()).unwrap_or_default()
    }

    /// The names that declared a VIP (`myapp.marathon`); more than one means a hash collision
    /// or two frameworks' tasks sharing an IP VIP.
    pub fn names(&self, key: &VipKey) -> Vec<String> {
        self.vips.get(key).map(|entry| entry.names.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every VIP with its backends: the table's whole meaning, for comparisons.
    pub fn snapshot(&self) -> BTreeMap<VipKey, BTreeSet<Backend>> {
        self.vips.keys().map(|key| (*key, self.backend_set(key))).collect()
    }

    /// Unreadable VIP labels, by task id.
    pub fn rejected(&self) -> &BTreeMap<String, Vec<VipLabelError>> {
        &self.rejected
    }

    fn backend_set(&self, key: &VipKey) -> BTreeSet<Backend> {
        self.vips.get(key).map(|entry| entry.backends.keys().copied().collect()).unwrap_or_default()
    }

    /// Records a VIP's backends before the batch's first change to it.
    fn touch(&self, key: &VipKey, before: &mut Before) {
        if !before.contains_key(key) {
            before.insert(*key, self.backend_set(key));
        }
    }

    fn add_task(&mut self, task: &TaskEntry, before: &mut Before) {
        let (bindings, errors) = task_vips(task);
        if errors.is_empty() {
            self.rejected.remove(&task.id);
        } else {
            self.rejected.insert(task.id.clone(), errors);
        }
        if !task.serves() || bindings.is_empty() {
            return;
        }
        for binding in &bindings {
            self.touch(&binding.key, before);
            let entry = self.vips.entry(binding.key).or_default();
            *entry.backends.entry(binding.backend).or_default() += 1;
            if let Some(name) = &binding.name {
                *entry.names.entry(name.clone()).or_default() += 1;
            }
        }
        self.tasks.insert(task.id.clone(), bindings);
    }

    fn remove_task(&mut self, id: &str, before: &mut Before) {
        self.rejected.remove(id);
        let Some(bindings) = self.tasks.remove(id) else { return };
        for binding in &bindings {
            self.touch(&binding.key, before);
            let Some(entry) = self.vips.get_mut(&binding.key) else { continue };
            decrement(&mut entry.backends, &binding.backend);
            if let Some(name) = &binding.name {
                decrement(&mut entry.names, name);
            }
            if entry.backends.is_empty() {
                self.vips.remove(&binding.key);
            }
        }
    }

    /// The actions that take the data plane from `before` to the table as it is now.
    fn diff(&self, before: Before) -> Vec<LbAction> {
        let mut actions = Vec::new();
        for (key, old) in before {
            let new = self.backend_set(&key);
            if old == new {
                continue;
            }
            if old.is_empty() {
                actions.push(LbAction::VipAdded(key));
            }
            actions.extend(old.difference(&new).map(|b| LbAction::BackendRemoved(key, *b)));
            actions.extend(new.difference(&old).map(|b| LbAction::BackendAdded(key, *b)));
            if new.is_empty() {
                actions.push(LbAction::VipRemoved(key));
            }
        }
        actions
    }
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, u32>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use ::core::net::IpAddr;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::discovery::{PortEntry, PortProtocol, ViewUpdate};

    /// A Marathon task on agent `a<agent>` (10.0.0.<agent>) with one TCP port, labelled
    /// `VIP_0: <vip>` unless `vip` is empty; the renderer's tests use it too.
    pub(in crate::l4lb::core) fn task(id: &str, agent: u8, port: u16, vip: &str, healthy: Option<bool>) -> TaskEntry {
        let labels =
            if vip.is_empty() { BTreeMap::new() } else { BTreeMap::from([("VIP_0".to_owned(), vip.to_owned())]) };
        TaskEntry {
            id: id.to_owned(),
            name: "web".to_owned(),
            framework_id: "fw".to_owned(),
            framework: "marathon".to_owned(),
            agent_id: format!("a{agent}"),
            agent_ip: IpAddr::from([10, 0, 0, agent]),
            container_ips: Vec::new(),
            healthy,
            ports: vec![PortEntry { number: port, protocol: PortProtocol::Tcp, name: None, labels }],
            labels: BTreeMap::new(),
        }
    }

    fn key(vip: &str) -> VipKey {
        task_vips(&task("x", 1, 1, vip, None)).0[0].key
    }

    fn backend(agent: u8, port: u16) -> Backend {
        Backend { ip: IpAddr::from([10, 0, 0, agent]), port }
    }

    #[test]
    fn a_task_up_adds_the_vip_then_its_backend() {
        let mut table = VipTable::default();
        let actions = table.apply(&[ViewChange::TaskUp(task("t1", 1, 31000, "/web:80", None))]);
        let k = key("/web:80");
        assert_eq!(actions, vec![LbAction::VipAdded(k), LbAction::BackendAdded(k, backend(1, 31000))]);
        assert_eq!(table.names(&k), vec!["web.marathon".to_owned()]);
    }

    #[test]
    fn unhealthy_and_gone_tasks_leave_at_once_and_the_last_takes_the_vip() {
        let mut table = VipTable::default();
        let k = key("/web:80");
        table.apply(&[
            ViewChange::TaskUp(task("t1", 1, 31000, "/web:80", None)),
            ViewChange::TaskUp(task("t2", 2, 31000, "/web:80", Some(true))),
        ]);
        let actions = table.apply(&[ViewChange::TaskUp(task("t2", 2, 31000, "/web:80", Some(false)))]);
        assert_eq!(actions, vec![LbAction::BackendRemoved(k, backend(2, 31000))]);
        let actions = table.apply(&[ViewChange::TaskGone { id: "t1".into() }]);
        assert_eq!(actions, vec![LbAction::BackendRemoved(k, backend(1, 31000)), LbAction::VipRemoved(k)]);
        assert!(table.snapshot().is_empty());
    }

    #[test]
    fn a_reannounced_task_changes_nothing() {
        let mut table = VipTable::default();
        let up = ViewChange::TaskUp(task("t1", 1, 31000, "/web:80", None));
        table.apply(std::slice::from_ref(&up));
        assert!(table.apply(&[up.clone(), ViewChange::TaskGone { id: "t1".into() }, up]).is_empty());
    }

    #[test]
    fn a_shared_backend_stays_while_one_holder_remains() {
        let mut table = VipTable::default();
        table.apply(&[
            ViewChange::TaskUp(task("t1", 1, 31000, "/web:80", None)),
            ViewChange::TaskUp(task("t2", 1, 31000, "/web:80", None)),
        ]);
        assert!(table.apply(&[ViewChange::TaskGone { id: "t1".into() }]).is_empty());
        assert_eq!(table.backends(&key("/web:80")), vec![backend(1, 31000)]);
    }

    #[test]
    fn reset_diffs_against_the_old_table() {
        let mut table = VipTable::default();
        table.apply(&[ViewChange::TaskUp(task("t1", 1, 31000, "/web:80", None))]);
        let mut view = ClusterView::default();
        view.apply(&ViewChange::TaskUp(task("t2", 2, 31000, "/api:80", None)));
        let actions = table.reset(&view);
        let (web, api) = (key("/web:80"), key("/api:80"));
        let mut expected = vec![
            LbAction::BackendRemoved(web, backend(1, 31000)),
            LbAction::VipRemoved(web),
            LbAction::VipAdded(api),
            LbAction::BackendAdded(api, backend(2, 31000)),
        ];
        if api < web {
            expected.rotate_left(2);
        }
        assert_eq!(actions, expected);
    }

    #[test]
    fn bad_labels_are_kept_for_the_status_until_fixed() {
        let mut table = VipTable::default();
        table.apply(&[ViewChange::TaskUp(task("t1", 1, 31000, "web", None))]);
        assert_eq!(table.rejected()["t1"].len(), 1);
        table.apply(&[ViewChange::TaskGone { id: "t1".into() }]);
        assert!(table.rejected().is_empty());
    }

    /// Applies actions to a mirror of the data plane, checking the order contract.
    fn replay(mirror: &mut BTreeMap<VipKey, BTreeSet<Backend>>, actions: &[LbAction]) {
        for action in actions {
            match action {
                LbAction::VipAdded(k) => assert!(mirror.insert(*k, BTreeSet::new()).is_none(), "{k} added twice"),
                LbAction::BackendAdded(k, b) => assert!(mirror.get_mut(k).expect("vip first").insert(*b)),
                LbAction::BackendRemoved(k, b) => assert!(mirror.get_mut(k).expect("known vip").remove(b)),
                LbAction::VipRemoved(k) => {
                    assert!(mirror.remove(k).expect("known vip").is_empty(), "backends removed first")
                }
            }
        }
    }

    fn arb_change() -> impl Strategy<Value = ViewChange> {
        let vips = prop::sample::select(vec!["/web:80", "/api:80", "/web:81", "10.9.9.9:53", "", "bad"]);
        let health = prop::sample::select(vec![None, Some(true), Some(false)]);
        prop_oneof![
            3 => (0..6u8, 1..3u8, 31000..31003u16, vips, health).prop_map(|(id, agent, port, vip, healthy)| {
                ViewChange::TaskUp(task(&format!("t{id}"), agent, port, vip, healthy))
            }),
            1 => (0..6u8).prop_map(|id| ViewChange::TaskGone { id: format!("t{id}") }),
            1 => Just(ViewChange::AgentGone { id: "a1".into() }),
        ]
    }

    proptest! {
        /// Incremental updates, in any batching, end where a rebuild from the final view does,
        /// and their actions carry a mirror of the data plane to the same place.
        #[test]
        fn incremental_equals_rebuild(
            batches in prop::collection::vec(prop::collection::vec(arb_change(), 0..6), 0..12),
            reset_at in prop::option::of(0..12usize),
        ) {
            let mut view = ClusterView::default();
            let mut table = VipTable::default();
            let mut mirror = BTreeMap::new();
            for (i, batch) in batches.iter().enumerate() {
                for change in batch {
                    view.apply(change);
                }
                let update = if reset_at == Some(i) {
                    ViewUpdate::Reset(Arc::new(view.clone()))
                } else {
                    ViewUpdate::Changes { revision: i as u64, changes: Arc::new(batch.clone()) }
                };
                let actions = match &update {
                    ViewUpdate::Reset(v) => table.reset(v),
                    ViewUpdate::Changes { changes, .. } => table.apply(changes),
                };
                replay(&mut mirror, &actions);
                prop_assert_eq!(&mirror, &table.snapshot());
            }
            let rebuilt = VipTable::from_view(&view);
            prop_assert_eq!(table.snapshot(), rebuilt.snapshot());
            prop_assert_eq!(&table.rejected, &rebuilt.rejected);
            for k in rebuilt.vips() {
                prop_assert_eq!(table.names(k), rebuilt.names(k));
            }
        }
    }
}

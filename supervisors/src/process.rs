//! Erlang links, monitors and exit signals between actors of one node.
//!
//! ractor gives each actor one parent and one-per-pair monitors that carry no ordering
//! with other signals; Erlang's links are bidirectional, monitors stack, and a process that
//! traps exits receives exit signals as messages. This module adds those semantics for
//! actors that enroll with their node ([`crate::Node::enroll`]). The reception rules
//! themselves are the pure [`receive_exit_signal`].
//!
//! Termination is observed by the node's *reaper*, a runtime actor that ractor-monitors every
//! enrolled actor, in the role the Erlang VM plays for signals. One difference from BEAM is
//! documented rather than hidden: an exit signal that terminates a busy receiver takes effect
//! at the receiver's next message boundary (ractor can pre-empt a handler only by killing it,
//! which the untrappable `kill` does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, Message, SupervisionEvent};

use crate::exit::{Disposition, ExitReason, ExitSignal, exit_reason, receive_exit_signal, stop_with};

/// Identifies one monitor; each `monitor` call creates a new one, as in Erlang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonitorRef(u64);

/// A signal delivered to an enrolled actor as a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `{'EXIT', From, Reason}`: only to actors that trap exits.
    Exit { from: ActorId, reason: ExitReason },
    /// `{'DOWN', Ref, process, Pid, Reason}`.
    Down { monitor: MonitorRef, from: ActorId, reason: ExitReason },
}

type Deliver = Arc<dyn Fn(Signal) -> bool + Send + Sync>;

struct Proc {
    cell: ActorCell,
    trap_exit: bool,
    deliver: Deliver,
    links: BTreeSet<ActorId>,
    /// Monitors watching this process: reference → watcher.
    watchers: BTreeMap<MonitorRef, ActorId>,
}

#[derive(Default)]
struct Table {
    procs: BTreeMap<ActorId, Proc>,
    next_monitor: u64,
}

/// Effects computed under the table's lock and carried out after it is released, so that no
/// actor is signalled while the lock is held.
enum Effect {
    Deliver(Deliver, Signal),
    Terminate(ActorCell, ExitReason),
}

/// The node's table of enrolled actors.
#[derive(Default)]
pub struct Processes {
    table: Mutex<Table>,
    reaper: Mutex<Option<ActorRef<()>>>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes").field("enrolled", &self.lock().procs.len()).finish()
    }
}

fn alive(cell: &ActorCell) -> bool {
    !matches!(cell.get_status(), ActorStatus::Stopping | ActorStatus::Stopped)
}

impl Processes {
    /// Starts the reaper; called once by the node.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), ractor::SpawnErr> {
        let (reaper, _) = Actor::spawn(None, Reaper, Arc::clone(self)).await?;
        *self.reaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(reaper);
        Ok(())
    }

    pub(crate) fn stop(&self) {
        if let Some(reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reaper.stop(None);
        }
        self.lock().procs.clear();
    }

    /// Enrolls `actor` so it can link, monitor and receive signals as messages of type `M`.
    pub fn enroll<M>(&self, actor: &ActorRef<M>)
    where
        M: Message + From<Signal>,
    {
        let target = actor.clone();
        let deliver: Deliver = Arc::new(move |signal| target.send_message(M::from(signal)).is_ok());
        let cell = actor.get_cell();
        if let Some(reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            reaper.get_cell().monitor(cell.clone());
        }
        let proc =
            Proc { cell: cell.clone(), trap_exit: false, deliver, links: BTreeSet::new(), watchers: BTreeMap::new() };
        self.lock().procs.insert(cell.get_id(), proc);
        // The actor may have died before the reaper's monitor was in place.
        if !alive(&cell) {
            self.exited(cell.get_id(), ExitReason::NoProc);
        }
    }

    /// Sets whether `actor` receives exit signals as messages (`process_flag(trap_exit, _)`).
    pub fn trap_exit(&self, actor: &ActorCell, trap: bool) {
        if let Some(proc) = self.lock().procs.get_mut(&actor.get_id()) {
            proc.trap_exit = trap;
        }
    }

    /// Links two enrolled actors. Linking to an actor that is not alive sends `noproc` to
    /// the caller, as `link/1` does.
    pub fn link(&self, from: &ActorCell, to: &ActorCell) {
        let effects = {
            let mut table = self.lock();
            let (a, b) = (from.get_id(), to.get_id());
            if a == b || !table.procs.contains_key(&a) {
                return;
            }
            if table.procs.contains_key(&b) && alive(to) {
                table.procs.get_mut(&a).map(|p| p.links.insert(b));
                table.procs.get_mut(&b).map(|p| p.links.insert(a));
                Vec::new()
            } else {
                let signal = ExitSignal { reason: ExitReason::NoProc, via_link: true, from_self: false };
                table.receive(a, b, &signal).into_iter().collect()
            }
        };
        run(effects);
    }

    pub fn unlink(&self, from: &ActorCell, to: &ActorCell) {
        let mut table = self.lock();
        let (a, b) = (from.get_id(), to.get_id());
        table.procs.get_mut(&a).map(|p| p.links.remove(&b));
        table.procs.get_mut(&b).map(|p| p.links.remove(&a));
    }

    /// Monitors `target` on behalf of `watcher`. A target that is not alive is reported
    /// `Down` with `noproc` at once.
    pub fn monitor(&self, watcher: &ActorCell, target: &ActorCell) -> MonitorRef {
        let mut table = self.lock();
        let monitor = MonitorRef(table.next_monitor);
        table.next_monitor += 1;
        let watcher_id = watcher.get_id();
        match table.procs.get_mut(&target.get_id()) {
            Some(proc) if alive(target) => {
                proc.watchers.insert(monitor, watcher_id);
            }
            _ => {
                let down = Signal::Down { monitor, from: target.get_id(), reason: ExitReason::NoProc };
                if let Some(deliver) = table.procs.get(&watcher_id).map(|p| Arc::clone(&p.deliver)) {
                    drop(table);
                    deliver(down);
                }
            }
        }
        monitor
    }

    /// Removes a monitor; no `Down` arrives for it afterwards.
    pub fn demonitor(&self, monitor: MonitorRef) {
        for proc in self.lock().procs.values_mut() {
            proc.watchers.remove(&monitor);
        }
    }

    /// Sends an exit signal to `target` (`exit/2`); `from` is the sender.
    pub fn exit(&self, from: &ActorCell, target: &ActorCell, reason: ExitReason) {
        let from_self = from.get_id() == target.get_id();
        let signal = ExitSignal { reason, via_link: false, from_self };
        let effect = self.lock().receive(target.get_id(), from.get_id(), &signal);
        run(effect);
    }

    /// An enrolled actor terminated: signal its links and monitors.
    fn exited(&self, id: ActorId, reason: ExitReason) {
        let effects = {
            let mut table = self.lock();
            let Some(proc) = table.procs.remove(&id) else { return };
            let mut effects = Vec::new();
            for linked in proc.links {
                if let Some(other) = table.procs.get_mut(&linked) {
                    other.links.remove(&id);
                }
                let signal = ExitSignal { reason: reason.clone(), via_link: true, from_self: false };
                effects.extend(table.receive(linked, id, &signal));
            }
            for (monitor, watcher) in proc.watchers {
                if let Some(watcher) = table.procs.get(&watcher) {
                    let down = Signal::Down { monitor, from: id, reason: reason.clone() };
                    effects.push(Effect::Deliver(Arc::clone(&watcher.deliver), down));
                }
            }
            effects
        };
        run(effects);
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// What `receiver` does with `signal` from `sender`.
    fn receive(&self, receiver: ActorId, sender: ActorId, signal: &ExitSignal) -> Option<Effect> {
        let proc = self.procs.get(&receiver)?;
        match receive_exit_signal(signal, proc.trap_exit, true) {
            Disposition::Drop => None,
            Disposition::Terminate(reason) => Some(Effect::Terminate(proc.cell.clone(), reason)),
            Disposition::Deliver => {
                let exit = Signal::Exit { from: sender, reason: signal.reason.clone() };
                Some(Effect::Deliver(Arc::clone(&proc.deliver), exit))
            }
        }
    }
}

fn run(effects: impl IntoIterator<Item = Effect>) {
    for effect in effects {
        match effect {
            Effect::Deliver(deliver, signal) => {
                // A receiver that is already gone simply misses the signal, as in Erlang.
                let _ = deliver(signal);
            }
            Effect::Terminate(cell, reason) => stop_with(&cell, &reason),
        }
    }
}

/// Observes the termination of every enrolled actor.
struct Reaper;

impl Actor for Reaper {
    type Msg = ();
    type State = Arc<Processes>;
    type Arguments = Arc<Processes>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        processes: Arc<Processes>,
    ) -> Result<Arc<Processes>, ActorProcessingErr> {
        Ok(processes)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        processes: &mut Arc<Processes>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((cell, reason)) = exit_reason(&event) {
            processes.exited(cell.get_id(), reason);
        }
        Ok(())
    }
}

//! The restart decision of an OTP supervisor, as a pure state machine.
//!
//! The actor shell ([`crate::supervisor`]) owns the processes; this core owns the bookkeeping
//! and decides. Every input carries the time (`now`) and, where jitter is involved, a random
//! sample; every decision is an [`Action`] for the shell to carry out.
//!
//! Ordering contract of an [`Action`]: the shell first terminates `terminate` in the order
//! given (reverse start order), then starts `start` in the order given (start order), reporting
//! each outcome back with [`SupervisorCore::started`] or [`SupervisorCore::restart_failed`]
//! before starting the next one.

use std::time::Duration;

use super::exit::ExitReason;
use super::intensity::RestartWindow;
use super::spec::{
    AutoShutdown, ChildId, ChildKind, ChildMeta, Restart, SpecError, Strategy, SupervisorFlags, validate_child,
};
use super::time::Time;
use crate::planted::{PlantedBug, planted};

/// Where a child stands, as its supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    /// A process is running.
    Running,
    /// No process: its start returned `ignore`, it was terminated, or it exited and is not
    /// to be restarted.
    Stopped,
    /// A restart is pending: its start failed (a retry is queued) or a backoff delay runs.
    Restarting,
}

#[derive(Clone, Debug)]
pub struct Child {
    pub id: ChildId,
    pub meta: ChildMeta,
    pub status: ChildStatus,
    started_at: Time,
    consecutive_restarts: u32,
}

/// What a start function reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    Running,
    /// OTP's `ignore`: no process; the spec is kept unless the child is temporary.
    Ignored,
}

/// Children to terminate and then start, in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartPlan {
    /// In the order to terminate them: reverse start order.
    pub terminate: Vec<ChildId>,
    /// In start order.
    pub start: Vec<ChildId>,
    /// Backoff delay before starting (only with a backoff policy).
    pub delay: Option<Duration>,
}

/// A decision for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Restart(RestartPlan),
    /// Try the restart of this child again through the supervisor's own mailbox
    /// (OTP's `try_again_restart`), after `delay` if backoff is on.
    Retry {
        id: ChildId,
        delay: Option<Duration>,
    },
    /// Terminate these children (reverse start order), then exit with `reason`.
    Shutdown {
        terminate: Vec<ChildId>,
        reason: ExitReason,
    },
}

/// Why an operation on a child was refused. Mirrors OTP's `{error, _}` returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChildOpError {
    #[error("no child {0}")]
    NotFound(ChildId),
    #[error("child {0} is running")]
    Running(ChildId),
    #[error("child {0} is restarting")]
    Restarting(ChildId),
    #[error("child {0} is already present")]
    AlreadyPresent(ChildId),
    #[error("child {0} is already started")]
    AlreadyStarted(ChildId),
    #[error("not supported by a simple_one_for_one supervisor")]
    SimpleOneForOne,
    #[error("only a simple_one_for_one supervisor starts children from its template")]
    NotSimpleOneForOne,
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Counts as OTP's `count_children/1` returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    pub specs: usize,
    pub active: usize,
    pub supervisors: usize,
    pub workers: usize,
}

#[derive(Clone, Debug)]
pub struct SupervisorCore {
    flags: SupervisorFlags,
    /// In start order.
    children: Vec<Child>,
    window: RestartWindow,
    /// The one template of a `simple_one_for_one` supervisor.
    template: Option<ChildMeta>,
    next_dynamic: u64,
}

impl SupervisorCore {
    /// A supervisor with static children, or (for `SimpleOneForOne`) exactly one template.
    pub fn new(flags: SupervisorFlags, specs: Vec<(ChildId, ChildMeta)>) -> Result<Self, SpecError> {
        if flags.period.is_zero() {
            return Err(SpecError::ZeroPeriod);
        }
        let mut core = SupervisorCore {
            window: RestartWindow::new(flags.intensity, flags.period),
            flags,
            children: Vec::with_capacity(specs.len()),
            template: None,
            next_dynamic: 0,
        };
        if flags.strategy == Strategy::SimpleOneForOne {
            let [(id, meta)] = <[_; 1]>::try_from(specs).map_err(|specs| SpecError::TemplateCount(specs.len()))?;
            validate_child(&flags, &id, &meta)?;
            core.template = Some(meta);
            return Ok(core);
        }
        for (id, meta) in specs {
            validate_child(&flags, &id, &meta)?;
            if core.position(&id).is_some() {
                return Err(SpecError::DuplicateId(id));
            }
            core.children.push(Child::new(id, meta));
        }
        Ok(core)
    }

    pub fn flags(&self) -> &SupervisorFlags {
        &self.flags
    }

    pub fn children(&self) -> &[Child] {
        &self.children
    }

    pub fn child(&self, id: &ChildId) -> Option<&Child> {
        self.position(id).map(|i| &self.children[i])
    }

    /// The ids to start when the supervisor starts, in order.
    pub fn start_order(&self) -> Vec<ChildId> {
        self.children.iter().map(|c| c.id.clone()).collect()
    }

    /// Running children in the order to stop them: reverse start order.
    pub fn shutdown_order(&self) -> Vec<ChildId> {
        self.children.iter().rev().filter(|c| c.status == ChildStatus::Running).map(|c| c.id.clone()).collect()
    }

    pub fn counts(&self) -> ChildCounts {
        let mut counts = ChildCounts { specs: self.children.len(), ..ChildCounts::default() };
        if self.template.is_some() {
            counts.specs = 1;
        }
        for child in &self.children {
            counts.active += usize::from(child.status == ChildStatus::Running);
            match child.meta.kind {
                ChildKind::Worker => counts.workers += 1,
                ChildKind::Supervisor => counts.supervisors += 1,
            }
        }
        counts
    }

    /// Adds a static child at the end of the start order (OTP's `start_child/2`).
    pub fn add_child(&mut self, id: ChildId, meta: ChildMeta) -> Result<(), ChildOpError> {
        if self.template.is_some() {
            return Err(ChildOpError::SimpleOneForOne);
        }
        validate_child(&self.flags, &id, &meta)?;
        if let Some(existing) = self.child(&id) {
            return Err(match existing.status {
                ChildStatus::Running => ChildOpError::AlreadyStarted(id),
                _ => ChildOpError::AlreadyPresent(id),
            });
        }
        self.children.push(Child::new(id, meta));
        Ok(())
    }

    /// Adds a dynamic instance of the template (`start_child/2` on `simple_one_for_one`).
    pub fn add_dynamic(&mut self) -> Result<ChildId, ChildOpError> {
        let meta = self.template.ok_or(ChildOpError::NotSimpleOneForOne)?;
        let id = ChildId::Dynamic(self.next_dynamic);
        self.next_dynamic += 1;
        self.children.push(Child::new(id.clone(), meta));
        Ok(id)
    }

    /// Records the outcome of a successful start (or `ignore`).
    pub fn started(&mut self, now: Time, id: &ChildId, outcome: StartOutcome) {
        let Some(i) = self.position(id) else { return };
        match outcome {
            StartOutcome::Running => {
                let child = &mut self.children[i];
                child.status = ChildStatus::Running;
                child.started_at = now;
            }
            StartOutcome::Ignored => {
                if self.is_removed_when_stopped(&self.children[i]) {
                    self.children.remove(i);
                } else {
                    self.children[i].status = ChildStatus::Stopped;
                }
            }
        }
    }

    /// A child added by `add_child`/`add_dynamic` failed its first start: forget it, as OTP
    /// does not keep the spec of a child whose `start_child` failed.
    pub fn first_start_failed(&mut self, id: &ChildId) {
        if let Some(i) = self.position(id) {
            self.children.remove(i);
        }
    }

    /// A child exited by itself (not terminated by this supervisor).
    ///
    /// `random` feeds the backoff jitter and is ignored without a backoff policy.
    pub fn child_exited(&mut self, now: Time, id: &ChildId, reason: &ExitReason, random: u64) -> Action {
        let Some(i) = self.position(id) else { return Action::None };
        if self.children[i].status != ChildStatus::Running {
            return Action::None;
        }
        self.children[i].status = ChildStatus::Stopped;
        let meta = self.children[i].meta;
        let restart = match meta.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_orderly(),
            Restart::Temporary => false,
        };
        if !restart {
            if self.is_removed_when_stopped(&self.children[i]) {
                self.children.remove(i);
            }
            return self.auto_shutdown_after(meta.significant);
        }
        self.restart(now, i, random)
    }

    /// A restart start failed; `not_started` are the children of the same plan after it,
    /// which were not attempted.
    pub fn restart_failed(&mut self, id: &ChildId, not_started: &[ChildId]) -> Action {
        for other in not_started {
            if let Some(i) = self.position(other) {
                self.children[i].status = ChildStatus::Stopped;
            }
        }
        let Some(i) = self.position(id) else { return Action::None };
        self.children[i].status = ChildStatus::Restarting;
        Action::Retry { id: id.clone(), delay: None }
    }

    /// The queued retry of a failed restart arrived; it counts against the intensity.
    pub fn try_again(&mut self, now: Time, id: &ChildId, random: u64) -> Action {
        match self.position(id) {
            Some(i) if self.children[i].status == ChildStatus::Restarting => self.restart(now, i, random),
            _ => Action::None,
        }
    }

    /// Whether a delayed restart of this child is still wanted.
    pub fn restart_pending(&self, id: &ChildId) -> bool {
        self.child(id).is_some_and(|c| c.status == ChildStatus::Restarting)
    }

    /// This supervisor terminated the child on request (OTP's `terminate_child/2`).
    /// Returns whether it was running.
    pub fn terminated_on_request(&mut self, id: &ChildId) -> Result<bool, ChildOpError> {
        let i = self.position(id).ok_or_else(|| ChildOpError::NotFound(id.clone()))?;
        let was_running = self.children[i].status == ChildStatus::Running;
        if self.template.is_some() || self.children[i].meta.restart == Restart::Temporary {
            self.children.remove(i);
        } else {
            self.children[i].status = ChildStatus::Stopped;
        }
        Ok(was_running)
    }

    /// Checks that `restart_child/2` may start this child now.
    pub fn restart_requested(&mut self, id: &ChildId) -> Result<(), ChildOpError> {
        self.check_stopped(id)?;
        let i = self.position(id).ok_or_else(|| ChildOpError::NotFound(id.clone()))?;
        self.children[i].status = ChildStatus::Restarting;
        Ok(())
    }

    /// A requested `restart_child/2` could not start the child: it stays stopped.
    pub fn start_refused(&mut self, id: &ChildId) {
        if let Some(i) = self.position(id) {
            self.children[i].status = ChildStatus::Stopped;
        }
    }

    /// Removes a stopped child's spec (OTP's `delete_child/2`).
    pub fn delete(&mut self, id: &ChildId) -> Result<(), ChildOpError> {
        self.check_stopped(id)?;
        if let Some(i) = self.position(id) {
            self.children.remove(i);
        }
        Ok(())
    }

    fn check_stopped(&self, id: &ChildId) -> Result<(), ChildOpError> {
        if self.template.is_some() {
            return Err(ChildOpError::SimpleOneForOne);
        }
        let child = self.child(id).ok_or_else(|| ChildOpError::NotFound(id.clone()))?;
        match child.status {
            ChildStatus::Running => Err(ChildOpError::Running(id.clone())),
            ChildStatus::Restarting => Err(ChildOpError::Restarting(id.clone())),
            ChildStatus::Stopped => Ok(()),
        }
    }

    /// Counts a restart of child `i` and plans it per the strategy.
    fn restart(&mut self, now: Time, i: usize, random: u64) -> Action {
        if !self.window.record(now) {
            return Action::Shutdown { terminate: self.shutdown_order(), reason: ExitReason::Shutdown };
        }
        let delay = self.flags.backoff.map(|policy| {
            let child = &mut self.children[i];
            if now.saturating_since(child.started_at) >= policy.reset_after {
                child.consecutive_restarts = 0;
            }
            let delay = policy.delay(child.consecutive_restarts, random);
            child.consecutive_restarts = child.consecutive_restarts.saturating_add(1);
            delay
        });
        let group_start = match self.flags.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => {
                self.children[i].status = ChildStatus::Restarting;
                return Action::Restart(RestartPlan {
                    terminate: Vec::new(),
                    start: vec![self.children[i].id.clone()],
                    delay,
                });
            }
            Strategy::OneForAll => 0,
            Strategy::RestForOne => i,
        };
        let failed = self.children[i].id.clone();
        let terminate: Vec<ChildId> = self.children[group_start..]
            .iter()
            .rev()
            .filter(|c| c.status == ChildStatus::Running && c.id != failed)
            .map(|c| c.id.clone())
            .collect();
        // Temporary children in the group are terminated and never restarted, and a temporary
        // child cannot be the one restarting here, so dropping them keeps `i` meaningful only
        // up to this point; the group is rebuilt by id below.
        let group: Vec<ChildId> = self.children[group_start..].iter().map(|c| c.id.clone()).collect();
        // Planted bug (test-only): keep the group's temporary children, so they restart with it.
        if !planted(PlantedBug::TemporaryChildRestarted) {
            self.children.retain(|c| !(group.contains(&c.id) && c.meta.restart == Restart::Temporary));
        }
        let mut start = Vec::new();
        for child in self.children.iter_mut().filter(|c| group.contains(&c.id)) {
            child.status = ChildStatus::Restarting;
            start.push(child.id.clone());
        }
        Action::Restart(RestartPlan { terminate, start, delay })
    }

    /// After a significant child ended by itself and stays down.
    fn auto_shutdown_after(&self, significant: bool) -> Action {
        if !significant {
            return Action::None;
        }
        let shut_down = match self.flags.auto_shutdown {
            AutoShutdown::Never => false,
            AutoShutdown::AnySignificant => true,
            AutoShutdown::AllSignificant => {
                !self.children.iter().any(|c| c.meta.significant && c.status != ChildStatus::Stopped)
            }
        };
        if shut_down {
            Action::Shutdown { terminate: self.shutdown_order(), reason: ExitReason::Shutdown }
        } else {
            Action::None
        }
    }

    /// Temporary children leave no spec behind, and neither do dynamic instances, which
    /// exist only while they run or wait for a restart.
    fn is_removed_when_stopped(&self, child: &Child) -> bool {
        self.template.is_some() || child.meta.restart == Restart::Temporary
    }

    fn position(&self, id: &ChildId) -> Option<usize> {
        self.children.iter().position(|c| &c.id == id)
    }
}

impl Child {
    fn new(id: ChildId, meta: ChildMeta) -> Self {
        Child { id, meta, status: ChildStatus::Stopped, started_at: Time::ZERO, consecutive_restarts: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::backoff::Backoff;

    fn id(name: &str) -> ChildId {
        ChildId::from(name)
    }

    fn meta(restart: Restart) -> ChildMeta {
        ChildMeta { restart, ..ChildMeta::new(ChildKind::Worker) }
    }

    fn at(ms: u64) -> Time {
        Time::from_duration(Duration::from_millis(ms))
    }

    fn boom() -> ExitReason {
        ExitReason::Failed("boom".into())
    }

    /// A supervisor whose children a, b, c, ... all started at time 0.
    fn running(flags: SupervisorFlags, children: &[(&str, Restart)]) -> SupervisorCore {
        let specs = children.iter().map(|(name, restart)| (id(name), meta(*restart))).collect();
        let mut core = SupervisorCore::new(flags, specs).expect("valid specs");
        for child in core.start_order() {
            core.started(at(0), &child, StartOutcome::Running);
        }
        core
    }

    fn plan(action: Action) -> RestartPlan {
        match action {
            Action::Restart(plan) => plan,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    fn ids(names: &[&str]) -> Vec<ChildId> {
        names.iter().map(|n| id(n)).collect()
    }

    const P: Restart = Restart::Permanent;
    const T: Restart = Restart::Transient;
    const TMP: Restart = Restart::Temporary;

    #[test]
    fn one_for_one_restarts_only_the_failed_child() {
        let mut core = running(SupervisorFlags::default(), &[("a", P), ("b", P), ("c", P)]);
        let plan = plan(core.child_exited(at(1), &id("b"), &boom(), 0));
        assert_eq!(plan, RestartPlan { terminate: vec![], start: ids(&["b"]), delay: None });
    }

    #[test]
    fn one_for_all_terminates_others_in_reverse_and_drops_temporaries() {
        let flags = SupervisorFlags::strategy(Strategy::OneForAll);
        let mut core = running(flags, &[("a", P), ("b", TMP), ("c", P), ("d", P)]);
        let plan = plan(core.child_exited(at(1), &id("c"), &boom(), 0));
        assert_eq!(plan.terminate, ids(&["d", "b", "a"]));
        assert_eq!(plan.start, ids(&["a", "c", "d"]));
        assert!(core.child(&id("b")).is_none(), "temporary sibling is not restarted");
    }

    #[test]
    fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
        let flags = SupervisorFlags::strategy(Strategy::RestForOne);
        let mut core = running(flags, &[("a", P), ("b", P), ("c", P), ("d", P)]);
        let plan = plan(core.child_exited(at(1), &id("b"), &boom(), 0));
        assert_eq!(plan.terminate, ids(&["d", "c"]));
        assert_eq!(plan.start, ids(&["b", "c", "d"]));
        assert_eq!(core.child(&id("a")).unwrap().status, ChildStatus::Running);
    }

    #[test]
    fn exceeding_the_intensity_shuts_down_with_all_running_children_in_reverse() {
        let flags = SupervisorFlags::default().with_intensity(2, Duration::from_secs(5));
        let mut core = running(flags, &[("a", P), ("b", P)]);
        for ms in [1, 2] {
            plan(core.child_exited(at(ms), &id("b"), &boom(), 0));
            core.started(at(ms), &id("b"), StartOutcome::Running);
        }
        let action = core.child_exited(at(3), &id("b"), &boom(), 0);
        assert_eq!(action, Action::Shutdown { terminate: ids(&["a"]), reason: ExitReason::Shutdown });
    }

    #[test]
    fn transient_children_stay_down_after_orderly_exits_only() {
        let mut core = running(SupervisorFlags::default().with_intensity(10, Duration::from_secs(5)), &[("a", T)]);
        for reason in [ExitReason::Normal, ExitReason::Shutdown, ExitReason::ShutdownWith("x".into())] {
            assert_eq!(core.child_exited(at(1), &id("a"), &reason, 0), Action::None);
            assert_eq!(core.child(&id("a")).unwrap().status, ChildStatus::Stopped);
            core.restart_requested(&id("a")).unwrap();
            core.started(at(1), &id("a"), StartOutcome::Running);
        }
        for reason in [boom(), ExitReason::Killed, ExitReason::NoConnection] {
            plan(core.child_exited(at(2), &id("a"), &reason, 0));
            core.started(at(2), &id("a"), StartOutcome::Running);
        }
    }

    #[test]
    fn temporary_children_are_never_restarted_and_their_spec_is_removed() {
        let mut core = running(SupervisorFlags::default(), &[("a", TMP)]);
        assert_eq!(core.child_exited(at(1), &id("a"), &boom(), 0), Action::None);
        assert!(core.child(&id("a")).is_none());
    }

    #[test]
    fn ignore_keeps_the_spec_unless_temporary() {
        let specs = vec![(id("p"), meta(P)), (id("t"), meta(TMP))];
        let mut core = SupervisorCore::new(SupervisorFlags::default(), specs).unwrap();
        core.started(at(0), &id("p"), StartOutcome::Ignored);
        core.started(at(0), &id("t"), StartOutcome::Ignored);
        assert_eq!(core.child(&id("p")).unwrap().status, ChildStatus::Stopped);
        assert!(core.child(&id("t")).is_none());
        assert_eq!(core.restart_requested(&id("p")), Ok(()));
    }

    #[test]
    fn exits_of_children_not_running_are_stale() {
        let mut core = running(SupervisorFlags::default(), &[("a", P)]);
        core.terminated_on_request(&id("a")).unwrap();
        assert_eq!(core.child_exited(at(1), &id("a"), &boom(), 0), Action::None);
        assert_eq!(core.child_exited(at(1), &id("zz"), &boom(), 0), Action::None);
    }

    #[test]
    fn a_failed_restart_is_retried_and_each_retry_counts() {
        let flags = SupervisorFlags::default().with_intensity(2, Duration::from_secs(5));
        let mut core = running(flags, &[("a", P)]);
        plan(core.child_exited(at(1), &id("a"), &boom(), 0));
        assert_eq!(core.restart_failed(&id("a"), &[]), Action::Retry { id: id("a"), delay: None });
        plan(core.try_again(at(2), &id("a"), 0));
        core.restart_failed(&id("a"), &[]);
        assert!(matches!(core.try_again(at(3), &id("a"), 0), Action::Shutdown { .. }));
    }

    #[test]
    fn a_retry_for_a_child_that_was_deleted_meanwhile_is_dropped() {
        let mut core = running(SupervisorFlags::default(), &[("a", P)]);
        plan(core.child_exited(at(1), &id("a"), &boom(), 0));
        core.restart_failed(&id("a"), &[]);
        core.terminated_on_request(&id("a")).unwrap();
        assert_eq!(core.try_again(at(2), &id("a"), 0), Action::None);
    }

    #[test]
    fn any_significant_shuts_down_when_one_ends_by_itself() {
        let flags = SupervisorFlags::default().with_auto_shutdown(AutoShutdown::AnySignificant);
        let specs = vec![(id("a"), ChildMeta { significant: true, ..meta(T) }), (id("b"), meta(P))];
        let mut core = SupervisorCore::new(flags, specs).unwrap();
        for child in core.start_order() {
            core.started(at(0), &child, StartOutcome::Running);
        }
        let action = core.child_exited(at(1), &id("a"), &ExitReason::Normal, 0);
        assert_eq!(action, Action::Shutdown { terminate: ids(&["b"]), reason: ExitReason::Shutdown });
    }

    #[test]
    fn all_significant_waits_for_the_last_one_and_ignores_requested_terminations() {
        let flags = SupervisorFlags::default().with_auto_shutdown(AutoShutdown::AllSignificant);
        let sig = ChildMeta { significant: true, ..meta(TMP) };
        let specs = vec![(id("a"), sig), (id("b"), sig), (id("c"), sig)];
        let mut core = SupervisorCore::new(flags, specs).unwrap();
        for child in core.start_order() {
            core.started(at(0), &child, StartOutcome::Running);
        }
        core.terminated_on_request(&id("a")).unwrap();
        assert_eq!(core.child_exited(at(1), &id("b"), &ExitReason::Normal, 0), Action::None);
        assert!(matches!(core.child_exited(at(2), &id("c"), &boom(), 0), Action::Shutdown { .. }));
    }

    #[test]
    fn significant_children_need_auto_shutdown_and_must_not_be_permanent() {
        let sig = |restart| ChildMeta { significant: true, ..meta(restart) };
        let never = SupervisorFlags::default();
        assert_eq!(
            SupervisorCore::new(never, vec![(id("a"), sig(T))]).unwrap_err(),
            SpecError::SignificantWithoutAutoShutdown(id("a"))
        );
        let any = never.with_auto_shutdown(AutoShutdown::AnySignificant);
        assert_eq!(
            SupervisorCore::new(any, vec![(id("a"), sig(P))]).unwrap_err(),
            SpecError::SignificantPermanent(id("a"))
        );
    }

    #[test]
    fn duplicate_ids_and_a_zero_period_are_refused() {
        let dup = vec![(id("a"), meta(P)), (id("a"), meta(P))];
        assert_eq!(SupervisorCore::new(SupervisorFlags::default(), dup).unwrap_err(), SpecError::DuplicateId(id("a")));
        let flags = SupervisorFlags::default().with_intensity(1, Duration::ZERO);
        assert_eq!(SupervisorCore::new(flags, vec![]).unwrap_err(), SpecError::ZeroPeriod);
    }

    #[test]
    fn add_child_reports_present_and_started_ids() {
        let mut core = running(SupervisorFlags::default(), &[("a", P), ("b", T)]);
        core.child_exited(at(1), &id("b"), &ExitReason::Normal, 0);
        assert_eq!(core.add_child(id("a"), meta(P)), Err(ChildOpError::AlreadyStarted(id("a"))));
        assert_eq!(core.add_child(id("b"), meta(P)), Err(ChildOpError::AlreadyPresent(id("b"))));
        assert_eq!(core.add_child(id("c"), meta(P)), Ok(()));
        assert_eq!(core.start_order(), ids(&["a", "b", "c"]));
    }

    #[test]
    fn simple_one_for_one_refuses_static_operations() {
        let flags = SupervisorFlags::strategy(Strategy::SimpleOneForOne);
        let mut core = SupervisorCore::new(flags, vec![(id("template"), meta(TMP))]).unwrap();
        let first = core.add_dynamic().unwrap();
        core.started(at(0), &first, StartOutcome::Running);
        assert_eq!(core.delete(&first), Err(ChildOpError::SimpleOneForOne));
        assert_eq!(core.restart_requested(&first), Err(ChildOpError::SimpleOneForOne));
        assert_eq!(core.add_child(id("x"), meta(P)), Err(ChildOpError::SimpleOneForOne));
        assert_eq!(core.terminated_on_request(&first), Ok(true));
        assert!(core.children().is_empty());
        let two = SupervisorCore::new(flags, vec![(id("a"), meta(P)), (id("b"), meta(P))]);
        assert_eq!(two.unwrap_err(), SpecError::TemplateCount(2));
    }

    #[test]
    fn dynamic_transient_instances_vanish_after_a_normal_exit() {
        let flags = SupervisorFlags::strategy(Strategy::SimpleOneForOne);
        let mut core = SupervisorCore::new(flags, vec![(id("t"), meta(T))]).unwrap();
        let child = core.add_dynamic().unwrap();
        core.started(at(0), &child, StartOutcome::Running);
        assert_eq!(core.child_exited(at(1), &child, &ExitReason::Normal, 0), Action::None);
        assert!(core.children().is_empty());
    }

    #[test]
    fn backoff_grows_per_child_and_resets_after_a_stable_run() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        };
        let flags = SupervisorFlags::default().with_intensity(100, Duration::from_secs(1)).with_backoff(backoff);
        let mut core = running(flags, &[("a", P)]);
        let mut delays = Vec::new();
        for ms in [1, 2, 3] {
            delays.push(plan(core.child_exited(at(ms), &id("a"), &boom(), u64::MAX)).delay.unwrap());
            core.started(at(ms), &id("a"), StartOutcome::Running);
        }
        assert_eq!(delays, [100, 200, 400].map(Duration::from_millis));
        let after_stable_run = plan(core.child_exited(at(60_000), &id("a"), &boom(), u64::MAX));
        assert_eq!(after_stable_run.delay, Some(Duration::from_millis(100)));
    }

    #[test]
    fn counts_follow_otp() {
        let specs = vec![(id("w"), meta(P)), (id("s"), ChildMeta::new(ChildKind::Supervisor))];
        let mut core = SupervisorCore::new(SupervisorFlags::default(), specs).unwrap();
        core.started(at(0), &id("w"), StartOutcome::Running);
        core.started(at(0), &id("s"), StartOutcome::Ignored);
        assert_eq!(core.counts(), ChildCounts { specs: 2, active: 1, supervisors: 1, workers: 1 });
    }
}

//! The supervisor actor: a thin ractor shell around [`SupervisorCore`].
//!
//! The shell starts and stops processes and turns ractor's supervision events into calls on
//! the core; the core decides. Like OTP's `supervisor`, everything happens inside the
//! supervisor's own message loop: while it shuts a child down it handles no other message
//! (callers time out rather than deadlock), and a failed restart is retried through a message
//! to itself so calls are served between attempts.
//!
//! A supervisor exits through ractor's orderly `stop` (never through an `Err`), because
//! ractor kills an actor's children the moment it ends: the children must already be shut
//! down, in reverse start order, by then.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};

use crate::call::{CallError, call};
use crate::core::spec::{ChildId, ChildKind, ChildMeta, Restart, Shutdown, SpecError, Strategy, SupervisorFlags};
use crate::core::supervisor::{
    Action, ChildCounts, ChildOpError, ChildStatus, RestartPlan, StartOutcome, SupervisorCore,
};
use crate::exit::{ExitReason, exit_reason, stop_with};
use crate::node::Node;

/// Arguments handed to a dynamic child by `start_child` on a `simple_one_for_one` supervisor
/// (OTP appends them to the template's arguments).
pub type DynArgs = Arc<dyn Any + Send + Sync>;

/// What a start function gets.
#[derive(Clone)]
pub struct StartContext {
    /// Spawn the child linked to this cell (ractor's parent link), or the supervisor never
    /// hears of its exit. [`ChildSpec::worker`] does this for you.
    pub supervisor: ActorCell,
    pub node: Node,
    pub args: Option<DynArgs>,
}

impl StartContext {
    /// The dynamic arguments, if they are of type `T`.
    pub fn args<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.args.as_deref().and_then(|a| a.downcast_ref::<T>())
    }
}

/// The result of a successful start function.
pub enum Started {
    Running(ActorCell),
    /// OTP's `ignore`.
    Ignore,
}

/// Why a child did not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl From<ractor::SpawnErr> for StartError {
    fn from(err: ractor::SpawnErr) -> Self {
        StartError(err.to_string())
    }
}

type StartFn = Arc<dyn Fn(StartContext) -> BoxFuture<'static, Result<Started, StartError>> + Send + Sync>;

/// A child specification: identity, restart semantics and how to start it.
#[derive(Clone)]
pub struct ChildSpec {
    pub id: ChildId,
    pub meta: ChildMeta,
    start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec").field("id", &self.id).field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by an arbitrary function; permanent, with OTP's default shutdown.
    pub fn new<F, Fut>(id: impl Into<ChildId>, kind: ChildKind, start: F) -> Self
    where
        F: Fn(StartContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Started, StartError>> + Send + 'static,
    {
        let start: StartFn = Arc::new(move |ctx| start(ctx).boxed());
        ChildSpec { id: id.into(), meta: ChildMeta::new(kind), start }
    }

    /// A ractor actor as a worker: `make` builds its handler and arguments for each start.
    pub fn worker<A, F>(id: impl Into<ChildId>, make: F) -> Self
    where
        A: Actor,
        F: Fn(&StartContext) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, ChildKind::Worker, move |ctx| {
            let (handler, args) = make(&ctx);
            async move {
                let (actor, _) = Actor::spawn_linked(None, handler, args, ctx.supervisor).await?;
                Ok(Started::Running(actor.get_cell()))
            }
        })
    }

    /// A nested supervisor.
    pub fn supervisor(id: impl Into<ChildId>, spec: SupervisorSpec) -> Self {
        Self::new(id, ChildKind::Supervisor, move |ctx| {
            let spec = spec.clone();
            async move {
                let sup = Supervisor::spawn(ctx.node, spec, Some(ctx.supervisor)).await?;
                Ok(Started::Running(sup.cell()))
            }
        })
    }

    pub fn restart(mut self, restart: Restart) -> Self {
        self.meta.restart = restart;
        self
    }

    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.meta.shutdown = shutdown;
        self
    }

    pub fn significant(mut self, significant: bool) -> Self {
        self.meta.significant = significant;
        self
    }

    async fn start(&self, ctx: StartContext) -> Result<Started, StartError> {
        // A start function that panics is a failed start, never a crashed supervisor.
        match AssertUnwindSafe((self.start)(ctx)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(StartError(panic_text(panic))),
        }
    }
}

fn panic_text(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => panic.downcast::<&str>().map(|s| (*s).to_owned()).unwrap_or_else(|_| "panic".into()),
    }
}

/// A supervisor's flags and children, reusable for every (re)start.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Registered in the node's registry while the supervisor runs.
    pub name: Option<String>,
    pub flags: SupervisorFlags,
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    pub fn new(flags: SupervisorFlags) -> Self {
        SupervisorSpec { name: None, flags, children: Vec::new() }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}

/// Selects a child for `terminate_child`: by id, or by actor for `simple_one_for_one`.
#[derive(Clone, Debug)]
pub enum ChildTarget {
    Id(ChildId),
    Actor(ActorId),
}

/// One row of `which_children`.
#[derive(Clone, Debug)]
pub struct ChildInfo {
    pub id: ChildId,
    pub actor: Option<ActorCell>,
    pub kind: ChildKind,
    pub status: ChildStatus,
}

/// Why a supervisor refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Child(#[from] ChildOpError),
    #[error("child failed to start: {0}")]
    Start(#[from] StartError),
    #[error("call to the supervisor failed: {0}")]
    Call(#[from] CallError),
}

type Reply<T> = RpcReplyPort<Result<T, SupervisorError>>;

/// The supervisor's messages. Internal variants are hidden from users by [`SupervisorRef`].
pub enum SupervisorMsg {
    StartChild(ChildSpec, Reply<Option<ActorCell>>),
    StartDynamic(DynArgs, Reply<Option<ActorCell>>),
    TerminateChild(ChildTarget, Reply<()>),
    RestartChild(ChildId, Reply<Option<ActorCell>>),
    DeleteChild(ChildId, Reply<()>),
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    CountChildren(RpcReplyPort<ChildCounts>),
    /// OTP's `try_again_restart`: a failed restart, retried through the mailbox.
    TryAgain(ChildId),
    /// A restart plan whose backoff delay has elapsed.
    DelayedStart(Vec<ChildId>),
}

/// The default timeout of calls to a supervisor.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to a running supervisor. Every call carries a timeout.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    timeout: Duration,
}

impl SupervisorRef {
    pub fn from_cell(cell: ActorCell) -> Self {
        SupervisorRef { actor: ActorRef::from(cell), timeout: DEFAULT_CALL_TIMEOUT }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    pub async fn start_child(&self, spec: ChildSpec) -> Result<Option<ActorCell>, SupervisorError> {
        call(&self.actor, |r| SupervisorMsg::StartChild(spec, r), self.timeout).await?
    }

    /// Starts an instance of a `simple_one_for_one` supervisor's template with `args`.
    pub async fn start_dynamic(&self, args: DynArgs) -> Result<Option<ActorCell>, SupervisorError> {
        call(&self.actor, |r| SupervisorMsg::StartDynamic(args, r), self.timeout).await?
    }

    pub async fn terminate_child(&self, target: ChildTarget) -> Result<(), SupervisorError> {
        call(&self.actor, |r| SupervisorMsg::TerminateChild(target, r), self.timeout).await?
    }

    pub async fn restart_child(&self, id: impl Into<ChildId>) -> Result<Option<ActorCell>, SupervisorError> {
        let id = id.into();
        call(&self.actor, |r| SupervisorMsg::RestartChild(id, r), self.timeout).await?
    }

    pub async fn delete_child(&self, id: impl Into<ChildId>) -> Result<(), SupervisorError> {
        let id = id.into();
        call(&self.actor, |r| SupervisorMsg::DeleteChild(id, r), self.timeout).await?
    }

    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        call(&self.actor, SupervisorMsg::WhichChildren, self.timeout).await
    }

    pub async fn count_children(&self) -> Result<ChildCounts, CallError> {
        call(&self.actor, SupervisorMsg::CountChildren, self.timeout).await
    }

    /// Stops the supervisor (children first, in reverse start order) and waits for it.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), CallError> {
        self.actor
            .stop_and_wait(Some(ExitReason::Shutdown.to_stop_reason()), Some(timeout))
            .await
            .map_err(|_| CallError::Timeout(timeout))
    }
}

/// The supervisor actor.
pub struct Supervisor;

impl Supervisor {
    /// Starts a supervisor, linked to `parent` when given (as a child spec does).
    pub async fn spawn(
        node: Node,
        spec: SupervisorSpec,
        parent: Option<ActorCell>,
    ) -> Result<SupervisorRef, StartError> {
        let (actor, _) = match parent {
            Some(parent) => Actor::spawn_linked(None, Supervisor, (node, spec), parent).await?,
            None => Actor::spawn(None, Supervisor, (node, spec)).await?,
        };
        Ok(SupervisorRef { actor, timeout: DEFAULT_CALL_TIMEOUT })
    }
}

struct Running {
    actor: ActorCell,
    shutdown: Shutdown,
}

pub struct SupervisorState {
    node: Node,
    name: Option<String>,
    core: SupervisorCore,
    /// Start functions by child id; for `simple_one_for_one`, only the template.
    specs: BTreeMap<ChildId, ChildSpec>,
    template: Option<ChildSpec>,
    dyn_args: BTreeMap<ChildId, DynArgs>,
    running: BTreeMap<ChildId, Running>,
    by_actor: BTreeMap<ActorId, ChildId>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (Node, SupervisorSpec);

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        (node, spec): (Node, SupervisorSpec),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let metas = spec.children.iter().map(|c| (c.id.clone(), c.meta)).collect();
        let core = SupervisorCore::new(spec.flags, metas)?;
        let mut state = SupervisorState {
            node,
            name: spec.name,
            core,
            specs: BTreeMap::new(),
            template: None,
            dyn_args: BTreeMap::new(),
            running: BTreeMap::new(),
            by_actor: BTreeMap::new(),
        };
        if spec.flags.strategy == Strategy::SimpleOneForOne {
            state.template = spec.children.into_iter().next();
        } else {
            state.specs = spec.children.into_iter().map(|c| (c.id.clone(), c)).collect();
        }
        // Like OTP, the name is taken before any child starts, so a child (or anyone who saw
        // a child start) can already find its supervisor by name.
        if let Some(name) = &state.name {
            state.node.register(name.clone(), myself.get_cell())?;
        }
        for id in state.core.start_order() {
            if let Err(err) = state.start_now(&myself, &id).await {
                // ractor runs no post_stop after a failed pre_start: release here.
                state.release(&myself).await;
                return Err(format!("failed to start child {id}: {err}").into());
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.release(&myself).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let _ = reply.send(state.start_child(&myself, spec).await);
            }
            SupervisorMsg::StartDynamic(args, reply) => {
                let _ = reply.send(state.start_dynamic(&myself, args).await);
            }
            SupervisorMsg::TerminateChild(target, reply) => {
                let _ = reply.send(state.terminate_child(target).await);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let _ = reply.send(state.restart_child(&myself, &id).await);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let result = state.core.delete(&id).map_err(SupervisorError::from);
                if result.is_ok() {
                    state.specs.remove(&id);
                }
                let _ = reply.send(result);
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(state.which_children());
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.core.counts());
            }
            SupervisorMsg::TryAgain(id) => {
                let random = state.jitter_sample();
                let action = state.core.try_again(state.node.now(), &id, random);
                state.apply(&myself, action).await;
            }
            SupervisorMsg::DelayedStart(ids) => state.start_group(&myself, ids).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((actor, reason)) = exit_reason(&event) else { return Ok(()) };
        // Exits of children this supervisor terminated itself arrive late and are stale.
        let Some(id) = state.by_actor.remove(&actor.get_id()) else { return Ok(()) };
        state.running.remove(&id);
        state.report_exit(&id, &reason);
        let random = state.jitter_sample();
        let action = state.core.child_exited(state.node.now(), &id, &reason, random);
        if state.template.is_some() && state.core.child(&id).is_none() {
            state.dyn_args.remove(&id);
        }
        state.apply(&myself, action).await;
        Ok(())
    }
}

impl SupervisorState {
    /// Carries out a decision of the core.
    async fn apply(&mut self, myself: &ActorRef<SupervisorMsg>, action: Action) {
        match action {
            Action::None => {}
            Action::Restart(RestartPlan { terminate, start, delay }) => {
                for id in &terminate {
                    self.shut_down(id).await;
                }
                match delay {
                    Some(delay) => {
                        myself.send_after(delay, move || SupervisorMsg::DelayedStart(start));
                    }
                    None => self.start_group(myself, start).await,
                }
            }
            Action::Retry { id, delay } => match delay {
                Some(delay) => {
                    myself.send_after(delay, move || SupervisorMsg::TryAgain(id));
                }
                None => {
                    let _ = myself.send_message(SupervisorMsg::TryAgain(id));
                }
            },
            Action::Shutdown { terminate, reason } => {
                tracing::error!(supervisor = self.label(), %reason, "supervisor shutting down");
                self.shut_down_in_order(&terminate).await;
                stop_with(&myself.get_cell(), &reason);
            }
        }
    }

    /// Starts a planned group in order; the first failure queues a retry and abandons the rest.
    async fn start_group(&mut self, myself: &ActorRef<SupervisorMsg>, ids: Vec<ChildId>) {
        for (i, id) in ids.iter().enumerate() {
            if !self.core.restart_pending(id) {
                continue;
            }
            if let Err(err) = self.start_now(myself, id).await {
                tracing::warn!(supervisor = self.label(), child = %id, %err, "restart failed; retrying");
                let action = self.core.restart_failed(id, &ids[i + 1..]);
                Box::pin(self.apply(myself, action)).await;
                return;
            }
        }
    }

    /// Runs a child's start function and records the outcome in the core.
    async fn start_now(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &ChildId,
    ) -> Result<Option<ActorCell>, StartError> {
        let spec = self.spec_of(id).ok_or_else(|| StartError(format!("no specification for child {id}")))?;
        let ctx = StartContext {
            supervisor: myself.get_cell(),
            node: self.node.clone(),
            args: self.dyn_args.get(id).cloned(),
        };
        let outcome = match spec.start(ctx).await? {
            Started::Running(actor) => {
                // Link here too, in case a custom start function did not; linking is idempotent.
                actor.link(myself.get_cell());
                if matches!(actor.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
                    return Err(StartError(format!("child {id} exited while starting")));
                }
                self.by_actor.insert(actor.get_id(), id.clone());
                self.running.insert(id.clone(), Running { actor: actor.clone(), shutdown: spec.meta.shutdown });
                Some(actor)
            }
            Started::Ignore => None,
        };
        let result = if outcome.is_some() { StartOutcome::Running } else { StartOutcome::Ignored };
        self.core.started(self.node.now(), id, result);
        Ok(outcome)
    }

    async fn start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        let id = spec.id.clone();
        self.core.add_child(id.clone(), spec.meta)?;
        self.specs.insert(id.clone(), spec);
        self.start_new(myself, &id).await
    }

    async fn start_dynamic(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        args: DynArgs,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        let id = self.core.add_dynamic()?;
        self.dyn_args.insert(id.clone(), args);
        self.start_new(myself, &id).await
    }

    /// The first start of a child added at run time; a failure forgets the child.
    async fn start_new(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &ChildId,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        match self.start_now(myself, id).await {
            Ok(actor) => {
                if actor.is_none() && self.core.child(id).is_none() {
                    self.forget(id);
                }
                Ok(actor)
            }
            Err(err) => {
                self.core.first_start_failed(id);
                self.forget(id);
                Err(err.into())
            }
        }
    }

    async fn terminate_child(&mut self, target: ChildTarget) -> Result<(), SupervisorError> {
        let dynamic = self.template.is_some();
        let id = match target {
            ChildTarget::Id(id) if !dynamic => id,
            ChildTarget::Actor(actor) if dynamic => {
                self.by_actor.get(&actor).cloned().ok_or(ChildOpError::NotFound(ChildId::Dynamic(u64::MAX)))?
            }
            ChildTarget::Id(id) => return Err(ChildOpError::NotFound(id).into()),
            ChildTarget::Actor(_) => return Err(ChildOpError::SimpleOneForOne.into()),
        };
        self.core.terminated_on_request(&id)?;
        self.shut_down(&id).await;
        if self.core.child(&id).is_none() {
            self.forget(&id);
        }
        Ok(())
    }

    async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &ChildId,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        self.core.restart_requested(id)?;
        match self.start_now(myself, id).await {
            Ok(actor) => Ok(actor),
            Err(err) => {
                self.core.start_refused(id);
                Err(err.into())
            }
        }
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        self.core
            .children()
            .iter()
            .map(|c| ChildInfo {
                id: c.id.clone(),
                actor: self.running.get(&c.id).map(|r| r.actor.clone()),
                kind: c.meta.kind,
                status: c.status,
            })
            .collect()
    }

    /// Stops one running child per its shutdown policy and waits for it.
    async fn shut_down(&mut self, id: &ChildId) {
        let Some(running) = self.running.remove(id) else { return };
        self.by_actor.remove(&running.actor.get_id());
        shut_down_child(&running.actor, running.shutdown).await;
    }

    async fn shut_down_in_order(&mut self, ids: &[ChildId]) {
        if self.template.is_some() {
            // OTP stops simple_one_for_one children asynchronously, in parallel.
            let stopping: Vec<Running> = ids.iter().filter_map(|id| self.running.remove(id)).collect();
            for r in &stopping {
                self.by_actor.remove(&r.actor.get_id());
            }
            futures::future::join_all(stopping.iter().map(|r| shut_down_child(&r.actor, r.shutdown))).await;
        } else {
            for id in ids {
                self.shut_down(id).await;
            }
        }
    }

    /// What a stopping supervisor gives up: its children (reverse start order), then its name.
    async fn release(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.shut_down_all().await;
        if let Some(name) = &self.name {
            self.node.unregister(name, &myself.get_cell());
        }
    }

    async fn shut_down_all(&mut self) {
        let order = self.core.shutdown_order();
        self.shut_down_in_order(&order).await;
    }

    fn spec_of(&self, id: &ChildId) -> Option<ChildSpec> {
        match id {
            ChildId::Dynamic(_) => self.template.clone(),
            ChildId::Named(_) => self.specs.get(id).cloned(),
        }
    }

    fn forget(&mut self, id: &ChildId) {
        self.dyn_args.remove(id);
        if matches!(id, ChildId::Named(_)) {
            self.specs.remove(id);
        }
    }

    /// Draws jitter only when backoff is on, so supervisors without it leave the node's
    /// random sequence untouched.
    fn jitter_sample(&self) -> u64 {
        if self.core.flags().backoff.is_some() { self.node.random_u64() } else { 0 }
    }

    fn report_exit(&self, id: &ChildId, reason: &ExitReason) {
        if reason.is_orderly() {
            tracing::debug!(supervisor = self.label(), child = %id, %reason, "child exited");
        } else {
            tracing::warn!(supervisor = self.label(), child = %id, %reason, "child terminated abnormally");
        }
    }

    fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("anonymous")
    }
}

/// OTP's shutdown procedure for one child: `brutal_kill` kills at once; a timeout asks the
/// child to stop with reason `shutdown` and kills it when the time is up; `infinity` waits.
async fn shut_down_child(actor: &ActorCell, shutdown: Shutdown) {
    match shutdown {
        Shutdown::BrutalKill => actor.kill(),
        Shutdown::Timeout(limit) => {
            stop_with(actor, &ExitReason::Shutdown);
            if actor.wait(Some(limit)).await.is_ok() {
                return;
            }
            tracing::warn!(actor = %actor.get_id(), ?limit, "child did not stop in time; killing it");
            actor.kill();
        }
        Shutdown::Infinity => stop_with(actor, &ExitReason::Shutdown),
    }
    // A kill pre-empts any await in the child, so this wait ends unless the child blocks a
    // thread without yielding.
    let _ = actor.wait(None).await;
}

/// A spec for a supervisor child that OTP would refuse.
pub fn check_spec(spec: &SupervisorSpec) -> Result<(), SpecError> {
    let metas = spec.children.iter().map(|c| (c.id.clone(), c.meta)).collect();
    SupervisorCore::new(spec.flags, metas).map(|_| ())
}

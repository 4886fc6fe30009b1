//! The discovery feed: one actor per node that keeps the [`ClusterView`] the leading master
//! publishes under `/discovery/` in the registry, and hands it to the node's DNS server and
//! load balancer — the whole view when they subscribe, then each batch of changes as the
//! registry's watch stream delivers it (pushed, within milliseconds of the commit).
//!
//! On a master the feed reads and watches its own registry (every master applies the same
//! log); on an agent it asks the masters over the transport, and moves to another master when
//! the one serving its watch goes away. A watch that ended resumes from the last revision
//! seen; one whose history was compacted away starts over from a fresh read.

use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Node;
use flotilla_supervisors::{ChildKind, ChildSpec, StartContext, StartError};
use flotilla_transport::Transport;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use super::entries::{DISCOVERY_PREFIX, change_of_entry};
use super::model::{ClusterView, ViewChange, ViewUpdate};
use crate::control_plane::CurrentTransport;
use crate::registry::actor::RegistryMsg;
use crate::registry::client::RegistryClient;
use crate::registry::core::{Event, EventKind, KeyValue, Revision};
use crate::registry::protocol::{REGISTRY_NAME, RegistryReply, RegistryRequest, WatchBody, WatchNotice};

/// The feed's name in its node, where DNS and the load balancer find it.
pub const FEED_ACTOR: &str = "discovery-feed";
/// The name its watch notices arrive under (from a master's registry over the transport).
const WATCH_SINK: &str = "discovery-watch";
/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed read or watch, the next attempt comes this much later.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// A consumer of the view: returns `Err` once it is gone.
pub type ViewSink = Arc<dyn Fn(ViewUpdate) -> Result<(), ()> + Send + Sync>;

/// Where the feed reads the registry.
#[derive(Clone)]
pub enum ViewSource {
    /// This master's registry actor.
    Local(ActorRef<RegistryMsg>),
    /// The masters, over the transport (an agent).
    Remote { transport: Transport, masters: Vec<String> },
}

pub enum FeedMsg {
    Subscribe(ViewSink),
    /// Read the whole view again and watch from there.
    Sync,
    /// Watch again from the last revision seen.
    Resume,
    Notice(WatchNotice),
    /// The master serving the watch is gone.
    SourceDown(String),
    /// The current view (tests, status pages).
    View(ractor::RpcReplyPort<Arc<ClusterView>>),
}

pub struct FeedState {
    node: Node,
    source: ViewSource,
    client: Option<RegistryClient>,
    view: Arc<ClusterView>,
    sinks: Vec<ViewSink>,
    /// The watch notices are taken from (others are stale).
    watch: Option<u64>,
    /// The master serving the watch (remote sources).
    serving: Option<String>,
    relay: Option<ActorRef<WatchNotice>>,
}

pub struct Feed;

impl Actor for Feed {
    type Msg = FeedMsg;
    type State = FeedState;
    type Arguments = (ViewSource, Node);

    async fn pre_start(
        &self,
        myself: ActorRef<FeedMsg>,
        args: Self::Arguments,
    ) -> Result<FeedState, ActorProcessingErr> {
        let (source, node) = args;
        let client_id = node.random_u64();
        let client = match &source {
            ViewSource::Remote { transport, masters } => {
                transport.export::<WatchNotice, FeedMsg>(WATCH_SINK, &myself, FeedMsg::Notice);
                Some(RegistryClient::new(transport.clone(), masters.clone(), client_id))
            }
            ViewSource::Local(_) => None,
        };
        let relay = match &source {
            ViewSource::Local(_) => {
                let (relay, _) = Actor::spawn_linked(None, Relay, myself.clone(), myself.get_cell()).await?;
                Some(relay)
            }
            ViewSource::Remote { .. } => None,
        };
        node.register(FEED_ACTOR, myself.get_cell())?;
        myself.send_message(FeedMsg::Sync)?;
        Ok(FeedState {
            node,
            source,
            client,
            view: Arc::new(ClusterView::default()),
            sinks: Vec::new(),
            watch: None,
            serving: None,
            relay,
        })
    }

    async fn post_stop(&self, myself: ActorRef<FeedMsg>, state: &mut FeedState) -> Result<(), ActorProcessingErr> {
        state.node.unregister(FEED_ACTOR, &myself.get_cell());
        if let ViewSource::Remote { transport, .. } = &state.source {
            transport.unexport(WATCH_SINK);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<FeedMsg>,
        msg: FeedMsg,
        state: &mut FeedState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FeedMsg::Subscribe(sink) => {
                if sink(ViewUpdate::Reset(Arc::clone(&state.view))).is_ok() {
                    state.sinks.push(sink);
                }
            }
            FeedMsg::Sync => {
                if let Err(error) = state.sync().await {
                    warn!(%error, "cannot read the discovery entries; retrying");
                    myself.send_after(RETRY_DELAY, || FeedMsg::Sync);
                    return Ok(());
                }
                state.start_watch(&myself).await;
            }
            FeedMsg::Resume => state.start_watch(&myself).await,
            FeedMsg::Notice(notice) if Some(notice.watch) == state.watch => match notice.body {
                WatchBody::Events(events) => state.apply(&events),
                WatchBody::Compacted { .. } => {
                    state.watch = None;
                    myself.send_message(FeedMsg::Sync)?;
                }
                WatchBody::Ended => {
                    state.watch = None;
                    myself.send_message(FeedMsg::Resume)?;
                }
            },
            FeedMsg::Notice(_) => {}
            FeedMsg::SourceDown(master) => {
                if state.serving.as_deref() == Some(master.as_str()) {
                    info!(%master, "the master serving the discovery watch is gone; watching through another");
                    state.watch = None;
                    state.serving = None;
                    myself.send_message(FeedMsg::Resume)?;
                }
            }
            FeedMsg::View(reply) => {
                let _ = reply.send(Arc::clone(&state.view));
            }
        }
        Ok(())
    }
}

impl FeedState {
    /// Reads every entry and hands the new view to the consumers.
    async fn sync(&mut self) -> Result<(), String> {
        let (revision, kvs) = self.range().await?;
        let mut view = ClusterView { revision, ..ClusterView::default() };
        for kv in &kvs {
            if let Some(change) = change_of_entry(&kv.key, Some(&kv.value)) {
                view.apply(&change);
            }
        }
        debug!(revision, tasks = view.tasks.len(), "discovery view read");
        self.view = Arc::new(view);
        self.publish(ViewUpdate::Reset(Arc::clone(&self.view)));
        Ok(())
    }

    async fn range(&mut self) -> Result<(Revision, Vec<KeyValue>), String> {
        let request = RegistryRequest::Range { prefix: DISCOVERY_PREFIX.to_owned(), limit: u32::MAX };
        match (&self.source, &mut self.client) {
            (ViewSource::Local(registry), _) => {
                match crate::registry::actor::local_request(registry, request, REQUEST_TIMEOUT).await? {
                    RegistryReply::Values { revision, kvs } => Ok((revision, kvs)),
                    other => Err(format!("unexpected answer {other:?}")),
                }
            }
            (ViewSource::Remote { .. }, Some(client)) => {
                client.range(DISCOVERY_PREFIX, u32::MAX, REQUEST_TIMEOUT).await.map_err(|e| e.to_string())
            }
            (ViewSource::Remote { .. }, None) => Err("no registry client".to_owned()),
        }
    }

    /// Watches from the view's revision; on failure tries again a little later.
    async fn start_watch(&mut self, myself: &ActorRef<FeedMsg>) {
        match self.watch_from(myself).await {
            Ok(watch) => self.watch = Some(watch),
            Err(error) => {
                warn!(%error, "cannot watch the discovery entries; retrying");
                myself.send_after(RETRY_DELAY, || FeedMsg::Resume);
            }
        }
    }

    async fn watch_from(&mut self, myself: &ActorRef<FeedMsg>) -> Result<u64, String> {
        let after = self.view.revision;
        let prefix = DISCOVERY_PREFIX.to_owned();
        match (&self.source, &mut self.client) {
            (ViewSource::Local(registry), _) => {
                let sink = self.relay.clone().ok_or("no watch relay")?;
                let call = |reply| RegistryMsg::WatchLocal { prefix, after, sink, reply };
                match registry.call(call, Some(REQUEST_TIMEOUT)).await.map_err(|e| e.to_string())? {
                    ractor::rpc::CallResult::Success(RegistryReply::Watching { watch }) => Ok(watch),
                    other => Err(format!("the registry refused the watch: {other:?}")),
                }
            }
            (ViewSource::Remote { transport, .. }, Some(client)) => {
                let watch =
                    client.watch(&prefix, after, WATCH_SINK, REQUEST_TIMEOUT).await.map_err(|e| e.to_string())?;
                if let Some(master) = client.current_master().map(str::to_owned) {
                    let feed = myself.clone();
                    let down = master.clone();
                    transport.monitor_node(&master, move |_| {
                        let _ = feed.send_message(FeedMsg::SourceDown(down.clone()));
                    });
                    self.serving = Some(master);
                }
                Ok(watch)
            }
            (ViewSource::Remote { .. }, None) => Err("no registry client".to_owned()),
        }
    }

    /// Applies a batch of registry events and hands the changes on.
    fn apply(&mut self, events: &[Event]) {
        let Some(last) = events.last() else { return };
        let changes: Vec<ViewChange> = events
            .iter()
            .filter_map(|event| {
                let value = (event.kind == EventKind::Put).then_some(event.kv.value.as_slice());
                change_of_entry(&event.kv.key, value)
            })
            .collect();
        let view = Arc::make_mut(&mut self.view);
        view.revision = last.revision;
        for change in &changes {
            view.apply(change);
        }
        if !changes.is_empty() {
            let update = ViewUpdate::Changes { revision: last.revision, changes: Arc::new(changes) };
            self.publish(update);
        }
    }

    fn publish(&mut self, update: ViewUpdate) {
        self.sinks.retain(|sink| sink(update.clone()).is_ok());
    }
}

/// Passes a local registry's watch notices to the feed (the registry sends them to an actor
/// of notices).
struct Relay;

impl Actor for Relay {
    type Msg = WatchNotice;
    type State = ActorRef<FeedMsg>;
    type Arguments = ActorRef<FeedMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<WatchNotice>,
        feed: ActorRef<FeedMsg>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(feed)
    }

    async fn handle(
        &self,
        _: ActorRef<WatchNotice>,
        notice: WatchNotice,
        feed: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        feed.send_message(FeedMsg::Notice(notice))?;
        Ok(())
    }
}

/// The feed as the first child of a node's discovery subtree: on a master it reads the local
/// registry, elsewhere the `masters` over the transport.
pub fn feed_child(transport: CurrentTransport, masters: Vec<String>) -> ChildSpec {
    ChildSpec::new("feed", ChildKind::Worker, move |ctx: StartContext| {
        let (transport, masters) = (Arc::clone(&transport), masters.clone());
        async move {
            let source = match ctx.node.whereis_ref::<RegistryMsg>(REGISTRY_NAME) {
                Some(registry) => ViewSource::Local(registry),
                None => {
                    let transport = transport().ok_or_else(|| StartError("no running transport".into()))?;
                    ViewSource::Remote { transport, masters }
                }
            };
            crate::master::spawn(Feed, (source, ctx.node.clone()), &ctx).await
        }
    })
}

/// Subscribes `sink` to the node's feed, if the node runs one (children started after it in
/// the discovery subtree); without a feed (a test's node) the consumer is fed by hand.
pub fn subscribe(ctx: &StartContext, sink: ViewSink) {
    match ctx.node.whereis_ref::<FeedMsg>(FEED_ACTOR) {
        Some(feed) => {
            if feed.send_message(FeedMsg::Subscribe(sink)).is_err() {
                warn!("the discovery feed is gone; a consumer starts without the view");
            }
        }
        None => debug!("no discovery feed on this node; the consumer is not subscribed"),
    }
}

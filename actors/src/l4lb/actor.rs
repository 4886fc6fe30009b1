//! The load balancer actor: it keeps the VIP table (`core`) from discovery's view updates and
//! carries the table's actions out on this node's data plane, chosen by
//! [`L4lbConfig::data_plane`]: a proxy per VIP (TCP or UDP), listening on the VIP's address,
//! which it puts on `lo` when needed; or the kernel's NAT, driven through nftables
//! (`kernel.rs`). When nftables is asked for but `nft` does not work at start, the actor says
//! why (log and status) and serves with the proxy: VIPs keep working, more slowly, rather than
//! not at all.
//!
//! The proxies are tasks in the actor's `JoinSet` (never detached): they end when the actor
//! does, and the actor sees a proxy that fails and retries it. A removed VIP's proxy stops
//! listening at once and drains; its address is released when it has finished.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::Node;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::core::{LbAction, VipKey, VipTable};
use super::kernel::KernelPlane;
use super::netif::LoAddresses;
use super::pool::{BackendStatus, Pool};
use super::tcp::ProxySettings;
use super::{DataPlane, L4lbConfig, tcp, udp};
use crate::discovery::{PortProtocol, ViewUpdate};

/// The name the load balancer is registered under on its node.
pub const L4LB_ACTOR: &str = "l4lb";

/// How often failed VIPs are retried and finished proxies collected when no message comes.
const TICK: Duration = Duration::from_secs(1);

/// The load balancer's messages.
pub enum L4lbMsg {
    /// Discovery's view: the whole of it (`Reset`) or a batch of changes.
    View(ViewUpdate),
    /// Every VIP with its state and backends (draining ones included).
    Status(RpcReplyPort<L4lbStatus>),
    /// Retry failed VIPs, collect drained proxies.
    Tick,
}

/// What the load balancer is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4lbStatus {
    pub enabled: bool,
    /// The data plane in use (the proxy when nftables was asked for but is unavailable).
    pub data_plane: DataPlane,
    /// Why the configured data plane is not in use, or the last failure of `nft` while the
    /// kernel's ruleset is behind the table.
    pub data_plane_error: Option<String>,
    /// In key order; a VIP may appear twice while an old proxy drains beside a new one.
    pub vips: Vec<VipStatus>,
    /// VIP labels that could not be read: (task id, why).
    pub rejected_labels: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipStatus {
    pub key: VipKey,
    /// The names that declared it (`myapp.marathon`); empty for an IP VIP.
    pub names: Vec<String>,
    pub state: VipState,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipState {
    Serving,
    /// Cannot listen (address or bind failure), or (nftables) its rules are not in the
    /// kernel; retried every second.
    Failed(String),
    /// Removed; new connections are refused and the open ones are draining.
    Draining,
}

pub struct L4lbArgs {
    pub node: Node,
    pub config: L4lbConfig,
}

/// The actor.
#[derive(Debug, Default)]
pub struct LoadBalancer;

/// A proxy task's identity, and what it returns.
type ProxyId = u64;
type ProxyEnd = (VipKey, ProxyId, io::Result<()>);

enum Run {
    Serving { id: ProxyId, stop: watch::Sender<bool> },
    Failed(String),
}

struct Vip {
    pool: Arc<Pool>,
    run: Run,
}

pub struct L4lbState {
    node: Node,
    config: L4lbConfig,
    table: VipTable,
    vips: BTreeMap<VipKey, Vip>,
    /// Proxies of removed VIPs that are still draining.
    draining: BTreeMap<ProxyId, (VipKey, Arc<Pool>)>,
    proxies: JoinSet<ProxyEnd>,
    /// Which proxy a task is, for a task that panicked (its output is lost with it).
    task_ids: HashMap<tokio::task::Id, (VipKey, ProxyId)>,
    next_id: ProxyId,
    addresses: LoAddresses,
    /// The nftables data plane, when in use; the proxies' fields above stay empty then.
    kernel: Option<KernelPlane>,
    /// Why nftables was asked for and is not in use.
    fallback: Option<String>,
}

impl Actor for LoadBalancer {
    type Msg = L4lbMsg;
    type State = L4lbState;
    type Arguments = L4lbArgs;

    async fn pre_start(&self, myself: ActorRef<L4lbMsg>, args: L4lbArgs) -> Result<L4lbState, ActorProcessingErr> {
        let L4lbArgs { node, config } = args;
        node.register(L4LB_ACTOR, myself.get_cell())?;
        myself.send_interval(TICK, || L4lbMsg::Tick);
        if !config.enabled {
            info!("load balancer disabled: VIPs are not served on this node");
        }
        let (kernel, fallback) = start_kernel_plane(&config).await;
        Ok(L4lbState {
            kernel,
            fallback,
            node,
            addresses: LoAddresses::new(config.add_vips_to_lo),
            config,
            table: VipTable::default(),
            vips: BTreeMap::new(),
            draining: BTreeMap::new(),
            proxies: JoinSet::new(),
            task_ids: HashMap::new(),
            next_id: 0,
        })
    }

    async fn post_stop(&self, myself: ActorRef<L4lbMsg>, state: &mut L4lbState) -> Result<(), ActorProcessingErr> {
        state.node.unregister(L4LB_ACTOR, &myself.get_cell());
        if let Some(kernel) = &mut state.kernel {
            kernel.stop().await;
        }
        // Aborting a proxy drops its connections' JoinSet, which aborts them too.
        state.proxies.shutdown().await;
        state.addresses.release_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<L4lbMsg>,
        msg: L4lbMsg,
        state: &mut L4lbState,
    ) -> Result<(), ActorProcessingErr> {
        state.collect_finished().await;
        match msg {
            L4lbMsg::View(update) if state.config.enabled => state.on_view(update).await,
            L4lbMsg::View(_) => {}
            L4lbMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            L4lbMsg::Tick => match &mut state.kernel {
                Some(kernel) => kernel.tick(&state.table, &mut state.addresses).await,
                None => state.retry_failed().await,
            },
        }
        Ok(())
    }
}

impl L4lbState {
    async fn on_view(&mut self, update: ViewUpdate) {
        let actions = match &update {
            ViewUpdate::Reset(view) => self.table.reset(view),
            ViewUpdate::Changes { changes, .. } => self.table.apply(changes),
        };
        if let Some(kernel) = &mut self.kernel {
            kernel.on_actions(&actions, &self.table, &mut self.addresses).await;
            return;
        }
        for action in actions {
            self.carry_out(action).await;
        }
    }

    async fn carry_out(&mut self, action: LbAction) {
        match action {
            LbAction::VipAdded(key) => {
                let pool = Pool::new(self.config.policy);
                let run = self.start(key, &pool).await;
                if let Run::Failed(error) = &run {
                    warn!(vip = %key, %error, "cannot serve VIP; retrying every {TICK:?}");
                }
                self.vips.insert(key, Vip { pool, run });
            }
            LbAction::BackendAdded(key, backend) => {
                if let Some(vip) = self.vips.get(&key) {
                    vip.pool.add(backend);
                }
            }
            LbAction::BackendRemoved(key, backend) => {
                if let Some(vip) = self.vips.get(&key) {
                    vip.pool.remove(backend);
                }
            }
            LbAction::VipRemoved(key) => {
                let Some(vip) = self.vips.remove(&key) else { return };
                vip.pool.retire_all();
                if let Run::Serving { id, stop } = vip.run {
                    stop.send_replace(true);
                    self.draining.insert(id, (key, vip.pool));
                }
                info!(vip = %key, "VIP removed; its connections drain");
            }
        }
    }

    /// Makes the VIP's address local, listens on it and starts its proxy.
    async fn start(&mut self, key: VipKey, pool: &Arc<Pool>) -> Run {
        if let Err(error) = self.addresses.acquire(key.ip).await {
            return Run::Failed(error.to_string());
        }
        let addr = SocketAddr::new(key.ip, key.port);
        let listener = match key.protocol {
            PortProtocol::Tcp => TcpListener::bind(addr).await.map(Listener::Tcp),
            PortProtocol::Udp => UdpSocket::bind(addr).await.map(Listener::Udp),
        };
        let listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                self.addresses.release(key.ip).await;
                return Run::Failed(format!("cannot listen on {addr} ({}): {error}", key.protocol.as_str()));
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let (stop, stopped) = watch::channel(false);
        let (pool, settings, rng) = (Arc::clone(pool), self.settings(), self.node.fork_rng());
        let handle = self.proxies.spawn(async move {
            let result = match listener {
                Listener::Tcp(listener) => tcp::serve(listener, pool, settings, rng, stopped).await,
                Listener::Udp(socket) => udp::serve(socket, pool, settings, rng, stopped).await,
            };
            (key, id, result)
        });
        self.task_ids.insert(handle.id(), (key, id));
        info!(vip = %key, "serving VIP");
        Run::Serving { id, stop }
    }

    fn settings(&self) -> ProxySettings {
        ProxySettings {
            connect_timeout: self.config.connect_timeout,
            drain_timeout: self.config.drain_timeout,
            udp_idle_timeout: self.config.udp_idle_timeout,
            zero_copy: self.config.zero_copy,
            max_connections: self.config.max_connections_per_vip,
        }
    }

    /// Releases the addresses of proxies that have ended: drained ones, and failed ones, whose
    /// VIP is then retried by the next tick.
    async fn collect_finished(&mut self) {
        while let Some(ended) = self.proxies.try_join_next_with_id() {
            let (key, id, outcome) = match ended {
                Ok((task, (key, id, result))) => {
                    self.task_ids.remove(&task);
                    (key, id, result.map_err(|e| e.to_string()))
                }
                Err(error) => {
                    let Some((key, id)) = self.task_ids.remove(&error.id()) else { continue };
                    (key, id, Err(format!("the proxy task ended abnormally: {error}")))
                }
            };
            self.addresses.release(key.ip).await;
            if self.draining.remove(&id).is_some() {
                continue;
            }
            let Some(vip) = self.vips.get_mut(&key) else { continue };
            if matches!(vip.run, Run::Serving { id: serving, .. } if serving == id) {
                let error = outcome.err().unwrap_or_else(|| "the proxy stopped".to_owned());
                warn!(vip = %key, %error, "VIP proxy ended; retrying");
                vip.run = Run::Failed(error);
            }
        }
    }

    async fn retry_failed(&mut self) {
        let failed: Vec<VipKey> =
            self.vips.iter().filter(|(_, vip)| matches!(vip.run, Run::Failed(_))).map(|(key, _)| *key).collect();
        for key in failed {
            let Some(pool) = self.vips.get(&key).map(|vip| Arc::clone(&vip.pool)) else { continue };
            let run = self.start(key, &pool).await;
            let Some(vip) = self.vips.get_mut(&key) else { continue };
            match (&vip.run, &run) {
                (_, Run::Serving { .. }) => info!(vip = %key, "VIP serving after a retry"),
                // Said once per distinct error, not once a second.
                (Run::Failed(old), Run::Failed(new)) if old != new => {
                    warn!(vip = %key, error = %new, "cannot serve VIP")
                }
                _ => {}
            }
            vip.run = run;
        }
    }

    fn status(&self) -> L4lbStatus {
        let rejected_labels = self
            .table
            .rejected()
            .iter()
            .flat_map(|(task, errors)| errors.iter().map(move |error| (task.clone(), error.to_string())))
            .collect();
        let (data_plane, data_plane_error, vips) = match &self.kernel {
            Some(kernel) => (DataPlane::Nftables, kernel.error().map(str::to_owned), kernel.status(&self.table)),
            None => (DataPlane::Proxy, self.fallback.clone(), self.proxy_status()),
        };
        L4lbStatus { enabled: self.config.enabled, data_plane, data_plane_error, vips, rejected_labels }
    }

    fn proxy_status(&self) -> Vec<VipStatus> {
        let serving = self.vips.iter().map(|(key, vip)| {
            let state = match &vip.run {
                Run::Serving { .. } => VipState::Serving,
                Run::Failed(error) => VipState::Failed(error.clone()),
            };
            VipStatus { key: *key, names: self.table.names(key), state, backends: vip.pool.status() }
        });
        let draining = self.draining.values().map(|(key, pool)| VipStatus {
            key: *key,
            names: Vec::new(),
            state: VipState::Draining,
            backends: pool.status(),
        });
        let mut vips: Vec<VipStatus> = serving.chain(draining).collect();
        vips.sort_by_key(|vip| vip.key);
        vips
    }
}

/// The nftables data plane when the configuration asks for it and `nft` works; otherwise
/// `None`, with why when it was asked for (the proxy serves then).
async fn start_kernel_plane(config: &L4lbConfig) -> (Option<KernelPlane>, Option<String>) {
    if !config.enabled || config.data_plane != DataPlane::Nftables {
        return (None, None);
    }
    match KernelPlane::start(&config.nft_command, config.drain_timeout).await {
        Ok(kernel) => (Some(kernel), None),
        Err(error) => {
            let why = format!("nftables data plane unavailable, serving with the user-space proxy: {error}");
            warn!("{why}");
            (None, Some(why))
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

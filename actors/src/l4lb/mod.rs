//! The layer-4 load balancer (dcos-l4lb's role): every node serves every VIP declared by the
//! cluster's tasks, so a client anywhere reaches a service at one stable address and port.
//!
//! - `core/` (pure): VIP labels (`VIP_0: /myapp:80`, `VIP_PORT0: tcp://myapp:80`) and the
//!   named-VIP address in `11.0.0.0/8`; the VIP table kept from discovery's changes with the
//!   actions each change requires; the balancing policy; the nftables ruleset of a VIP table.
//! - [`actor`]: [`LoadBalancer`], the shell that carries the actions out on one of two data
//!   planes ([`DataPlane`]).
//! - `tcp.rs`, `udp.rs`, `relay.rs`: the user-space data plane (the default): a proxy per VIP
//!   that picks a backend per connection (TCP; `splice(2)` on Linux) or per client address
//!   (UDP sessions with idle expiry); removed backends take no new connections and their open
//!   ones drain, closed at the drain timeout.
//! - `kernel.rs`: the kernel data plane: nftables DNAT on the `output` and `prerouting` hooks,
//!   round robin over each VIP's backends, the whole ruleset replaced atomically with
//!   `nft -f -` on each change; removed backends' connections keep their conntrack mapping
//!   until they end (no drain timeout). Needs root (or `CAP_NET_ADMIN`) and the `nft` command;
//!   without them the actor falls back to the proxy and its status says why. IPv4 only.
//! - `pool.rs`: a VIP's backends with their active connections, shared by actor and proxy.
//! - `netif.rs`: VIP addresses on `lo` (this kernel has neither IPVS nor dummy interfaces),
//!   for both data planes: the proxy listens on them, and the kernel path needs them routable.

pub mod actor;
pub mod core;
mod kernel;
mod netif;
mod pool;
mod relay;
mod tcp;
mod udp;

use std::sync::Arc;
use std::time::Duration;

use flotilla_supervisors::{ChildKind, ChildSpec, StartContext};
use serde::{Deserialize, Serialize};

/// Where VIP traffic is balanced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPlane {
    /// A user-space proxy per VIP: works unprivileged (for `127.0.0.0/8` VIPs), counts active
    /// connections, balances by [`Policy`] and closes drained connections at the drain
    /// timeout. The default: it needs nothing from the host.
    #[default]
    Proxy,
    /// nftables DNAT in the kernel: no copy through user space, so faster (BENCHMARKS.md),
    /// but it needs root and the `nft` command, balances round robin and leaves drained
    /// connections open until they end.
    Nftables,
}

pub use self::actor::{L4LB_ACTOR, L4lbArgs, L4lbMsg, L4lbStatus, LoadBalancer, VipState, VipStatus};
pub use self::core::{Backend, Policy, VipKey, named_vip_address};
pub use self::kernel::NftError;
pub use self::netif::AddressError;
pub use self::pool::BackendStatus;

/// The load balancer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4lbConfig {
    /// Serve VIPs on this node. When off, the actor runs but ignores the view.
    pub enabled: bool,
    /// Put VIP addresses outside `127.0.0.0/8` on `lo` (needs root or `CAP_NET_ADMIN`). Off
    /// when the operator provides the addresses.
    pub add_vips_to_lo: bool,
    /// How long a new connection waits for a backend before trying another.
    pub connect_timeout: Duration,
    /// How long the connections of a removed backend (or VIP) stay open. With nftables, how
    /// long a removed VIP keeps refusing and its address; its connections, and those of a
    /// removed backend, are left to end by themselves (conntrack keeps their mapping).
    pub drain_timeout: Duration,
    /// How long a UDP session lives without a datagram either way.
    pub udp_idle_timeout: Duration,
    pub policy: Policy,
    /// Relay TCP with `splice(2)` where the OS has it. Off by default: for request-sized
    /// exchanges its two pipes and two calls per hop cost more than the copy they save
    /// (measured in BENCHMARKS.md: 0.80× HAProxy with splice, 1.05× with copies).
    pub zero_copy: bool,
    /// Connections (TCP) or sessions (UDP) one VIP carries at most; more are refused.
    pub max_connections_per_vip: usize,
    pub data_plane: DataPlane,
    /// The `nft` command the nftables data plane runs (looked up in `PATH`).
    pub nft_command: String,
}

impl Default for L4lbConfig {
    fn default() -> Self {
        L4lbConfig {
            enabled: true,
            add_vips_to_lo: true,
            connect_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            // Linux conntrack's UDP stream timeout is in the same range; DNS-like traffic
            // needs far less, streams of datagrams keep their session alive.
            udp_idle_timeout: Duration::from_secs(30),
            policy: Policy::PowerOfTwoChoices,
            zero_copy: false,
            max_connections_per_vip: 16_384,
            data_plane: DataPlane::Proxy,
            nft_command: "nft".to_owned(),
        }
    }
}

/// The load balancer as a child of a node's discovery subtree. It registers as
/// [`L4LB_ACTOR`] and takes [`L4lbMsg::View`] updates from discovery's feed.
pub fn l4lb_child(config: L4lbConfig) -> ChildSpec {
    ChildSpec::new("l4lb", ChildKind::Worker, move |ctx: StartContext| {
        let config = config.clone();
        async move {
            let args = L4lbArgs { node: ctx.node.clone(), config };
            let (actor, _) = ractor::Actor::spawn_linked(None, LoadBalancer, args, ctx.supervisor.clone()).await?;
            let feed = actor.clone();
            crate::discovery::feed::subscribe(
                &ctx,
                Arc::new(move |update| feed.send_message(L4lbMsg::View(update)).map_err(|_| ())),
            );
            Ok(flotilla_supervisors::Started::Running(actor.get_cell()))
        }
    })
}

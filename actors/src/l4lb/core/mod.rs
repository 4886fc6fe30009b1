//! The load balancer's pure core: VIP labels and named-VIP addresses ([`vip`]), the VIP table
//! kept from discovery's changes and the actions it yields ([`table`]), the balancing
//! policy ([`policy`]) and the nftables ruleset of the kernel data plane ([`nft`]). No
//! sockets, clocks or runtimes: the shell (`l4lb/actor.rs`, the proxies, `l4lb/kernel.rs`)
//! carries the actions out.

pub mod nft;
pub mod policy;
pub mod table;
pub mod vip;

pub use policy::{Policy, pick};
pub use table::{LbAction, VipTable};
pub use vip::{Backend, VipBinding, VipKey, VipLabelError, named_vip_address, parse_vip_value, task_vips};

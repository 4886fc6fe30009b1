//! The DNS server's pure core: DNS labels from cluster names ([`labels`]), named VIP
//! addresses ([`vip`]), the record index built from the cluster view ([`index`]), answering a
//! question from it ([`answer`]), the Mesos-DNS HTTP API ([`http`]), upstreams from
//! resolv.conf ([`resolv`]), the settings ([`config`]) and the UDP fast path's wire format
//! ([`wire`]).

pub mod answer;
pub mod config;
pub mod http;
pub mod index;
pub mod labels;
pub mod resolv;
pub mod vip;
pub mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

pub use answer::{Answer, QType, RData, Rcode, Resolution, Rr, resolve};
pub use config::{DnsConfig, IpSource};
pub use http::http_api;
pub use index::{Data, Index};
pub use vip::named_vip_address;

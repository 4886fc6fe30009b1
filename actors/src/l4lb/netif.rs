//! VIP addresses on the loopback interface.
//!
//! A proxy can only listen on an address the node has. Minuteman put VIPs on a `dummy`
//! interface; this kernel has none (and no IPVS), so a VIP outside the loopback range is added
//! to `lo` as a host address (`/32`, `/128`) with the `ip` command, and deleted when its last
//! proxy has drained. Loopback VIPs (`127.0.0.0/8`, `::1`) are local already and need nothing,
//! which is what lets an unprivileged node (and the tests) serve them.
//!
//! Only addresses this node added are ever deleted: one that was there before is borrowed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use thiserror::Error;
use tokio::process::Command;
use tracing::{info, warn};

/// The interface VIPs are added to.
const VIP_INTERFACE: &str = "lo";

/// Why a VIP's address could not be put on `lo`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("cannot run `ip` to add {ip} to {VIP_INTERFACE}: {error}")]
    NoIpCommand { ip: IpAddr, error: String },
    #[error("`ip addr add {ip}/{prefix} dev {VIP_INTERFACE}` failed ({status}): {stderr}{hint}")]
    AddFailed { ip: IpAddr, prefix: u8, status: String, stderr: String, hint: &'static str },
}

/// How an address is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Added by us: deleted when released for the last time.
    Added,
    /// Local without us (loopback, or already on the node): left alone.
    Borrowed,
}

/// The VIP addresses in use, each with the number of proxies (listening or draining) on it.
#[derive(Debug, Default)]
pub(crate) struct LoAddresses {
    add_to_lo: bool,
    held: BTreeMap<IpAddr, (Held, u32)>,
}

impl LoAddresses {
    pub(crate) fn new(add_to_lo: bool) -> Self {
        LoAddresses { add_to_lo, held: BTreeMap::new() }
    }

    /// Makes `ip` local for one more proxy.
    pub(crate) async fn acquire(&mut self, ip: IpAddr) -> Result<(), AddressError> {
        if let Some((_, count)) = self.held.get_mut(&ip) {
            *count += 1;
            return Ok(());
        }
        let held = if ip.is_loopback() {
            Held::Borrowed
        } else if !self.add_to_lo {
            // The operator manages the addresses; binding tells whether this one is there.
            Held::Borrowed
        } else {
            add(ip).await?
        };
        self.held.insert(ip, (held, 1));
        Ok(())
    }

    /// One proxy less on `ip`; the last one deletes an address we added.
    pub(crate) async fn release(&mut self, ip: IpAddr) {
        let Some((held, count)) = self.held.get_mut(&ip) else { return };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        let held = *held;
        self.held.remove(&ip);
        if held == Held::Added {
            delete(ip).await;
        }
    }

    /// Deletes every address we added (the actor is stopping).
    pub(crate) async fn release_all(&mut self) {
        for (ip, (held, _)) in std::mem::take(&mut self.held) {
            if held == Held::Added {
                delete(ip).await;
            }
        }
    }
}

fn prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

async fn add(ip: IpAddr) -> Result<Held, AddressError> {
    let address = format!("{ip}/{}", prefix(ip));
    let output = Command::new("ip")
        .args(["addr", "add", &address, "dev", VIP_INTERFACE])
        .output()
        .await
        .map_err(|error| AddressError::NoIpCommand { ip, error: error.to_string() })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        info!(%ip, "VIP address added to {VIP_INTERFACE}");
        Ok(Held::Added)
    } else if stderr.contains("File exists") || stderr.contains("already assigned") {
        // Older iproute2 says "File exists", newer relays the kernel's "Address already
        // assigned": either way it is someone else's, and stays when we are done.
        Ok(Held::Borrowed)
    } else {
        let hint = if stderr.contains("Operation not permitted") {
            " (adding addresses needs root or CAP_NET_ADMIN; IP VIPs in 127.0.0.0/8 need neither)"
        } else {
            ""
        };
        Err(AddressError::AddFailed { ip, prefix: prefix(ip), status: output.status.to_string(), stderr, hint })
    }
}

async fn delete(ip: IpAddr) {
    let address = format!("{ip}/{}", prefix(ip));
    match Command::new("ip").args(["addr", "del", &address, "dev", VIP_INTERFACE]).output().await {
        Ok(output) if output.status.success() => info!(%ip, "VIP address removed from {VIP_INTERFACE}"),
        Ok(output) => {
            warn!(%ip, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "cannot remove a VIP address")
        }
        Err(error) => warn!(%ip, %error, "cannot run `ip` to remove a VIP address"),
    }
}

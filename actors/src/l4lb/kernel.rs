//! The nftables data plane (shell): the kernel NATs each new connection to a backend and
//! forwards its packets, with no proxy in between. The ruleset is rendered whole by
//! `core::nft` and replaced in one `nft -f -` transaction on every change of the VIP table.
//!
//! - **Addresses.** A VIP's address is still put on `lo`: a process's `connect` is routed
//!   *before* the `output` hook's DNAT, so on a host with no route to the VIP (no default
//!   route) it fails with "no route to host" before any rule sees it. With the address local
//!   it is always routable; the ruleset masquerades the resulting VIP-sourced connections.
//! - **Removed backends** take no new connection once the new ruleset is in. Their open
//!   connections keep their conntrack entry, hence their backend, until they end: the kernel
//!   drains them by itself, and does *not* close them at the drain timeout (deleting their
//!   conntrack entries would not close them either, only break them half-way: not done). A
//!   UDP flow keeps its backend while datagrams keep its conntrack entry alive.
//! - **Removed VIPs** are kept for the drain timeout as VIPs without backends: new
//!   connections are refused, open ones keep working (their address stays on `lo`); then the
//!   VIP leaves the ruleset and its address leaves `lo`.
//! - **Failures.** A missing `nft` when the actor starts makes the actor fall back to the
//!   proxy (the status says so, and why); an `nft` that fails later leaves the kernel's
//!   previous ruleset in place (a failed transaction changes nothing), shows the error on the
//!   VIPs it concerns, and is retried every tick.
//! - The table is replaced when the actor starts (a crashed predecessor's is dropped) and
//!   deleted when it stops.
//!
//! Not shown: active connections per backend (they are in conntrack, not counted here), so the
//! status lists each VIP's live backends with `active` 0.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{info, warn};

use super::actor::{VipState, VipStatus};
use super::core::nft::{self, Ruleset};
use super::core::{Backend, LbAction, VipKey, VipTable};
use super::netif::LoAddresses;
use super::pool::BackendStatus;

/// How long one `nft` run may take before it is killed and counted as failed.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `nft` could not apply a ruleset.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NftError {
    #[error(
        "cannot run `{command}` ({error}): the nftables data plane needs the nft command \
         (Debian/Ubuntu: apt-get install nftables)"
    )]
    NotInstalled { command: String, error: String },
    #[error("cannot run `{command} -f -`: {error}")]
    Io { command: String, error: String },
    #[error("`{command} -f -` did not finish within {NFT_TIMEOUT:?}")]
    TimedOut { command: String },
    #[error("`{command} -f -` failed ({status}): {stderr}{hint}")]
    Failed { command: String, status: String, stderr: String, hint: &'static str },
}

/// Runs `script` as one `nft -f -` transaction.
pub(crate) async fn run_nft(command: &str, script: &str) -> Result<(), NftError> {
    let mut child = Command::new(command)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| spawn_error(command, error))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| NftError::Io { command: command.to_owned(), error: "no stdin pipe".to_owned() })?;
    // A write error (nft exited early) is reported below through nft's own status and stderr.
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let output = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| NftError::TimedOut { command: command.to_owned() })?
        .map_err(|error| NftError::Io { command: command.to_owned(), error: error.to_string() })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        let hint = if stderr.contains("Operation not permitted") {
            " (changing nftables needs root or CAP_NET_ADMIN)"
        } else {
            ""
        };
        return Err(NftError::Failed { command: command.to_owned(), status: output.status.to_string(), stderr, hint });
    }
    written.map_err(|error| NftError::Io { command: command.to_owned(), error: error.to_string() })
}

fn spawn_error(command: &str, error: io::Error) -> NftError {
    if error.kind() == io::ErrorKind::NotFound {
        NftError::NotInstalled { command: command.to_owned(), error: error.to_string() }
    } else {
        NftError::Io { command: command.to_owned(), error: error.to_string() }
    }
}

/// The kernel data plane's state in the actor.
#[derive(Debug)]
pub(crate) struct KernelPlane {
    nft: String,
    drain_timeout: Duration,
    /// Removed VIPs, refused and holding their address until their deadline.
    draining: BTreeMap<VipKey, Instant>,
    /// VIPs whose address could not be made local (retried every tick), with why; they are
    /// left out of the ruleset meanwhile, as the proxy cannot listen for them either.
    address_failed: BTreeMap<VipKey, String>,
    /// What the kernel has: the VIPs as last applied, and the text that did it.
    applied: BTreeMap<VipKey, BTreeSet<Backend>>,
    applied_text: String,
    /// What the last rendering left out (IPv6).
    skipped: BTreeMap<VipKey, String>,
    /// The last `nft` failure, until an apply succeeds.
    error: Option<String>,
}

impl KernelPlane {
    /// Takes over Flotilla's table with an empty ruleset (replacing whatever a previous run
    /// left), which also proves that `nft` works here.
    pub(crate) async fn start(nft_command: &str, drain_timeout: Duration) -> Result<KernelPlane, NftError> {
        let empty = nft::render(&BTreeMap::new()).text;
        run_nft(nft_command, &empty).await?;
        info!(table = nft::TABLE, "nftables data plane ready");
        Ok(KernelPlane {
            nft: nft_command.to_owned(),
            drain_timeout,
            draining: BTreeMap::new(),
            address_failed: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_text: empty,
            skipped: BTreeMap::new(),
            error: None,
        })
    }

    /// Follows the table's actions: addresses for added VIPs, a drain period for removed
    /// ones, then one transaction for the whole batch.
    pub(crate) async fn on_actions(&mut self, actions: &[LbAction], table: &VipTable, addresses: &mut LoAddresses) {
        for action in actions {
            match action {
                LbAction::VipAdded(key) => self.vip_added(*key, addresses).await,
                LbAction::VipRemoved(key) => self.vip_removed(*key),
                // Backends are read from the table when rendering.
                LbAction::BackendAdded(..) | LbAction::BackendRemoved(..) => {}
            }
        }
        self.sync(table).await;
    }

    async fn vip_added(&mut self, key: VipKey, addresses: &mut LoAddresses) {
        // A VIP back within its drain period already holds its address.
        if self.draining.remove(&key).is_some() {
            return;
        }
        if let Err(error) = addresses.acquire(key.ip).await {
            warn!(vip = %key, %error, "cannot put the VIP's address on lo; retrying every tick");
            self.address_failed.insert(key, error.to_string());
        }
    }

    fn vip_removed(&mut self, key: VipKey) {
        if self.address_failed.remove(&key).is_none() {
            self.draining.insert(key, Instant::now() + self.drain_timeout);
            info!(vip = %key, "VIP removed: refused for {:?}, its open connections keep going", self.drain_timeout);
        }
    }

    /// Ends drain periods that are over, retries addresses and failed transactions.
    pub(crate) async fn tick(&mut self, table: &VipTable, addresses: &mut LoAddresses) {
        let now = Instant::now();
        let over: Vec<VipKey> = self.draining.iter().filter(|(_, end)| **end <= now).map(|(key, _)| *key).collect();
        for key in over {
            self.draining.remove(&key);
            addresses.release(key.ip).await;
        }
        let failed: Vec<VipKey> = self.address_failed.keys().copied().collect();
        for key in failed {
            match addresses.acquire(key.ip).await {
                Ok(()) => {
                    info!(vip = %key, "VIP address on lo after a retry");
                    self.address_failed.remove(&key);
                }
                Err(error) => {
                    self.address_failed.insert(key, error.to_string());
                }
            }
        }
        self.sync(table).await;
    }

    /// The VIPs the kernel should serve now: the table's (less those without an address)
    /// and the draining ones, without backends.
    fn desired(&self, table: &VipTable) -> BTreeMap<VipKey, BTreeSet<Backend>> {
        let mut vips = table.snapshot();
        vips.retain(|key, _| !self.address_failed.contains_key(key));
        for key in self.draining.keys() {
            vips.entry(*key).or_default();
        }
        vips
    }

    /// Renders the desired ruleset and applies it when it differs from the kernel's.
    async fn sync(&mut self, table: &VipTable) {
        let desired = self.desired(table);
        let Ruleset { text, skipped } = nft::render(&desired);
        if text == self.applied_text {
            return;
        }
        for (key, why) in skipped.iter().filter(|(key, why)| self.skipped.get(key) != Some(why)) {
            warn!(vip = %key, %why, "left out of the nftables ruleset");
        }
        self.skipped = skipped;
        match run_nft(&self.nft, &text).await {
            Ok(()) => {
                if self.error.take().is_some() {
                    info!("nftables ruleset applied after a failure");
                }
                self.applied = desired;
                self.applied_text = text;
            }
            Err(error) => {
                let error = error.to_string();
                if self.error.as_ref() != Some(&error) {
                    warn!(%error, "cannot apply the nftables ruleset; the previous one stays, retrying every tick");
                }
                self.error = Some(error);
            }
        }
    }

    /// Deletes Flotilla's table (the actor is stopping).
    pub(crate) async fn stop(&mut self) {
        match run_nft(&self.nft, &nft::removal()).await {
            Ok(()) => info!(table = nft::TABLE, "nftables table removed"),
            Err(error) => warn!(%error, "cannot remove the nftables table"),
        }
    }

    /// The last `nft` failure, if the kernel is behind the table.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Each VIP of the table, and the draining ones, as the kernel serves them.
    pub(crate) fn status(&self, table: &VipTable) -> Vec<VipStatus> {
        let served = table.vips().map(|key| {
            let backends = table.backends(key);
            let state = self.vip_state(key, &backends);
            let backends =
                backends.into_iter().map(|backend| BackendStatus { backend, active: 0, draining: false }).collect();
            VipStatus { key: *key, names: table.names(key), state, backends }
        });
        let draining = self.draining.keys().map(|key| VipStatus {
            key: *key,
            names: Vec::new(),
            state: VipState::Draining,
            backends: Vec::new(),
        });
        let mut vips: Vec<VipStatus> = served.chain(draining).collect();
        vips.sort_by_key(|vip| vip.key);
        vips
    }

    fn vip_state(&self, key: &VipKey, backends: &[Backend]) -> VipState {
        if let Some(error) = self.address_failed.get(key) {
            return VipState::Failed(error.clone());
        }
        if key.ip.is_ipv6() {
            let why = self.skipped.get(key).cloned();
            return VipState::Failed(why.unwrap_or_else(|| "IPv6 VIPs are not served by nftables".to_owned()));
        }
        let in_kernel = self.applied.get(key).is_some_and(|applied| applied.iter().eq(backends.iter()));
        if in_kernel {
            VipState::Serving
        } else {
            VipState::Failed(self.error.clone().unwrap_or_else(|| "not applied yet".to_owned()))
        }
    }
}

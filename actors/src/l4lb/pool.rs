//! A VIP's backends as its proxy sees them: shared between the actor (which adds and removes
//! them as the table changes) and the proxy's connections (which pick one and count
//! themselves on it).
//!
//! A removed backend is *retired*: it leaves the live list at once, so no new connection goes
//! to it, and its retirement is signalled to the connections it still carries, which close
//! after the drain timeout unless they end first. It is listed as draining until its last
//! connection ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::core::{Backend, Policy, pick};

/// One backend of one VIP.
#[derive(Debug)]
pub(crate) struct BackendSlot {
    pub(crate) backend: Backend,
    active: AtomicU32,
    retired: watch::Sender<bool>,
}

impl BackendSlot {
    fn new(backend: Backend) -> Arc<Self> {
        Arc::new(BackendSlot { backend, active: AtomicU32::new(0), retired: watch::Sender::new(false) })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.backend.ip, self.backend.port)
    }

    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a connection on this backend until the guard drops.
    pub(crate) fn open(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }

    fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Resolves `drain` after the backend is retired; never, while it serves.
    pub(crate) async fn drained(&self, drain: Duration) {
        let mut retired = self.retired.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = retired.wait_for(|retired| *retired).await;
        tokio::time::sleep(drain).await;
    }
}

/// One connection (or UDP session) counted on a backend.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<BackendSlot>);

impl ActiveGuard {
    pub(crate) fn slot(&self) -> &Arc<BackendSlot> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the status shows of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub backend: Backend,
    /// Connections (TCP) or sessions (UDP) open to it through this node.
    pub active: u32,
    /// Removed from the VIP; its remaining connections are draining.
    pub draining: bool,
}

#[derive(Debug, Default)]
struct Slots {
    live: Vec<Arc<BackendSlot>>,
    draining: Vec<Arc<BackendSlot>>,
}

/// A VIP's backends.
#[derive(Debug)]
pub(crate) struct Pool {
    policy: Policy,
    slots: Mutex<Slots>,
}

impl Pool {
    pub(crate) fn new(policy: Policy) -> Arc<Self> {
        Arc::new(Pool { policy, slots: Mutex::new(Slots::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves plain vectors consistent, so poison is moot.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn add(&self, backend: Backend) {
        let mut slots = self.lock();
        if !slots.live.iter().any(|slot| slot.backend == backend) {
            slots.live.push(BackendSlot::new(backend));
        }
    }

    pub(crate) fn remove(&self, backend: Backend) {
        let mut slots = self.lock();
        if let Some(index) = slots.live.iter().position(|slot| slot.backend == backend) {
            let slot = slots.live.swap_remove(index);
            slot.retire();
            slots.draining.retain(|slot| slot.active() > 0);
            slots.draining.push(slot);
        }
    }

    /// Retires every backend (the VIP is going away).
    pub(crate) fn retire_all(&self) {
        let mut slots = self.lock();
        let live = std::mem::take(&mut slots.live);
        for slot in &live {
            slot.retire();
        }
        slots.draining.extend(live);
    }

    /// A live backend for a new connection, by the policy, leaving out those already tried;
    /// it is counted as active at once, so that concurrent picks see it.
    pub(crate) fn choose(&self, random: u64, tried: &[Backend]) -> Option<ActiveGuard> {
        let slots = self.lock();
        let candidates: Vec<&Arc<BackendSlot>> =
            slots.live.iter().filter(|slot| !tried.contains(&slot.backend)).collect();
        let active: Vec<u32> = candidates.iter().map(|slot| slot.active()).collect();
        let index = pick(self.policy, &active, random)?;
        Some(candidates[index].open())
    }

    pub(crate) fn status(&self) -> Vec<BackendStatus> {
        let mut slots = self.lock();
        slots.draining.retain(|slot| slot.active() > 0);
        let live = slots.live.iter().map(|slot| (slot, false));
        let draining = slots.draining.iter().map(|slot| (slot, true));
        let mut all: Vec<BackendStatus> = live
            .chain(draining)
            .map(|(slot, draining)| BackendStatus { backend: slot.backend, active: slot.active(), draining })
            .collect();
        all.sort_by_key(|status| (status.draining, status.backend));
        all
    }
}

/// The next number of a SplitMix64 sequence: the per-connection random draws a proxy makes
/// after the first, which comes from its seeded RNG.
pub(crate) fn next_random(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

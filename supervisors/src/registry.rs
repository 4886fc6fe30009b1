//! A node-scoped registry of actor names.
//!
//! ractor's name registry is process-global, so two simulated nodes in one test process
//! would collide on every name. Each [`crate::Node`] owns one of these instead. A name is
//! freed when its actor stops: lookups skip and drop entries whose actor is no longer alive,
//! as Erlang drops a registered name when its process exits.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ractor::{ActorCell, ActorStatus};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("the name {0:?} is already registered on this node")]
    AlreadyRegistered(String),
}

#[derive(Default)]
pub struct Registry {
    names: Mutex<BTreeMap<String, ActorCell>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("names", &self.names().len()).finish()
    }
}

fn alive(cell: &ActorCell) -> bool {
    !matches!(cell.get_status(), ActorStatus::Stopping | ActorStatus::Stopped)
}

impl Registry {
    pub fn register(&self, name: impl Into<String>, cell: ActorCell) -> Result<(), RegistryError> {
        let name = name.into();
        let mut names = self.lock();
        if names.get(&name).is_some_and(alive) {
            return Err(RegistryError::AlreadyRegistered(name));
        }
        names.insert(name, cell);
        Ok(())
    }

    /// Removes `name` if it is registered to `cell` (so a restarted actor's new registration
    /// is never removed by its predecessor's cleanup).
    pub fn unregister(&self, name: &str, cell: &ActorCell) {
        let mut names = self.lock();
        if names.get(name).is_some_and(|c| c.get_id() == cell.get_id()) {
            names.remove(name);
        }
    }

    pub fn whereis(&self, name: &str) -> Option<ActorCell> {
        let mut names = self.lock();
        match names.get(name) {
            Some(cell) if alive(cell) => Some(cell.clone()),
            Some(_) => {
                names.remove(name);
                None
            }
            None => None,
        }
    }

    /// Registered names of live actors, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, cell)| alive(cell)).map(|(name, _)| name.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ActorCell>> {
        // A poisoned lock only means another thread panicked mid-update of a map that is
        // always left consistent; keep serving.
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

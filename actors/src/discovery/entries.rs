//! Discovery entries in the registry: where each kind lives under [`DISCOVERY_PREFIX`] and
//! its JSON value. The leading master writes them ([`registry_entry`]); every node's feed
//! reads them back ([`change_of_entry`]).

use super::model::ViewChange;

/// Where discovery entries live in the registry.
pub const DISCOVERY_PREFIX: &str = "/discovery/";
pub const DISCOVERY_TASKS: &str = "/discovery/tasks/";
pub const DISCOVERY_AGENTS: &str = "/discovery/agents/";
pub const DISCOVERY_FRAMEWORKS: &str = "/discovery/frameworks/";
/// One entry: the masters and the leader.
pub const DISCOVERY_MASTERS: &str = "/discovery/masters";

/// The registry key of a change's entry, and its JSON value (`None` for a delete).
pub fn registry_entry(change: &ViewChange) -> (String, Option<Vec<u8>>) {
    match change {
        ViewChange::TaskUp(task) => (format!("{DISCOVERY_TASKS}{}", task.id), json(task)),
        ViewChange::TaskGone { id } => (format!("{DISCOVERY_TASKS}{id}"), None),
        ViewChange::AgentUp(agent) => (format!("{DISCOVERY_AGENTS}{}", agent.id), json(agent)),
        ViewChange::AgentGone { id } => (format!("{DISCOVERY_AGENTS}{id}"), None),
        ViewChange::FrameworkUp(framework) => (format!("{DISCOVERY_FRAMEWORKS}{}", framework.id), json(framework)),
        ViewChange::FrameworkGone { id } => (format!("{DISCOVERY_FRAMEWORKS}{id}"), None),
        ViewChange::Masters { masters, leader } => {
            let value = serde_json::json!({ "masters": masters, "leader": leader });
            (DISCOVERY_MASTERS.to_owned(), Some(value.to_string().into_bytes()))
        }
    }
}

/// The change a registry entry stands for (`value` `None`: the key was deleted); `None` for
/// a key outside discovery's or a value that does not decode.
pub fn change_of_entry(key: &str, value: Option<&[u8]>) -> Option<ViewChange> {
    fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Option<T> {
        serde_json::from_slice(value).ok()
    }
    if key == DISCOVERY_MASTERS {
        #[derive(serde::Deserialize)]
        struct Masters {
            masters: Vec<crate::discovery::MasterEntry>,
            leader: Option<String>,
        }
        let Masters { masters, leader } = value.and_then(decode)?;
        return Some(ViewChange::Masters { masters, leader });
    }
    if let Some(id) = key.strip_prefix(DISCOVERY_TASKS) {
        return Some(match value {
            Some(value) => ViewChange::TaskUp(decode(value)?),
            None => ViewChange::TaskGone { id: id.to_owned() },
        });
    }
    if let Some(id) = key.strip_prefix(DISCOVERY_AGENTS) {
        return Some(match value {
            Some(value) => ViewChange::AgentUp(decode(value)?),
            None => ViewChange::AgentGone { id: id.to_owned() },
        });
    }
    let id = key.strip_prefix(DISCOVERY_FRAMEWORKS)?;
    Some(match value {
        Some(value) => ViewChange::FrameworkUp(decode(value)?),
        None => ViewChange::FrameworkGone { id: id.to_owned() },
    })
}

/// An entry's value in the registry.
fn json<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{AgentEntry, FrameworkEntry};

    fn agent(id: &str) -> AgentEntry {
        AgentEntry { id: id.to_owned(), hostname: id.to_owned(), ip: "10.0.0.1".parse().unwrap() }
    }

    #[test]
    fn registry_entries_round_trip() {
        let changes = [
            ViewChange::AgentUp(agent("a1")),
            ViewChange::AgentGone { id: "a1".to_owned() },
            ViewChange::FrameworkUp(FrameworkEntry { id: "f".to_owned(), name: "marathon".to_owned() }),
            ViewChange::TaskGone { id: "t".to_owned() },
            ViewChange::Masters { masters: Vec::new(), leader: Some("m1".to_owned()) },
        ];
        for change in changes {
            let (key, value) = registry_entry(&change);
            assert_eq!(change_of_entry(&key, value.as_deref()), Some(change));
        }
        assert_eq!(change_of_entry("/discovery/tasks/t", Some(b"not json")), None);
        assert_eq!(change_of_entry("/other", None), None);
    }
}

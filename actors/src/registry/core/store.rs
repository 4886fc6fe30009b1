//! The store: the registry's state as a function of the committed log.
//!
//! [`Store::apply`] is the only way state changes, and it depends on nothing but the store and
//! the entry, so every master that applies the same entries holds an equal [`Store`] — the
//! property Raft's state-machine safety rests on. Every collection is ordered and bounded:
//! keys by validation, the watch history by [`StoreConfig::history_limit`], the exactly-once
//! table by [`StoreConfig::dedup_clients`].

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use serde::{Deserialize, Serialize, Serializer};

use super::types::{
    Command, Compare, CompareTarget, Event, EventKind, KeyValue, Op, RegistryError, RequestId, Revision, Txn,
    TxnResponse, encode_postcard, validate_key, validate_value,
};

/// The first byte of every snapshot; bumped when the layout changes so that an old binary
/// refuses a newer snapshot instead of misreading it.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// Bounds on what the store remembers beyond its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Events kept for watchers. Whole revisions are dropped, oldest first, once more are
    /// held; a watcher that falls further behind gets [`RegistryError::Compacted`].
    pub history_limit: usize,
    /// Clients whose last request is remembered for exactly-once retries; the least recently
    /// active one is forgotten first.
    pub dedup_clients: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { history_limit: 100_000, dedup_clients: 10_000 }
    }
}

/// The last request applied for one client, and the answer a retry of it gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    client: u64,
    seq: u64,
    /// The log index that last used this entry (applied or answered a retry); orders eviction.
    index: u64,
    response: TxnResponse,
}

/// The replicated key-value state machine. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    config: StoreConfig,
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// The index of the last Raft entry consumed, whatever its outcome.
    applied: u64,
    /// The highest revision whose events were dropped from `history`.
    compacted: Revision,
    /// Events of revisions `compacted + 1 ..= revision`, oldest first.
    history: VecDeque<Event>,
    /// Client → its last request.
    dedup: BTreeMap<u64, Recorded>,
    /// `Recorded::index` → client: the eviction order. Indexes are unique because each entry
    /// touches at most one client.
    recency: BTreeMap<u64, u64>,
}

/// What running a transaction's ops produced, before it is committed to a revision.
#[derive(Default)]
struct Effects {
    events: Vec<Event>,
    prev: Vec<Option<KeyValue>>,
    deleted: u64,
}

impl Store {
    /// An empty store at revision 0 that has applied nothing.
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            kvs: BTreeMap::new(),
            revision: 0,
            applied: 0,
            compacted: 0,
            history: VecDeque::new(),
            dedup: BTreeMap::new(),
            recency: BTreeMap::new(),
        }
    }

    /// Applies the committed entry at `index`.
    ///
    /// The index is recorded as applied whatever the outcome — an entry that fails is still
    /// consumed, and every replica fails it the same way. An index at or below the applied one
    /// is refused with [`RegistryError::Invalid`] and changes nothing, so a replay is harmless.
    /// Then: decode, validate (an invalid command changes nothing else), and if the command
    /// carries a [`RequestId`], answer a retry of the client's last request from the record
    /// instead of applying it twice, and refuse an older one. A command fenced to a leader term
    /// other than the entry's `term` is refused ([`RegistryError::StaleLeader`]) and not
    /// recorded: every replica sees the same entry term, so all refuse it alike.
    pub fn apply(&mut self, index: u64, term: u64, command_bytes: &[u8]) -> Result<TxnResponse, RegistryError> {
        self.advance(index)?;
        let command = Command::decode(command_bytes)?;
        command.txn.validate()?;
        if let Some(fenced) = command.leader_term.filter(|fenced| *fenced != term) {
            return Err(RegistryError::StaleLeader { fenced, term });
        }
        let Some(id) = command.id else {
            return Ok(self.execute(&command.txn));
        };
        if let Some(response) = self.retried(&id, index)? {
            return Ok(response);
        }
        let response = self.execute(&command.txn);
        self.record(&id, index, response.clone());
        Ok(response)
    }

    /// Consumes a Raft no-op entry (a new leader's first entry): only the index moves. An index
    /// at or below the applied one is ignored, as [`Store::apply`] refuses it.
    pub fn apply_noop(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// The index of the last entry consumed.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The revision of the last transaction that wrote something.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The highest revision whose events are no longer kept; watches must start at or after it.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// The bounds this store was created (or restored) with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    /// Up to `limit` keys starting with `prefix` (`""` for all), sorted by key.
    pub fn range(&self, prefix: &str, limit: usize) -> Vec<KeyValue> {
        self.with_prefix(prefix).take(limit).cloned().collect()
    }

    /// How many keys are stored.
    /// The response recorded for request `id`, if it is the last one of its client that this
    /// store remembers (an answer for a write that was applied from a snapshot).
    pub fn recorded(&self, id: &RequestId) -> Option<&TxnResponse> {
        self.dedup.get(&id.client).filter(|recorded| recorded.seq == id.seq).map(|recorded| &recorded.response)
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// The events after revision `after` on keys starting with `prefix`, oldest first.
    ///
    /// At most `limit` events, except that the last revision returned is always complete, so
    /// that a watcher resuming after the last event's revision misses nothing (`limit` 0 returns
    /// nothing). `after` below [`Store::compacted`] is [`RegistryError::Compacted`]: those events
    /// are gone and the watcher must re-read the state with [`Store::range`].
    pub fn events_since(&self, after: Revision, prefix: &str, limit: usize) -> Result<Vec<Event>, RegistryError> {
        if after < self.compacted {
            return Err(RegistryError::Compacted { requested: after, compacted: self.compacted });
        }
        let start = self.history.partition_point(|event| event.revision <= after);
        let mut events: Vec<Event> = Vec::new();
        for event in self.history.range(start..) {
            let full = events.len() >= limit;
            if full && events.last().is_none_or(|last| last.revision != event.revision) {
                break;
            }
            if event.kv.key.starts_with(prefix) {
                events.push(event.clone());
            }
        }
        Ok(events)
    }

    /// Everything, including the watch history, the exactly-once table, the applied index and
    /// the config, so a restored store continues exactly as this one would: a format byte
    /// ([`SNAPSHOT_FORMAT`]) and then postcard.
    pub fn snapshot(&self) -> Vec<u8> {
        let image = ImageRef {
            config: &self.config,
            revision: self.revision,
            applied: self.applied,
            compacted: self.compacted,
            kvs: ValuesOf(&self.kvs),
            history: &self.history,
            dedup: ValuesOf(&self.dedup),
        };
        let mut bytes = vec![SNAPSHOT_FORMAT];
        bytes.extend(encode_postcard(&image));
        bytes
    }

    /// Rebuilds a store from [`Store::snapshot`] bytes. Bytes from elsewhere (a damaged file, a
    /// malicious peer) are refused with [`RegistryError::Snapshot`] unless they describe a
    /// store that applying commands could have produced.
    pub fn restore(bytes: &[u8]) -> Result<Store, RegistryError> {
        let image = decode_image(bytes)?;
        check_counters(&image)?;
        check_kvs(&image.kvs, image.revision)?;
        check_history(&image)?;
        let recency = check_dedup(&image)?;
        Ok(Store {
            kvs: image.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            history: image.history.into(),
            dedup: image.dedup.into_iter().map(|recorded| (recorded.client, recorded)).collect(),
            recency,
            config: image.config,
            revision: image.revision,
            applied: image.applied,
            compacted: image.compacted,
        })
    }

    fn advance(&mut self, index: u64) -> Result<(), RegistryError> {
        if index <= self.applied {
            return Err(RegistryError::Invalid(format!(
                "already applied: entry {index} is not above the applied index {}",
                self.applied
            )));
        }
        self.applied = index;
        Ok(())
    }

    /// The recorded response if `id` retries the client's last request; an error if it is
    /// older; `None` if it is new (or the client was forgotten).
    fn retried(&mut self, id: &RequestId, index: u64) -> Result<Option<TxnResponse>, RegistryError> {
        let Some(recorded) = self.dedup.get_mut(&id.client) else {
            return Ok(None);
        };
        if id.seq < recorded.seq {
            return Err(RegistryError::StaleRequest { client: id.client, seq: id.seq, last_seq: recorded.seq });
        }
        if id.seq > recorded.seq {
            return Ok(None);
        }
        // A client still retrying is active: keep it from being evicted first.
        self.recency.remove(&recorded.index);
        recorded.index = index;
        self.recency.insert(index, id.client);
        Ok(Some(recorded.response.clone()))
    }

    /// Remembers `response` as the answer to the client's latest request, then forgets the
    /// least recently active clients beyond the limit.
    fn record(&mut self, id: &RequestId, index: u64, response: TxnResponse) {
        let recorded = Recorded { client: id.client, seq: id.seq, index, response };
        if let Some(old) = self.dedup.insert(id.client, recorded) {
            self.recency.remove(&old.index);
        }
        self.recency.insert(index, id.client);
        while self.dedup.len() > self.config.dedup_clients {
            let Some((_, client)) = self.recency.pop_first() else { break };
            self.dedup.remove(&client);
        }
    }

    /// Runs the branch the compares select. The revision moves only if something was written,
    /// so a failed compare-and-swap or a delete of an absent key leaves watchers undisturbed.
    fn execute(&mut self, txn: &Txn) -> TxnResponse {
        let succeeded = txn.compare.iter().all(|compare| self.holds(compare));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let next = self.revision.saturating_add(1);
        let mut effects = Effects::default();
        for op in ops {
            self.run(op, next, &mut effects);
        }
        if !effects.events.is_empty() {
            self.revision = next;
            self.remember(effects.events);
        }
        TxnResponse { succeeded, revision: self.revision, deleted: effects.deleted, prev: effects.prev }
    }

    fn holds(&self, compare: &Compare) -> bool {
        let current = self.kvs.get(&compare.key);
        match &compare.target {
            CompareTarget::ModRevision(expected) => current.map_or(0, |kv| kv.mod_revision) == *expected,
            CompareTarget::Version(expected) => current.map_or(0, |kv| kv.version) == *expected,
            CompareTarget::Value(expected) => current.is_some_and(|kv| kv.value == *expected),
        }
    }

    fn run(&mut self, op: &Op, revision: Revision, effects: &mut Effects) {
        match op {
            Op::Put { key, value } => {
                let prev = self.put(key, value, revision, &mut effects.events);
                effects.prev.push(prev);
            }
            Op::Delete { key } => {
                let prev = self.delete(key, revision, &mut effects.events);
                effects.deleted = effects.deleted.saturating_add(u64::from(prev.is_some()));
                effects.prev.push(prev);
            }
            Op::DeletePrefix { prefix } => {
                let keys: Vec<String> = self.with_prefix(prefix).map(|kv| kv.key.clone()).collect();
                for key in keys {
                    self.delete(&key, revision, &mut effects.events);
                    effects.deleted = effects.deleted.saturating_add(1);
                }
                effects.prev.push(None);
            }
        }
    }

    /// Writes `key` at `revision` (etcd semantics: a recreated key starts again at version 1)
    /// and returns what it replaced.
    fn put(&mut self, key: &str, value: &[u8], revision: Revision, events: &mut Vec<Event>) -> Option<KeyValue> {
        let prev = self.kvs.get(key).cloned();
        let (create_revision, version) =
            prev.as_ref().map_or((revision, 1), |kv| (kv.create_revision, kv.version.saturating_add(1)));
        let kv =
            KeyValue { key: key.to_owned(), value: value.to_vec(), create_revision, mod_revision: revision, version };
        self.kvs.insert(key.to_owned(), kv.clone());
        events.push(Event { revision, kind: EventKind::Put, kv });
        prev
    }

    /// Removes `key` at `revision` and returns what it held; an absent key is no event.
    fn delete(&mut self, key: &str, revision: Revision, events: &mut Vec<Event>) -> Option<KeyValue> {
        let prev = self.kvs.remove(key)?;
        let kv =
            KeyValue { key: key.to_owned(), value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0 };
        events.push(Event { revision, kind: EventKind::Delete, kv });
        Some(prev)
    }

    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let from = (Bound::Included(prefix), Bound::Unbounded);
        self.kvs.range::<str, _>(from).take_while(move |(key, _)| key.starts_with(prefix)).map(|(_, kv)| kv)
    }

    /// Appends one revision's events, then drops whole revisions, oldest first, until the
    /// history fits its limit (a revision larger than the limit is dropped at once).
    fn remember(&mut self, events: Vec<Event>) {
        self.history.extend(events);
        while self.history.len() > self.config.history_limit {
            let Some(oldest) = self.history.front().map(|event| event.revision) else { break };
            while self.history.front().is_some_and(|event| event.revision == oldest) {
                self.history.pop_front();
            }
            self.compacted = oldest;
        }
    }
}

/// Serializes a map's values as a sequence, so the snapshot does not write each key twice
/// (the key is also a field of the value) and needs no copy of the map.
struct ValuesOf<'a, K, V>(&'a BTreeMap<K, V>);

impl<K, V: Serialize> Serialize for ValuesOf<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values())
    }
}

/// The snapshot layout, borrowed from a store. Must stay field for field in step with [`Image`].
#[derive(Serialize)]
struct ImageRef<'a> {
    config: &'a StoreConfig,
    revision: Revision,
    applied: u64,
    compacted: Revision,
    kvs: ValuesOf<'a, String, KeyValue>,
    history: &'a VecDeque<Event>,
    dedup: ValuesOf<'a, u64, Recorded>,
}

/// The snapshot layout, as decoded and before it is checked.
#[derive(Deserialize)]
struct Image {
    config: StoreConfig,
    revision: Revision,
    applied: u64,
    compacted: Revision,
    kvs: Vec<KeyValue>,
    history: Vec<Event>,
    dedup: Vec<Recorded>,
}

fn corrupt(reason: impl Into<String>) -> RegistryError {
    RegistryError::Snapshot(reason.into())
}

fn decode_image(bytes: &[u8]) -> Result<Image, RegistryError> {
    let Some((&format, body)) = bytes.split_first() else {
        return Err(corrupt("empty"));
    };
    if format != SNAPSHOT_FORMAT {
        return Err(corrupt(format!("format {format} is not the supported format {SNAPSHOT_FORMAT}")));
    }
    let (image, rest) = postcard::take_from_bytes::<Image>(body).map_err(|error| corrupt(error.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(image)
}

/// Each revision consumed an entry, and compaction only drops revisions that happened.
fn check_counters(image: &Image) -> Result<(), RegistryError> {
    if image.revision > image.applied {
        return Err(corrupt(format!("revision {} is above the applied index {}", image.revision, image.applied)));
    }
    if image.compacted > image.revision {
        return Err(corrupt(format!("compacted revision {} is above revision {}", image.compacted, image.revision)));
    }
    Ok(())
}

fn check_kvs(kvs: &[KeyValue], revision: Revision) -> Result<(), RegistryError> {
    if kvs.windows(2).any(|pair| matches!(pair, [before, after] if before.key >= after.key)) {
        return Err(corrupt("keys are not strictly increasing"));
    }
    for kv in kvs {
        check_stored(kv, revision).map_err(|reason| corrupt(format!("key {:?}: {reason}", abbreviate(&kv.key))))?;
    }
    Ok(())
}

/// A stored key: valid, created no later than modified, modified no later than `revision`.
fn check_stored(kv: &KeyValue, revision: Revision) -> Result<(), String> {
    validate_key(&kv.key)?;
    validate_value(&kv.value)?;
    let ordered = 1 <= kv.create_revision && kv.create_revision <= kv.mod_revision && kv.mod_revision <= revision;
    if !ordered {
        return Err(format!(
            "revisions out of order: created {}, modified {}, store at {revision}",
            kv.create_revision, kv.mod_revision
        ));
    }
    if kv.version == 0 {
        return Err("version 0".to_owned());
    }
    Ok(())
}

/// The history holds every revision from `compacted + 1` to `revision`, each at least once and
/// in order, and fits its limit — exactly what [`Store::remember`] leaves.
fn check_history(image: &Image) -> Result<(), RegistryError> {
    if image.history.len() > image.config.history_limit {
        return Err(corrupt(format!(
            "{} events exceed the history limit {}",
            image.history.len(),
            image.config.history_limit
        )));
    }
    let mut last = image.compacted;
    for event in &image.history {
        let continues = event.revision == last && last > image.compacted;
        if !continues && Some(event.revision) != last.checked_add(1) {
            return Err(corrupt(format!("event at revision {} follows revision {last}", event.revision)));
        }
        last = event.revision;
        check_event(event).map_err(|reason| corrupt(format!("event at revision {}: {reason}", event.revision)))?;
    }
    if last != image.revision {
        return Err(corrupt(format!("history ends at revision {last} but the store is at {}", image.revision)));
    }
    Ok(())
}

fn check_event(event: &Event) -> Result<(), String> {
    match event.kind {
        EventKind::Put => check_stored(&event.kv, event.revision).and_then(|()| {
            if event.kv.mod_revision == event.revision { Ok(()) } else { Err("put not at its revision".to_owned()) }
        }),
        EventKind::Delete => {
            validate_key(&event.kv.key)?;
            let kv = &event.kv;
            if kv.value.is_empty() && kv.create_revision == 0 && kv.version == 0 && kv.mod_revision == event.revision {
                Ok(())
            } else {
                Err("delete carries a value, a version or another revision".to_owned())
            }
        }
    }
}

/// The exactly-once table fits its limit, names each client once and each index once, and
/// answers only from the past. Returns the rebuilt eviction order.
fn check_dedup(image: &Image) -> Result<BTreeMap<u64, u64>, RegistryError> {
    if image.dedup.len() > image.config.dedup_clients {
        return Err(corrupt(format!(
            "{} remembered clients exceed the limit {}",
            image.dedup.len(),
            image.config.dedup_clients
        )));
    }
    let mut recency = BTreeMap::new();
    let mut previous_client = None;
    for recorded in &image.dedup {
        if previous_client.is_some_and(|client| client >= recorded.client) {
            return Err(corrupt("remembered clients are not strictly increasing"));
        }
        previous_client = Some(recorded.client);
        if recorded.index == 0 || recorded.index > image.applied || recorded.response.revision > image.revision {
            return Err(corrupt(format!("client {} is remembered from the future", recorded.client)));
        }
        if recency.insert(recorded.index, recorded.client).is_some() {
            return Err(corrupt(format!("two clients remembered at index {}", recorded.index)));
        }
    }
    Ok(recency)
}

/// A key short enough for an error message.
fn abbreviate(key: &str) -> String {
    key.chars().take(64).collect()
}

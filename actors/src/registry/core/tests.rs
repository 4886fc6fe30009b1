use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

// --- Helpers ---------------------------------------------------------------------------------

fn store() -> Store {
    Store::new(StoreConfig::default())
}

fn bytes_of(txn: Txn, id: Option<RequestId>) -> Vec<u8> {
    Command { id, txn, leader_term: None }.encode()
}

/// Applies `txn` at the next index; the command must be valid.
fn apply(store: &mut Store, txn: Txn) -> TxnResponse {
    let index = store.applied_index() + 1;
    store.apply(index, 1, &bytes_of(txn, None)).expect("valid command")
}

/// Applies `txn` as request `seq` of `client` at the next index.
fn apply_as(store: &mut Store, client: u64, seq: u64, txn: Txn) -> Result<TxnResponse, RegistryError> {
    let index = store.applied_index() + 1;
    store.apply(index, 1, &bytes_of(txn, Some(RequestId { client, seq })))
}

fn put(store: &mut Store, key: &str, value: &str) -> TxnResponse {
    apply(store, Txn::put(key, value.as_bytes()))
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision, version: u64) -> KeyValue {
    KeyValue { key: key.to_owned(), value: value.as_bytes().to_vec(), create_revision, mod_revision, version }
}

fn txn(compare: Vec<Compare>, success: Vec<Op>, failure: Vec<Op>) -> Txn {
    Txn { compare, success, failure }
}

fn compare(key: &str, target: CompareTarget) -> Compare {
    Compare { key: key.to_owned(), target }
}

fn put_op(key: &str, value: &str) -> Op {
    Op::Put { key: key.to_owned(), value: value.as_bytes().to_vec() }
}

fn all_events(store: &Store) -> Vec<Event> {
    store.events_since(store.compacted(), "", usize::MAX).expect("not compacted")
}

fn keys(events: &[Event]) -> Vec<(Revision, &str)> {
    events.iter().map(|event| (event.revision, event.kv.key.as_str())).collect()
}

/// Expects `result` to be `Invalid` with a message containing `needle`.
fn assert_invalid(result: Result<TxnResponse, RegistryError>, needle: &str) {
    match result {
        Err(RegistryError::Invalid(message)) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
    }
}

// --- Puts, deletes, versions -----------------------------------------------------------------

#[test]
fn a_new_store_is_empty_at_revision_zero() {
    let store = store();
    assert_eq!((store.revision(), store.applied_index(), store.compacted(), store.len()), (0, 0, 0, 0));
    assert!(store.is_empty());
    assert_eq!(store.get("a"), None);
    assert_eq!(store.events_since(0, "", 10), Ok(Vec::new()));
}

#[test]
fn put_creates_a_key_at_version_one_and_bumps_the_revision() {
    let mut store = store();
    let response = put(&mut store, "a", "1");
    assert_eq!(response, TxnResponse { succeeded: true, revision: 1, deleted: 0, prev: vec![None] });
    assert_eq!(store.get("a"), Some(&kv("a", "1", 1, 1, 1)));
    assert_eq!((store.revision(), store.applied_index(), store.len()), (1, 1, 1));
}

#[test]
fn put_again_counts_versions_keeps_create_revision_and_returns_the_previous_value() {
    let mut store = store();
    put(&mut store, "a", "1");
    put(&mut store, "b", "x");
    let response = put(&mut store, "a", "2");
    assert_eq!(response.prev, vec![Some(kv("a", "1", 1, 1, 1))]);
    assert_eq!(response.revision, 3);
    assert_eq!(store.get("a"), Some(&kv("a", "2", 1, 3, 2)));
    // Same value again still writes: a new revision and version.
    put(&mut store, "a", "2");
    assert_eq!(store.get("a"), Some(&kv("a", "2", 1, 4, 3)));
}

#[test]
fn delete_returns_the_previous_value_and_a_recreated_key_starts_over() {
    let mut store = store();
    put(&mut store, "a", "1");
    put(&mut store, "a", "2");
    let response = apply(&mut store, Txn::delete("a"));
    assert_eq!(
        response,
        TxnResponse { succeeded: true, revision: 3, deleted: 1, prev: vec![Some(kv("a", "2", 1, 2, 2))] }
    );
    assert_eq!(store.get("a"), None);
    put(&mut store, "a", "3");
    assert_eq!(store.get("a"), Some(&kv("a", "3", 4, 4, 1)));
}

#[test]
fn deleting_an_absent_key_writes_nothing_and_keeps_the_revision() {
    let mut store = store();
    put(&mut store, "a", "1");
    let response = apply(&mut store, Txn::delete("b"));
    assert_eq!(response, TxnResponse { succeeded: true, revision: 1, deleted: 0, prev: vec![None] });
    assert_eq!(store.revision(), 1);
    assert_eq!(store.applied_index(), 2);
    assert_eq!(all_events(&store).len(), 1);
}

#[test]
fn range_lists_keys_with_a_prefix_in_order_up_to_a_limit() {
    let mut store = store();
    for key in ["b/2", "a", "b/1", "c", "b/3", "bb"] {
        put(&mut store, key, key);
    }
    let names = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(names(store.range("", usize::MAX)), ["a", "b/1", "b/2", "b/3", "bb", "c"]);
    assert_eq!(names(store.range("b/", usize::MAX)), ["b/1", "b/2", "b/3"]);
    assert_eq!(names(store.range("b", 2)), ["b/1", "b/2"]);
    assert_eq!(names(store.range("b/", 0)), Vec::<String>::new());
    assert_eq!(names(store.range("z", 10)), Vec::<String>::new());
}

// --- Transactions ----------------------------------------------------------------------------

#[test]
fn cas_writes_only_when_the_mod_revision_matches() {
    let mut store = store();
    put(&mut store, "a", "1");
    let failed = apply(&mut store, Txn::cas("a", 7, "2"));
    assert_eq!(failed, TxnResponse { succeeded: false, revision: 1, deleted: 0, prev: vec![] });
    assert_eq!(store.get("a"), Some(&kv("a", "1", 1, 1, 1)));
    assert_eq!(store.revision(), 1, "a failed CAS is no write");

    let done = apply(&mut store, Txn::cas("a", 1, "2"));
    assert!(done.succeeded);
    assert_eq!(done.revision, 2);
    assert_eq!(store.get("a"), Some(&kv("a", "2", 1, 2, 2)));
}

#[test]
fn cas_with_zero_creates_only_an_absent_key() {
    let mut store = store();
    assert!(apply(&mut store, Txn::cas("a", 0, "first")).succeeded);
    assert!(!apply(&mut store, Txn::cas("a", 0, "second")).succeeded);
    assert_eq!(store.get("a").map(|kv| kv.value.as_slice()), Some(&b"first"[..]));
    apply(&mut store, Txn::delete("a"));
    assert!(apply(&mut store, Txn::cas("a", 0, "third")).succeeded, "absent again after a delete");
}

#[test]
fn compares_on_several_keys_must_all_hold() {
    let mut store = store();
    put(&mut store, "a", "1");
    put(&mut store, "b", "2");
    put(&mut store, "b", "3");
    let guards = |value_of_b: &str| {
        vec![
            compare("a", CompareTarget::ModRevision(1)),
            compare("b", CompareTarget::Version(2)),
            compare("b", CompareTarget::Value(value_of_b.as_bytes().to_vec())),
            compare("c", CompareTarget::Version(0)),
            compare("c", CompareTarget::ModRevision(0)),
        ]
    };
    let both = txn(guards("3"), vec![put_op("c", "ok")], vec![put_op("c", "no")]);
    let response = apply(&mut store, both);
    assert!(response.succeeded);
    assert_eq!(store.get("c").map(|kv| kv.value.clone()), Some(b"ok".to_vec()));

    apply(&mut store, Txn::delete("c"));
    let one_wrong = txn(guards("2"), vec![put_op("c", "ok")], vec![put_op("c", "no"), put_op("d", "no")]);
    let response = apply(&mut store, one_wrong);
    assert!(!response.succeeded);
    assert_eq!(response.prev, vec![None, None], "the failure branch ran");
    assert_eq!(store.get("c").map(|kv| kv.value.clone()), Some(b"no".to_vec()));
    assert_eq!(store.get("d").map(|kv| kv.mod_revision), Some(response.revision));
}

#[test]
fn a_value_compare_never_matches_an_absent_key_even_with_an_empty_value() {
    let mut store = store();
    let guarded = txn(vec![compare("a", CompareTarget::Value(Vec::new()))], vec![put_op("x", "1")], vec![]);
    assert!(!apply(&mut store, guarded.clone()).succeeded);
    put(&mut store, "a", "");
    assert!(apply(&mut store, guarded).succeeded);
}

#[test]
fn ops_of_one_transaction_share_its_revision_and_see_each_other() {
    let mut store = store();
    put(&mut store, "k", "0");
    let ops = vec![put_op("a", "1"), put_op("a", "2"), Op::Delete { key: "k".into() }, put_op("k", "new")];
    let response = apply(&mut store, txn(vec![], ops, vec![]));
    assert_eq!(response.revision, 2);
    assert_eq!(response.deleted, 1);
    assert_eq!(response.prev, vec![None, Some(kv("a", "1", 2, 2, 1)), Some(kv("k", "0", 1, 1, 1)), None]);
    assert_eq!(store.get("a"), Some(&kv("a", "2", 2, 2, 2)));
    assert_eq!(store.get("k"), Some(&kv("k", "new", 2, 2, 1)));
    let events = store.events_since(1, "", usize::MAX).expect("kept");
    assert_eq!(keys(&events), [(2, "a"), (2, "a"), (2, "k"), (2, "k")]);
    let kinds: Vec<EventKind> = events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Put, EventKind::Delete, EventKind::Put]);
}

#[test]
fn delete_prefix_removes_exactly_the_keys_under_it() {
    let mut store = store();
    for key in ["app/a", "app/b", "apps", "ap", "b"] {
        put(&mut store, key, "v");
    }
    let response = apply(&mut store, txn(vec![], vec![Op::DeletePrefix { prefix: "app/".into() }], vec![]));
    assert_eq!(response, TxnResponse { succeeded: true, revision: 6, deleted: 2, prev: vec![None] });
    let left: Vec<String> = store.range("", usize::MAX).into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, ["ap", "apps", "b"]);
    let events = store.events_since(5, "", usize::MAX).expect("kept");
    assert_eq!(
        events,
        vec![
            Event { revision: 6, kind: EventKind::Delete, kv: kv("app/a", "", 0, 6, 0) },
            Event { revision: 6, kind: EventKind::Delete, kv: kv("app/b", "", 0, 6, 0) },
        ]
    );
    let nothing = apply(&mut store, txn(vec![], vec![Op::DeletePrefix { prefix: "zz".into() }], vec![]));
    assert_eq!(nothing, TxnResponse { succeeded: true, revision: 6, deleted: 0, prev: vec![None] });
}

#[test]
fn the_revision_moves_only_for_transactions_that_write() {
    let mut store = store();
    let empty = apply(&mut store, txn(vec![], vec![], vec![]));
    assert_eq!(empty, TxnResponse { succeeded: true, revision: 0, deleted: 0, prev: vec![] });
    let failed = apply(&mut store, txn(vec![compare("a", CompareTarget::Version(3))], vec![put_op("a", "1")], vec![]));
    assert_eq!(failed.revision, 0);
    put(&mut store, "a", "1");
    apply(&mut store, Txn::delete("zz"));
    apply(&mut store, txn(vec![], vec![Op::DeletePrefix { prefix: "q".into() }], vec![]));
    assert_eq!((store.revision(), store.applied_index()), (1, 5));
}

// --- Exactly once ----------------------------------------------------------------------------

#[test]
fn a_retry_gets_the_first_response_without_applying_again() {
    let mut store = store();
    let first = apply_as(&mut store, 7, 1, Txn::put("a", "1")).expect("applied");
    put(&mut store, "a", "other");
    let revision = store.revision();
    let retry = apply_as(&mut store, 7, 1, Txn::put("a", "1")).expect("answered");
    assert_eq!(retry, first);
    assert_eq!(store.revision(), revision, "not applied twice");
    assert_eq!(store.get("a").map(|kv| kv.value.clone()), Some(b"other".to_vec()));
    assert_eq!(store.applied_index(), 3, "the retry's entry is consumed");

    let next = apply_as(&mut store, 7, 2, Txn::put("a", "2")).expect("a new request applies");
    assert_eq!(next.revision, revision + 1);
}

#[test]
fn a_request_older_than_the_last_recorded_one_is_stale() {
    let mut store = store();
    apply_as(&mut store, 7, 5, Txn::put("a", "1")).expect("applied");
    let before = store.clone();
    let result = apply_as(&mut store, 7, 4, Txn::put("a", "old"));
    assert_eq!(result, Err(RegistryError::StaleRequest { client: 7, seq: 4, last_seq: 5 }));
    assert_eq!(store.get("a"), before.get("a"));
    assert_eq!(store.revision(), before.revision());
    assert_eq!(store.applied_index(), before.applied_index() + 1);
    // Other clients are independent.
    assert!(apply_as(&mut store, 8, 1, Txn::put("b", "1")).is_ok());
}

#[test]
fn requests_without_an_id_are_never_deduplicated() {
    let mut store = store();
    put(&mut store, "a", "1");
    put(&mut store, "a", "1");
    assert_eq!(store.get("a").map(|kv| kv.version), Some(2));
}

#[test]
fn the_least_recently_active_client_is_forgotten_first() {
    let mut store = Store::new(StoreConfig { dedup_clients: 2, ..StoreConfig::default() });
    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("applied");
    apply_as(&mut store, 2, 1, Txn::put("b", "1")).expect("applied");
    // Client 1 retries: it becomes the most recently active.
    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("answered");
    apply_as(&mut store, 3, 1, Txn::put("c", "1")).expect("applied; evicts client 2");
    let revision = store.revision();

    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("still remembered");
    assert_eq!(store.revision(), revision);
    apply_as(&mut store, 2, 1, Txn::put("b", "1")).expect("forgotten: applied again");
    assert_eq!(store.revision(), revision + 1);
    assert_eq!(store.get("b").map(|kv| kv.version), Some(2));
}

#[test]
fn with_no_room_for_clients_nothing_is_remembered() {
    let mut store = Store::new(StoreConfig { dedup_clients: 0, ..StoreConfig::default() });
    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("applied");
    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("applied again");
    assert_eq!(store.revision(), 2);
    assert_eq!(Store::restore(&store.snapshot()), Ok(store));
}

// --- Validation and indexes ------------------------------------------------------------------

#[test]
fn invalid_commands_are_refused_precisely_and_change_only_the_applied_index() {
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let big_value = vec![0u8; MAX_VALUE_BYTES + 1];
    let too_many = vec![put_op("a", "1"); MAX_TXN_ITEMS + 1];
    let cases = vec![
        (Txn::put("", "v"), "success[0]: key is empty"),
        (Txn::put(long_key.clone(), "v"), "success[0]: key is 4097 bytes; the limit is 4096"),
        (Txn::put("a", big_value.clone()), "success[0]: value is 1048577 bytes; the limit is 1048576"),
        (Txn::delete(""), "success[0]: key is empty"),
        (txn(vec![], too_many, vec![]), "1025 compares and ops; the limit is 1024"),
        (
            txn(vec![], vec![Op::DeletePrefix { prefix: String::new() }], vec![]),
            "success[0]: delete-prefix prefix is empty",
        ),
        (txn(vec![], vec![Op::DeletePrefix { prefix: long_key.clone() }], vec![]), "success[0]: prefix: key is 4097"),
        (txn(vec![compare("", CompareTarget::Version(0))], vec![], vec![]), "compare[0]: key is empty"),
        (txn(vec![compare("a", CompareTarget::Value(big_value))], vec![], vec![]), "compare[0]: value is 1048577"),
        (txn(vec![], vec![put_op("a", "1")], vec![put_op("b", "1"), put_op("", "1")]), "failure[1]: key is empty"),
    ];
    let mut store = store();
    put(&mut store, "a", "0");
    for (txn, needle) in cases {
        let before = store.clone();
        let index = store.applied_index() + 1;
        assert_invalid(store.apply(index, 1, &bytes_of(txn, Some(RequestId { client: 1, seq: index }))), needle);
        let mut expected = before;
        expected.apply_noop(index);
        assert_eq!(store, expected, "{needle}");
    }
}

#[test]
fn the_limits_themselves_are_accepted() {
    let mut store = store();
    let key = "k".repeat(MAX_KEY_BYTES);
    apply(&mut store, Txn::put(key.clone(), vec![7u8; MAX_VALUE_BYTES]));
    assert_eq!(store.get(&key).map(|kv| kv.value.len()), Some(MAX_VALUE_BYTES));
    let ops = vec![put_op("a", "1"); MAX_TXN_ITEMS - 1];
    let response = apply(&mut store, txn(vec![compare("a", CompareTarget::Version(0))], ops, vec![]));
    assert_eq!(store.get("a").map(|kv| kv.version), Some(1023));
    assert_eq!(response.prev.len(), MAX_TXN_ITEMS - 1);
}

#[test]
fn undecodable_bytes_are_refused_and_consume_the_entry() {
    let mut store = store();
    put(&mut store, "a", "1");
    let before = store.clone();
    assert!(matches!(store.apply(2, 1, &[0xFF, 0xFF, 0xFF]), Err(RegistryError::Decode(_))));
    assert!(matches!(store.apply(3, 1, &[]), Err(RegistryError::Decode(_))));
    let mut trailing = bytes_of(Txn::put("b", "1"), None);
    trailing.push(0);
    match store.apply(4, 1, &trailing) {
        Err(RegistryError::Decode(message)) => assert!(message.contains("1 trailing bytes"), "{message}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let mut expected = before;
    expected.apply_noop(4);
    assert_eq!(store, expected);
}

#[test]
fn an_index_at_or_below_the_applied_one_changes_nothing() {
    let mut store = store();
    store.apply(5, 1, &bytes_of(Txn::put("a", "1"), Some(RequestId { client: 1, seq: 1 }))).expect("applied");
    let before = store.clone();
    for index in [0, 3, 5] {
        assert_invalid(store.apply(index, 1, &bytes_of(Txn::put("a", "2"), None)), "already applied");
        assert_invalid(store.apply(index, 1, b"garbage"), "already applied");
    }
    assert_eq!(store, before);
}

#[test]
fn a_noop_entry_only_moves_the_applied_index() {
    let mut store = store();
    put(&mut store, "a", "1");
    let before = store.clone();
    store.apply_noop(9);
    assert_eq!(store.applied_index(), 9);
    store.apply_noop(4);
    assert_eq!(store.applied_index(), 9, "a lower index is ignored");
    assert_eq!((store.revision(), store.get("a")), (before.revision(), before.get("a")));
    assert_invalid(store.apply(9, 1, &bytes_of(Txn::put("b", "1"), None)), "already applied");
}

#[test]
fn commands_round_trip_through_their_encoding() {
    let command = Command {
        id: Some(RequestId { client: u64::MAX, seq: 3 }),
        txn: txn(
            vec![compare("a", CompareTarget::Value(vec![0, 255])), compare("b", CompareTarget::ModRevision(9))],
            vec![put_op("a", "é"), Op::DeletePrefix { prefix: "p/".into() }],
            vec![Op::Delete { key: "c".into() }],
        ),
        leader_term: Some(7),
    };
    assert_eq!(Command::decode(&command.encode()), Ok(command));
}

#[test]
fn commands_encoded_before_leader_terms_still_decode_unfenced() {
    #[derive(Serialize)]
    struct Legacy {
        id: Option<RequestId>,
        txn: Txn,
    }
    let legacy = Legacy { id: Some(RequestId { client: 4, seq: 2 }), txn: Txn::put("a", "1") };
    let bytes = postcard::to_allocvec(&legacy).expect("encodes");
    let decoded = Command::decode(&bytes).expect("the older encoding decodes");
    assert_eq!(decoded, Command { id: legacy.id, txn: legacy.txn, leader_term: None });
    let mut longer = bytes.clone();
    longer.extend([0, 0]);
    assert!(matches!(Command::decode(&longer), Err(RegistryError::Decode(_))), "trailing bytes still refused");
}

#[test]
fn a_command_fenced_to_its_entry_term_applies() {
    let mut store = store();
    let command = Command { id: None, txn: Txn::put("a", "1"), leader_term: Some(3) };
    let response = store.apply(1, 3, &command.encode()).expect("the writer still leads");
    assert!(response.succeeded);
    assert_eq!(store.get("a").map(|kv| kv.value.clone()), Some(b"1".to_vec()));
}

#[test]
fn a_command_fenced_to_another_term_writes_nothing_and_is_not_recorded() {
    let mut store = store();
    put(&mut store, "app", "v1");
    let id = RequestId { client: 9, seq: 1 };
    let stale = Command { id: Some(id.clone()), txn: Txn::put("app", "v0"), leader_term: Some(3) };
    let outcome = store.apply(2, 4, &stale.encode());
    assert_eq!(outcome, Err(RegistryError::StaleLeader { fenced: 3, term: 4 }));
    assert_eq!(store.get("app").map(|kv| kv.value.clone()), Some(b"v1".to_vec()), "the newer write stands");
    assert_eq!((store.revision(), store.applied_index()), (1, 2), "the entry is consumed, no revision made");
    assert!(store.recorded(&id).is_none(), "a refused write is not answered as done on a retry");
    let retried = store.apply(3, 4, &stale.encode());
    assert_eq!(retried, Err(RegistryError::StaleLeader { fenced: 3, term: 4 }));
}

// --- Watch history ---------------------------------------------------------------------------

/// Revisions 1..=5: a; b/1 and b/2 together; a; c; b/1.
fn watched() -> Store {
    let mut store = store();
    put(&mut store, "a", "1");
    apply(&mut store, txn(vec![], vec![put_op("b/1", "1"), put_op("b/2", "1")], vec![]));
    put(&mut store, "a", "2");
    put(&mut store, "c", "1");
    apply(&mut store, Txn::delete("b/1"));
    store
}

#[test]
fn events_since_returns_later_events_oldest_first() {
    let store = watched();
    let events = store.events_since(0, "", usize::MAX).expect("kept");
    assert_eq!(keys(&events), [(1, "a"), (2, "b/1"), (2, "b/2"), (3, "a"), (4, "c"), (5, "b/1")]);
    assert_eq!(events.get(2).map(|event| event.kv.clone()), Some(kv("b/2", "1", 2, 2, 1)));
    assert_eq!(keys(&store.events_since(3, "", usize::MAX).expect("kept")), [(4, "c"), (5, "b/1")]);
    assert_eq!(store.events_since(5, "", 10), Ok(Vec::new()));
    assert_eq!(store.events_since(50, "", 10), Ok(Vec::new()));
}

#[test]
fn events_since_filters_by_prefix() {
    let store = watched();
    let events = store.events_since(0, "b/", usize::MAX).expect("kept");
    assert_eq!(keys(&events), [(2, "b/1"), (2, "b/2"), (5, "b/1")]);
    assert_eq!(events.last().map(|event| event.kind), Some(EventKind::Delete));
    assert_eq!(keys(&store.events_since(1, "a", usize::MAX).expect("kept")), [(3, "a")]);
}

#[test]
fn a_limit_never_splits_a_revision() {
    let store = watched();
    assert_eq!(keys(&store.events_since(0, "", 2).expect("kept")), [(1, "a"), (2, "b/1"), (2, "b/2")]);
    assert_eq!(keys(&store.events_since(1, "", 1).expect("kept")), [(2, "b/1"), (2, "b/2")]);
    assert_eq!(keys(&store.events_since(0, "b/", 1).expect("kept")), [(2, "b/1"), (2, "b/2")]);
    assert_eq!(keys(&store.events_since(0, "", 4).expect("kept")), [(1, "a"), (2, "b/1"), (2, "b/2"), (3, "a")]);
    assert_eq!(store.events_since(0, "", 0), Ok(Vec::new()));
}

#[test]
fn trimming_drops_whole_old_revisions_and_reports_them_compacted() {
    let mut store = Store::new(StoreConfig { history_limit: 3, ..StoreConfig::default() });
    put(&mut store, "a", "1");
    apply(&mut store, txn(vec![], vec![put_op("b", "1"), put_op("c", "1")], vec![]));
    assert_eq!(store.compacted(), 0);
    put(&mut store, "d", "1");
    // Four events: revision 1 goes.
    assert_eq!(store.compacted(), 1);
    assert_eq!(store.events_since(0, "", 10), Err(RegistryError::Compacted { requested: 0, compacted: 1 }));
    assert_eq!(keys(&store.events_since(1, "", 10).expect("kept")), [(2, "b"), (2, "c"), (3, "d")]);
    put(&mut store, "e", "1");
    // Revision 2 goes whole even though dropping one of its events would have been enough.
    assert_eq!(store.compacted(), 2);
    assert_eq!(keys(&all_events(&store)), [(3, "d"), (4, "e")]);
    assert_eq!(store.get("a").map(|kv| kv.version), Some(1), "trimming drops events, never keys");
}

#[test]
fn a_revision_larger_than_the_history_is_dropped_at_once() {
    let mut store = Store::new(StoreConfig { history_limit: 2, ..StoreConfig::default() });
    put(&mut store, "a", "1");
    apply(&mut store, txn(vec![], vec![put_op("b", "1"), put_op("c", "1"), put_op("d", "1")], vec![]));
    assert_eq!(store.compacted(), 2);
    assert_eq!(store.events_since(1, "", 10), Err(RegistryError::Compacted { requested: 1, compacted: 2 }));
    assert_eq!(store.events_since(2, "", 10), Ok(Vec::new()));
    put(&mut store, "e", "1");
    assert_eq!(keys(&all_events(&store)), [(3, "e")]);
}

// --- Snapshots -------------------------------------------------------------------------------

/// The snapshot layout, mirrored here to forge inconsistent snapshots. `mirror_matches_the_layout`
/// keeps it in step with the store's.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RawImage {
    config: StoreConfig,
    revision: Revision,
    applied: u64,
    compacted: Revision,
    kvs: Vec<KeyValue>,
    history: Vec<Event>,
    dedup: Vec<RawRecorded>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RawRecorded {
    client: u64,
    seq: u64,
    index: u64,
    response: TxnResponse,
}

fn raw(store: &Store) -> RawImage {
    let bytes = store.snapshot();
    assert_eq!(bytes.first(), Some(&SNAPSHOT_FORMAT));
    postcard::from_bytes(bytes.get(1..).unwrap_or_default()).expect("mirror decodes")
}

fn forge(image: &RawImage) -> Vec<u8> {
    let mut bytes = vec![SNAPSHOT_FORMAT];
    bytes.extend(postcard::to_allocvec(image).expect("encodes"));
    bytes
}

/// A store with keys, history, a compaction and remembered clients.
fn busy() -> Store {
    let mut store = Store::new(StoreConfig { history_limit: 4, dedup_clients: 3 });
    apply_as(&mut store, 1, 1, Txn::put("a", "1")).expect("applied");
    apply_as(&mut store, 2, 1, txn(vec![], vec![put_op("b", "1"), put_op("c", "1")], vec![])).expect("applied");
    store.apply_noop(3);
    apply_as(&mut store, 1, 2, Txn::delete("b")).expect("applied");
    put(&mut store, "a", "2");
    store
}

#[test]
fn mirror_matches_the_layout() {
    let store = busy();
    assert_eq!(forge(&raw(&store)), store.snapshot());
    assert_eq!(raw(&store).dedup.len(), 2);
    assert!(store.compacted() > 0);
}

#[test]
fn a_restored_store_equals_the_original() {
    let store = busy();
    let restored = Store::restore(&store.snapshot()).expect("restores");
    assert_eq!(restored, store);
    assert_eq!(Store::restore(&Store::new(StoreConfig::default()).snapshot()), Ok(Store::new(StoreConfig::default())));
}

/// What a forged snapshot's refusal must mention, and how to forge it from a good one.
type Forgery = (&'static str, fn(&mut RawImage));

fn assert_refused(image: &RawImage, needle: &str) {
    match Store::restore(&forge(image)) {
        Err(RegistryError::Snapshot(message)) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected a refused snapshot containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn inconsistent_snapshots_are_refused() {
    let good = raw(&busy());
    let forgeries: Vec<Forgery> = vec![
        ("above the applied index", |image| image.revision = image.applied + 1),
        ("compacted revision", |image| image.compacted = image.revision + 1),
        ("not strictly increasing", |image| image.kvs.reverse()),
        ("not strictly increasing", |image| {
            let first = image.kvs[0].clone();
            image.kvs.insert(0, first);
        }),
        ("revisions out of order", |image| image.kvs[0].mod_revision = image.revision + 1),
        ("revisions out of order", |image| image.kvs[0].create_revision = 0),
        ("version 0", |image| image.kvs[0].version = 0),
        ("key is empty", |image| image.kvs[0].key = String::new()),
        ("exceed the history limit", |image| image.config.history_limit = 1),
        ("follows revision", |image| image.history[0].revision += 1),
        ("follows revision", |image| image.compacted -= 1),
        ("history ends at revision", |image| {
            image.history.pop();
        }),
        ("put not at its revision", |image| {
            image.history[0].kv.create_revision = 1;
            image.history[0].kv.mod_revision = 1;
        }),
        ("delete carries", |image| {
            image.history[0].kind = EventKind::Delete;
        }),
        ("exceed the limit", |image| image.config.dedup_clients = 1),
        ("from the future", |image| image.dedup[0].index = image.applied + 1),
        ("from the future", |image| image.dedup[0].response.revision = image.revision + 1),
        ("two clients remembered at index", |image| image.dedup[1].index = image.dedup[0].index),
        ("not strictly increasing", |image| image.dedup.reverse()),
    ];
    for (needle, forge_it) in forgeries {
        let mut image = good.clone();
        forge_it(&mut image);
        assert_refused(&image, needle);
    }
}

#[test]
fn malformed_snapshot_bytes_are_refused() {
    let snapshot = busy().snapshot();
    let refused = |bytes: &[u8]| matches!(Store::restore(bytes), Err(RegistryError::Snapshot(_)));
    assert!(refused(&[]));
    assert!(refused(&[SNAPSHOT_FORMAT]));
    let mut future = snapshot.clone();
    future[0] = SNAPSHOT_FORMAT + 1;
    assert!(matches!(Store::restore(&future), Err(RegistryError::Snapshot(message)) if message.contains("format 2")));
    let mut trailing = snapshot.clone();
    trailing.push(0);
    assert!(matches!(Store::restore(&trailing), Err(RegistryError::Snapshot(message)) if message.contains("trailing")));
}

// --- Properties ------------------------------------------------------------------------------

/// One committed entry as the shell would feed it. `gap` skips indexes (Raft no-ops the store
/// never saw); `Replay` reuses the last index, which must be refused and change nothing.
#[derive(Clone, Debug)]
enum Step {
    Apply { gap: u64, command: Command },
    Noop { gap: u64 },
    Garbage { bytes: Vec<u8> },
    Replay { command: Command },
}

const KEYS: &[&str] = &["a", "a/x", "a/y", "ab", "b", "b/z"];
const PREFIXES: &[&str] = &["a", "a/", "b", "ab", "zz", ""];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => key().prop_map(|key| Op::Delete { key }),
        1 => prop::sample::select(PREFIXES).prop_map(|prefix| Op::DeletePrefix { prefix: prefix.to_owned() }),
    ]
}

fn compare_strategy() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0u64..6).prop_map(CompareTarget::ModRevision),
        (0u64..3).prop_map(CompareTarget::Version),
        value().prop_map(CompareTarget::Value),
    ];
    (key(), target).prop_map(|(key, target)| Compare { key, target })
}

fn command() -> impl Strategy<Value = Command> {
    let txn = (
        prop::collection::vec(compare_strategy(), 0..3),
        prop::collection::vec(op(), 0..4),
        prop::collection::vec(op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| Txn { compare, success, failure });
    let id = prop::option::of((0u64..3, 0u64..4).prop_map(|(client, seq)| RequestId { client, seq }));
    let leader_term = prop::option::of(PROPTEST_TERM - 1..=PROPTEST_TERM + 1);
    (id, txn, leader_term).prop_map(|(id, txn, leader_term)| Command { id, txn, leader_term })
}

/// The term of every entry the property tests apply: commands fenced to another are refused.
const PROPTEST_TERM: u64 = 2;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (0u64..2, command()).prop_map(|(gap, command)| Step::Apply { gap, command }),
        1 => (0u64..3).prop_map(|gap| Step::Noop { gap }),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|bytes| Step::Garbage { bytes }),
        1 => command().prop_map(|command| Step::Replay { command }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..40)
}

fn config() -> impl Strategy<Value = StoreConfig> {
    (0usize..8, 0usize..3).prop_map(|(history_limit, dedup_clients)| StoreConfig { history_limit, dedup_clients })
}

type Outcome = Option<Result<TxnResponse, RegistryError>>;

fn run(store: &mut Store, step: &Step) -> Outcome {
    let next = store.applied_index() + 1;
    match step {
        Step::Apply { gap, command } => Some(store.apply(next + gap, PROPTEST_TERM, &command.encode())),
        Step::Noop { gap } => {
            store.apply_noop(next + gap);
            None
        }
        Step::Garbage { bytes } => Some(store.apply(next, PROPTEST_TERM, bytes)),
        Step::Replay { command } => {
            let before = store.clone();
            let outcome = store.apply(store.applied_index(), PROPTEST_TERM, &command.encode());
            assert_eq!(*store, before, "a replayed index changed the store");
            Some(outcome)
        }
    }
}

fn run_all(store: &mut Store, steps: &[Step]) -> Vec<Outcome> {
    steps.iter().map(|step| run(store, step)).collect()
}

/// The map a watcher builds by replaying `events` from nothing.
fn replay(events: &[Event]) -> Vec<KeyValue> {
    let mut map = std::collections::BTreeMap::new();
    for event in events {
        match event.kind {
            EventKind::Put => map.insert(event.kv.key.clone(), event.kv.clone()),
            EventKind::Delete => map.remove(&event.kv.key),
        };
    }
    map.into_values().collect()
}

proptest! {
    #[test]
    fn the_same_entries_give_equal_stores(config in config(), steps in steps()) {
        let mut one = Store::new(config.clone());
        let mut two = Store::new(config);
        let outcomes = run_all(&mut one, &steps);
        prop_assert_eq!(outcomes, run_all(&mut two, &steps));
        prop_assert_eq!(one.snapshot(), two.snapshot());
        prop_assert_eq!(one, two);
    }

    #[test]
    fn a_restored_store_continues_identically(config in config(), before in steps(), after in steps()) {
        let mut original = Store::new(config);
        run_all(&mut original, &before);
        let mut restored = Store::restore(&original.snapshot()).expect("own snapshot restores");
        prop_assert_eq!(&restored, &original);
        let outcomes = run_all(&mut original, &after);
        prop_assert_eq!(outcomes, run_all(&mut restored, &after));
        prop_assert_eq!(&restored, &original);
        prop_assert_eq!(restored.snapshot(), original.snapshot());
    }

    #[test]
    fn replaying_the_whole_history_rebuilds_the_state(steps in steps(), prefix in prop::sample::select(PREFIXES)) {
        let mut store = Store::new(StoreConfig { history_limit: usize::MAX, dedup_clients: 2 });
        run_all(&mut store, &steps);
        prop_assert_eq!(store.compacted(), 0);
        let events = store.events_since(0, "", usize::MAX).expect("untrimmed");
        prop_assert_eq!(replay(&events), store.range("", usize::MAX));
        let events = store.events_since(0, prefix, usize::MAX).expect("untrimmed");
        prop_assert_eq!(replay(&events), store.range(prefix, usize::MAX));
    }

    #[test]
    fn revisions_only_move_forward(config in config(), steps in steps()) {
        let mut store = Store::new(config);
        for step in &steps {
            let revision = store.revision();
            if let Some(Ok(response)) = run(&mut store, step) {
                prop_assert!(response.revision <= store.revision());
            }
            prop_assert!(store.revision() == revision || store.revision() == revision + 1);
            prop_assert!(store.compacted() <= store.revision() && store.revision() <= store.applied_index());
        }
        let events = all_events(&store);
        for pair in events.windows(2) {
            prop_assert!(pair[0].revision <= pair[1].revision);
        }
        for event in &events {
            prop_assert!(event.revision > store.compacted() && event.revision <= store.revision());
            prop_assert_eq!(event.kv.mod_revision, event.revision);
        }
        for kv in store.range("", usize::MAX) {
            prop_assert!(1 <= kv.create_revision && kv.create_revision <= kv.mod_revision);
            prop_assert!(kv.mod_revision <= store.revision() && kv.version >= 1);
        }
    }

    #[test]
    fn a_trimmed_history_is_a_suffix_of_the_full_one(history_limit in 0usize..6, steps in steps()) {
        let mut trimmed = Store::new(StoreConfig { history_limit, dedup_clients: 2 });
        let mut full = Store::new(StoreConfig { history_limit: usize::MAX, dedup_clients: 2 });
        run_all(&mut trimmed, &steps);
        run_all(&mut full, &steps);
        let compacted = trimmed.compacted();
        prop_assert_eq!(trimmed.range("", usize::MAX), full.range("", usize::MAX));
        prop_assert!(all_events(&trimmed).len() <= history_limit);
        prop_assert_eq!(all_events(&trimmed), full.events_since(compacted, "", usize::MAX).expect("untrimmed"));
        if compacted > 0 {
            prop_assert_eq!(
                trimmed.events_since(compacted - 1, "", 1),
                Err(RegistryError::Compacted { requested: compacted - 1, compacted })
            );
        }
    }

    #[test]
    fn paging_with_a_limit_misses_nothing(steps in steps(), limit in 1usize..4, prefix in prop::sample::select(PREFIXES)) {
        let mut store = store();
        run_all(&mut store, &steps);
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = store.events_since(after, prefix, limit).expect("untrimmed");
            let Some(last) = page.last() else { break };
            after = last.revision;
            paged.extend(page);
        }
        prop_assert_eq!(paged, store.events_since(0, prefix, usize::MAX).expect("untrimmed"));
    }

    #[test]
    fn restoring_damaged_bytes_never_panics(
        steps in steps(),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let _ = Store::restore(&garbage);
        let mut with_format = vec![SNAPSHOT_FORMAT];
        with_format.extend(&garbage);
        let _ = Store::restore(&with_format);

        let mut store = Store::new(StoreConfig { history_limit: 5, dedup_clients: 2 });
        run_all(&mut store, &steps);
        let snapshot = store.snapshot();
        for end in 0..snapshot.len() {
            prop_assert!(Store::restore(&snapshot[..end]).is_err(), "a prefix of {end} bytes restored");
        }
        let mut damaged = snapshot.clone();
        for (at, byte) in flips {
            let at = at.index(damaged.len());
            damaged[at] ^= byte;
        }
        if let Ok(restored) = Store::restore(&damaged) {
            // Whatever got through the checks must itself round-trip.
            prop_assert_eq!(Store::restore(&restored.snapshot()), Ok(restored));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut store = store();
        let outcome = store.apply(1, 1, &bytes);
        prop_assert_eq!(store.applied_index(), 1);
        if outcome.is_err() {
            prop_assert_eq!(store.revision(), 0);
        }
    }
}

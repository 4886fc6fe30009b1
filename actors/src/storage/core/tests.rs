use super::*;
use crate::election::core::{Entry, EntryKind, HardState, Index, PeerId, Persisted, Term};

pub(crate) fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
    let kind = if data.is_empty() { EntryKind::Noop } else { EntryKind::Command };
    Entry { term: Term(term), index: Index(index), kind, data: data.to_vec() }
}

pub(crate) fn hard_state(term: u64, vote: Option<&str>, commit: u64) -> HardState {
    HardState { term: Term(term), voted_for: vote.map(PeerId::from), commit: Index(commit) }
}

/// A batch as `persist` receives it.
pub(crate) type Batch = (Option<HardState>, Vec<Entry>);

/// A small history with a vote, appends, a truncating overwrite and a hard state alone.
pub(crate) fn history() -> Vec<Batch> {
    vec![
        (Some(hard_state(1, Some("m1"), 0)), vec![]),
        (None, vec![entry(1, 1, b""), entry(1, 2, b"a")]),
        (Some(hard_state(1, Some("m1"), 2)), vec![entry(1, 3, b"bc")]),
        (Some(hard_state(2, None, 2)), vec![entry(2, 3, b"overwritten"), entry(2, 4, b"")]),
        (Some(hard_state(3, Some("m2"), 4)), vec![]),
        (None, vec![entry(3, 5, b"z")]),
    ]
}

/// The model: what the Ready contract says the store holds after `batch`.
fn apply(model: &mut Persisted, batch: &Batch) {
    if let Some(hard_state) = &batch.0 {
        model.hard_state = hard_state.clone();
    }
    if let Some(first) = batch.1.first() {
        model.entries.retain(|stored| stored.index < first.index);
        model.entries.extend(batch.1.iter().cloned());
    }
}

/// The encoded history, the byte offset where each batch ends, and the state after each
/// prefix of batches (`states[k]` after `k` batches).
fn encode_history(batches: &[Batch]) -> (Vec<u8>, Vec<usize>, Vec<Persisted>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut model = Persisted::default();
    let mut states = vec![model.clone()];
    for batch in batches {
        let last = model.entries.last().map_or(Index(0), |entry| entry.index);
        bytes.extend(encode_batch(last, batch.0.as_ref(), &batch.1).expect("valid batch"));
        ends.push(bytes.len());
        apply(&mut model, batch);
        states.push(model.clone());
    }
    (bytes, ends, states)
}

#[test]
fn crc32c_matches_known_vectors() {
    // RFC 3720 appendix B.4 and the customary check value.
    assert_eq!(crc32c(b""), 0);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
    let descending: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc32c(&descending), 0x113F_DB5C);
}

#[test]
fn every_record_kind_round_trips() {
    let records = [
        Record::HardState(hard_state(7, None, 3)),
        Record::HardState(hard_state(u64::MAX, Some("master-é"), u64::MAX)),
        Record::TruncateFrom(Index(9)),
        Record::Append(entry(4, 9, b"")),
        Record::Append(entry(4, 10, &[0, 1, 2, 255])),
        Record::Append(Entry { term: Term(4), index: Index(11), kind: EntryKind::Config, data: vec![1, 1, b'a'] }),
        Record::Commit { records: 6 },
    ];
    let mut bytes = Vec::new();
    for record in &records {
        encode_record(&mut bytes, record).expect("encodes");
    }
    let decoded = decode(&bytes).expect("decodes");
    assert_eq!(decoded.tail, Tail::Clean);
    assert_eq!(decoded.valid_len, bytes.len() as u64);
    let got: Vec<Record> = decoded.records.into_iter().map(|located| located.record).collect();
    assert_eq!(got, records[..6]);
}

#[test]
fn an_empty_buffer_is_an_empty_clean_log() {
    let recovered = recover(&[]).expect("recovers");
    assert_eq!(recovered, Recovered { persisted: Persisted::default(), valid_len: 0, tail: Tail::Clean });
}

#[test]
fn replay_applies_hard_states_appends_and_truncations() {
    let (bytes, _, states) = encode_history(&history());
    let recovered = recover(&bytes).expect("recovers");
    assert_eq!(recovered.tail, Tail::Clean);
    assert_eq!(&recovered.persisted, states.last().expect("states"));
    assert_eq!(recovered.persisted.entries.len(), 5);
    assert_eq!(recovered.persisted.entries[2].data, b"overwritten");
}

#[test]
fn a_truncation_is_written_only_when_entries_overwrite_stored_ones() {
    let appending = encode_batch(Index(2), None, &[entry(1, 3, b"")]).expect("valid");
    let records = decode(&appending).expect("decodes").records;
    assert_eq!(records.len(), 1);
    let overwriting = encode_batch(Index(2), None, &[entry(2, 2, b"")]).expect("valid");
    let records: Vec<Record> = decode(&overwriting).expect("decodes").records.into_iter().map(|l| l.record).collect();
    assert_eq!(records, [Record::TruncateFrom(Index(2)), Record::Append(entry(2, 2, b""))]);
    assert_eq!(encode_batch(Index(2), None, &[]).expect("valid"), Vec::<u8>::new());
}

#[test]
fn batches_that_break_the_ready_contract_are_rejected() {
    assert_eq!(
        encode_batch(Index(2), None, &[entry(1, 4, b"")]),
        Err(BatchError::StartOutOfRange { index: Index(4), last: Index(2) })
    );
    assert!(matches!(encode_batch(Index(0), None, &[entry(1, 0, b"")]), Err(BatchError::StartOutOfRange { .. })));
    assert_eq!(
        encode_batch(Index(0), None, &[entry(1, 1, b""), entry(1, 3, b"")]),
        Err(BatchError::NotContiguous { previous: Index(1), next: Index(3) })
    );
    let huge = entry(1, 1, &vec![7; MAX_PAYLOAD_BYTES]);
    assert!(matches!(encode_batch(Index(0), None, &[huge]), Err(BatchError::TooLarge { .. })));
    let long_name = "n".repeat(MAX_PEER_ID_BYTES + 1);
    let vote = hard_state(1, Some(&long_name), 0);
    assert!(matches!(encode_batch(Index(0), Some(&vote), &[]), Err(BatchError::PeerIdTooLong { .. })));
    // The largest entry Raft accepts fits.
    let largest = entry(1, 1, &vec![7; crate::election::core::MAX_ENTRY_BYTES]);
    assert!(encode_batch(Index(0), None, &[largest]).is_ok());
}

#[test]
fn every_truncation_point_recovers_the_longest_whole_prefix_of_batches() {
    let (bytes, ends, states) = encode_history(&history());
    for cut in 0..=bytes.len() {
        let recovered = recover(&bytes[..cut]).unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let valid = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(recovered.persisted, states[whole], "cut at {cut}");
        assert_eq!(recovered.valid_len, valid as u64, "cut at {cut}");
        let expected_tail =
            if valid == cut { Tail::Clean } else { Tail::Torn { offset: valid as u64, bytes: (cut - valid) as u64 } };
        assert_eq!(recovered.tail, expected_tail, "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_torn_not_corrupt() {
    let (mut bytes, ends, states) = encode_history(&history());
    bytes.extend_from_slice(&[0; 100]);
    let recovered = recover(&bytes).expect("recovers");
    assert_eq!(&recovered.persisted, states.last().expect("states"));
    assert_eq!(recovered.tail, Tail::Torn { offset: *ends.last().expect("ends") as u64, bytes: 100 });
}

#[test]
fn every_flipped_bit_of_a_whole_log_is_reported_as_corruption() {
    let (bytes, _, _) = encode_history(&history());
    for offset in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[offset] ^= mask;
            match recover(&damaged) {
                Err(Corrupt { offset: at, .. }) => assert!(at <= offset as u64, "flip at {offset}: reported at {at}"),
                Ok(recovered) => panic!("flip {mask:#x} at {offset} accepted: {recovered:?}"),
            }
        }
    }
}

#[test]
fn a_flipped_byte_of_a_torn_log_never_yields_data_that_was_not_written() {
    let (bytes, _, states) = encode_history(&history());
    // Cut inside the last batch, then damage each byte in turn.
    let torn = &bytes[..bytes.len() - 5];
    for offset in 0..torn.len() {
        let mut damaged = torn.to_vec();
        damaged[offset] ^= 0x5A;
        if let Ok(recovered) = recover(&damaged) {
            assert!(states.contains(&recovered.persisted), "flip at {offset} gave unwritten data");
        }
    }
}

#[test]
fn records_that_break_the_log_rules_are_corrupt() {
    let mut gap = Vec::new();
    encode_record(&mut gap, &Record::Append(entry(1, 2, b""))).expect("encodes");
    encode_record(&mut gap, &Record::Commit { records: 1 }).expect("encodes");
    assert!(recover(&gap).expect_err("gap").reason.contains("append"));

    let mut truncation = Vec::new();
    encode_record(&mut truncation, &Record::TruncateFrom(Index(3))).expect("encodes");
    encode_record(&mut truncation, &Record::Commit { records: 1 }).expect("encodes");
    assert!(recover(&truncation).expect_err("truncation past the end").reason.contains("truncation"));

    let mut miscounted = Vec::new();
    encode_record(&mut miscounted, &Record::Append(entry(1, 1, b""))).expect("encodes");
    encode_record(&mut miscounted, &Record::Commit { records: 2 }).expect("encodes");
    assert_eq!(decode(&miscounted).expect_err("miscounted").offset, (HEADER_BYTES + 22) as u64);
}

#[test]
fn seeded_random_histories_survive_every_cut() {
    let mut rng = flotilla_supervisors::Rng::seeded(7);
    for _ in 0..20 {
        let mut batches = Vec::new();
        let mut last = 0u64;
        let mut term = 1u64;
        for _ in 0..8 {
            term += rng.below(2);
            let hard = (rng.below(2) == 0).then(|| hard_state(term, Some("m3"), rng.below(last + 1)));
            let first = 1 + rng.below(last + 1);
            let count = rng.below(4);
            let entries: Vec<Entry> =
                (0..count).map(|offset| entry(term, first + offset, &[offset as u8; 3][..offset as usize])).collect();
            if count > 0 {
                last = first + count - 1;
            }
            batches.push((hard, entries));
        }
        let (bytes, ends, states) = encode_history(&batches);
        for cut in 0..=bytes.len() {
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(recover(&bytes[..cut]).expect("recovers").persisted, states[whole]);
        }
    }
}

// --- Snapshot files --------------------------------------------------------------------------

fn names(list: &[&str]) -> std::collections::BTreeSet<PeerId> {
    list.iter().map(|name| PeerId::from(*name)).collect()
}

fn snapshot_meta(index: u64, term: u64) -> crate::election::core::SnapshotMeta {
    crate::election::core::SnapshotMeta { index: Index(index), term: Term(term) }
}

#[test]
fn a_snapshot_file_carries_its_configuration() {
    let voters = names(&["m1", "m2", "m4"]);
    let bytes = encode_snapshot(snapshot_meta(9, 3), &voters, b"state");
    assert_eq!(&bytes[..8], b"FLSNAP02");
    let decoded = decode_snapshot(&bytes).expect("decodes");
    assert_eq!(decoded, DecodedSnapshot { meta: snapshot_meta(9, 3), voters: Some(voters), data: b"state".as_slice() });
    // Every flipped bit is caught, by a checksum or by the strict header rules.
    for position in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1 << bit;
            assert!(decode_snapshot(&damaged).is_err(), "bit {bit} of byte {position} went unnoticed");
        }
    }
    // Every truncation too.
    for len in 0..bytes.len() {
        assert!(decode_snapshot(&bytes[..len]).is_err(), "a file cut at {len} bytes decoded");
    }
}

/// A version-1 file, as the previous release wrote it (no voters).
fn snapshot_v1(index: u64, term: u64, data: &[u8]) -> Vec<u8> {
    let mut bytes = b"FLSNAP01".to_vec();
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend_from_slice(&term.to_le_bytes());
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c(data).to_le_bytes());
    let header_crc = crc32c(&bytes);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn a_version_1_snapshot_decodes_without_a_configuration() {
    let bytes = snapshot_v1(4, 2, b"old");
    let decoded = decode_snapshot(&bytes).expect("decodes");
    assert_eq!(decoded, DecodedSnapshot { meta: snapshot_meta(4, 2), voters: None, data: b"old".as_slice() });
}

/// A `FLSNAP02` header with these voter names, written as given (not sorted), and a valid
/// checksum: the rules on names must reject it on their own.
fn snapshot_with_names(raw: &[&[u8]]) -> Vec<u8> {
    let mut bytes = b"FLSNAP02".to_vec();
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    for name in raw {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(name);
    }
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&crc32c(b"").to_le_bytes());
    let header_crc = crc32c(&bytes);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes
}

#[test]
fn a_snapshot_configuration_is_decoded_strictly() {
    assert!(decode_snapshot(&snapshot_with_names(&[b"a", b"b"])).is_ok());
    for (raw, why) in [
        (vec![], "no voter"),
        (vec![b"b".as_slice(), b"a"], "out of order"),
        (vec![b"a".as_slice(), b"a"], "twice"),
        (vec![b"".as_slice()], "empty name"),
        (vec![&[0xFF, 0xFE][..]], "not UTF-8"),
    ] {
        let error = decode_snapshot(&snapshot_with_names(&raw)).expect_err(why);
        assert!(error.reason.starts_with("snapshot file:"), "{why}: {error}");
    }
    let many: Vec<String> = (0..=crate::election::core::MAX_VOTERS).map(|n| format!("m{n:03}")).collect();
    let many: Vec<&[u8]> = many.iter().map(|name| name.as_bytes()).collect();
    assert!(decode_snapshot(&snapshot_with_names(&many)).is_err(), "more than MAX_VOTERS");
}

#[test]
fn a_log_with_a_base_but_no_snapshot_file_is_refused() {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, &Record::Base(snapshot_meta(3, 1))).expect("encodes");
    encode_record(&mut bytes, &Record::Commit { records: 1 }).expect("encodes");
    let recovered = recover(&bytes).expect("a well-formed log");
    let error = with_snapshot(recovered.persisted.clone(), None).expect_err("entries 1..=3 exist nowhere");
    assert!(error.reason.contains("no snapshot file"), "{error}");
    assert!(with_snapshot(recovered.persisted, Some(snapshot_meta(3, 1))).is_ok());
}

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
        Record::Commit { records: 5 },
    ];
    let mut bytes = Vec::new();
    for record in &records {
        encode_record(&mut bytes, record).expect("encodes");
    }
    let decoded = decode(&bytes).expect("decodes");
    assert_eq!(decoded.tail, Tail::Clean);
    assert_eq!(decoded.valid_len, bytes.len() as u64);
    let got: Vec<Record> = decoded.records.into_iter().map(|located| located.record).collect();
    assert_eq!(got, records[..5]);
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

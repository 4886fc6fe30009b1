//! Unit tests, one or more per rule.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_supervisors::{Rng, Time};
use proptest::prelude::*;

use super::*;

fn id(name: &str) -> PeerId {
    PeerId::from(name)
}

fn peer_set(names: &[&str]) -> BTreeSet<PeerId> {
    names.iter().map(|name| id(name)).collect()
}

fn at(millis: u64) -> Time {
    Time::from_duration(Duration::from_millis(millis))
}

fn config(pre_vote: bool, check_quorum: bool) -> RaftConfig {
    RaftConfig { pre_vote, check_quorum, ..RaftConfig::default() }
}

fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(position, term)| Entry {
            term: Term(*term),
            index: Index(position as u64 + 1),
            kind: EntryKind::Command,
            data: vec![position as u8],
        })
        .collect()
}

fn node_with(me: &str, others: &[&str], config: RaftConfig, term: u64, terms: &[u64]) -> Raft {
    let persisted = Persisted {
        snapshot: None,
        snapshot_voters: None,
        hard_state: HardState { term: Term(term), voted_for: None, commit: Index(0) },
        entries: log_of(terms),
        applied: Index(0),
    };
    Raft::new(id(me), peer_set(others), config, persisted, Time::ZERO, &mut Rng::seeded(7)).expect("valid node")
}

fn node(me: &str, others: &[&str], config: RaftConfig) -> Raft {
    node_with(me, others, config, 0, &[])
}

fn sent_to(ready: &Ready, to: &str) -> Vec<Message> {
    ready.messages.iter().filter(|out| out.to == id(to)).map(|out| out.message.clone()).collect()
}

fn vote_request(term: u64, last_index: u64, last_term: u64) -> Message {
    Message::RequestVote { term: Term(term), last_index: Index(last_index), last_term: Term(last_term) }
}

fn pre_vote(term: u64, last_index: u64, last_term: u64) -> Message {
    Message::PreVote { term: Term(term), last_index: Index(last_index), last_term: Term(last_term) }
}

fn heartbeat(term: u64) -> Message {
    Message::AppendEntries {
        term: Term(term),
        prev_index: Index(0),
        prev_term: Term(0),
        entries: Vec::new(),
        leader_commit: Index(0),
    }
}

fn accepted(term: u64, match_index: u64) -> Message {
    Message::AppendEntriesResponse {
        term: Term(term),
        result: AppendResult::Accepted { match_index: Index(match_index) },
    }
}

/// Drives `raft` (whose peers are `others`) to leadership: time out, then collect every vote.
/// Returns the `Ready` of becoming leader (the campaign's own effects are drained).
fn elect(raft: &mut Raft, others: &[&str], now: u64) -> Ready {
    let mut rng = Rng::seeded(1);
    raft.tick(at(now), &mut rng);
    if raft.role() == Role::PreCandidate {
        let term = raft.term().next();
        for other in others {
            raft.step(at(now), &id(other), Message::PreVoteResponse { term, granted: true }).expect("step");
        }
    }
    assert_eq!(raft.role(), Role::Candidate);
    raft.poll_ready(); // The campaign's requests.
    let term = raft.term();
    for other in others {
        raft.step(at(now), &id(other), Message::RequestVoteResponse { term, granted: true }).expect("step");
    }
    assert_eq!(raft.role(), Role::Leader);
    raft.poll_ready()
}

#[test]
fn a_single_node_elects_itself_and_commits_alone() {
    let mut raft = node("a", &[], RaftConfig::default());
    let mut rng = Rng::seeded(1);
    raft.tick(at(100), &mut rng);
    assert_eq!(raft.role(), Role::Follower, "the election timeout is at least 150ms");
    raft.tick(at(300), &mut rng);
    assert_eq!(raft.role(), Role::Leader);
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, Some(HardState { term: Term(1), voted_for: Some(id("a")), commit: Index(1) }));
    assert_eq!(ready.entries.len(), 1);
    assert_eq!(ready.entries[0].kind, EntryKind::Noop);
    assert_eq!(ready.committed, ready.entries);

    assert_eq!(raft.propose(b"x".to_vec()), Ok(Index(2)));
    let ready = raft.poll_ready();
    assert_eq!(ready.committed.len(), 1);
    assert_eq!(ready.committed[0].data, b"x".to_vec());
    assert!(raft.poll_ready().is_empty());
}

#[test]
fn the_election_timeout_is_drawn_from_the_configured_range() {
    for seed in 0..50 {
        let persisted = Persisted::default();
        let config = config(false, false);
        let mut raft =
            Raft::new(id("a"), peer_set(&["b", "c"]), config, persisted, Time::ZERO, &mut Rng::seeded(seed)).unwrap();
        let mut rng = Rng::seeded(seed);
        raft.tick(at(149), &mut rng);
        assert_eq!(raft.role(), Role::Follower);
        raft.tick(at(300), &mut rng);
        assert_eq!(raft.role(), Role::Candidate);
    }
}

#[test]
fn a_vote_is_granted_once_per_term_and_persisted_in_the_same_ready_as_the_response() {
    let mut raft = node("b", &["a", "c"], config(false, true));
    raft.step(at(10), &id("a"), vote_request(1, 0, 0)).unwrap();
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, Some(HardState { term: Term(1), voted_for: Some(id("a")), commit: Index(0) }));
    assert_eq!(sent_to(&ready, "a"), vec![Message::RequestVoteResponse { term: Term(1), granted: true }]);

    raft.step(at(11), &id("c"), vote_request(1, 0, 0)).unwrap();
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, None);
    assert_eq!(sent_to(&ready, "c"), vec![Message::RequestVoteResponse { term: Term(1), granted: false }]);

    // A duplicate request from the same candidate is granted again (idempotent).
    raft.step(at(12), &id("a"), vote_request(1, 0, 0)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![Message::RequestVoteResponse { term: Term(1), granted: true }]);
}

#[test]
fn a_vote_is_refused_to_a_log_less_up_to_date() {
    let mut raft = node_with("b", &["a", "c"], config(false, false), 2, &[1, 2]);
    // Lower last term, however long the log.
    raft.step(at(10), &id("a"), vote_request(3, 9, 1)).unwrap();
    assert_eq!(raft.term(), Term(3), "the term still moves forward");
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![Message::RequestVoteResponse { term: Term(3), granted: false }]);
    // Same last term, shorter log.
    raft.step(at(11), &id("a"), vote_request(4, 1, 2)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![Message::RequestVoteResponse { term: Term(4), granted: false }]);
    // Same last term, same length.
    raft.step(at(12), &id("a"), vote_request(5, 2, 2)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![Message::RequestVoteResponse { term: Term(5), granted: true }]);
}

#[test]
fn a_restarted_node_keeps_its_vote() {
    let persisted = Persisted {
        snapshot: None,
        snapshot_voters: None,
        hard_state: HardState { term: Term(1), voted_for: Some(id("a")), commit: Index(0) },
        entries: Vec::new(),
        applied: Index(0),
    };
    let others = peer_set(&["a", "c"]);
    let mut raft =
        Raft::new(id("b"), others, config(false, false), persisted, Time::ZERO, &mut Rng::seeded(1)).unwrap();
    raft.step(at(1), &id("c"), vote_request(1, 0, 0)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "c"), vec![Message::RequestVoteResponse { term: Term(1), granted: false }]);
}

#[test]
fn a_higher_term_makes_a_leader_step_down() {
    let mut raft = node("a", &["b", "c"], config(false, false));
    elect(&mut raft, &["b", "c"], 400);
    assert_eq!(raft.term(), Term(1));
    raft.step(
        at(410),
        &id("b"),
        Message::AppendEntriesResponse {
            term: Term(5),
            result: AppendResult::Rejected { rejected: Index(0), hint_index: Index(0), hint_term: Term(0) },
        },
    )
    .unwrap();
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.hard_state(), HardState { term: Term(5), voted_for: None, commit: Index(0) });
    assert_eq!(raft.propose(vec![1]), Err(ProposeError::NotLeader { leader_hint: None }));
}

#[test]
fn stale_messages_are_ignored_or_answered_with_the_newer_term() {
    let mut raft = node_with("b", &["a", "c"], config(false, false), 5, &[]);
    raft.step(at(1), &id("a"), vote_request(3, 0, 0)).unwrap();
    assert_eq!(raft.hard_state().voted_for, None);
    assert!(raft.poll_ready().is_empty(), "a stale vote request gets no answer");

    // A stale leader is told the newer term so that it steps down; the log is untouched.
    raft.step(
        at(2),
        &id("a"),
        Message::AppendEntries {
            term: Term(3),
            prev_index: Index(0),
            prev_term: Term(0),
            entries: log_of(&[3]),
            leader_commit: Index(1),
        },
    )
    .unwrap();
    assert_eq!(raft.last_index(), Index(0));
    assert_eq!(raft.leader(), None);
    let ready = raft.poll_ready();
    assert!(ready.entries.is_empty());
    assert!(matches!(
        sent_to(&ready, "a").as_slice(),
        [Message::AppendEntriesResponse { term: Term(5), result: AppendResult::Rejected { .. } }]
    ));

    // A stale vote response does not count towards a later campaign.
    let mut candidate = node_with("a", &["b", "c"], config(false, false), 5, &[]);
    candidate.tick(at(400), &mut Rng::seeded(1));
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, Term(6)));
    candidate.step(at(401), &id("b"), Message::RequestVoteResponse { term: Term(5), granted: true }).unwrap();
    assert_eq!(candidate.role(), Role::Candidate);
}

#[test]
fn pre_vote_does_not_bump_terms_of_the_candidate_or_the_voters() {
    let mut raft = node_with("a", &["b", "c"], config(true, true), 4, &[4]);
    raft.tick(at(400), &mut Rng::seeded(1));
    assert_eq!((raft.role(), raft.term()), (Role::PreCandidate, Term(4)));
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, None, "nothing to persist: the term did not move");
    assert_eq!(sent_to(&ready, "b"), vec![pre_vote(5, 1, 4)]);

    // A voter with a more up-to-date log refuses without moving its term.
    let mut voter = node_with("b", &["a", "c"], config(true, true), 4, &[4, 4]);
    voter.step(at(400), &id("a"), pre_vote(5, 1, 4)).unwrap();
    assert_eq!(voter.term(), Term(4));
    let ready = voter.poll_ready();
    assert_eq!(ready.hard_state, None);
    assert_eq!(sent_to(&ready, "a"), vec![Message::PreVoteResponse { term: Term(4), granted: false }]);

    // A majority of refusals sends the pre-candidate back to following, still in term 4.
    for other in ["b", "c"] {
        raft.step(at(401), &id(other), Message::PreVoteResponse { term: Term(4), granted: false }).unwrap();
    }
    assert_eq!((raft.role(), raft.term()), (Role::Follower, Term(4)));

    // Granted pre-votes lead to a real election in term 5.
    raft.tick(at(1000), &mut Rng::seeded(1));
    raft.poll_ready();
    for other in ["b", "c"] {
        raft.step(at(1001), &id(other), Message::PreVoteResponse { term: Term(5), granted: true }).unwrap();
    }
    assert_eq!((raft.role(), raft.term()), (Role::Candidate, Term(5)));
    assert_eq!(sent_to(&raft.poll_ready(), "b"), vec![vote_request(5, 1, 4)]);
}

#[test]
fn a_partitioned_node_with_pre_vote_keeps_its_term() {
    let mut raft = node("a", &["b", "c", "d", "e"], config(true, true));
    let mut rng = Rng::seeded(3);
    for step in 1..=100 {
        raft.tick(at(step * 100), &mut rng);
    }
    assert_eq!(raft.term(), Term(0));
    assert_eq!(raft.role(), Role::PreCandidate);
}

#[test]
fn leader_stickiness_refuses_pre_votes_and_votes_while_the_leader_is_live() {
    for pre_vote_enabled in [true, false] {
        let mut raft = node("b", &["a", "c"], config(pre_vote_enabled, true));
        raft.step(at(100), &id("a"), heartbeat(1)).unwrap();
        assert_eq!(raft.leader(), Some(&id("a")));
        raft.poll_ready();

        raft.step(at(200), &id("c"), pre_vote(2, 0, 0)).unwrap();
        assert_eq!(sent_to(&raft.poll_ready(), "c"), vec![Message::PreVoteResponse { term: Term(1), granted: false }]);
        raft.step(at(200), &id("c"), vote_request(2, 0, 0)).unwrap();
        assert_eq!(raft.term(), Term(1), "a disruptive candidate does not move the term");
        assert!(raft.poll_ready().is_empty());

        // Once the leader has been silent for the minimum election timeout, it is granted.
        raft.step(at(250), &id("c"), pre_vote(2, 0, 0)).unwrap();
        assert_eq!(sent_to(&raft.poll_ready(), "c"), vec![Message::PreVoteResponse { term: Term(2), granted: true }]);
        raft.step(at(250), &id("c"), vote_request(2, 0, 0)).unwrap();
        assert_eq!(
            sent_to(&raft.poll_ready(), "c"),
            vec![Message::RequestVoteResponse { term: Term(2), granted: true }]
        );
    }
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut raft = node("a", &["b", "c", "d", "e"], config(false, true));
    elect(&mut raft, &["b", "c", "d", "e"], 400);
    let mut rng = Rng::seeded(1);
    // b and c answer within the first period: with a, a majority of five.
    raft.step(at(450), &id("b"), accepted(1, 1)).unwrap();
    raft.step(at(450), &id("c"), accepted(1, 1)).unwrap();
    raft.tick(at(560), &mut rng);
    assert_eq!(raft.role(), Role::Leader);
    // Only b answers in the second period.
    raft.step(at(600), &id("b"), accepted(1, 1)).unwrap();
    raft.tick(at(720), &mut rng);
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(raft.term(), Term(1));

    let mut unchecked = node("a", &["b", "c"], config(false, false));
    elect(&mut unchecked, &["b", "c"], 400);
    unchecked.tick(at(5000), &mut rng);
    assert_eq!(unchecked.role(), Role::Leader, "without check-quorum a silent majority is not noticed");
}

#[test]
fn only_entries_of_the_current_term_commit_by_counting_replicas() {
    let mut raft = node_with("a", &["b", "c"], config(false, false), 2, &[1, 2]);
    let ready = elect(&mut raft, &["b", "c"], 400);
    assert_eq!(raft.term(), Term(3));
    assert_eq!(ready.entries, vec![Entry { term: Term(3), index: Index(3), kind: EntryKind::Noop, data: Vec::new() }]);
    raft.step(at(401), &id("b"), accepted(3, 2)).unwrap();
    assert_eq!(raft.commit_index(), Index(0), "index 2 is from term 2: replicas alone do not commit it");
    raft.step(at(402), &id("b"), accepted(3, 3)).unwrap();
    assert_eq!(raft.commit_index(), Index(3));
    let committed: Vec<Index> = raft.poll_ready().committed.iter().map(|entry| entry.index).collect();
    assert_eq!(committed, vec![Index(1), Index(2), Index(3)]);
}

#[test]
fn a_follower_truncates_a_conflicting_suffix_and_reports_the_overwrite() {
    let mut raft = node_with("b", &["a", "c"], config(false, false), 2, &[1, 1, 2, 2]);
    let mut entries = log_of(&[1, 1, 3, 3]);
    entries.drain(..2);
    raft.step(
        at(1),
        &id("a"),
        Message::AppendEntries {
            term: Term(3),
            prev_index: Index(2),
            prev_term: Term(1),
            entries: entries.clone(),
            leader_commit: Index(3),
        },
    )
    .unwrap();
    let ready = raft.poll_ready();
    assert_eq!(ready.entries, entries, "persist overwrites from index 3 on");
    assert_eq!(raft.entry(Index(4)).map(|entry| entry.term), Some(Term(3)));
    assert_eq!(raft.commit_index(), Index(3));
    assert_eq!(sent_to(&ready, "a"), vec![accepted(3, 4)]);

    // A matching but shorter (reordered, older) append truncates nothing.
    raft.step(
        at(2),
        &id("a"),
        Message::AppendEntries {
            term: Term(3),
            prev_index: Index(1),
            prev_term: Term(1),
            entries: log_of(&[1, 1]).split_off(1),
            leader_commit: Index(3),
        },
    )
    .unwrap();
    assert_eq!(raft.last_index(), Index(4));
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![accepted(3, 2)]);
}

#[test]
fn a_committed_entry_is_never_overwritten() {
    let persisted = Persisted {
        snapshot: None,
        snapshot_voters: None,
        hard_state: HardState { term: Term(2), voted_for: None, commit: Index(2) },
        entries: log_of(&[1, 2]),
        applied: Index(0),
    };
    let others = peer_set(&["a", "c"]);
    let mut raft =
        Raft::new(id("b"), others, config(false, false), persisted, Time::ZERO, &mut Rng::seeded(1)).unwrap();
    raft.step(
        at(1),
        &id("a"),
        Message::AppendEntries {
            term: Term(3),
            prev_index: Index(1),
            prev_term: Term(1),
            entries: log_of(&[1, 3]).split_off(1),
            leader_commit: Index(2),
        },
    )
    .unwrap();
    assert_eq!(raft.entry(Index(2)).map(|entry| entry.term), Some(Term(2)));
    assert!(raft.poll_ready().entries.is_empty());
}

#[test]
fn a_mismatching_append_is_rejected_with_a_term_hint() {
    let mut raft = node_with("b", &["a", "c"], config(false, false), 2, &[1, 1, 2, 2, 2]);
    let append = |prev_index, prev_term| Message::AppendEntries {
        term: Term(3),
        prev_index: Index(prev_index),
        prev_term: Term(prev_term),
        entries: Vec::new(),
        leader_commit: Index(0),
    };
    let rejected = |rejected, hint_index, hint_term| Message::AppendEntriesResponse {
        term: Term(3),
        result: AppendResult::Rejected {
            rejected: Index(rejected),
            hint_index: Index(hint_index),
            hint_term: Term(hint_term),
        },
    };
    // Beyond the log: the hint is the follower's last entry.
    raft.step(at(1), &id("a"), append(7, 3)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![rejected(7, 5, 2)]);
    // A term mismatch: the last entry whose term is at most the leader's prev_term.
    raft.step(at(2), &id("a"), append(4, 3)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![rejected(4, 4, 2)]);
    raft.step(at(3), &id("a"), append(4, 1)).unwrap();
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![rejected(4, 2, 1)]);
}

#[test]
fn the_leader_backtracks_a_whole_term_per_rejection() {
    let mut raft = node_with("a", &["b", "c"], config(false, false), 3, &[1, 1, 3, 3, 3, 3]);
    let ready = elect(&mut raft, &["b", "c"], 400);
    assert_eq!(raft.term(), Term(4));
    assert!(matches!(sent_to(&ready, "b").as_slice(), [Message::AppendEntries { prev_index: Index(6), .. }]));
    // b's log is [1, 1, 2, 2, 2]: it rejects the probe at 6 with the hint (5, term 2).
    raft.step(
        at(401),
        &id("b"),
        Message::AppendEntriesResponse {
            term: Term(4),
            result: AppendResult::Rejected { rejected: Index(6), hint_index: Index(5), hint_term: Term(2) },
        },
    )
    .unwrap();
    let ready = raft.poll_ready();
    match sent_to(&ready, "b").as_slice() {
        [Message::AppendEntries { prev_index, prev_term, entries, .. }] => {
            assert_eq!((*prev_index, *prev_term), (Index(2), Term(1)), "skips all of term 2 at once");
            assert_eq!(entries.first().map(|entry| entry.index), Some(Index(3)));
        }
        other => panic!("expected one append, got {other:?}"),
    }
    // A duplicate of the old rejection, now below the match index, changes nothing.
    raft.step(at(402), &id("b"), accepted(4, 7)).unwrap();
    raft.poll_ready();
    raft.step(
        at(403),
        &id("b"),
        Message::AppendEntriesResponse {
            term: Term(4),
            result: AppendResult::Rejected { rejected: Index(6), hint_index: Index(5), hint_term: Term(2) },
        },
    )
    .unwrap();
    assert!(raft.poll_ready().messages.is_empty());
}

#[test]
fn appends_are_batched_and_pipelined_up_to_the_limits() {
    let config = RaftConfig { max_entries_per_append: 3, max_inflight_appends: 2, ..config(false, false) };
    let mut raft = node("a", &["b", "c"], config);
    elect(&mut raft, &["b", "c"], 400);
    for n in 0..10u8 {
        raft.propose(vec![n]).unwrap();
    }
    // Still probing: nothing more goes out until the probe is answered.
    assert!(sent_to(&raft.poll_ready(), "b").is_empty());
    raft.step(at(401), &id("b"), accepted(1, 1)).unwrap();
    let ready = raft.poll_ready();
    let batches: Vec<(Index, usize)> = sent_to(&ready, "b")
        .iter()
        .map(|message| match message {
            Message::AppendEntries { prev_index, entries, .. } => (*prev_index, entries.len()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(batches, vec![(Index(1), 3), (Index(4), 3)]);
    // One acknowledgement frees one slot in the pipeline.
    raft.step(at(402), &id("b"), accepted(1, 4)).unwrap();
    let ready = raft.poll_ready();
    assert!(matches!(sent_to(&ready, "b").as_slice(), [Message::AppendEntries { prev_index: Index(7), .. }]));
    assert_eq!(raft.commit_index(), Index(4));
}

#[test]
fn a_lost_append_is_retransmitted_from_the_match_index() {
    let mut raft = node("a", &["b"], config(false, false));
    elect(&mut raft, &["b"], 400);
    raft.step(at(401), &id("b"), accepted(1, 1)).unwrap();
    raft.propose(vec![1]).unwrap();
    raft.propose(vec![2]).unwrap();
    raft.poll_ready(); // Both appends are lost.
    let mut rng = Rng::seeded(1);
    raft.tick(at(460), &mut rng); // Heartbeat, but not yet past the retransmit timeout.
    assert!(matches!(
        sent_to(&raft.poll_ready(), "b").as_slice(),
        [Message::AppendEntries { prev_index: Index(1), entries, .. }] if entries.is_empty()
    ));
    raft.tick(at(520), &mut rng);
    match sent_to(&raft.poll_ready(), "b").as_slice() {
        [Message::AppendEntries { prev_index: Index(1), entries, .. }] => assert_eq!(entries.len(), 2),
        other => panic!("expected a retransmission, got {other:?}"),
    }
}

#[test]
fn propose_fails_off_the_leader_with_a_hint_and_under_backpressure() {
    let mut follower = node("b", &["a", "c"], config(false, false));
    assert_eq!(follower.propose(vec![1]), Err(ProposeError::NotLeader { leader_hint: None }));
    follower.step(at(1), &id("a"), heartbeat(1)).unwrap();
    assert_eq!(follower.propose(vec![1]), Err(ProposeError::NotLeader { leader_hint: Some(id("a")) }));

    let config = RaftConfig { max_uncommitted_entries: 3, ..config(false, false) };
    let mut leader = node("a", &["b", "c"], config);
    elect(&mut leader, &["b", "c"], 400);
    assert!(leader.propose(vec![1]).is_ok());
    assert!(leader.propose(vec![2]).is_ok());
    assert_eq!(leader.propose(vec![3]), Err(ProposeError::Backpressure { limit: 3 }));
    let too_large = vec![0; MAX_ENTRY_BYTES + 1];
    assert!(matches!(leader.propose(too_large), Err(ProposeError::TooLarge { .. })));
}

#[test]
fn unknown_senders_malformed_and_out_of_range_messages_are_refused_without_panicking() {
    let mut raft = node_with("b", &["a", "c"], config(false, false), 1, &[1]);
    // Answers count only from voters (requests are taken from any node: see the
    // `membership_*` tests); nothing is taken from this node's own name.
    let granted = Message::RequestVoteResponse { term: Term(9), granted: true };
    assert_eq!(raft.step(at(1), &id("z"), granted), Err(StepError::UnknownPeer(id("z"))));
    assert_eq!(raft.step(at(1), &id("z"), accepted(9, 1)), Err(StepError::UnknownPeer(id("z"))));
    assert_eq!(raft.step(at(1), &id("z"), read_pong(Term(9), 1)), Err(StepError::UnknownPeer(id("z"))));
    assert_eq!(raft.step(at(1), &id("b"), heartbeat(9)), Err(StepError::UnknownPeer(id("b"))));
    assert_eq!(raft.term(), Term(1));
    let gap = Message::AppendEntries {
        term: Term(2),
        prev_index: Index(0),
        prev_term: Term(0),
        entries: log_of(&[1, 1]).split_off(1),
        leader_commit: Index(0),
    };
    assert!(matches!(raft.step(at(1), &id("a"), gap), Err(StepError::Malformed(_))));
    assert_eq!(raft.term(), Term(1), "a malformed message changes nothing");
    // Far beyond the log, and u64::MAX indexes.
    raft.step(
        at(2),
        &id("a"),
        Message::AppendEntries {
            term: Term(2),
            prev_index: Index(u64::MAX),
            prev_term: Term(2),
            entries: Vec::new(),
            leader_commit: Index(u64::MAX),
        },
    )
    .unwrap();
    assert_eq!(raft.commit_index(), Index(0));

    let mut leader = node("a", &["b", "c"], config(false, false));
    elect(&mut leader, &["b", "c"], 400);
    leader.step(at(401), &id("b"), accepted(1, u64::MAX)).unwrap();
    assert_eq!(leader.commit_index(), Index(0), "an acknowledgement beyond the log is ignored");
}

#[test]
fn new_refuses_bad_configs_and_corrupt_persisted_state() {
    let mut rng = Rng::seeded(1);
    let mut new = |peers: &[&str], config: RaftConfig, persisted: Persisted| {
        Raft::new(id("a"), peer_set(peers), config, persisted, Time::ZERO, &mut rng).map(|_| ())
    };
    let inverted = RaftConfig { election_timeout_max: Duration::from_millis(100), ..RaftConfig::default() };
    assert!(matches!(new(&["b"], inverted, Persisted::default()), Err(InitError::Config(_))));
    let no_batch = RaftConfig { max_entries_per_append: 0, ..RaftConfig::default() };
    assert!(matches!(new(&["b"], no_batch, Persisted::default()), Err(InitError::Config(_))));
    assert!(matches!(new(&["a"], RaftConfig::default(), Persisted::default()), Err(InitError::Peers(_))));

    let gap = Persisted { entries: log_of(&[1, 1]).split_off(1), ..Persisted::default() };
    assert!(matches!(new(&["b"], RaftConfig::default(), gap), Err(InitError::Persisted(_))));
    let future_term = Persisted { entries: log_of(&[3]), ..Persisted::default() };
    assert!(matches!(new(&["b"], RaftConfig::default(), future_term), Err(InitError::Persisted(_))));
    let commit_beyond = Persisted {
        snapshot: None,
        snapshot_voters: None,
        hard_state: HardState { term: Term(1), voted_for: None, commit: Index(2) },
        entries: log_of(&[1]),
        applied: Index(0),
    };
    assert!(matches!(new(&["b"], RaftConfig::default(), commit_beyond), Err(InitError::Persisted(_))));
}

#[test]
fn a_restarted_node_re_applies_up_to_its_persisted_commit() {
    let persisted = Persisted {
        snapshot: None,
        snapshot_voters: None,
        hard_state: HardState { term: Term(2), voted_for: None, commit: Index(2) },
        entries: log_of(&[1, 2, 2]),
        applied: Index(1),
    };
    let mut raft =
        Raft::new(id("a"), peer_set(&["b"]), RaftConfig::default(), persisted, Time::ZERO, &mut Rng::seeded(1))
            .unwrap();
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, None);
    assert_eq!(ready.committed.iter().map(|entry| entry.index).collect::<Vec<_>>(), vec![Index(2)]);
}

fn arbitrary_message() -> impl Strategy<Value = Message> {
    let small = 0u64..8;
    // Some entries are configurations: subsets of a, b, c, d and this node, so that
    // configurations are appended, overwritten and reverted along the way.
    let entries = (0u64..8, 0usize..4, any::<bool>(), any::<u8>()).prop_map(|(start, count, shuffle, configs)| {
        let mut entries: Vec<Entry> = (0..count as u64)
            .map(|offset| {
                let (kind, data) = if configs & (1 << offset) != 0 {
                    let members = (configs >> 4) | 1;
                    let voters: BTreeSet<PeerId> = ["a", "b", "c", "d"]
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| members & (1 << bit) != 0)
                        .map(|(_, name)| id(name))
                        .collect();
                    (EntryKind::Config, encode_voters(&voters))
                } else {
                    (EntryKind::Command, vec![offset as u8])
                };
                Entry { term: Term(1 + offset % 3), index: Index(start + 1 + offset), kind, data }
            })
            .collect();
        if shuffle {
            entries.reverse();
        }
        entries
    });
    prop_oneof![
        (small.clone(), small.clone(), small.clone()).prop_map(|(term, i, t)| Message::PreVote {
            term: Term(term),
            last_index: Index(i),
            last_term: Term(t)
        }),
        (small.clone(), any::<bool>())
            .prop_map(|(term, granted)| Message::PreVoteResponse { term: Term(term), granted }),
        (small.clone(), small.clone(), small.clone()).prop_map(|(term, i, t)| Message::RequestVote {
            term: Term(term),
            last_index: Index(i),
            last_term: Term(t)
        }),
        (small.clone(), any::<bool>())
            .prop_map(|(term, granted)| Message::RequestVoteResponse { term: Term(term), granted }),
        (small.clone(), small.clone(), small.clone(), entries, prop_oneof![small.clone(), Just(u64::MAX)]).prop_map(
            |(term, prev_index, prev_term, entries, commit)| Message::AppendEntries {
                term: Term(term),
                prev_index: Index(prev_index),
                prev_term: Term(prev_term),
                entries,
                leader_commit: Index(commit),
            }
        ),
        (small.clone(), prop_oneof![small.clone(), Just(u64::MAX)]).prop_map(|(term, m)| accepted(term, m)),
        (small.clone(), small.clone(), small.clone(), small).prop_map(|(term, r, hi, ht)| {
            Message::AppendEntriesResponse {
                term: Term(term),
                result: AppendResult::Rejected { rejected: Index(r), hint_index: Index(hi), hint_term: Term(ht) },
            }
        }),
    ]
}

proptest! {
    /// Whatever arrives, in whatever order, a node never panics, its term never decreases,
    /// its commit index never passes its log, and the `Ready` contract holds.
    #[test]
    fn arbitrary_message_sequences_never_break_a_node(
        inputs in proptest::collection::vec((0usize..4, arbitrary_message(), 0u64..200, any::<bool>()), 0..80)
    ) {
        let senders = ["a", "c", "d", "z"];
        let mut raft = node_with("b", &["a", "c", "d"], RaftConfig::default(), 1, &[1, 1]);
        let mut rng = Rng::seeded(5);
        let mut now = 0;
        let mut last_term = raft.term();
        let mut applied = Index(0);
        for (sender, message, advance, propose) in inputs {
            now += advance;
            let _ = raft.step(at(now), &id(senders[sender]), message);
            raft.tick(at(now), &mut rng);
            if propose {
                let _ = raft.propose(vec![1]);
            }
            prop_assert!(raft.term() >= last_term);
            last_term = raft.term();
            prop_assert!(raft.commit_index() <= raft.last_index());
            // The configuration in effect is the latest in the log.
            let latest = (1..=raft.last_index().0)
                .rev()
                .filter_map(|index| raft.entry(Index(index)))
                .find(|entry| entry.kind == EntryKind::Config)
                .map(|entry| decode_voters(&entry.data).expect("valid"));
            prop_assert_eq!(raft.voters(), &latest.unwrap_or_else(|| peer_set(&["a", "b", "c", "d"])));
            prop_assert_eq!(raft.is_voter(), raft.voters().contains(&id("b")));
            let ready = raft.poll_ready();
            for entry in &ready.committed {
                prop_assert_eq!(entry.index, applied.next());
                applied = entry.index;
            }
            for window in ready.entries.windows(2) {
                prop_assert_eq!(window[1].index, window[0].index.next());
            }
        }
    }
}

// --- Read index ------------------------------------------------------------------------------

fn read_pong(term: Term, round: u64) -> Message {
    Message::ReadPong { term, round }
}

fn read_pings(ready: &Ready) -> Vec<(PeerId, u64)> {
    let pings = ready.messages.iter().filter_map(|out| match out.message {
        Message::ReadPing { round, .. } => Some((out.to.clone(), round)),
        _ => None,
    });
    pings.collect()
}

#[test]
fn a_read_is_confirmed_only_after_a_majority_answers_its_round() {
    let mut raft = node("a", &["b", "c"], RaftConfig::default());
    elect(&mut raft, &["b", "c"], 1000);
    let term = raft.term();
    raft.read_index(7).expect("leader reads");
    raft.read_index(8).expect("leader reads");
    let ready = raft.poll_ready();
    assert_eq!(read_pings(&ready), vec![(id("b"), 1), (id("c"), 1)], "one round for both reads");
    assert!(ready.reads.is_empty(), "not confirmed before any answer");

    raft.step(at(1001), &id("b"), read_pong(term, 1)).expect("step");
    let ready = raft.poll_ready();
    // The no-op opened the term at index 1: the reads wait for it even though it is not
    // committed yet (the shell answers once applied through it).
    assert_eq!(ready.reads, vec![ReadState { ctx: 7, index: Index(1) }, ReadState { ctx: 8, index: Index(1) }]);
}

#[test]
fn a_stale_round_does_not_confirm_a_later_read() {
    let mut raft = node("a", &["b", "c"], RaftConfig::default());
    elect(&mut raft, &["b", "c"], 1000);
    let term = raft.term();
    raft.read_index(1).expect("read");
    raft.poll_ready();
    raft.read_index(2).expect("read");
    let ready = raft.poll_ready();
    assert_eq!(read_pings(&ready).first().map(|ping| ping.1), Some(2));
    raft.step(at(1001), &id("b"), read_pong(term, 1)).expect("step");
    let ready = raft.poll_ready();
    assert_eq!(ready.reads.iter().map(|read| read.ctx).collect::<Vec<_>>(), vec![1]);
    raft.step(at(1001), &id("c"), read_pong(term, 2)).expect("step");
    assert_eq!(raft.poll_ready().reads.iter().map(|read| read.ctx).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_read_answered_by_a_pong_from_an_older_term_is_not_confirmed() {
    let mut raft = node_with("a", &["b", "c"], RaftConfig::default(), 3, &[1, 2]);
    elect(&mut raft, &["b", "c"], 1000);
    raft.read_index(1).expect("read");
    raft.poll_ready();
    raft.step(at(1001), &id("b"), read_pong(Term(3), 1)).expect("stale pongs are ignored");
    assert!(raft.poll_ready().reads.is_empty());
}

#[test]
fn the_read_index_covers_everything_committed_when_the_read_arrived() {
    let mut raft = node("a", &["b", "c"], RaftConfig::default());
    elect(&mut raft, &["b", "c"], 1000);
    let term = raft.term();
    raft.propose(b"x".to_vec()).expect("propose");
    raft.step(at(1001), &id("b"), accepted(term.0, 2)).expect("step");
    assert_eq!(raft.commit_index(), Index(2));
    raft.poll_ready();
    raft.read_index(5).expect("read");
    raft.poll_ready();
    raft.step(at(1002), &id("c"), read_pong(term, 1)).expect("step");
    assert_eq!(raft.poll_ready().reads, vec![ReadState { ctx: 5, index: Index(2) }]);
}

#[test]
fn a_follower_refuses_reads_and_answers_pings_of_its_leader() {
    let mut raft = node("b", &["a", "c"], RaftConfig::default());
    raft.step(at(10), &id("a"), heartbeat(1)).expect("step");
    assert_eq!(raft.read_index(1), Err(ReadError::NotLeader { leader_hint: Some(id("a")) }));
    raft.poll_ready();
    raft.step(at(11), &id("a"), Message::ReadPing { term: Term(1), round: 4 }).expect("step");
    assert_eq!(sent_to(&raft.poll_ready(), "a"), vec![read_pong(Term(1), 4)]);
}

#[test]
fn reads_pending_when_the_leader_steps_down_fail() {
    let mut raft = node("a", &["b", "c"], RaftConfig::default());
    elect(&mut raft, &["b", "c"], 1000);
    raft.read_index(9).expect("read");
    raft.poll_ready();
    raft.step(at(1001), &id("b"), heartbeat(raft.term().0 + 1)).expect("a newer leader");
    let ready = raft.poll_ready();
    assert_eq!(raft.role(), Role::Follower);
    assert_eq!(ready.failed_reads, vec![9]);
    assert!(ready.reads.is_empty());
}

#[test]
fn a_single_node_confirms_reads_at_once() {
    let mut raft = node("a", &[], RaftConfig::default());
    raft.tick(at(400), &mut Rng::seeded(1));
    raft.poll_ready();
    raft.read_index(3).expect("read");
    assert_eq!(raft.poll_ready().reads, vec![ReadState { ctx: 3, index: Index(1) }]);
}

// --- Snapshots and compaction ----------------------------------------------------------------

/// A leader over peers b and c whose log holds `count` committed and applied commands: c
/// acknowledged everything, b (down) nothing.
fn leader_with_applied(count: u64) -> Raft {
    leader_with_applied_under(count, RaftConfig::default())
}

fn leader_with_applied_under(count: u64, config: RaftConfig) -> Raft {
    let mut raft = node("a", &["b", "c"], config);
    elect(&mut raft, &["b", "c"], 1000);
    for i in 0..count {
        raft.propose(vec![i as u8]).expect("propose");
    }
    let term = raft.term().0;
    let last = raft.last_index().0;
    raft.step(at(1001), &id("c"), accepted(term, last)).expect("step");
    raft.poll_ready();
    assert_eq!(raft.applied(), Index(last));
    raft
}

#[test]
fn compaction_drops_applied_entries_and_refuses_what_it_cannot_drop() {
    let mut raft = leader_with_applied(5);
    assert_eq!(raft.compact(Index(9)), Err(CompactError::NotApplied { index: Index(9), applied: Index(6) }));
    let meta = raft.compact(Index(4)).expect("applied entries compact");
    assert_eq!(meta, SnapshotMeta { index: Index(4), term: raft.term() });
    assert_eq!(raft.snapshot(), meta);
    assert_eq!(raft.entry(Index(4)), None);
    assert_eq!(raft.term_at(Index(4)), Some(raft.term()));
    assert!(raft.entry(Index(5)).is_some());
    assert_eq!(raft.compact(Index(3)), Err(CompactError::AlreadyCompacted { index: Index(3), snapshot: Index(4) }));
}

#[test]
fn a_follower_behind_the_snapshot_gets_the_snapshot_then_appends() {
    let mut raft = leader_with_applied(5);
    raft.compact(Index(6)).expect("compact everything");
    let term = raft.term();
    // b never answered: its append is retransmitted from its match index 0, which is compacted.
    raft.tick(at(1200), &mut Rng::seeded(3));
    let ready = raft.poll_ready();
    assert_eq!(ready.send_snapshots, vec![(id("b"), term)], "entries 1..=6 are compacted: send the snapshot");
    assert!(sent_to(&ready, "b").is_empty(), "no append while the snapshot streams");

    // New entries do not go to b until it acknowledges the snapshot.
    raft.propose(b"x".to_vec()).expect("propose");
    let ready = raft.poll_ready();
    assert!(sent_to(&ready, "b").is_empty());
    assert!(!sent_to(&ready, "c").is_empty());

    raft.step(at(1003), &id("b"), accepted(term.0, 6)).expect("the snapshot is installed");
    let ready = raft.poll_ready();
    let appends = sent_to(&ready, "b");
    assert!(
        matches!(appends.first(), Some(Message::AppendEntries { prev_index: Index(6), entries, .. }) if entries.len() == 1),
        "{appends:?}"
    );
}

#[test]
fn a_lost_snapshot_is_sent_again_after_the_snapshot_timeout() {
    // Without check-quorum, so that the leader outlives c's silence in this test.
    let mut raft = leader_with_applied_under(3, config(true, false));
    raft.compact(Index(4)).expect("compact");
    let term = raft.term();
    let mut rng = Rng::seeded(3);
    raft.tick(at(1200), &mut rng);
    assert_eq!(raft.poll_ready().send_snapshots, vec![(id("b"), term)]);
    raft.tick(at(5000), &mut rng);
    assert!(raft.poll_ready().send_snapshots.is_empty(), "still within the snapshot timeout");
    raft.tick(at(12_000), &mut rng);
    assert_eq!(raft.poll_ready().send_snapshots, vec![(id("b"), term)]);
}

#[test]
fn a_follower_installs_a_snapshot_beyond_its_commit_and_replaces_its_log() {
    let mut raft = node_with("b", &["a", "c"], RaftConfig::default(), 1, &[1, 1]);
    let meta = SnapshotMeta { index: Index(10), term: Term(2) };
    let voters = peer_set(&["a", "b", "c"]);
    raft.step(at(10), &id("a"), Message::InstallSnapshot { term: Term(2), meta, voters: voters.clone() })
        .expect("step");
    let ready = raft.poll_ready();
    assert_eq!(ready.install, Some((meta, voters.clone())));
    assert!(ready.committed.is_empty(), "the snapshot replaces what would have been applied");
    assert_eq!(sent_to(&ready, "a"), vec![accepted(2, 10)]);
    assert_eq!((raft.commit_index(), raft.applied(), raft.last_index()), (Index(10), Index(10), Index(10)));
    assert_eq!(ready.hard_state.map(|hard_state| hard_state.commit), Some(Index(10)));

    // An older snapshot changes nothing and is answered with the commit index.
    let old = SnapshotMeta { index: Index(5), term: Term(2) };
    raft.step(at(11), &id("a"), Message::InstallSnapshot { term: Term(2), meta: old, voters }).expect("step");
    let ready = raft.poll_ready();
    assert_eq!(ready.install, None);
    assert_eq!(sent_to(&ready, "a"), vec![accepted(2, 10)]);
}

#[test]
fn a_node_restarts_from_a_snapshot_and_the_log_after_it() {
    let persisted = Persisted {
        hard_state: HardState { term: Term(3), voted_for: None, commit: Index(2) },
        snapshot: Some(SnapshotMeta { index: Index(5), term: Term(2) }),
        snapshot_voters: None,
        entries: vec![Entry { term: Term(3), index: Index(6), kind: EntryKind::Command, data: vec![6] }],
        applied: Index(5),
    };
    let raft = Raft::new(id("a"), peer_set(&["b"]), RaftConfig::default(), persisted, Time::ZERO, &mut Rng::seeded(1))
        .unwrap();
    assert_eq!((raft.commit_index(), raft.applied(), raft.last_index()), (Index(5), Index(5), Index(6)));

    let gap = Persisted {
        snapshot: Some(SnapshotMeta { index: Index(5), term: Term(2) }),
        entries: log_of(&[2]),
        hard_state: HardState { term: Term(3), ..HardState::default() },
        ..Persisted::default()
    };
    let refused = Raft::new(id("a"), peer_set(&["b"]), RaftConfig::default(), gap, Time::ZERO, &mut Rng::seeded(1));
    assert!(matches!(refused, Err(InitError::Persisted(_))));
}

#[test]
fn a_malformed_install_snapshot_is_refused() {
    let mut raft = node("b", &["a"], RaftConfig::default());
    let zero = SnapshotMeta { index: Index(0), term: Term(0) };
    let future = SnapshotMeta { index: Index(3), term: Term(9) };
    let good = SnapshotMeta { index: Index(3), term: Term(1) };
    let voters = peer_set(&["a", "b"]);
    for (meta, voters) in [(zero, voters.clone()), (future, voters), (good, BTreeSet::new())] {
        let result = raft.step(at(1), &id("a"), Message::InstallSnapshot { term: Term(1), meta, voters });
        assert!(matches!(result, Err(StepError::Malformed(_))), "{result:?}");
    }
}

#[test]
fn a_follower_holding_the_snapshots_last_entry_keeps_its_log() {
    // b acknowledged entries 1..=4 of term 1 but knows only 1 is committed; the leader's
    // snapshot through 3 must not wipe entry 4, which the leader may count as replicated.
    let mut raft = node_with("b", &["a", "c"], RaftConfig::default(), 1, &[1, 1, 1, 1]);
    let meta = SnapshotMeta { index: Index(3), term: Term(1) };
    let voters = peer_set(&["a", "b", "c"]);
    raft.step(at(10), &id("a"), Message::InstallSnapshot { term: Term(1), meta, voters }).expect("step");
    let ready = raft.poll_ready();
    assert_eq!(ready.install, None);
    assert_eq!((raft.commit_index(), raft.last_index()), (Index(3), Index(4)));
    assert_eq!(ready.committed.len(), 3, "the committed prefix is applied from the log");
    assert_eq!(sent_to(&ready, "a"), vec![accepted(1, 3)]);
}

#[test]
fn a_snapshot_of_a_later_term_than_the_stored_hard_state_lifts_the_term() {
    let persisted = Persisted {
        hard_state: HardState { term: Term(3), voted_for: Some(id("b")), commit: Index(0) },
        snapshot: Some(SnapshotMeta { index: Index(7), term: Term(5) }),
        snapshot_voters: None,
        entries: Vec::new(),
        applied: Index(7),
    };
    let mut raft =
        Raft::new(id("a"), peer_set(&["b"]), RaftConfig::default(), persisted, Time::ZERO, &mut Rng::seeded(1))
            .unwrap();
    assert_eq!(raft.term(), Term(5));
    let ready = raft.poll_ready();
    assert_eq!(ready.hard_state, Some(HardState { term: Term(5), voted_for: None, commit: Index(7) }));
}

// --- Membership changes ----------------------------------------------------------------------

fn config_entry(term: u64, index: u64, voters: &[&str]) -> Entry {
    Entry { term: Term(term), index: Index(index), kind: EntryKind::Config, data: encode_voters(&peer_set(voters)) }
}

fn noop_entry(term: u64, index: u64) -> Entry {
    Entry { term: Term(term), index: Index(index), kind: EntryKind::Noop, data: Vec::new() }
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    Message::AppendEntries {
        term: Term(term),
        prev_index: Index(prev.0),
        prev_term: Term(prev.1),
        entries,
        leader_commit: Index(commit),
    }
}

/// Leader `a` of {a, b, c} in term 1 whose no-op (index 1) b has acknowledged: it may change
/// the configuration.
fn settled_leader(config: RaftConfig) -> Raft {
    let mut raft = node("a", &["b", "c"], config);
    elect(&mut raft, &["b", "c"], 400);
    raft.step(at(401), &id("b"), accepted(1, 1)).expect("step");
    assert_eq!(raft.commit_index(), Index(1));
    raft.poll_ready();
    raft
}

#[test]
fn membership_an_added_voter_is_probed_and_counts_at_once() {
    let mut raft = settled_leader(RaftConfig::default());
    assert_eq!(raft.propose_change(MembershipChange::Add(id("d"))), Ok(Index(2)));
    assert_eq!(raft.voters(), &peer_set(&["a", "b", "c", "d"]));
    assert_eq!(raft.pending_configuration(), Some(Index(2)));
    let ready = raft.poll_ready();
    assert_eq!(ready.entries, vec![config_entry(1, 2, &["a", "b", "c", "d"])]);
    assert!(
        matches!(sent_to(&ready, "d").as_slice(), [Message::AppendEntries { prev_index: Index(2), .. }]),
        "the new voter is probed from the leader's last index"
    );
    // Four voters: a and b are not a majority any more.
    raft.step(at(402), &id("b"), accepted(1, 2)).expect("step");
    assert_eq!(raft.commit_index(), Index(1));
    raft.step(at(403), &id("d"), accepted(1, 2)).expect("the new voter answers");
    assert_eq!(raft.commit_index(), Index(2));
    assert_eq!(raft.pending_configuration(), None);
    let committed = raft.poll_ready().committed;
    assert_eq!(committed.last().map(|entry| entry.kind), Some(EntryKind::Config));
}

#[test]
fn membership_a_removed_voter_is_forgotten_and_the_quorum_shrinks() {
    let mut raft = settled_leader(RaftConfig::default());
    raft.propose_change(MembershipChange::Remove(id("c"))).expect("remove c");
    let ready = raft.poll_ready();
    assert!(sent_to(&ready, "c").is_empty(), "no more appends to c");
    assert!(!sent_to(&ready, "b").is_empty());
    // {a, b}: b's acknowledgement alone commits.
    raft.step(at(402), &id("b"), accepted(1, 2)).expect("step");
    assert_eq!(raft.commit_index(), Index(2));
    assert_eq!(raft.step(at(403), &id("c"), accepted(1, 2)), Err(StepError::UnknownPeer(id("c"))));
    raft.propose(b"x".to_vec()).expect("propose");
    let ready = raft.poll_ready();
    assert!(sent_to(&ready, "c").is_empty());
}

#[test]
fn membership_a_leader_removing_itself_replicates_without_counting_itself_then_steps_down() {
    let mut raft = settled_leader(config(true, false));
    raft.propose_change(MembershipChange::Remove(id("a"))).expect("remove the leader");
    assert!(!raft.is_voter());
    assert_eq!(raft.role(), Role::Leader, "it leads until the change commits");
    raft.propose(b"x".to_vec()).expect("it still takes commands");
    raft.poll_ready();
    // {b, c}: b alone is not a majority, and the leader does not count.
    raft.step(at(402), &id("b"), accepted(1, 3)).expect("step");
    assert_eq!(raft.commit_index(), Index(1));
    assert_eq!(raft.role(), Role::Leader);
    raft.step(at(403), &id("c"), accepted(1, 3)).expect("step");
    assert_eq!(raft.commit_index(), Index(3));
    assert_eq!((raft.role(), raft.leader(), raft.term()), (Role::Follower, None, Term(1)));
    // Before stepping down it told b and c the new commit index.
    let ready = raft.poll_ready();
    for peer in ["b", "c"] {
        assert!(
            sent_to(&ready, peer)
                .iter()
                .any(|message| matches!(message, Message::AppendEntries { leader_commit: Index(3), .. })),
            "{peer} learns the commit: {ready:?}"
        );
    }
    assert_eq!(ready.committed.len(), 2, "the removed leader applies the change too");
    // Outside the configuration it never campaigns.
    let mut rng = Rng::seeded(4);
    for step in 1..=50 {
        raft.tick(at(403 + step * 100), &mut rng);
    }
    assert_eq!((raft.role(), raft.term()), (Role::Follower, Term(1)));
    assert!(raft.poll_ready().messages.is_empty());
}

#[test]
fn membership_reads_on_a_leader_removing_itself_need_a_majority_of_the_others() {
    let mut raft = settled_leader(RaftConfig::default());
    raft.propose_change(MembershipChange::Remove(id("a"))).expect("remove the leader");
    raft.poll_ready();
    raft.read_index(7).expect("read");
    let ready = raft.poll_ready();
    assert_eq!(read_pings(&ready), vec![(id("b"), 1), (id("c"), 1)]);
    raft.step(at(402), &id("b"), read_pong(Term(1), 1)).expect("step");
    assert!(raft.poll_ready().reads.is_empty(), "b alone is not a majority of {{b, c}}");
    raft.step(at(402), &id("c"), read_pong(Term(1), 1)).expect("step");
    assert_eq!(raft.poll_ready().reads.iter().map(|read| read.ctx).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn membership_check_quorum_counts_only_voters() {
    let mut raft = settled_leader(config(false, true));
    raft.propose_change(MembershipChange::Remove(id("a"))).expect("remove the leader");
    // Only b answers in the first check-quorum period: a majority of {a, b, c} with a, not
    // of {b, c} without it.
    raft.step(at(450), &id("b"), accepted(1, 1)).expect("step");
    raft.tick(at(560), &mut Rng::seeded(1));
    assert_eq!(raft.role(), Role::Follower);
}

#[test]
fn membership_changes_are_refused_with_the_reason() {
    let mut follower = node("b", &["a", "c"], RaftConfig::default());
    follower.step(at(1), &id("a"), heartbeat(1)).expect("step");
    assert_eq!(
        follower.propose_change(MembershipChange::Add(id("d"))),
        Err(MembershipError::NotLeader { leader_hint: Some(id("a")) })
    );

    // Before its no-op commits, a new leader changes nothing.
    let mut raft = node("a", &["b", "c"], RaftConfig::default());
    elect(&mut raft, &["b", "c"], 400);
    assert_eq!(
        raft.propose_change(MembershipChange::Add(id("d"))),
        Err(MembershipError::TermNotCommitted { term_start: Index(1) })
    );

    let mut raft = settled_leader(RaftConfig::default());
    let two_more = peer_set(&["a", "b", "c", "d", "e"]);
    assert_eq!(raft.propose_membership(two_more), Err(MembershipError::NotSingleChange { added: 2, removed: 0 }));
    let swap = peer_set(&["a", "b", "d"]);
    assert_eq!(raft.propose_membership(swap), Err(MembershipError::NotSingleChange { added: 1, removed: 1 }));
    let same = peer_set(&["a", "b", "c"]);
    assert_eq!(raft.propose_membership(same), Err(MembershipError::NotSingleChange { added: 0, removed: 0 }));
    assert_eq!(raft.propose_change(MembershipChange::Add(id("b"))), Err(MembershipError::AlreadyVoter(id("b"))));
    assert_eq!(raft.propose_change(MembershipChange::Remove(id("z"))), Err(MembershipError::NotVoter(id("z"))));
    assert_eq!(
        raft.propose_change(MembershipChange::Add(id(""))).map_err(|e| matches!(e, MembershipError::Invalid(_))),
        Err(true)
    );
    assert_eq!(raft.propose_membership(BTreeSet::new()), Err(MembershipError::Empty));
    let crowd: BTreeSet<PeerId> = (0..=MAX_VOTERS).map(|n| PeerId(format!("n{n}"))).collect();
    assert!(matches!(raft.propose_membership(crowd), Err(MembershipError::TooManyVoters { .. })));
    assert_eq!(raft.last_index(), Index(1), "nothing was appended");

    // One change at a time.
    raft.propose_change(MembershipChange::Add(id("d"))).expect("the first change");
    assert_eq!(
        raft.propose_change(MembershipChange::Remove(id("d"))),
        Err(MembershipError::ChangePending { index: Index(2) })
    );

    // The last voter cannot leave.
    let mut alone = node("a", &[], RaftConfig::default());
    alone.tick(at(400), &mut Rng::seeded(1));
    assert_eq!(alone.role(), Role::Leader);
    assert_eq!(alone.propose_change(MembershipChange::Remove(id("a"))), Err(MembershipError::Empty));
}

#[test]
fn membership_a_single_voter_adds_a_second_and_waits_for_it() {
    let mut alone = node("a", &[], RaftConfig::default());
    alone.tick(at(400), &mut Rng::seeded(1));
    alone.poll_ready();
    assert_eq!(alone.commit_index(), Index(1));
    alone.propose_change(MembershipChange::Add(id("b"))).expect("add b");
    alone.poll_ready();
    assert_eq!(alone.commit_index(), Index(1), "two voters: b must have it");
    alone.step(at(401), &id("b"), accepted(1, 2)).expect("step");
    assert_eq!(alone.commit_index(), Index(2));
}

#[test]
fn membership_a_truncated_configuration_entry_is_reverted() {
    let mut raft = node("b", &["a", "c"], RaftConfig::default());
    let entries = vec![noop_entry(1, 1), config_entry(1, 2, &["a", "b", "c", "d"])];
    raft.step(at(1), &id("a"), append(1, (0, 0), entries, 1)).expect("step");
    assert_eq!(raft.voters(), &peer_set(&["a", "b", "c", "d"]), "in effect once in the log");
    assert_eq!(raft.pending_configuration(), Some(Index(2)));
    // A leader of term 2 never had it: its entry 2 replaces the configuration entry.
    raft.step(at(2), &id("c"), append(2, (1, 1), vec![noop_entry(2, 2)], 0)).expect("step");
    assert_eq!(raft.voters(), &peer_set(&["a", "b", "c"]));
    assert_eq!(raft.pending_configuration(), None);
    assert_eq!(raft.step(at(3), &id("d"), accepted(2, 2)), Err(StepError::UnknownPeer(id("d"))));
}

#[test]
fn membership_a_joiner_follows_without_campaigning_until_a_configuration_lists_it() {
    let persisted = Persisted::default();
    let voters = peer_set(&["a", "b", "c"]);
    let mut raft =
        Raft::new_joining(id("d"), voters.clone(), config(false, true), persisted, Time::ZERO, &mut Rng::seeded(2))
            .expect("a joiner");
    assert!(!raft.is_voter());
    let mut rng = Rng::seeded(2);
    for step in 1..=20 {
        raft.tick(at(step * 100), &mut rng);
    }
    assert_eq!((raft.role(), raft.term()), (Role::Follower, Term(0)), "a joiner never campaigns");
    assert!(raft.poll_ready().is_empty());

    // It takes the leader's log; the configuration that adds it makes it a voter.
    raft.step(at(2001), &id("a"), append(1, (0, 0), vec![noop_entry(1, 1)], 1)).expect("the leader's append");
    assert_eq!(raft.leader(), Some(&id("a")));
    assert!(!raft.is_voter());
    raft.step(at(2002), &id("a"), append(1, (1, 1), vec![config_entry(1, 2, &["a", "b", "c", "d"])], 1)).expect("step");
    assert!(raft.is_voter());
    raft.tick(at(5000), &mut rng);
    assert_eq!(raft.role(), Role::Candidate, "a voter now, it campaigns when the leader goes silent");

    let refused = Raft::new_joining(id("a"), voters, RaftConfig::default(), Persisted::default(), Time::ZERO, &mut rng);
    assert!(matches!(refused, Err(InitError::Peers(_))));
}

#[test]
fn membership_a_lagging_follower_takes_the_appends_of_a_leader_it_does_not_know() {
    // d was added while b was down, and now leads: b can only catch up from d.
    let mut raft = node_with("b", &["a", "c"], RaftConfig::default(), 1, &[1]);
    let entries = vec![config_entry(2, 2, &["a", "b", "c", "d"])];
    raft.step(at(1), &id("d"), append(3, (1, 1), entries, 2)).expect("a leader's append");
    assert_eq!((raft.leader(), raft.commit_index()), (Some(&id("d")), Index(2)));
    assert_eq!(raft.voters(), &peer_set(&["a", "b", "c", "d"]));
    assert_eq!(sent_to(&raft.poll_ready(), "d"), vec![accepted(3, 2)]);
}

#[test]
fn membership_votes_count_only_in_the_configuration_in_effect() {
    // a's log adds d: four voters, three votes needed.
    let mut raft = node_with("a", &["b", "c"], config(false, false), 1, &[]);
    let entries = vec![noop_entry(1, 1), config_entry(1, 2, &["a", "b", "c", "d"])];
    raft.step(at(1), &id("b"), append(1, (0, 0), entries, 0)).expect("step");
    raft.tick(at(1000), &mut Rng::seeded(1));
    assert_eq!(raft.role(), Role::Candidate);
    let ready = raft.poll_ready();
    assert!(!sent_to(&ready, "d").is_empty(), "d is asked for its vote");
    let term = raft.term();
    raft.step(at(1001), &id("b"), Message::RequestVoteResponse { term, granted: true }).expect("step");
    assert_eq!(raft.role(), Role::Candidate, "2 of 4 votes");
    raft.step(at(1001), &id("d"), Message::RequestVoteResponse { term, granted: true }).expect("step");
    assert_eq!(raft.role(), Role::Leader);
}

#[test]
fn membership_a_malformed_configuration_entry_is_refused() {
    let mut raft = node("b", &["a", "c"], RaftConfig::default());
    for data in [Vec::new(), vec![0xFF], encode_voters(&BTreeSet::new()), {
        let mut unsorted = postcard::to_stdvec(&vec![id("c"), id("a")]).unwrap();
        unsorted.shrink_to_fit();
        unsorted
    }] {
        let entry = Entry { term: Term(1), index: Index(1), kind: EntryKind::Config, data };
        let result = raft.step(at(1), &id("a"), append(1, (0, 0), vec![entry], 0));
        assert!(matches!(result, Err(StepError::Malformed(_))), "{result:?}");
    }
    assert_eq!((raft.term(), raft.last_index()), (Term(0), Index(0)));

    let corrupt = Persisted {
        hard_state: HardState { term: Term(1), voted_for: None, commit: Index(0) },
        entries: vec![Entry { term: Term(1), index: Index(1), kind: EntryKind::Config, data: vec![7] }],
        ..Persisted::default()
    };
    let refused = Raft::new(id("b"), peer_set(&["a"]), RaftConfig::default(), corrupt, Time::ZERO, &mut Rng::seeded(1));
    assert!(matches!(refused, Err(InitError::Persisted(_))), "{refused:?}");
}

#[test]
fn membership_a_snapshot_carries_the_configuration_it_ends_with() {
    let mut raft = settled_leader(RaftConfig::default());
    raft.propose_change(MembershipChange::Add(id("d"))).expect("add d");
    raft.step(at(402), &id("b"), accepted(1, 2)).expect("step");
    raft.step(at(402), &id("c"), accepted(1, 2)).expect("step");
    raft.poll_ready();
    assert_eq!(raft.voters_at(Index(1)), Some(&peer_set(&["a", "b", "c"])));
    assert_eq!(raft.voters_at(Index(2)), Some(&peer_set(&["a", "b", "c", "d"])));
    raft.compact(Index(2)).expect("compact through the configuration entry");
    assert_eq!(raft.snapshot_voters(), &peer_set(&["a", "b", "c", "d"]));
    assert_eq!(raft.voters_at(Index(1)), None, "compacted");
    assert_eq!(raft.voters(), &peer_set(&["a", "b", "c", "d"]));

    // d has nothing: after its rejection it needs compacted entries, so it gets the snapshot.
    let term = raft.term();
    let rejection = AppendResult::Rejected { rejected: Index(2), hint_index: Index(0), hint_term: Term(0) };
    raft.step(at(403), &id("d"), Message::AppendEntriesResponse { term, result: rejection }).expect("step");
    assert_eq!(raft.poll_ready().send_snapshots, vec![(id("d"), term)]);

    // The joiner installs it and votes from then on.
    let mut joiner = Raft::new_joining(
        id("d"),
        peer_set(&["a", "b", "c"]),
        RaftConfig::default(),
        Persisted::default(),
        Time::ZERO,
        &mut Rng::seeded(3),
    )
    .expect("a joiner");
    let meta = raft.snapshot();
    let voters = raft.snapshot_voters().clone();
    joiner.step(at(404), &id("a"), Message::InstallSnapshot { term, meta, voters: voters.clone() }).expect("step");
    assert!(joiner.is_voter());
    assert_eq!(joiner.poll_ready().install, Some((meta, voters)));
}

#[test]
fn membership_a_restart_takes_the_configuration_of_the_snapshot_and_the_log() {
    let snapshot = SnapshotMeta { index: Index(5), term: Term(2) };
    let restart = |snapshot_voters: Option<&[&str]>, entries: Vec<Entry>| {
        let persisted = Persisted {
            hard_state: HardState { term: Term(2), voted_for: None, commit: Index(5) },
            snapshot: Some(snapshot),
            snapshot_voters: snapshot_voters.map(peer_set),
            entries,
            applied: Index(5),
        };
        Raft::new(id("a"), peer_set(&["b", "c"]), RaftConfig::default(), persisted, Time::ZERO, &mut Rng::seeded(1))
            .expect("restarts")
    };
    assert_eq!(restart(Some(&["a", "d"]), Vec::new()).voters(), &peer_set(&["a", "d"]));
    assert_eq!(restart(None, Vec::new()).voters(), &peer_set(&["a", "b", "c"]), "a snapshot from before membership");
    let raft = restart(Some(&["a", "d"]), vec![config_entry(2, 6, &["a", "d", "e"])]);
    assert_eq!(raft.voters(), &peer_set(&["a", "d", "e"]), "the latest, committed or not");
    assert_eq!(raft.pending_configuration(), Some(Index(6)));
    assert_eq!(raft.snapshot_voters(), &peer_set(&["a", "d"]));

    // A removed node restarts outside the configuration, and stays quiet.
    let mut removed = restart(Some(&["d", "e"]), Vec::new());
    assert!(!removed.is_voter());
    removed.tick(at(10_000), &mut Rng::seeded(1));
    assert_eq!(removed.role(), Role::Follower);
}

#[test]
fn membership_a_lagging_voter_grants_its_vote_to_a_candidate_it_does_not_know() {
    // d was added while b was down; now d campaigns and needs b's vote to make a majority of
    // four. b, still on {a, b, c}, must answer it (found by the simulator, seed 312).
    let mut raft = node_with("b", &["a", "c"], config(false, false), 1, &[1]);
    raft.step(at(1000), &id("d"), vote_request(2, 6, 1)).expect("a candidate outside b's configuration");
    assert_eq!(sent_to(&raft.poll_ready(), "d"), vec![Message::RequestVoteResponse { term: Term(2), granted: true }]);
    // A removed server lacks the entry that removed it: a voter that has it refuses.
    let mut voter = node_with("c", &["a", "b"], config(true, false), 1, &[1, 1]);
    voter.step(at(1000), &id("x"), pre_vote(2, 1, 1)).expect("step");
    assert_eq!(sent_to(&voter.poll_ready(), "x"), vec![Message::PreVoteResponse { term: Term(1), granted: false }]);
}

#[test]
fn a_lost_probe_is_sent_again_at_the_same_point_not_as_a_snapshot() {
    // A leader whose log was compacted through 5: b's first probe (at 6, the leader's last
    // entry before its no-op) is lost. Retrying from b's match index, still 0, would send b
    // the whole snapshot although it may lack nothing.
    let persisted = Persisted {
        hard_state: HardState { term: Term(1), voted_for: None, commit: Index(5) },
        snapshot: Some(SnapshotMeta { index: Index(5), term: Term(1) }),
        snapshot_voters: None,
        entries: vec![Entry { term: Term(1), index: Index(6), kind: EntryKind::Command, data: vec![6] }],
        applied: Index(5),
    };
    let mut raft =
        Raft::new(id("a"), peer_set(&["b", "c"]), config(false, false), persisted, Time::ZERO, &mut Rng::seeded(1))
            .unwrap();
    let ready = elect(&mut raft, &["b", "c"], 400);
    assert!(matches!(sent_to(&ready, "b").as_slice(), [Message::AppendEntries { prev_index: Index(6), .. }]));
    raft.tick(at(520), &mut Rng::seeded(1));
    let ready = raft.poll_ready();
    assert!(ready.send_snapshots.is_empty(), "{ready:?}");
    assert!(matches!(sent_to(&ready, "b").as_slice(), [Message::AppendEntries { prev_index: Index(6), .. }]));
}

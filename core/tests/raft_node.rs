//! The Raft node's contract, one promise at a time (the simulator's quorum scenario runs them all
//! together under faults).

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchResponse as KafkaFetchResponse, ResponseKind};
use spool_core::raft::{
    wire, Diverging, ElectionState, Entry, FetchResponse, Message, Payload, ProposeError, RaftAction, RaftConfig,
    RaftNode, Request, Response, Restored, RoleKind,
};

fn drain(node: &mut RaftNode) -> Vec<RaftAction> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

fn entry(offset: u64, epoch: i32, data: &str) -> Entry {
    Entry { offset, epoch, payload: Payload::Data(Bytes::from(data.to_string())) }
}

#[test]
fn a_lone_voter_leads_after_its_election_state_is_on_disk_and_commits_what_it_synced() {
    let mut node = RaftNode::new(RaftConfig::new(1, vec![1], 7), Restored::default(), 0);
    // Candidate and leader at once; one write of the election state covers both.
    assert_eq!(
        node.poll_action(),
        Some(RaftAction::PersistElection(ElectionState { epoch: 1, voted_for: Some(1), leader: Some(1) }))
    );
    assert_eq!(node.poll_action(), None, "nothing leaves before the election state is persisted");
    node.handle_election_persisted(2);
    let actions = drain(&mut node);
    assert!(matches!(&actions[0], RaftAction::Append(e) if e[0].payload == Payload::LeaderChange { leader: 1 }));
    assert_eq!(actions[1], RaftAction::Sync { through: 1 });
    assert_eq!(node.role(), RoleKind::Leader);
    assert_eq!(node.propose(3, Bytes::from_static(b"a")), Ok(1));
    assert!(matches!(&drain(&mut node)[..], [RaftAction::Append(_)]), "one sync in flight at a time");
    assert_eq!(node.high_watermark(), 0, "nothing committed before it is synced");
    node.handle_synced(4, 1);
    assert_eq!(node.high_watermark(), 1);
    let actions = drain(&mut node);
    assert_eq!(actions, vec![RaftAction::Sync { through: 2 }]);
    node.handle_synced(5, 2);
    assert_eq!(node.high_watermark(), 2);
}

#[test]
fn a_vote_is_answered_only_after_it_is_persisted_and_never_given_twice() {
    let mut node = RaftNode::new(RaftConfig::new(2, vec![1, 2, 3], 7), Restored::default(), 0);
    assert!(drain(&mut node).is_empty());
    let vote = |candidate| Message::Request {
        correlation: 1,
        request: Request::Vote { epoch: 1, candidate, last_epoch: 0, log_end: 0 },
    };
    node.handle_message(10, 1, vote(1));
    let actions = drain(&mut node);
    assert_eq!(
        actions,
        vec![RaftAction::PersistElection(ElectionState { epoch: 1, voted_for: Some(1), leader: None })]
    );
    node.handle_election_persisted(11);
    let granted = drain(&mut node);
    assert!(
        matches!(
            &granted[..],
            [RaftAction::Send {
                to: 1,
                message: Message::Response { response: Response::Vote { granted: true, .. }, .. }
            }]
        ),
        "{granted:?}"
    );
    node.handle_message(12, 3, vote(3));
    let refused = drain(&mut node);
    assert!(
        matches!(
            &refused[..],
            [RaftAction::Send {
                to: 3,
                message: Message::Response { response: Response::Vote { granted: false, .. }, .. }
            }]
        ),
        "{refused:?}"
    );
}

#[test]
fn a_candidate_with_a_shorter_log_gets_no_vote() {
    let restored = Restored {
        snapshot: None,
        election: Some(ElectionState { epoch: 2, voted_for: None, leader: None }),
        entries: vec![entry(0, 1, "a"), entry(1, 2, "b")],
    };
    let mut node = RaftNode::new(RaftConfig::new(2, vec![1, 2, 3], 7), restored, 0);
    drain(&mut node);
    let request = Request::Vote { epoch: 3, candidate: 1, last_epoch: 1, log_end: 5 };
    node.handle_message(1, 1, Message::Request { correlation: 9, request });
    assert!(matches!(
        &drain(&mut node)[..],
        [RaftAction::PersistElection(ElectionState { epoch: 3, voted_for: None, .. })]
    ));
    node.handle_election_persisted(2);
    let actions = drain(&mut node);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            RaftAction::Send {
                message: Message::Response { response: Response::Vote { granted: false, epoch: 3, .. }, .. },
                ..
            }
        )),
        "an older last epoch loses whatever its length: {actions:?}"
    );
}

#[test]
fn a_follower_truncates_where_its_log_diverges_and_fetches_only_from_its_durable_end() {
    let restored = Restored {
        snapshot: None,
        election: Some(ElectionState { epoch: 3, voted_for: None, leader: Some(1) }),
        entries: vec![entry(0, 1, "a"), entry(1, 1, "b"), entry(2, 2, "stale"), entry(3, 2, "stale")],
    };
    let mut node = RaftNode::new(RaftConfig::new(2, vec![1, 2, 3], 7), restored, 0);
    let fetch = drain(&mut node);
    let [RaftAction::Send { to: 1, message: Message::Request { correlation, request } }] = &fetch[..] else {
        panic!("{fetch:?}")
    };
    assert_eq!(
        *request,
        Request::Fetch { epoch: 3, replica: 2, fetch_offset: 4, last_fetched_epoch: 2, max_wait_ms: 500 }
    );
    // The leader's epoch 1 ran to offset 3 (it never had epoch 2); here epoch 1 ends at 2.
    let response = FetchResponse {
        epoch: 3,
        leader: Some(1),
        error: None,
        high_watermark: Some(2),
        diverging: Some(Diverging { epoch: 1, end_offset: 3 }),
        snapshot: None,
        entries: Vec::new(),
    };
    node.handle_message(5, 1, Message::Response { correlation: *correlation, response: Response::Fetch(response) });
    let actions = drain(&mut node);
    assert_eq!(actions[0], RaftAction::Truncate { end: 2 });
    assert!(matches!(
        &actions[1],
        RaftAction::Send {
            message: Message::Request { request: Request::Fetch { fetch_offset: 2, last_fetched_epoch: 1, .. }, .. },
            ..
        }
    ));
    let Some(RaftAction::Send { message: Message::Request { correlation, .. }, .. }) = actions.get(1).cloned() else {
        panic!()
    };
    let response = FetchResponse {
        epoch: 3,
        leader: Some(1),
        error: None,
        high_watermark: Some(4),
        diverging: None,
        snapshot: None,
        entries: vec![entry(2, 1, "c"), entry(3, 3, "d")],
    };
    node.handle_message(6, 1, Message::Response { correlation, response: Response::Fetch(response) });
    let actions = drain(&mut node);
    assert_eq!(actions.len(), 2, "append and sync, and no fetch before the sync: {actions:?}");
    assert_eq!(node.high_watermark(), 2, "nothing this node has not synced counts as committed");
    node.handle_synced(7, 4);
    assert_eq!(node.high_watermark(), 4);
    assert!(matches!(
        &drain(&mut node)[..],
        [RaftAction::Send {
            message: Message::Request { request: Request::Fetch { fetch_offset: 4, last_fetched_epoch: 3, .. }, .. },
            ..
        }]
    ));
}

#[test]
fn only_the_leader_takes_proposals() {
    let mut node = RaftNode::new(RaftConfig::new(2, vec![1, 2, 3], 7), Restored::default(), 0);
    assert_eq!(node.propose(0, Bytes::new()), Err(ProposeError::NotLeader { leader: None }));
}

#[test]
fn the_wire_keeps_every_field() {
    let fetch = Response::Fetch(FetchResponse {
        epoch: 4,
        leader: Some(2),
        error: None,
        high_watermark: Some(0),
        diverging: Some(Diverging { epoch: 0, end_offset: 0 }),
        snapshot: None,
        entries: vec![
            entry(0, 1, "a"),
            Entry { offset: 1, epoch: 4, payload: Payload::LeaderChange { leader: 2 } },
            entry(2, 4, ""),
        ],
    });
    let kind = wire::encode_response(&fetch);
    assert_eq!(wire::decode_response(ApiKey::Fetch, kind).unwrap(), fetch);
    let requests = [
        Request::Vote { epoch: 3, candidate: 1, last_epoch: 2, log_end: 17 },
        Request::BeginQuorumEpoch { epoch: 3, leader: 1 },
        Request::EndQuorumEpoch { epoch: 3, leader: 1, preferred_successors: vec![3, 2] },
        Request::Fetch { epoch: 3, replica: 2, fetch_offset: 9, last_fetched_epoch: 3, max_wait_ms: 500 },
    ];
    for request in requests {
        let (sender, decoded) = wire::decode_request(wire::encode_request(&request, 9, "cluster")).unwrap();
        assert_eq!(decoded, request);
        assert_ne!(sender, 9, "the sender is named by the message, not the addressee");
    }
}

#[test]
fn a_fetch_answer_without_the_metadata_partition_is_refused_not_trusted() {
    let empty = ResponseKind::Fetch(KafkaFetchResponse::default());
    assert!(wire::decode_response(ApiKey::Fetch, empty).is_err());
    let mismatched = wire::encode_response(&Response::BeginQuorumEpoch { epoch: 1, leader: None, error: None });
    assert!(wire::decode_response(ApiKey::Vote, mismatched).is_err());
}

#[test]
fn a_candidate_claims_only_what_it_has_synced() {
    // A follower holding 0..2 durably receives 2..4, and its leader goes silent before the
    // sync of 2..4 completes: it stands claiming offset 2, not 4, since a crash would lose 2..4.
    let restored = Restored {
        snapshot: None,
        election: Some(ElectionState { epoch: 1, voted_for: None, leader: Some(1) }),
        entries: vec![entry(0, 1, "a"), entry(1, 1, "b")],
    };
    let mut node = RaftNode::new(RaftConfig::new(2, vec![1, 2, 3], 7), restored, 0);
    let fetch = drain(&mut node);
    let [RaftAction::Send { message: Message::Request { correlation, .. }, .. }] = &fetch[..] else {
        panic!("{fetch:?}")
    };
    let response = FetchResponse {
        epoch: 1,
        leader: Some(1),
        error: None,
        high_watermark: Some(2),
        diverging: None,
        snapshot: None,
        entries: vec![entry(2, 1, "c"), entry(3, 1, "d")],
    };
    node.handle_message(10, 1, Message::Response { correlation: *correlation, response: Response::Fetch(response) });
    assert!(matches!(&drain(&mut node)[..], [RaftAction::Append(_), RaftAction::Sync { through: 4 }]));
    // The fetch timeout passes with the sync still under way.
    node.handle_tick(10 + node.config().fetch_timeout_ms);
    assert_eq!(node.role(), RoleKind::Candidate);
    let actions = drain(&mut node);
    assert!(matches!(actions[0], RaftAction::PersistElection(ElectionState { epoch: 2, voted_for: Some(2), .. })));
    node.handle_election_persisted(2_100);
    let votes = drain(&mut node);
    assert!(!votes.is_empty());
    for action in votes {
        let RaftAction::Send { message: Message::Request { request, .. }, .. } = action else { panic!("{action:?}") };
        assert_eq!(request, Request::Vote { epoch: 2, candidate: 2, last_epoch: 1, log_end: 2 });
    }
}

fn vote_requests_to(actions: &[RaftAction]) -> Vec<i32> {
    actions
        .iter()
        .filter_map(|a| match a {
            RaftAction::Send { to, message: Message::Request { request: Request::Vote { .. }, .. } } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn a_candidate_asks_each_voter_once_per_request_timeout_and_again_soon_after_a_broken_connection() {
    // Re-asking on a short timer floods a slow link: the copies queue up ahead of the answers.
    let mut config = RaftConfig::new(1, vec![1, 2, 3], 7);
    // Long enough that the election does not time out within the test.
    config.election_timeout_ms = 10 * config.request_timeout_ms;
    let (timeout, backoff) = (config.request_timeout_ms, config.retry_backoff_ms);
    let mut node = RaftNode::new(config, Restored::default(), 0);
    let start = node.next_deadline().expect("a voter stands at its election deadline");
    node.handle_tick(start);
    assert!(matches!(drain(&mut node)[..], [RaftAction::PersistElection(_)]));
    node.handle_election_persisted(start);
    assert_eq!(vote_requests_to(&drain(&mut node)), vec![2, 3]);
    // Ticks before the request timeout send nothing.
    for now in (start..start + timeout).step_by(50) {
        node.handle_tick(now);
        assert_eq!(vote_requests_to(&drain(&mut node)), Vec::<i32>::new(), "re-asked at {now}");
    }
    // Voter 2's connection broke: it is asked again after the back-off; voter 3 is not.
    node.handle_peer_lost(start + 10, 2);
    assert!(drain(&mut node).is_empty(), "not before the back-off");
    node.handle_tick(start + 10 + backoff);
    assert_eq!(vote_requests_to(&drain(&mut node)), vec![2]);
    // Voter 3 answers (refusing); voter 2 does not. Past the timeout only 2 is asked again.
    let response = Response::Vote { epoch: 1, leader: None, granted: false, error: None };
    node.handle_message(start + 20, 3, Message::Response { correlation: 0, response });
    node.handle_tick(start + 10 + backoff + timeout - 1);
    assert!(drain(&mut node).is_empty());
    node.handle_tick(start + 10 + backoff + timeout);
    assert_eq!(vote_requests_to(&drain(&mut node)), vec![2]);
    assert_eq!((node.epoch(), node.role()), (1, RoleKind::Candidate));
}

#[test]
fn no_newer_snapshot_replaces_one_a_replica_was_sent_to_until_it_has_had_time_to_read_it() {
    // A leader that snapshots every few entries would otherwise compact the log past the
    // snapshot a replica is reading, and send it to a newer one each time: it never catches up.
    let mut node = RaftNode::new(RaftConfig::new(1, vec![1], 7), Restored::default(), 0);
    drain(&mut node);
    node.handle_election_persisted(1);
    drain(&mut node);
    node.handle_synced(2, 1);
    let commit = |node: &mut RaftNode, now: u64| {
        node.propose(now, Bytes::from_static(b"r")).expect("the leader takes proposals");
        for action in drain(node) {
            if let RaftAction::Sync { through } = action {
                node.handle_synced(now, through);
            }
        }
        drain(node);
    };
    let write_snapshot = |node: &mut RaftNode, now: u64| -> Result<(), String> {
        let end = node.high_watermark();
        node.snapshot(end, Bytes::from_static(b"image"))?;
        let actions = drain(node);
        let [RaftAction::WriteSnapshot { id, .. }] = &actions[..] else { panic!("{actions:?}") };
        node.handle_snapshot_written(now, *id);
        Ok(())
    };
    commit(&mut node, 3);
    commit(&mut node, 4);
    write_snapshot(&mut node, 5).expect("nobody reads a snapshot yet");
    let start = node.log().start();
    assert!(start > 0);
    // An observer that starts from nothing is sent to the snapshot.
    let fetch = Request::Fetch { epoch: 1, replica: 10, fetch_offset: 0, last_fetched_epoch: 0, max_wait_ms: 0 };
    node.handle_message(10, 10, Message::Request { correlation: 1, request: fetch });
    let answer = drain(&mut node);
    assert!(
        matches!(
            &answer[..],
            [RaftAction::Send { message: Message::Response { response: Response::Fetch(f), .. }, .. }]
                if f.snapshot.is_some()
        ),
        "{answer:?}"
    );
    commit(&mut node, 11);
    assert!(write_snapshot(&mut node, 12).is_err(), "a newer snapshot while the observer reads the old one");
    assert_eq!(node.log().start(), start, "the log past the snapshot being read stays");
    let later = 10 + node.config().fetch_timeout_ms;
    node.handle_tick(later);
    drain(&mut node);
    write_snapshot(&mut node, later).expect("the reader had its time");
    assert!(node.log().start() > start);
}

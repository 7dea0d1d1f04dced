//! Transactions through the broker state machine: what read_committed and read_uncommitted
//! consumers see, markers, fencing, timeouts, transactional offsets, and restarts.

mod support;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use support::*;

const CONN: u64 = 1;
const TXN: &str = "tx";

fn create(node: &mut Node, name: &str, partitions: i32) {
    let ResponseKind::CreateTopics(r) = node.call(CONN, 5, create_topic(name, partitions, &[])) else { panic!() };
    assert_eq!(r.topics[0].error_code, 0);
}

fn init(node: &mut Node, timeout_ms: i32) -> (i64, i16, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(TXN))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let ResponseKind::InitProducerId(r) = node.call(CONN, 4, request) else { panic!() };
    (r.producer_id.0, r.producer_epoch, r.error_code)
}

fn add_partition(node: &mut Node, (pid, epoch): (i64, i16), topic_name: &str, partition: i32) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(TXN)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(topic(topic_name))
            .with_partitions(vec![partition])]);
    let ResponseKind::AddPartitionsToTxn(r) = node.call(CONN, 3, request) else { panic!() };
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn produce_txn(node: &mut Node, topic_name: &str, partition: i32, batch: bytes::Bytes) -> (i16, i64) {
    let request = produce_request(topic_name, partition, -1, batch)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(TXN))));
    let r = node.call(CONN, 9, request);
    (produce_partition(&r).error_code, produce_partition(&r).base_offset)
}

fn end_request((pid, epoch): (i64, i16), commit: bool) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str(TXN)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit)
}

fn end(node: &mut Node, id: (i64, i16), commit: bool) -> i16 {
    let ResponseKind::EndTxn(r) = node.call(CONN, 3, end_request(id, commit)) else { panic!() };
    r.error_code
}

/// (high watermark, last stable offset, aborted (producer, first offset), record values).
type Fetched = (i64, i64, Vec<(i64, i64)>, Vec<(i64, String)>);

fn fetch(node: &mut Node, read_committed: bool) -> Fetched {
    let request = fetch_request("t", 0, 0, 0).with_isolation_level(if read_committed { 1 } else { 0 });
    let r = node.call(CONN, 11, request);
    let p = fetch_partition(&r);
    let aborted = p
        .aborted_transactions
        .as_ref()
        .map(|a| a.iter().map(|t| (t.producer_id.0, t.first_offset)).collect())
        .unwrap_or_default();
    let values = decode_values(p.records.as_ref().unwrap());
    (p.high_watermark, p.last_stable_offset, aborted, values)
}

fn values(list: &[(i64, String)]) -> Vec<&str> {
    list.iter().map(|(_, v)| v.as_str()).collect()
}

#[test]
fn read_committed_sees_only_settled_data_and_learns_what_was_aborted() {
    let mut node = Node::single();
    create(&mut node, "t", 2);
    let (pid, epoch, error) = init(&mut node, 60_000);
    assert_eq!(error, 0);
    let producer = (pid, epoch);
    assert_eq!(add_partition(&mut node, producer, "t", 0), 0);
    assert_eq!(produce_txn(&mut node, "t", 0, txn_records(&["a", "b"], (pid, epoch, 0), START_MS)), (0, 0));
    let plain = node.call(CONN, 9, produce_request("t", 0, -1, records(&["plain"], None, START_MS)));
    assert_eq!(produce_partition(&plain).base_offset, 2);

    let (hw, lso, _, seen) = fetch(&mut node, true);
    assert_eq!((hw, lso), (3, 0), "the open transaction holds back the last stable offset");
    assert!(seen.is_empty(), "read_committed sees nothing past it");
    let (_, lso, aborted, seen) = fetch(&mut node, false);
    assert_eq!(lso, 0);
    assert!(aborted.is_empty());
    assert_eq!(values(&seen), ["a", "b", "plain"], "read_uncommitted sees everything");

    // Not added to the transaction: refused.
    let other = produce_txn(&mut node, "t", 1, txn_records(&["x"], (pid, epoch, 0), START_MS));
    assert_eq!(other.0, ResponseError::InvalidTxnState.code());

    assert_eq!(end(&mut node, producer, false), 0);
    let (hw, lso, aborted, seen) = fetch(&mut node, true);
    assert_eq!((hw, lso), (4, 4), "the ABORT marker takes offset 3");
    assert_eq!(aborted, [(pid, 0)], "the client drops producer {pid}'s records from offset 0 up to its marker");
    assert_eq!(values(&seen), ["a", "b", "plain"], "the data itself is still served");

    assert_eq!(add_partition(&mut node, producer, "t", 0), 0);
    assert_eq!(produce_txn(&mut node, "t", 0, txn_records(&["c"], (pid, epoch, 2), START_MS)), (0, 4));
    assert_eq!(end(&mut node, producer, true), 0);
    assert_eq!(end(&mut node, producer, true), 0, "a retried commit gets the same answer");
    let (hw, lso, aborted, seen) = fetch(&mut node, true);
    assert_eq!((hw, lso), (6, 6));
    assert_eq!(aborted, [(pid, 0)], "only the first transaction was aborted");
    assert_eq!(values(&seen), ["a", "b", "plain", "c"]);

    // The aborted list survives a crash (producer snapshots and the replayed log).
    let mut node = node.crash_and_restart();
    let (hw, lso, aborted, _) = fetch(&mut node, true);
    assert_eq!((hw, lso, aborted), (6, 6, vec![(pid, 0)]));
}

#[test]
fn a_new_incarnation_aborts_the_open_transaction_and_fences_the_old_one() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["zombie"], (pid, epoch, 0), START_MS));
    let (_, _, error) = init(&mut node, 60_000);
    assert_eq!(error, ResponseError::ConcurrentTransactions.code(), "the client retries while the abort completes");
    let (pid2, epoch2, error) = init(&mut node, 60_000);
    assert_eq!(error, 0);
    assert_eq!(pid2, pid, "same producer id");
    assert!(epoch2 > epoch + 1, "epoch bumped past the abort's");
    assert_eq!(end(&mut node, (pid, epoch), true), ResponseError::InvalidProducerEpoch.code(), "the zombie is fenced");
    let late = produce_txn(&mut node, "t", 0, txn_records(&["late"], (pid, epoch, 1), START_MS));
    assert_eq!(late.0, ResponseError::InvalidProducerEpoch.code());
    let (hw, lso, aborted, _) = fetch(&mut node, true);
    assert_eq!((hw, lso, aborted), (2, 2, vec![(pid, 0)]));
}

#[test]
fn a_transaction_past_its_timeout_is_aborted() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 1_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["slow"], (pid, epoch, 0), START_MS));
    node.advance(999);
    assert_eq!(fetch(&mut node, true).1, 0, "still open");
    node.advance(1);
    let (hw, lso, aborted, _) = fetch(&mut node, true);
    assert_eq!((hw, lso, aborted), (2, 2, vec![(pid, 0)]));
    assert_eq!(end(&mut node, (pid, epoch), true), ResponseError::InvalidProducerEpoch.code());
}

#[test]
fn timeouts_outside_the_limit_are_refused() {
    let mut node = Node::single();
    assert_eq!(init(&mut node, 0).2, ResponseError::InvalidTransactionTimeout.code());
    assert_eq!(init(&mut node, 900_001).2, ResponseError::InvalidTransactionTimeout.code());
}

#[test]
fn a_crash_aborts_an_open_transaction_and_fences_its_producer() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["open"], (pid, epoch, 0), START_MS));
    let mut node = node.crash_and_restart();
    let (hw, lso, aborted, _) = fetch(&mut node, true);
    assert_eq!((hw, lso, aborted), (2, 2, vec![(pid, 0)]), "aborted at start, not left blocking consumers");
    assert_eq!(add_partition(&mut node, (pid, epoch), "t", 0), ResponseError::InvalidProducerEpoch.code());
    let (pid2, epoch2, error) = init(&mut node, 60_000);
    assert_eq!((error, pid2), (0, pid));
    assert!(epoch2 > epoch);
}

#[test]
fn a_commit_decided_before_a_crash_is_finished_after_it() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["kept"], (pid, epoch, 0), START_MS));
    // The decision reaches the metadata; the marker's fsync never happens.
    node.hold_syncs = true;
    let request = end_request((pid, epoch), true);
    node.send(CONN, 3, request);
    assert!(node.take::<EndTxnRequest>(CONN, 3).is_none(), "no answer before the marker is durable");
    let mut node = node.crash_and_restart();
    let (hw, lso, aborted, seen) = fetch(&mut node, true);
    assert_eq!((hw, lso), (2, 2));
    assert!(aborted.is_empty(), "committed, not aborted");
    assert_eq!(values(&seen), ["kept"]);
    assert_eq!(end(&mut node, (pid, epoch), true), 0, "the producer's retry finds it committed");
}

#[test]
fn transactional_offsets_land_only_when_the_transaction_commits() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    let committed = |node: &mut Node| -> i64 {
        let request =
            OffsetFetchRequest::default().with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(None)]);
        let ResponseKind::OffsetFetch(r) = node.call(CONN, 8, request) else { panic!() };
        r.groups[0].topics.first().map_or(-1, |t| t.partitions[0].committed_offset)
    };
    for (commit, offset) in [(false, 5i64), (true, 7)] {
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(TXN)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(StrBytes::from_static_str("g")));
        let ResponseKind::AddOffsetsToTxn(r) = node.call(CONN, 3, request) else { panic!() };
        assert_eq!(r.error_code, 0);
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(TXN)))
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)])]);
        let ResponseKind::TxnOffsetCommit(r) = node.call(CONN, 3, request) else { panic!() };
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        assert_eq!(committed(&mut node), -1, "not visible before the end (and the aborted one never)");
        assert_eq!(end(&mut node, (pid, epoch), commit), 0);
    }
    assert_eq!(committed(&mut node), 7, "the aborted 5 never landed, the committed 7 did");
    let mut node = node.crash_and_restart();
    assert_eq!(committed(&mut node), 7);
}

#[test]
fn deleting_a_topic_does_not_leave_an_end_txn_waiting_for_its_marker() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["gone"], (pid, epoch, 0), START_MS));
    node.hold_syncs = true;
    let request = end_request((pid, epoch), false);
    node.send(CONN, 3, request);
    assert!(node.take::<EndTxnRequest>(CONN, 3).is_none(), "waiting for the marker's fsync");
    let delete = DeleteTopicsRequest::default().with_timeout_ms(30_000).with_topic_names(vec![topic("t")]);
    node.send(2, 4, delete);
    let (_, answer) = node.take::<EndTxnRequest>(CONN, 3).expect("EndTxn answered once its partition is gone");
    let ResponseKind::EndTxn(r) = answer else { panic!() };
    assert_eq!(r.error_code, 0);
}

#[test]
fn a_commit_marker_lost_with_its_partition_is_written_after_a_restart() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    create(&mut node, "u", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    add_partition(&mut node, (pid, epoch), "u", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["in-t"], (pid, epoch, 0), START_MS));
    produce_txn(&mut node, "u", 0, txn_records(&["in-u"], (pid, epoch, 0), START_MS));
    // The marker reaches "t", but "u" fails its fsync and goes offline.
    node.fail_syncs_of = Some("u".into());
    let request = end_request((pid, epoch), true);
    node.send(CONN, 3, request.clone());
    let (_, r) = node.take::<EndTxnRequest>(CONN, 3).expect("answered, not held until a restart");
    let ResponseKind::EndTxn(r) = r else { panic!() };
    assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code(), "not ended while a marker is missing");
    assert_eq!(end(&mut node, (pid, epoch), true), ResponseError::ConcurrentTransactions.code());
    node.fail_syncs_of = None;
    let mut node = node.crash_and_restart();
    for name in ["t", "u"] {
        let r = node.call(CONN, 11, fetch_request(name, 0, 0, 0).with_isolation_level(1));
        let p = fetch_partition(&r);
        let seen = decode_values(p.records.as_ref().unwrap());
        assert_eq!(values(&seen), [format!("in-{name}")], "the commit is whole in {name}");
        assert_eq!(p.last_stable_offset, p.high_watermark);
    }
}

#[test]
fn a_commit_decision_whose_clearing_was_lost_does_not_commit_the_next_transaction() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["first"], (pid, epoch, 0), START_MS));
    // The decision is written; the write that forgets it once the markers are durable fails.
    node.fail_meta_writes.extend([false, true]);
    assert_eq!(end(&mut node, (pid, epoch), true), 0);
    // The next transaction of the same producer and epoch is open when the node crashes.
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["second"], (pid, epoch, 1), START_MS));
    let mut node = node.crash_and_restart();
    let (hw, lso, aborted, seen) = fetch(&mut node, true);
    assert_eq!(lso, hw, "nothing is left open");
    assert_eq!(values(&seen), ["first", "second"]);
    assert_eq!(aborted, [(pid, 2)], "the open transaction is aborted, not committed by the old decision");
}

#[test]
fn a_snapshot_past_a_hole_does_not_hide_a_transaction_whose_marker_was_lost() {
    let mut node = Node::single();
    // Every batch gets its own segment, and every roll writes a producer snapshot.
    let ResponseKind::CreateTopics(r) = node.call(CONN, 5, create_topic("t", 1, &[("segment.bytes", "100")])) else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    assert_eq!(produce_txn(&mut node, "t", 0, txn_records(&["x"], (pid, epoch, 0), START_MS)).0, 0);
    // The abort marker (offset 1) and a later batch (offset 2) are written but never synced.
    node.hold_syncs = true;
    let request = end_request((pid, epoch), false);
    node.send(CONN, 3, request);
    node.send(CONN, 9, produce_request("t", 0, 0, records(&["y"], None, START_MS)));
    // Power loss: the marker's segment is gone, the newest segment and its snapshot survive.
    let mut node = node.crash_and_restart_torn(|base| if base == 2 { 1 } else { 0 });
    let (hw, lso, aborted, seen) = fetch(&mut node, true);
    assert_eq!((hw, lso), (2, 2), "the log ends after the cut, with nothing left open");
    assert_eq!(values(&seen), ["x"]);
    assert_eq!(aborted, [(pid, 0)], "the transaction whose marker was lost is aborted again");
}

#[test]
fn a_stale_commit_decision_is_dropped_when_the_next_transaction_is_open_elsewhere() {
    let mut node = Node::single();
    create(&mut node, "t", 1);
    create(&mut node, "u", 1);
    let (pid, epoch, _) = init(&mut node, 60_000);
    add_partition(&mut node, (pid, epoch), "t", 0);
    produce_txn(&mut node, "t", 0, txn_records(&["first"], (pid, epoch, 0), START_MS));
    node.fail_meta_writes.extend([false, true]);
    assert_eq!(end(&mut node, (pid, epoch), true), 0);
    // The next transaction writes only to "u", which the stale decision does not name.
    add_partition(&mut node, (pid, epoch), "u", 0);
    produce_txn(&mut node, "u", 0, txn_records(&["second"], (pid, epoch, 0), START_MS));
    let mut node = node.crash_and_restart();
    let r = node.call(CONN, 11, fetch_request("u", 0, 0, 0).with_isolation_level(1));
    let p = fetch_partition(&r);
    assert_eq!(p.last_stable_offset, p.high_watermark, "the open transaction in u is not left hanging");
    let aborted: Vec<_> = p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
    assert_eq!(aborted, [(pid, 0)], "it is aborted, as a crash aborts open transactions");
}

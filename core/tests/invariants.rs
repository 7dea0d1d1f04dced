//! Planted programmer errors: each must trip an assertion, not pass quietly.

mod support;

use kafka_protocol::messages::*;
use spool_core::partition::PartitionLog;
use spool_core::storage::{Completion, OpId, TopicPartition};
use support::*;

const CONN: u64 = 1;

fn node_with_records(count: usize) -> Node {
    let mut node = Node::single();
    match node.call(CONN, 7, create_topic("t", 1, &[])) {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    let values: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let produced = node.call(CONN, 9, produce_request("t", 0, -1, records(&values, None, START_MS)));
    assert_eq!(produce_partition(&produced).error_code, 0);
    node
}

fn log_of(node: &Node) -> &PartitionLog {
    node.broker.partition(&TopicPartition::new("t", 0)).expect("created")
}

#[test]
fn an_acknowledged_produce_leaves_every_invariant_holding() {
    let node = node_with_records(3);
    assert_eq!(log_of(&node).high_watermark(), 3);
    node.broker.check_invariants();
}

#[test]
#[should_panic(expected = "high watermark moved backwards")]
fn a_high_watermark_moved_backwards_trips_an_assertion() {
    let node = node_with_records(3);
    let mut log = log_of(&node).clone();
    log.advance_high_watermark(2);
}

#[test]
#[should_panic(expected = "past the durable end")]
fn a_high_watermark_past_the_durable_end_trips_an_assertion() {
    let mut node = node_with_records(3);
    node.hold_syncs = true;
    node.send(CONN, 9, produce_request("t", 0, 0, records(&["unsynced"], None, START_MS)));
    let mut log = log_of(&node).clone();
    assert_eq!((log.log_end_offset(), log.durable_end()), (4, 3));
    log.advance_high_watermark(4);
}

#[test]
#[should_panic(expected = "completion for an unknown operation")]
fn a_completion_for_an_unknown_operation_trips_an_assertion() {
    let mut node = node_with_records(1);
    node.broker.handle_completion(node.now, Completion::Synced { id: OpId(999_999), result: Ok(()) });
}

#[test]
#[should_panic(expected = "does not match its operation")]
fn a_completion_of_the_wrong_kind_trips_an_assertion() {
    let mut node = node_with_records(1);
    node.hold_syncs = true;
    node.send(CONN, 9, produce_request("t", 0, 0, records(&["held"], None, START_MS)));
    let held = node.held.first().expect("a sync is held").clone();
    let spool_core::storage::StorageOp::Sync { id, .. } = held else { panic!("{held:?}") };
    node.broker.handle_completion(node.now, Completion::Read { id, result: Ok(bytes::Bytes::new()) });
}

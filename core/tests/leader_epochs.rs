//! Leader epochs through the broker: OffsetForLeaderEpoch answered from the epoch cache, the
//! cache checkpointed, and rebuilt from the batch headers when the checkpoint is missing.

mod support;

use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::*;
use spool_core::batch::PARTITION_LEADER_EPOCH;
use spool_core::leader_epochs::LeaderEpochs;
use spool_core::loader::{decode_leader_epochs, DataDir};
use spool_core::storage::{FileKind, MetaFile, SegmentFile, TopicPartition};
use support::*;

const CONN: u64 = 1;

fn node_with_batches(batches: usize) -> Node {
    let mut node = Node::single();
    match node.call(CONN, 7, create_topic("t", 1, &[])) {
        ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    for i in 0..batches {
        let value = format!("v{i}");
        let produced = node.call(CONN, 9, produce_request("t", 0, -1, records(&[&value], None, START_MS)));
        assert_eq!(produce_partition(&produced).error_code, 0);
    }
    node
}

/// (epoch, end offset, error) answered for each requested epoch.
fn end_offsets(node: &mut Node, requested: &[i32]) -> Vec<(i32, i64, i16)> {
    let partitions = requested
        .iter()
        .map(|&e| {
            OffsetForLeaderPartition::default().with_partition(0).with_leader_epoch(e).with_current_leader_epoch(-1)
        })
        .collect();
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default().with_topic(topic("t")).with_partitions(partitions)]);
    match node.call(CONN, 4, request) {
        ResponseKind::OffsetForLeaderEpoch(r) => {
            r.topics[0].partitions.iter().map(|p| (p.leader_epoch, p.end_offset, p.error_code)).collect()
        }
        other => panic!("{other:?}"),
    }
}

fn checkpointed(node: &mut Node) -> Vec<(i32, i64)> {
    let bytes = node.disk.read_meta(MetaFile::LeaderEpochs).expect("leader-epochs.json written");
    let all = decode_leader_epochs(&bytes);
    let (_, epochs) = all.iter().find(|(k, _)| k.starts_with("t-0@")).expect("an entry for t-0");
    pairs(epochs)
}

fn pairs(epochs: &LeaderEpochs) -> Vec<(i32, i64)> {
    epochs.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
}

#[test]
fn a_new_partition_leads_in_epoch_zero_and_checkpoints_it() {
    let mut node = node_with_batches(3);
    assert_eq!(checkpointed(&mut node), [(0, 0)]);
    assert_eq!(end_offsets(&mut node, &[0, -1, 1]), [(0, 3, 0), (-1, -1, 0), (-1, -1, 0)]);
}

#[test]
fn a_missing_checkpoint_is_rebuilt_from_the_batch_headers() {
    epochs_found_in_batch_headers(true);
}

#[test]
fn a_crash_adds_the_epochs_of_the_batches_recovery_reads_to_the_checkpoint() {
    epochs_found_in_batch_headers(false);
}

fn epochs_found_in_batch_headers(remove_checkpoint: bool) {
    let mut node = node_with_batches(4);
    // Forge a log written across epochs 0, 2, 2, 5 (the epoch field is outside the CRC).
    let log = SegmentFile::new(&TopicPartition::new("t", 0), 0, FileKind::Log);
    let len = node.disk.file_len(&log);
    let batch_len = len / 4;
    for (i, epoch) in [0i32, 2, 2, 5].into_iter().enumerate() {
        assert!(node.disk.overwrite(&log, i * batch_len + PARTITION_LEADER_EPOCH, &epoch.to_be_bytes()));
    }
    if remove_checkpoint {
        assert!(node.disk.remove_meta(MetaFile::LeaderEpochs));
    } else {
        assert_eq!(checkpointed(&mut node), [(0, 0)], "the checkpoint knows epoch 0 only");
    }
    let mut node = node.crash_and_restart();
    assert_eq!(
        end_offsets(&mut node, &[0, 1, 2, 4, 5, 6]),
        [(0, 1, 0), (0, 1, 0), (2, 3, 0), (2, 3, 0), (5, 4, 0), (-1, -1, 0)]
    );
    let log = node.broker.partition(&TopicPartition::new("t", 0)).expect("loaded");
    assert_eq!(log.leader_epoch, 5, "the node leads in the latest epoch its log knows");
    assert_eq!(checkpointed(&mut node), [(0, 0), (2, 1), (5, 3)], "the rebuilt cache is written back");
    // New records carry the leader's epoch.
    let produced = node.call(CONN, 9, produce_request("t", 0, -1, records(&["after"], None, START_MS)));
    assert_eq!(produce_partition(&produced).base_offset, 4);
    assert_eq!(end_offsets(&mut node, &[5]), [(5, 5, 0)]);
}

#[test]
fn deleted_records_leave_the_cache_starting_at_the_log_start() {
    let mut node = node_with_batches(4);
    let request =
        DeleteRecordsRequest::default().with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic("t"))
            .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(2)])]);
    match node.call(CONN, 2, request) {
        ResponseKind::DeleteRecords(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    let log = node.broker.partition(&TopicPartition::new("t", 0)).expect("exists");
    assert_eq!(pairs(log.leader_epochs()), [(0, 2)]);
    let mut node = node.clean_restart();
    assert_eq!(end_offsets(&mut node, &[0]), [(0, 4, 0)]);
    let log = node.broker.partition(&TopicPartition::new("t", 0)).expect("exists");
    assert_eq!(pairs(log.leader_epochs()), [(0, 2)]);
}

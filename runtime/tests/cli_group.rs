//! `spool group list/describe` against a real server on a loopback port, with a group formed
//! over the wire.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use spool_core::config::BrokerConfig;
use spool_runtime::cli::{self, Output};
use spool_runtime::client::Client;
use spool_runtime::disk::FileStorage;
use spool_runtime::server::{serve, ServerOptions};
use tokio::sync::oneshot;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// ConsumerProtocolAssignment v0 for one topic.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_show_members_offsets_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::single_node("127.0.0.1", 0);
    config.num_partitions = 2;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (_stop_tx, stop_rx) = oneshot::channel();
    let options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), config);
    tokio::spawn(serve(options, FileStorage::new(dir.path().to_path_buf()), stop_rx, Some(ready_tx)));
    let addr = ready_rx.await.unwrap();
    let bootstrap = addr.to_string();
    let mut c = Client::connect(addr, Duration::from_secs(10)).await.unwrap();

    let create = CreateTopicsRequest::default().with_topics(vec![create_topics_request::CreatableTopic::default()
        .with_name(TopicName(s("orders")))
        .with_num_partitions(2)
        .with_replication_factor(1)]);
    let ResponseKind::CreateTopics(r) = c.call(7, create).await.unwrap() else { panic!() };
    assert_eq!(r.topics[0].error_code, 0);
    // Five records in partition 0.
    let mut records = BytesMut::new();
    let batch: Vec<kafka_protocol::records::Record> = (0..5)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i,
            sequence: -1 + i as i32,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        })
        .collect();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut records,
        &batch,
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .unwrap();
    let produce =
        ProduceRequest::default().with_acks(-1).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(s("orders")))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.freeze()))])]);
    let ResponseKind::Produce(p) = c.call(9, produce).await.unwrap() else { panic!() };
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);

    // Join (twice: MEMBER_ID_REQUIRED first), sync with an assignment, commit offset 3.
    let join = |member: String| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("billing")))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(&member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(s("range"))])
    };
    let ResponseKind::JoinGroup(first) = c.call(7, join(String::new())).await.unwrap() else { panic!() };
    let member = first.member_id.to_string();
    let ResponseKind::JoinGroup(joined) = c.call(7, join(member.clone())).await.unwrap() else { panic!() };
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("billing")))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member))
        .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(assignment("orders", &[0, 1]))]);
    let ResponseKind::SyncGroup(sync) = c.call(3, sync).await.unwrap() else { panic!() };
    assert_eq!(sync.error_code, 0);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("billing")))
        .with_generation_id_or_member_epoch(joined.generation_id)
        .with_member_id(s(&member))
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("orders")))
            .with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(3)
            ])]);
    let ResponseKind::OffsetCommit(commit) = c.call(8, commit).await.unwrap() else { panic!() };
    assert_eq!(commit.topics[0].partitions[0].error_code, 0);

    let listed = cli::group::list(&bootstrap, Output::Table).await.unwrap();
    insta::assert_snapshot!("group_list", listed);
    let described =
        cli::group::describe(&bootstrap, "billing", Output::Table).await.unwrap().replace(&member, "<member-id>");
    insta::assert_snapshot!("group_describe", described);
    let json: serde_json::Value =
        serde_json::from_str(&cli::group::describe(&bootstrap, "billing", Output::Json).await.unwrap()).unwrap();
    assert_eq!(json["partitions"][0]["lag"], 2);
    assert_eq!(json["partitions"][1]["committed_offset"], serde_json::Value::Null);
    let missing = cli::group::describe(&bootstrap, "nobody", Output::Table).await.unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    // Delete: refused while the member is there, done once it has left.
    let busy = cli::group::delete(&bootstrap, "billing").await.unwrap_err().to_string();
    assert!(busy.contains("NonEmptyGroup") && busy.contains("stop its consumers"), "{busy}");
    let leave = LeaveGroupRequest::default().with_group_id(GroupId(s("billing"))).with_member_id(s(&member));
    let ResponseKind::LeaveGroup(left) = c.call(0, leave).await.unwrap() else { panic!() };
    assert_eq!(left.error_code, 0);
    assert_eq!(cli::group::delete(&bootstrap, "billing").await.unwrap(), "Deleted group billing.\n");
    assert!(!cli::group::list(&bootstrap, Output::Table).await.unwrap().contains("billing"));
    let gone = cli::group::delete(&bootstrap, "billing").await.unwrap_err().to_string();
    assert!(gone.contains("GroupIdNotFound"), "{gone}");
    let unreachable = cli::group::list("127.0.0.1:1", Output::Table).await.unwrap_err();
    assert!(unreachable.to_string().contains("cannot reach the broker"), "{unreachable}");
}

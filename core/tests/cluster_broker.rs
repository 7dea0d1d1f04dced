//! A broker in a cluster, driven as the runtime drives it: its topics come from the metadata
//! image (`handle_cluster_view`), it serves only the partitions the image says it leads, and its
//! clients' topic requests go to the active controller (`Action::Forward`), answered as the
//! controller answered.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use spool_core::codec;
use spool_core::config::BrokerConfig;
use spool_core::{ClusterView, PartitionView, TopicView};
use support::*;

const CONN: u64 = 1;
const ME: i32 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_CONTROLLER: i16 = 41;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const FENCED_LEADER_EPOCH: i16 = 74;

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// Topic "orders" (id 7): partition 0 led here, 1 led by broker 2; both replicated on 1, 2, 3,
/// with `isr` as the ISR of partition 0.
fn view(topics: &[(&str, uuid::Uuid)], isr: Vec<i32>, configs: &[(&str, &str)]) -> ClusterView {
    let topics = topics
        .iter()
        .map(|(name, id)| {
            let partitions = vec![
                PartitionView {
                    leader: ME,
                    leader_epoch: 3,
                    partition_epoch: 3,
                    replicas: vec![1, 2, 3],
                    isr: isr.clone(),
                },
                PartitionView { leader: 2, leader_epoch: 5, partition_epoch: 5, replicas: vec![2, 3, 1], isr: vec![2] },
            ];
            let configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (name.to_string(), TopicView { id: *id, partitions, configs })
        })
        .collect::<BTreeMap<_, _>>();
    ClusterView {
        cluster_id: Some("the-cluster".into()),
        brokers: vec![(1, "127.0.0.1".into(), 9092), (2, "10.0.0.2".into(), 9092)],
        // Broker 3 is registered and fenced.
        registered: vec![1, 2, 3],
        topics: Some(Arc::new(topics)),
        controller: Some(("10.0.0.2".into(), 9093)),
        broker_epoch: Some(12),
    }
}

fn in_cluster(view: ClusterView) -> Node {
    let mut node = Node::new(BrokerConfig::single_node("127.0.0.1", 9092));
    node.broker.handle_cluster_view(node.now, view);
    node.run();
    node
}

fn metadata(node: &mut Node) -> MetadataResponse {
    let ResponseKind::Metadata(m) = node.call(CONN, 12, MetadataRequest::default().with_topics(None)) else {
        panic!("not a Metadata answer")
    };
    m
}

#[test]
fn metadata_shows_the_images_replicas_isr_and_leaders_and_a_log_exists_for_the_led_partition() {
    let mut node = in_cluster(view(&[("orders", id(7))], vec![1, 2], &[("retention.ms", "1000")]));
    let m = metadata(&mut node);
    assert_eq!(m.cluster_id.as_deref(), Some("the-cluster"));
    let orders = m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "orders")).unwrap();
    assert_eq!(orders.topic_id, id(7));
    let p0 = &orders.partitions[0];
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    assert_eq!((p0.leader_id.0, p0.leader_epoch), (ME, 3));
    assert_eq!((ids(&p0.replica_nodes), ids(&p0.isr_nodes)), (vec![1, 2, 3], vec![1, 2]));
    assert_eq!(ids(&p0.offline_replicas), vec![3], "broker 3 is not among the live brokers");
    assert_eq!(orders.partitions[1].leader_id.0, 2);

    let local = node.broker.topic("orders").expect("a log for a topic with a replica here");
    assert_eq!(local.id, id(7));
    assert_eq!(local.overrides.get("retention.ms").map(String::as_str), Some("1000"));
    assert_eq!(local.partitions[0].leader_epoch, 3, "the leader leads in the image's epoch");
}

#[test]
fn only_the_partitions_led_here_take_writes_and_reads() {
    let mut node = in_cluster(view(&[("orders", id(7))], vec![1], &[]));
    let led = node.call(CONN, 9, produce_request("orders", 0, -1, records(&["a"], None, START_MS)));
    assert_eq!(produce_partition(&led).error_code, 0);
    let elsewhere = node.call(CONN, 9, produce_request("orders", 1, -1, records(&["b"], None, START_MS)));
    assert_eq!(produce_partition(&elsewhere).error_code, NOT_LEADER_OR_FOLLOWER);
    let read = node.call(CONN, 12, fetch_request("orders", 1, 0, 0));
    assert_eq!(fetch_partition(&read).error_code, NOT_LEADER_OR_FOLLOWER);
    let read = node.call(CONN, 12, fetch_request("orders", 0, 0, 0));
    assert_eq!((fetch_partition(&read).error_code, fetch_partition(&read).high_watermark), (0, 1));
}

/// A follower's fetch of partition 0 of "orders" (id 7), as broker `replica` sends it.
fn replica_fetch(replica: i32, offset: i64, last_epoch: i32, leader_epoch: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_state(
            fetch_request::ReplicaState::default().with_replica_id(BrokerId(replica)).with_replica_epoch(40),
        )
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default().with_topic_id(id(7)).with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(leader_epoch)
                .with_last_fetched_epoch(last_epoch)
                .with_partition_max_bytes(1 << 20),
        ])])
}

const FOLLOWER_CONN: u64 = 2;

#[test]
fn acks_all_is_refused_while_the_isr_is_below_min_insync_replicas() {
    let mut node = in_cluster(view(&[("orders", id(7))], vec![1], &[("min.insync.replicas", "2")]));
    let refused = node.call(CONN, 9, produce_request("orders", 0, -1, records(&["a"], None, START_MS)));
    assert_eq!(produce_partition(&refused).error_code, NOT_ENOUGH_REPLICAS);
    let leader_only = node.call(CONN, 9, produce_request("orders", 0, 1, records(&["a"], None, START_MS)));
    assert_eq!(produce_partition(&leader_only).error_code, 0, "acks=1 needs only the leader's own disk");
    let read = node.call(CONN, 12, fetch_request("orders", 0, 0, 0));
    assert_eq!(fetch_partition(&read).high_watermark, 0, "too few in sync: the high watermark stays");
    node.broker.handle_cluster_view(node.now, view(&[("orders", id(7))], vec![1, 2], &[("min.insync.replicas", "2")]));
    node.run();
    let produce = node.send(CONN, 9, produce_request("orders", 0, -1, records(&["b"], None, START_MS)));
    assert!(node.take::<ProduceRequest>(CONN, 9).is_none(), "acks=all waits for the in-sync follower");
    // Broker 2 fetches from 0 (it has nothing): it gets both records, and holds none yet.
    let fetched = node.call(FOLLOWER_CONN, 15, replica_fetch(2, 0, -1, 3));
    let part = fetch_partition(&fetched);
    assert_eq!((part.error_code, part.high_watermark), (0, 0));
    assert_eq!(decode_values(part.records.as_ref().unwrap()).len(), 2, "followers read past the high watermark");
    assert!(node.take::<ProduceRequest>(CONN, 9).is_none());
    // Its next fetch says both are on its disk: the high watermark passes them.
    let fetched = node.call(FOLLOWER_CONN, 15, replica_fetch(2, 2, 3, 3));
    assert_eq!(fetch_partition(&fetched).high_watermark, 2);
    let (got, taken) = node.take::<ProduceRequest>(CONN, 9).expect("acks=all answered");
    assert_eq!((got, produce_partition(&taken).error_code), (produce, 0));
}

#[test]
fn a_follower_whose_log_went_further_in_an_epoch_is_told_where_it_ends() {
    let mut node = in_cluster(view(&[("orders", id(7))], vec![1, 2], &[]));
    let produce = node.send(CONN, 9, produce_request("orders", 0, 1, records(&["a", "b"], None, START_MS)));
    node.run();
    assert!(node.take::<ProduceRequest>(CONN, 9).is_some_and(|(got, _)| got == produce));
    // Broker 2 claims 5 records of epoch 3; this leader's epoch 3 holds 2: it must cut at 2.
    let fetched = node.call(FOLLOWER_CONN, 15, replica_fetch(2, 5, 3, 3));
    let part = fetch_partition(&fetched);
    assert_eq!((part.diverging_epoch.epoch, part.diverging_epoch.end_offset), (3, 2));
    assert!(part.records.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(part.high_watermark, 0, "a diverged fetch counts for nothing");
    // A stale leader epoch is fenced; a replica outside the partition is refused.
    let fetched = node.call(FOLLOWER_CONN, 15, replica_fetch(2, 2, 3, 2));
    assert_eq!(fetch_partition(&fetched).error_code, FENCED_LEADER_EPOCH);
    let fetched = node.call(FOLLOWER_CONN, 15, replica_fetch(4, 2, 3, 3));
    assert_eq!(fetch_partition(&fetched).error_code, NOT_LEADER_OR_FOLLOWER);
}

#[test]
fn topic_requests_go_to_the_controller_and_its_answer_comes_back_in_order() {
    let mut node = in_cluster(view(&[], vec![1], &[]));
    let create = node.send(CONN, 7, create_topic("fresh", 3, &[]));
    let meta = node.send(CONN, 12, MetadataRequest::default().with_topics(None));
    assert_eq!(node.forwarded.len(), 1, "CreateTopics is forwarded, not served here");
    assert!(node.take::<CreateTopicsRequest>(CONN, 7).is_none());
    assert!(node.responses.get(&CONN).is_none_or(|r| r.is_empty()), "the Metadata answer waits its turn");
    assert!(node.broker.topic("fresh").is_none(), "no local topic without the controller");

    // The forwarded frame is the client's own; the controller's answer is relayed as it is.
    let (forward, _, frame) = node.forwarded.remove(0);
    let decoded = codec::decode_request(frame.slice(4..)).unwrap();
    assert_eq!((decoded.header.correlation_id, decoded.header.request_api_version), (create, 7));
    let answer =
        CreateTopicsResponse::default().with_topics(vec![create_topics_response::CreatableTopicResult::default()
            .with_name(topic("fresh"))
            .with_error_code(36)]);
    let answer = codec::encode_response(create, 7, &ResponseKind::CreateTopics(answer)).unwrap();
    node.broker.handle_forwarded(node.now, forward, Ok(answer.slice(4..)));
    node.run();
    let (got, ResponseKind::CreateTopics(r)) = node.take::<CreateTopicsRequest>(CONN, 7).unwrap() else {
        panic!("not a CreateTopics answer")
    };
    assert_eq!((got, r.topics[0].error_code), (create, 36));
    assert_eq!(node.take::<MetadataRequest>(CONN, 12).unwrap().0, meta);

    // The controller out of reach: NOT_CONTROLLER, which clients retry.
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![topic("fresh")]);
    node.send(CONN, 5, delete);
    let (forward, _, _) = node.forwarded.remove(0);
    node.broker.handle_forwarded(node.now, forward, Err("connection refused".into()));
    node.run();
    let (_, ResponseKind::DeleteTopics(r)) = node.take::<DeleteTopicsRequest>(CONN, 5).unwrap() else {
        panic!("not a DeleteTopics answer")
    };
    assert_eq!(r.responses[0].error_code, NOT_CONTROLLER);
}

#[test]
fn a_topic_the_image_drops_is_deleted_and_one_it_never_showed_is_kept() {
    // A topic created before the node joined a cluster: kept on disk, not served.
    let mut node = Node::single();
    let created = node.call(CONN, 7, create_topic("before", 1, &[]));
    let ResponseKind::CreateTopics(created) = created else { panic!() };
    assert_eq!(created.topics[0].error_code, 0);
    node.broker.handle_cluster_view(node.now, view(&[("orders", id(7))], vec![1], &[]));
    node.run();
    assert!(node.broker.topic("before").is_some(), "a topic the image never showed is not deleted");
    let m = metadata(&mut node);
    assert!(!m.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "before")));

    // Deleted in the cluster: the log goes.
    node.broker.handle_cluster_view(node.now, view(&[], vec![1], &[]));
    node.run();
    assert!(node.broker.topic("orders").is_none());
    assert!(node.broker.topic("before").is_some());

    // Created again under the same name (a new id) while away: the old log is replaced.
    node.broker.handle_cluster_view(node.now, view(&[("orders", id(8))], vec![1], &[]));
    node.run();
    let p = node.call(CONN, 9, produce_request("orders", 0, -1, records(&["x"], None, START_MS)));
    assert_eq!(produce_partition(&p).error_code, 0);
    node.broker.handle_cluster_view(node.now, view(&[("orders", id(9))], vec![1], &[]));
    node.run();
    assert_eq!(node.broker.topic("orders").unwrap().id, id(9));
    let read = node.call(CONN, 12, fetch_request("orders", 0, 0, 0));
    assert_eq!(fetch_partition(&read).high_watermark, 0, "the new topic does not inherit the old one's records");
    let _ = Bytes::new();
}

#[test]
fn every_group_has_one_home_that_every_broker_names_and_others_send_clients_to() {
    let mut node = in_cluster(view(&[], vec![1], &[]));
    let find = |node: &mut Node, group: &str| {
        let key = kafka_protocol::protocol::StrBytes::from_string(group.to_string());
        let request = FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![key]);
        let ResponseKind::FindCoordinator(r) = node.call(CONN, 4, request) else { panic!("not FindCoordinator") };
        let c = &r.coordinators[0];
        (c.error_code, c.node_id.0, c.host.to_string())
    };
    // Groups spread over the three registered brokers; the fenced one's are unavailable.
    let mut homes = BTreeMap::new();
    for i in 0..60 {
        let group = format!("group-{i}");
        let answer = find(&mut node, &group);
        homes.entry(answer.clone()).or_insert(group);
    }
    let here = homes.get(&(0, 1, "127.0.0.1".to_string())).expect("some groups live here").clone();
    let there = homes.get(&(0, 2, "10.0.0.2".to_string())).expect("some live on broker 2").clone();
    let fenced = homes.get(&(15, -1, String::new())).expect("some live on fenced broker 3").clone();
    assert_eq!(homes.len(), 3, "{homes:?}");

    let join = |group: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(group.to_string().into()))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id("".into())
            .with_protocol_type("consumer".into())
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name("range".into())])
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::JoinGroup(r) => r.error_code,
        _ => panic!("not JoinGroup"),
    };
    // MEMBER_ID_REQUIRED (79): served here, as a first join is.
    assert_eq!(code(node.call(CONN, 9, join(&here))), 79);
    assert_eq!(code(node.call(CONN, 9, join(&there))), 16, "NOT_COORDINATOR: its home is broker 2");
    assert_eq!(code(node.call(CONN, 9, join(&fenced))), 15, "COORDINATOR_NOT_AVAILABLE: its home is fenced");
    let end = EndTxnRequest::default().with_transactional_id(TransactionalId(there.clone().into()));
    let ResponseKind::EndTxn(end) = node.call(CONN, 3, end) else { panic!("not EndTxn") };
    assert_eq!(end.error_code, 16);
}

#[test]
fn producer_ids_come_in_blocks_from_the_controller() {
    let mut node = in_cluster(view(&[], vec![1], &[]));
    let first = node.send(CONN, 4, InitProducerIdRequest::default().with_transaction_timeout_ms(60_000));
    let second = node.send(2, 4, InitProducerIdRequest::default().with_transaction_timeout_ms(60_000));
    assert_eq!(node.forwarded.len(), 1, "one request for a block, however many producers wait");
    let (forward, _, frame) = node.forwarded.remove(0);
    let decoded = codec::decode_request_for(spool_core::api_versions::CONTROLLER_APIS, frame.slice(4..)).unwrap();
    let RequestKind::AllocateProducerIds(asked) = decoded.body else { panic!("not AllocateProducerIds") };
    assert_eq!((asked.broker_id.0, asked.broker_epoch), (ME, 12));
    let block =
        AllocateProducerIdsResponse::default().with_producer_id_start(ProducerId(5_000)).with_producer_id_len(1000);
    let block = codec::encode_response(0, 0, &ResponseKind::AllocateProducerIds(block)).unwrap();
    node.broker.handle_forwarded(node.now, forward, Ok(block.slice(4..)));
    node.run();
    let id_of = |node: &mut Node, conn: u64| match node.take::<InitProducerIdRequest>(conn, 4).unwrap() {
        (_, ResponseKind::InitProducerId(r)) => (r.error_code, r.producer_id.0),
        _ => panic!("not InitProducerId"),
    };
    assert_eq!(id_of(&mut node, CONN), (0, 5_000));
    assert_eq!(id_of(&mut node, 2), (0, 5_001));
    node.send(3, 4, InitProducerIdRequest::default().with_transaction_timeout_ms(60_000));
    assert!(node.forwarded.is_empty(), "the block serves on");
    assert_eq!(id_of(&mut node, 3), (0, 5_002));
    let _ = (first, second);
}

#[test]
fn a_log_the_cluster_made_is_deleted_after_a_restart_and_one_it_never_had_is_kept_under_its_name() {
    let mut node = Node::single();
    let ResponseKind::CreateTopics(created) = node.call(CONN, 7, create_topic("before", 1, &[])) else { panic!() };
    assert_eq!(created.topics[0].error_code, 0);
    let p = node.call(CONN, 9, produce_request("before", 0, -1, records(&["kept"], None, START_MS)));
    assert_eq!(produce_partition(&p).error_code, 0);
    node.broker.handle_cluster_view(node.now, view(&[("orders", id(7)), ("before", id(20))], vec![1], &[]));
    node.run();
    // The cluster's "before" is another topic: the old log stays, and is not served as it.
    let local = node.broker.topic("before").unwrap();
    assert_ne!(local.id, id(20));
    assert_eq!(local.partitions[0].log_end_offset(), 1, "the old records are kept");
    let p = node.call(CONN, 9, produce_request("before", 0, -1, records(&["x"], None, START_MS)));
    assert_eq!(produce_partition(&p).error_code, NOT_LEADER_OR_FOLLOWER);

    // After a restart (nothing seen yet in this process), a topic the cluster made here and
    // then deleted is still known as the cluster's, and goes.
    let mut node = node.crash_and_restart();
    node.broker.handle_cluster_view(node.now, view(&[("before", id(20))], vec![1], &[]));
    node.run();
    assert!(node.broker.topic("orders").is_none(), "the cluster deleted it while this node was away");
    assert_eq!(node.broker.topic("before").unwrap().partitions[0].log_end_offset(), 1);
}

#[test]
fn describe_quorum_is_advertised_in_a_cluster_and_forwarded_to_the_controller() {
    let advertises = |node: &mut Node| {
        let ResponseKind::ApiVersions(r) = node.call(CONN, 3, ApiVersionsRequest::default()) else { panic!() };
        r.api_keys.iter().any(|k| k.api_key == ApiKey::DescribeQuorum as i16)
    };
    assert!(!advertises(&mut Node::single()), "a single node has no quorum to describe");
    let mut node = in_cluster(view(&[], vec![1], &[]));
    assert!(advertises(&mut node));
    node.send(CONN, 2, DescribeQuorumRequest::default());
    let (forward, _, frame) = node.forwarded.remove(0);
    let decoded = codec::decode_request_for(spool_core::api_versions::CONTROLLER_APIS, frame.slice(4..)).unwrap();
    assert!(matches!(decoded.body, RequestKind::DescribeQuorum(_)));
    node.broker.handle_forwarded(node.now, forward, Err("refused".into()));
    node.run();
    let (_, ResponseKind::DescribeQuorum(r)) = node.take::<DescribeQuorumRequest>(CONN, 2).unwrap() else { panic!() };
    assert_eq!(r.error_code, NOT_CONTROLLER);
}

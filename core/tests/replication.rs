//! Two brokers replicating a partition, wired to each other in process: the follower's fetches
//! (`Action::Forward` to `Peer::Broker`) are handed to the leader as frames and its answers
//! brought back. Views stand in for the controller's image.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::*;
use spool_core::config::BrokerConfig;
use spool_core::storage::TopicPartition;
use spool_core::{ClusterView, PartitionView, Peer, TopicView};
use support::*;

const CLIENT: u64 = 1;
/// A peer's requests arrive on connection PEER_CONN + its id.
const PEER_CONN: u64 = 1_000;
const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(7);

struct Cluster {
    nodes: BTreeMap<i32, Node>,
    /// (from, forward id, to): requests handed to `to`, answered in order on its peer connection.
    in_flight: Vec<(i32, u64, i32)>,
    /// Nodes cut off: requests to or from them fail.
    down: Vec<i32>,
    /// What the nodes were last shown; the harness plays the controller for ISR changes.
    view: ClusterView,
    /// ISR changes the "controller" took: (proposer, new ISR).
    isr_changes: Vec<(i32, Vec<i32>)>,
}

fn view(leader: i32, leader_epoch: i32, isr: Vec<i32>, min_isr: &str) -> ClusterView {
    let partition = PartitionView { leader, leader_epoch, partition_epoch: leader_epoch, replicas: vec![1, 2], isr };
    let configs = [("min.insync.replicas".to_string(), min_isr.to_string())].into_iter().collect();
    let topic = TopicView { id: TOPIC_ID, partitions: vec![partition], configs };
    ClusterView {
        cluster_id: Some("replicated".into()),
        brokers: vec![(1, "10.0.0.1".into(), 9092), (2, "10.0.0.2".into(), 9092)],
        registered: vec![1, 2],
        topics: Some(Arc::new([("orders".to_string(), topic)].into_iter().collect())),
        controller: Some(("10.0.0.1".into(), 9093)),
        broker_epoch: Some(40),
    }
}

impl Cluster {
    fn new(view: ClusterView) -> Self {
        let mut nodes = BTreeMap::new();
        for id in [1, 2] {
            let mut config = BrokerConfig::single_node(&format!("10.0.0.{id}"), 9092);
            config.node_id = id;
            let mut node = Node::new(config);
            node.broker.handle_cluster_view(node.now, view.clone());
            node.run();
            nodes.insert(id, node);
        }
        let mut cluster = Cluster { nodes, in_flight: Vec::new(), down: Vec::new(), view, isr_changes: Vec::new() };
        cluster.settle();
        cluster
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes.get_mut(&id).expect("a node")
    }

    fn set_view(&mut self, view: ClusterView) {
        self.view = view.clone();
        for node in self.nodes.values_mut() {
            node.broker.handle_cluster_view(node.now, view.clone());
            node.run();
        }
        self.settle();
    }

    /// Carries requests and answers between the nodes until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<i32> = self.nodes.keys().copied().collect();
            for from in ids.iter().copied() {
                for (id, to, frame) in std::mem::take(&mut self.node(from).forwarded) {
                    let Peer::Broker(to) = to else {
                        moved = true;
                        self.play_controller(from, id, frame);
                        continue;
                    };
                    moved = true;
                    if self.down.contains(&from) || self.down.contains(&to) {
                        let node = self.node(from);
                        node.broker.handle_forwarded(node.now, id, Err("unreachable".into()));
                        node.run();
                        continue;
                    }
                    let node = self.node(to);
                    node.broker.handle_frame(node.now, PEER_CONN + from as u64, frame.slice(4..));
                    node.run();
                    self.in_flight.push((from, id, to));
                }
            }
            let mut still = Vec::new();
            for (from, id, to) in std::mem::take(&mut self.in_flight) {
                let answer = self.node(to).responses.get_mut(&(PEER_CONN + from as u64)).and_then(|q| q.pop_front());
                match answer {
                    Some(frame) => {
                        moved = true;
                        let node = self.node(from);
                        node.broker.handle_forwarded(node.now, id, Ok(frame.slice(4..)));
                        node.run();
                    }
                    None => still.push((from, id, to)),
                }
            }
            self.in_flight = still;
            if !moved {
                return;
            }
        }
    }

    /// An AlterPartition from `from`, taken when its epochs are current (as the controller
    /// checks them), the new view shown to every node, then answered.
    fn play_controller(&mut self, from: i32, id: u64, frame: bytes::Bytes) {
        let table = spool_core::api_versions::CONTROLLER_APIS;
        let decoded = spool_core::codec::decode_request_for(table, frame.slice(4..)).expect("a request");
        let kafka_protocol::messages::RequestKind::AlterPartition(request) = decoded.body else {
            panic!("only ISR changes go to the controller here")
        };
        let proposal = &request.topics[0].partitions[0];
        let current = self.view.topics.as_ref().unwrap()["orders"].partitions[0].clone();
        let taken = proposal.leader_epoch == current.leader_epoch
            && proposal.partition_epoch == current.partition_epoch
            && current.leader == from;
        let mut answer = alter_partition_response::PartitionData::default().with_partition_index(0);
        if taken {
            let isr: Vec<i32> = proposal.new_isr_with_epochs.iter().map(|b| b.broker_id.0).collect();
            self.isr_changes.push((from, isr.clone()));
            let mut next = (*self.view.topics.clone().unwrap()).clone();
            let partition = &mut next.get_mut("orders").unwrap().partitions[0];
            partition.isr = isr;
            partition.partition_epoch += 1;
            let mut view = self.view.clone();
            view.topics = Some(Arc::new(next));
            self.set_view_quietly(view);
        } else {
            answer = answer.with_error_code(kafka_protocol::ResponseError::InvalidUpdateVersion.code());
        }
        let body = AlterPartitionResponse::default().with_topics(vec![alter_partition_response::TopicData::default()
            .with_topic_id(TOPIC_ID)
            .with_partitions(vec![answer])]);
        let frame = spool_core::codec::encode_response(0, 3, &ResponseKind::AlterPartition(body)).expect("encodes");
        let node = self.node(from);
        node.broker.handle_forwarded(node.now, id, Ok(frame.slice(4..)));
        node.run();
    }

    /// A new view for every node, without carrying messages (the caller is doing that).
    fn set_view_quietly(&mut self, view: ClusterView) {
        self.view = view.clone();
        for node in self.nodes.values_mut() {
            node.broker.handle_cluster_view(node.now, view.clone());
            node.run();
        }
    }

    fn isr(&self) -> Vec<i32> {
        self.view.topics.as_ref().unwrap()["orders"].partitions[0].isr.clone()
    }

    /// Time passes on every node (parked fetches expire), then messages flow.
    fn advance(&mut self, ms: i64) {
        for node in self.nodes.values_mut() {
            node.advance(ms);
        }
        self.settle();
    }

    fn log_of(&self, id: i32) -> (i64, i64) {
        let log = self.nodes[&id].broker.partition(&TopicPartition::new("orders", 0)).expect("a log");
        (log.log_end_offset(), log.high_watermark())
    }

    /// Every record value in the node's log, by reading its files.
    fn values_of(&self, id: i32) -> Vec<(i64, String)> {
        let node = &self.nodes[&id];
        let mut disk = node.disk.clone();
        let mut out = Vec::new();
        for file in disk.log_files().into_iter().filter(|f| &*f.tp.topic == "orders") {
            let len = disk.file_len(&file);
            let read = spool_core::storage::StorageOp::Read {
                id: spool_core::storage::OpId(u64::MAX),
                file,
                position: 0,
                len,
            };
            if let Some(spool_core::storage::Completion::Read { result: Ok(bytes), .. }) = disk.execute(read) {
                out.extend(decode_values(&bytes));
            }
        }
        out
    }
}

fn produce(cluster: &mut Cluster, node: i32, acks: i16, values: &[&str]) -> i32 {
    cluster.node(node).send(CLIENT, 9, produce_request("orders", 0, acks, records(values, None, START_MS)))
}

fn answer(cluster: &mut Cluster, node: i32) -> Option<(i32, i16, i64)> {
    cluster.node(node).take::<ProduceRequest>(CLIENT, 9).map(|(c, r)| {
        let p = produce_partition(&r);
        (c, p.error_code, p.base_offset)
    })
}

#[test]
fn an_acks_all_write_is_answered_once_the_follower_holds_it_on_disk() {
    let mut cluster = Cluster::new(view(1, 3, vec![1, 2], "2"));
    let sent = produce(&mut cluster, 1, -1, &["a", "b"]);
    // The follower's parked fetch wakes on the append and carries the records over; its next
    // fetch, from its durable end, moves the leader's high watermark.
    cluster.settle();
    assert_eq!(answer(&mut cluster, 1), Some((sent, 0, 0)));
    assert_eq!(cluster.log_of(1), (2, 2));
    // The follower learns the high watermark with the leader's next answer.
    cluster.advance(500);
    assert_eq!(cluster.log_of(2), (2, 2));
    assert_eq!(cluster.values_of(2), cluster.values_of(1));
    // A follower is not read by clients.
    let read = cluster.node(2).call(CLIENT, 12, fetch_request("orders", 0, 0, 0));
    assert_eq!(fetch_partition(&read).error_code, 6);
}

#[test]
fn an_unreachable_follower_holds_the_high_watermark_until_the_isr_drops_it() {
    let mut cluster = Cluster::new(view(1, 3, vec![1, 2], "1"));
    cluster.down.push(2);
    let sent = produce(&mut cluster, 1, -1, &["a"]);
    cluster.advance(1_000);
    assert_eq!(answer(&mut cluster, 1), None, "an in-sync follower has not got it");
    assert_eq!(cluster.log_of(1), (1, 0));
    // The controller takes the follower out of the ISR (fenced): the leader alone counts.
    cluster.set_view(view(1, 3, vec![1], "1"));
    cluster.node(1).run();
    let sent_later = produce(&mut cluster, 1, -1, &["b"]);
    assert_eq!(cluster.log_of(1), (2, 2));
    assert_eq!(answer(&mut cluster, 1), Some((sent, 0, 0)));
    assert_eq!(answer(&mut cluster, 1), Some((sent_later, 0, 1)));
}

#[test]
fn a_deposed_leader_cuts_the_tail_its_successor_never_had() {
    // KIP-101: the leader appends a record no follower copied, then loses leadership.
    let mut cluster = Cluster::new(view(1, 3, vec![1, 2], "1"));
    let first = produce(&mut cluster, 1, -1, &["a", "b"]);
    cluster.settle();
    assert_eq!(answer(&mut cluster, 1), Some((first, 0, 0)));
    cluster.advance(500);
    assert_eq!(cluster.log_of(2), (2, 2));
    cluster.down.push(2);
    let lost = produce(&mut cluster, 1, 1, &["c"]);
    assert_eq!(answer(&mut cluster, 1), Some((lost, 0, 2)), "acks=1: the leader's own disk");
    cluster.down.clear();
    cluster.down.push(1);
    // Broker 2 leads in epoch 4 and takes a write of its own at offset 2.
    cluster.set_view(view(2, 4, vec![2], "1"));
    let kept = produce(&mut cluster, 2, -1, &["d"]);
    assert_eq!(answer(&mut cluster, 2), Some((kept, 0, 2)));
    // Broker 1 returns as a follower: it is told its epoch 3 ends at 2, cuts "c", copies "d".
    cluster.down.clear();
    cluster.set_view(view(2, 4, vec![2], "1"));
    cluster.advance(500);
    assert_eq!(cluster.log_of(1).0, 3);
    let values: Vec<String> = cluster.values_of(1).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["a", "b", "d"]);
    assert_eq!(cluster.values_of(1), cluster.values_of(2));
}

#[test]
fn a_silent_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let mut cluster = Cluster::new(view(1, 3, vec![1, 2], "1"));
    cluster.down.push(2);
    let sent = produce(&mut cluster, 1, -1, &["a"]);
    cluster.advance(5_000);
    assert_eq!(answer(&mut cluster, 1), None, "the silent follower is still in sync");
    // Not caught up for the lag limit: the leader asks the controller to drop it (AlterPartition).
    for _ in 0..3 {
        cluster.advance(5_000);
    }
    assert_eq!(cluster.isr(), vec![1]);
    assert_eq!(cluster.isr_changes, vec![(1, vec![1])]);
    assert_eq!(answer(&mut cluster, 1), Some((sent, 0, 0)));
    // Back, it copies what it lacks and is taken in again, only once it holds the high watermark.
    cluster.down.clear();
    let more = produce(&mut cluster, 1, -1, &["b"]);
    assert_eq!(answer(&mut cluster, 1), Some((more, 0, 1)));
    cluster.advance(500);
    cluster.advance(500);
    assert_eq!(cluster.isr(), vec![1, 2]);
    assert_eq!(cluster.isr_changes.last(), Some(&(1, vec![1, 2])));
    assert_eq!(cluster.values_of(2), cluster.values_of(1));
    // In sync again, it holds the high watermark back as before.
    cluster.down.push(2);
    produce(&mut cluster, 1, -1, &["c"]);
    cluster.advance(1_000);
    assert_eq!(cluster.log_of(1), (3, 2));
}

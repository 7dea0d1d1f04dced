//! The quorum member on the wire: three members that only exchange Kafka frames elect a leader,
//! and Kafka's admin requests (ApiVersions, DescribeCluster, DescribeQuorum) get Kafka's answers.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeQuorumRequest, RequestHeader, RequestKind, ResponseKind,
};
use spool_core::codec;
use spool_core::quorum::{Now, QuorumAction, QuorumConfig, QuorumMember, Voter};
use spool_core::raft::{RaftAction, RaftConfig, RaftNode, Restored, RoleKind};

const IDS: [i32; 3] = [1, 2, 3];
/// Inbound connection ids: from a peer, 100 + its id; from an admin client, 1.
const ADMIN: u64 = 1;

fn now(ms: u64) -> Now {
    Now { monotonic_ms: ms, wall_ms: 1_700_000_000_000 + ms as i64 }
}

fn member_from(id: i32, restored: Restored, snapshot_every: u64) -> QuorumMember {
    let voters = IDS.iter().map(|&v| Voter { id: v, host: "127.0.0.1".into(), port: 9000 + v as u16 }).collect();
    let node = RaftNode::new(RaftConfig::new(id, IDS.to_vec(), id as u64), restored, 0);
    let config = QuorumConfig {
        node_id: id,
        voters,
        cluster_id: "test-cluster".into(),
        snapshot_every,
        topic_defaults: Default::default(),
    };
    QuorumMember::new(config, node)
}

struct Cluster {
    members: BTreeMap<i32, QuorumMember>,
    /// Frames to admin clients, by correlation id.
    admin: Vec<Bytes>,
    closed: Vec<String>,
}

impl Cluster {
    fn new() -> Self {
        Self::with_snapshots_every(0)
    }

    fn with_snapshots_every(every: u64) -> Self {
        let members = IDS.iter().map(|&id| (id, member_from(id, Restored::default(), every))).collect();
        Cluster { members, admin: Vec::new(), closed: Vec::new() }
    }

    /// Carries out every action until none is left; storage completes at once.
    fn settle(&mut self, at: u64) {
        loop {
            let mut moved = false;
            for id in IDS {
                while let Some(action) = self.members.get_mut(&id).unwrap().poll_action() {
                    moved = true;
                    self.carry_out(at, id, action);
                }
                self.members[&id].check_invariants();
            }
            if !moved {
                return;
            }
        }
    }

    fn carry_out(&mut self, at: u64, id: i32, action: QuorumAction) {
        let member = self.members.get_mut(&id).unwrap();
        match action {
            QuorumAction::Storage(RaftAction::PersistElection(_)) => member.handle_election_persisted(now(at)),
            QuorumAction::Storage(RaftAction::Sync { through }) => member.handle_synced(now(at), through),
            QuorumAction::Storage(RaftAction::WriteSnapshot { id: snapshot, .. }) => {
                member.handle_snapshot_written(now(at), snapshot)
            }
            QuorumAction::Storage(_) => {}
            QuorumAction::SendToPeer { peer, frame } => {
                self.members.get_mut(&peer).unwrap().handle_request(now(at), 100 + id as u64, frame.slice(4..))
            }
            QuorumAction::Respond { conn: ADMIN, frame } => self.admin.push(frame.slice(4..)),
            QuorumAction::Respond { conn, frame } => {
                let peer = (conn - 100) as i32;
                self.members.get_mut(&peer).unwrap().handle_peer_response(now(at), id, frame.slice(4..)).unwrap();
            }
            QuorumAction::Close { reason, .. } => self.closed.push(reason),
        }
    }

    fn run_until(&mut self, until: u64) {
        self.run_until_from(0, until);
    }

    fn run_until_from(&mut self, from: u64, until: u64) {
        let mut at = from;
        while at < until {
            for id in IDS {
                let member = self.members.get_mut(&id).unwrap();
                if member.next_deadline().is_some_and(|d| d <= at) {
                    member.handle_tick(now(at));
                }
            }
            self.settle(at);
            at += 10;
        }
    }

    fn leader(&self) -> Option<i32> {
        IDS.into_iter().find(|id| self.members[id].node().role() == RoleKind::Leader)
    }

    fn ask(&mut self, at: u64, to: i32, api_key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(77);
        let frame = codec::encode_request(&header, &body).unwrap();
        self.members.get_mut(&to).unwrap().handle_request(now(at), ADMIN, frame.slice(4..));
        self.settle(at);
        let answer = self.admin.pop().expect("an answer to the admin client");
        let (correlation, body) = codec::decode_response(api_key, version, answer).unwrap();
        assert_eq!(correlation, 77);
        body
    }
}

#[test]
fn three_members_that_only_exchange_kafka_frames_elect_one_leader() {
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().expect("a leader within 5 s");
    let epoch = cluster.members[&leader].node().epoch();
    for id in IDS {
        assert_eq!(cluster.members[&id].node().leader(), Some(leader), "node {id} follows the leader");
        assert_eq!(cluster.members[&id].node().epoch(), epoch);
    }
    assert!(cluster.members[&leader].node().high_watermark() >= 1, "the leader's LeaderChange is committed");
    assert!(cluster.closed.is_empty(), "{:?}", cluster.closed);
}

#[test]
fn every_member_applies_the_committed_records_to_its_image_and_snapshots_it() {
    use spool_core::metadata::{ConfigResource, MetadataRecord};
    let mut cluster = Cluster::with_snapshots_every(5);
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    for n in 0..23 {
        let record = MetadataRecord::Config {
            resource: ConfigResource::Broker(1),
            name: format!("setting.{n}"),
            value: Some(n.to_string()),
        };
        cluster.members.get_mut(&leader).unwrap().propose(now(5_000), record.encode()).unwrap();
    }
    cluster.run_until_from(5_000, 8_000);
    let images: Vec<_> = IDS.iter().map(|id| cluster.members[id].image().clone()).collect();
    let configs = images[0].configs(&ConfigResource::Broker(1)).cloned().unwrap_or_default();
    assert_eq!(configs.len(), 23, "every committed record is in the image");
    assert_eq!(configs["setting.22"], "22");
    assert!(images.iter().all(|image| *image == images[0]), "the images differ");
    for id in IDS {
        let member = &cluster.members[&id];
        assert_eq!(member.refused_records(), 0);
        let (snapshot, data) = member.node().latest_snapshot().cloned().expect("a snapshot was taken");
        assert!(snapshot.end_offset >= 20, "snapshots follow the image: {snapshot:?}");
        // A member restarted from its snapshot and the log after it rebuilds the same image.
        let entries = member.node().log().entries_from(snapshot.end_offset, usize::MAX);
        let restored = Restored { election: None, snapshot: Some((snapshot, data.clone())), entries };
        let mut again = member_from(id, restored, 5);
        while again.poll_action().is_some() {}
        let from_snapshot = spool_core::metadata::MetadataImage::from_snapshot(&data).unwrap();
        assert_eq!(from_snapshot.applied_end(), snapshot.end_offset);
        assert!(again.image().applied_end() >= snapshot.end_offset);
        let before = from_snapshot.configs(&ConfigResource::Broker(1)).cloned().unwrap_or_default();
        assert!(before.len() >= 15, "the snapshot holds the records below its end: {}", before.len());
        assert!(before.iter().all(|(k, v)| configs.get(k) == Some(v)), "the snapshot is a prefix of the image");
        let again_configs = again.image().configs(&ConfigResource::Broker(1)).cloned().unwrap_or_default();
        assert!(again_configs.len() >= before.len());
    }
}

fn registration(broker: i32, incarnation: u128, cluster: &str) -> RequestKind {
    use kafka_protocol::messages::{broker_registration_request, BrokerId, BrokerRegistrationRequest};
    use kafka_protocol::protocol::StrBytes;
    RequestKind::BrokerRegistration(
        BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(broker))
            .with_cluster_id(StrBytes::from_string(cluster.to_string()))
            .with_incarnation_id(uuid::Uuid::from_u128(incarnation))
            .with_listeners(vec![broker_registration_request::Listener::default()
                .with_name(StrBytes::from_static_str("PLAINTEXT"))
                .with_host(StrBytes::from_static_str("10.0.0.7"))
                .with_port(9092)]),
    )
}

impl Cluster {
    /// Sends a request and runs the cluster until its answer comes (it may wait for a commit).
    fn ask_and_wait(&mut self, at: u64, to: i32, api_key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(78);
        let frame = codec::encode_request(&header, &body).unwrap();
        self.members.get_mut(&to).unwrap().handle_request(now(at), ADMIN, frame.slice(4..));
        self.settle(at);
        let mut until = at;
        while self.admin.is_empty() {
            assert!(until < at + 5_000, "no answer within 5 s");
            self.run_until_from(until, until + 10);
            until += 10;
        }
        let (correlation, body) = codec::decode_response(api_key, version, self.admin.pop().unwrap()).unwrap();
        assert_eq!(correlation, 78);
        body
    }
}

#[test]
fn the_active_controller_registers_a_broker_once_committed_and_every_image_lists_it() {
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let ResponseKind::BrokerRegistration(refused) =
        cluster.ask_and_wait(5_000, follower, ApiKey::BrokerRegistration, 4, registration(7, 1, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    assert_eq!(refused.error_code, 41, "NOT_CONTROLLER off the leader");
    let ResponseKind::BrokerRegistration(wrong) =
        cluster.ask_and_wait(5_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 1, "other-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    assert_eq!(wrong.error_code, 104, "INCONSISTENT_CLUSTER_ID");

    let ResponseKind::BrokerRegistration(registered) =
        cluster.ask_and_wait(5_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 1, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    assert_eq!(registered.error_code, 0);
    let epoch = registered.broker_epoch;
    assert!(epoch > 0);
    assert!(cluster.members[&leader].node().high_watermark() as i64 > epoch, "answered only once committed");
    cluster.run_until_from(5_100, 6_000);
    for id in IDS {
        let broker = cluster.members[&id].image().broker(7).cloned().expect("every image lists the broker");
        assert_eq!((broker.epoch, broker.fenced, broker.endpoints[0].port), (epoch, false, 9092));
    }
    // A retry of the same incarnation gets the same epoch; a restart (new incarnation) a new one.
    let ResponseKind::BrokerRegistration(retried) =
        cluster.ask_and_wait(6_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 1, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    assert_eq!((retried.error_code, retried.broker_epoch), (0, epoch));
    let ResponseKind::BrokerRegistration(restarted) =
        cluster.ask_and_wait(6_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 2, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    assert!(restarted.error_code == 0 && restarted.broker_epoch > epoch);
}

#[test]
fn describe_quorum_is_answered_by_the_leader_with_every_voter_and_refused_by_the_others() {
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    let ResponseKind::DescribeQuorum(described) = cluster.ask(
        5_000,
        leader,
        ApiKey::DescribeQuorum,
        2,
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default()),
    ) else {
        panic!("not a DescribeQuorum answer")
    };
    let partition = &described.topics[0].partitions[0];
    assert_eq!((partition.error_code, partition.leader_id.0), (0, leader));
    assert_eq!(partition.leader_epoch, cluster.members[&leader].node().epoch());
    let mut voters: Vec<i32> = partition.current_voters.iter().map(|v| v.replica_id.0).collect();
    voters.sort();
    assert_eq!(voters, IDS.to_vec());
    assert!(partition.current_voters.iter().all(|v| v.log_end_offset >= 1 && v.last_fetch_timestamp > 0));
    assert_eq!(described.nodes.len(), 3);
    assert_eq!(described.nodes[0].listeners[0].name.as_str(), "CONTROLLER");

    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let ResponseKind::DescribeQuorum(refused) = cluster.ask(
        5_000,
        follower,
        ApiKey::DescribeQuorum,
        2,
        RequestKind::DescribeQuorum(DescribeQuorumRequest::default()),
    ) else {
        panic!("not a DescribeQuorum answer")
    };
    let partition = &refused.topics[0].partitions[0];
    assert_eq!(partition.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(partition.leader_id.0, leader, "and it names the leader");
}

#[test]
fn describe_cluster_on_a_controller_names_the_controllers_and_the_leader() {
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    let asked = DescribeClusterRequest::default().with_endpoint_type(2);
    let ResponseKind::DescribeCluster(described) =
        cluster.ask(5_000, 1, ApiKey::DescribeCluster, 1, RequestKind::DescribeCluster(asked))
    else {
        panic!("not a DescribeCluster answer")
    };
    assert_eq!((described.error_code, described.controller_id.0), (0, leader));
    assert_eq!(described.cluster_id.as_str(), "test-cluster");
    assert_eq!(described.brokers.iter().map(|b| b.port).collect::<Vec<_>>(), vec![9001, 9002, 9003]);
    let as_broker = DescribeClusterRequest::default().with_endpoint_type(1);
    let ResponseKind::DescribeCluster(refused) =
        cluster.ask(5_000, 1, ApiKey::DescribeCluster, 1, RequestKind::DescribeCluster(as_broker))
    else {
        panic!("not a DescribeCluster answer")
    };
    assert_eq!(refused.error_code, 114, "MISMATCHED_ENDPOINT_TYPE");
}

#[test]
fn a_frame_the_controller_listener_does_not_serve_closes_the_connection() {
    let mut cluster = Cluster::new();
    // Produce is a broker API: the controller listener neither advertises nor decodes it.
    let frame = Bytes::from_static(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 0]);
    cluster.members.get_mut(&1).unwrap().handle_request(now(0), ADMIN, frame);
    // A Vote whose counts claim more than the frame holds.
    let mut vote = vec![0, 52, 0, 2, 0, 0, 0, 2, 0xff, 0xff, 0];
    vote.extend_from_slice(&[0, 0x7f, 0xff, 0xff, 0xff]);
    cluster.members.get_mut(&1).unwrap().handle_request(now(0), ADMIN, Bytes::from(vote));
    cluster.settle(0);
    assert_eq!(cluster.closed.len(), 2, "{:?}", cluster.closed);
    assert!(cluster.closed[0].contains("Produce"), "{}", cluster.closed[0]);
    assert!(cluster.admin.is_empty());
}

mod hostile {
    //! The controller listener is reachable by anyone who can reach the port: whatever arrives, as
    //! valid Kafka messages with arbitrary field values or as broken ones, the member answers,
    //! closes the connection or ignores it, and never panics.

    use super::*;
    use kafka_protocol::protocol::Encodable;
    use proptest::prelude::*;
    use spool_core::api_versions::CONTROLLER_APIS;
    use spool_core::wire_guard::{request_schema, sample};

    /// A request frame (without its size prefix) around `body`.
    fn frame(key: ApiKey, version: i16, correlation: i32, body: &[u8]) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str("hostile")));
        let mut out = bytes::BytesMut::new();
        header.encode(&mut out, key.request_header_version(version)).unwrap();
        out.extend_from_slice(body);
        out.freeze()
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, failure_persistence: None, ..Default::default() })]

        #[test]
        fn no_frame_crashes_a_member_whatever_its_role(seed in any::<u64>(), settle_first in any::<bool>()) {
            let mut cluster = Cluster::new();
            if settle_first {
                cluster.run_until(3_000);
            }
            let mut rng = sample::Rng(seed);
            let mut at = 3_000;
            for round in 0..200 {
                let api = &CONTROLLER_APIS[rng.below(CONTROLLER_APIS.len() as u64) as usize];
                let version = api.served_min + rng.below((api.max - api.served_min + 1) as u64) as i16;
                let (mut body, _) = sample::build(request_schema(api.key).unwrap(), version, &mut rng);
                match rng.below(4) {
                    0 if !body.is_empty() => {
                        let cut = rng.below(body.len() as u64) as usize;
                        body.truncate(cut);
                    }
                    1 if !body.is_empty() => {
                        let at = rng.below(body.len() as u64) as usize;
                        body[at] = rng.next_u64() as u8;
                    }
                    _ => {}
                }
                let to = IDS[rng.below(3) as usize];
                let frame = frame(api.key, version, round, &body);
                cluster.members.get_mut(&to).unwrap().handle_request(now(at), ADMIN, frame);
                cluster.settle(at);
                cluster.admin.clear();
                at += 10;
                cluster.run_until_from(at, at + 50);
                at += 50;
            }
        }
    }
}

fn heartbeat(broker: i32, epoch: i64, offset: i64, want_shut_down: bool) -> RequestKind {
    use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId};
    RequestKind::BrokerHeartbeat(
        BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(broker))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(offset)
            .with_want_shut_down(want_shut_down),
    )
}

impl Cluster {
    fn heartbeat(&mut self, at: u64, to: i32, body: RequestKind) -> kafka_protocol::messages::BrokerHeartbeatResponse {
        let ResponseKind::BrokerHeartbeat(answer) = self.ask(at, to, ApiKey::BrokerHeartbeat, 1, body) else {
            panic!("not a BrokerHeartbeat answer")
        };
        answer
    }

    fn fenced_everywhere(&self, broker: i32) -> Vec<bool> {
        IDS.iter().map(|id| self.members[id].image().broker(broker).expect("registered").fenced).collect()
    }
}

#[test]
fn a_broker_that_stops_heartbeating_is_fenced_and_let_in_again_once_it_heartbeats_caught_up() {
    use spool_core::quorum::sessions::SESSION_TIMEOUT_MS;
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let ResponseKind::BrokerRegistration(registered) =
        cluster.ask_and_wait(5_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 1, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    let epoch = registered.broker_epoch;
    // The last offset the broker applied, inclusive, as a broker reports it.
    let offset = |cluster: &Cluster| cluster.members[&leader].image().applied_end() as i64 - 1;

    assert_eq!(cluster.heartbeat(5_100, follower, heartbeat(7, epoch, 0, false)).error_code, 41, "NOT_CONTROLLER");
    assert_eq!(
        cluster.heartbeat(5_100, leader, heartbeat(7, epoch + 1, 0, false)).error_code,
        77,
        "STALE_BROKER_EPOCH"
    );
    assert_eq!(cluster.heartbeat(5_100, leader, heartbeat(8, 1, 0, false)).error_code, 77, "an unknown broker");
    // Caught up means it applied its own registration (the offset is inclusive).
    assert!(cluster.heartbeat(5_100, leader, heartbeat(7, epoch, epoch, false)).is_caught_up);
    assert!(!cluster.heartbeat(5_100, leader, heartbeat(7, epoch, epoch - 1, false)).is_caught_up);

    // Heartbeats every 2 s keep it in, far past the session timeout.
    let mut at = 5_100;
    while at < 5_100 + 3 * SESSION_TIMEOUT_MS {
        let o = offset(&cluster);
        let answer = cluster.heartbeat(at, leader, heartbeat(7, epoch, o, false));
        assert_eq!((answer.error_code, answer.is_fenced, answer.is_caught_up), (0, false, true));
        cluster.run_until_from(at, at + 2_000);
        at += 2_000;
    }
    assert_eq!(cluster.fenced_everywhere(7), vec![false; 3]);

    // Silent: fenced once the session ends, in every image; not before.
    let last = at - 2_000;
    cluster.run_until_from(at, last + SESSION_TIMEOUT_MS - 10);
    assert_eq!(cluster.fenced_everywhere(7), vec![false; 3], "fenced before its session ended");
    cluster.run_until_from(last + SESSION_TIMEOUT_MS - 10, last + SESSION_TIMEOUT_MS + 1_000);
    assert_eq!(cluster.fenced_everywhere(7), vec![true; 3]);

    // Back, but behind its own registration: stays fenced. Caught up: let in again.
    let at = last + SESSION_TIMEOUT_MS + 1_000;
    let behind = cluster.heartbeat(at, leader, heartbeat(7, epoch, epoch - 1, false));
    assert_eq!((behind.is_fenced, behind.is_caught_up), (true, false));
    cluster.run_until_from(at, at + 500);
    assert_eq!(cluster.fenced_everywhere(7), vec![true; 3]);
    let o = offset(&cluster);
    assert!(cluster.heartbeat(at + 500, leader, heartbeat(7, epoch, o, false)).is_fenced);
    cluster.run_until_from(at + 500, at + 1_000);
    assert_eq!(cluster.fenced_everywhere(7), vec![false; 3]);

    // Asking to shut down: fenced at once rather than after its session, and told it may stop
    // once the fencing is committed.
    let o = offset(&cluster);
    let stopping = cluster.heartbeat(at + 1_000, leader, heartbeat(7, epoch, o, true));
    assert!(!stopping.should_shut_down && !stopping.is_fenced);
    cluster.run_until_from(at + 1_000, at + 1_500);
    assert_eq!(cluster.fenced_everywhere(7), vec![true; 3]);
    let o = offset(&cluster);
    let stopped = cluster.heartbeat(at + 1_500, leader, heartbeat(7, epoch, o, true));
    assert!(stopped.should_shut_down && stopped.is_fenced);
}

mod topics {
    //! The active controller's topic decisions, over the wire: placed, committed, then answered,
    //! and the same in every member's image.

    use super::*;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
    use kafka_protocol::messages::{
        BrokerId, CreatePartitionsRequest, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use spool_core::metadata::{PartitionImage, NO_LEADER};

    const NOT_CONTROLLER: i16 = 41;

    fn topic(name: &str, partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    }

    impl Cluster {
        /// A leader elected and brokers 7, 8 and 9 registered with it; returns the leader.
        fn with_brokers(&mut self) -> i32 {
            self.run_until(5_000);
            let leader = self.leader().unwrap();
            for broker in [7, 8, 9] {
                let ResponseKind::BrokerRegistration(r) = self.ask_and_wait(
                    5_000,
                    leader,
                    ApiKey::BrokerRegistration,
                    4,
                    registration(broker, broker as u128, "test-cluster"),
                ) else {
                    panic!("not a BrokerRegistration answer")
                };
                assert_eq!(r.error_code, 0);
            }
            leader
        }

        fn create(&mut self, at: u64, to: i32, topics: Vec<CreatableTopic>) -> CreateTopicsResponse {
            let request = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(topics));
            let ResponseKind::CreateTopics(answer) = self.ask_and_wait(at, to, ApiKey::CreateTopics, 7, request) else {
                panic!("not a CreateTopics answer")
            };
            answer
        }
    }

    #[test]
    fn topics_are_placed_committed_and_answered_by_the_active_controller_and_every_image_shows_them() {
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let follower = IDS.into_iter().find(|&id| id != leader).unwrap();

        let refused = cluster.create(5_100, follower, vec![topic("orders", 6, 3)]);
        assert_eq!(refused.topics[0].error_code, NOT_CONTROLLER, "only the active controller creates topics");

        let unknown_broker = topic("pinned", -1, -1).with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(7), BrokerId(42)])]);
        let answer = cluster.create(
            5_100,
            leader,
            vec![
                topic("orders", 6, 3),
                topic("too-many", 1, 4),
                topic("__consumer_offsets", 1, 1),
                topic("bad/name", 1, 1),
                unknown_broker,
                topic("twice", 1, 1),
                topic("twice", 1, 1),
            ],
        );
        let codes: Vec<i16> = answer.topics.iter().map(|t| t.error_code).collect();
        // INVALID_REPLICATION_FACTOR, INVALID_REQUEST, INVALID_TOPIC_EXCEPTION, INVALID_REPLICA_ASSIGNMENT.
        assert_eq!(codes, vec![0, 38, 42, 17, 39, 42, 42], "{answer:?}");
        let orders = &answer.topics[0];
        assert_eq!((orders.num_partitions, orders.replication_factor), (6, 3));
        assert!(
            cluster.members[&leader].node().high_watermark() > cluster.members[&leader].image().applied_end() - 1,
            "answered only once committed"
        );

        cluster.run_until_from(5_100, 5_600);
        let mut leads = BTreeMap::new();
        for id in IDS {
            let image = cluster.members[&id].image();
            let topic = image.topic("orders").expect("every image has the topic");
            assert_eq!(topic.id, orders.topic_id);
            assert_eq!(topic.partitions.len(), 6);
            for p in topic.partitions.values() {
                let mut replicas = p.replicas.clone();
                replicas.sort_unstable();
                assert_eq!(replicas, vec![7, 8, 9], "three distinct replicas");
                assert_eq!((p.leader, p.isr.clone()), (p.replicas[0], p.replicas.clone()), "all in sync at first");
                if id == leader {
                    *leads.entry(p.leader).or_insert(0) += 1;
                }
            }
            assert!(image.topic("too-many").is_none() && image.topic("twice").is_none());
        }
        assert_eq!(leads.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "leaders spread evenly: {leads:?}");

        let again = cluster.create(5_600, leader, vec![topic("orders", 1, 1)]);
        assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
        let dry = CreateTopicsRequest::default().with_topics(vec![topic("dry", 2, 2)]).with_validate_only(true);
        let ResponseKind::CreateTopics(dry) =
            cluster.ask_and_wait(5_600, leader, ApiKey::CreateTopics, 7, RequestKind::CreateTopics(dry))
        else {
            panic!("not a CreateTopics answer")
        };
        assert_eq!((dry.topics[0].error_code, dry.topics[0].num_partitions), (0, 2));

        let more = CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_count(8)]);
        let ResponseKind::CreatePartitions(more) =
            cluster.ask_and_wait(5_600, leader, ApiKey::CreatePartitions, 3, RequestKind::CreatePartitions(more))
        else {
            panic!("not a CreatePartitions answer")
        };
        assert_eq!(more.results[0].error_code, 0);
        cluster.run_until_from(5_600, 6_000);
        for id in IDS {
            let image = cluster.members[&id].image();
            assert!(image.topic("dry").is_none(), "validate_only creates nothing");
            assert_eq!(image.topic("orders").unwrap().partitions.len(), 8);
        }

        let delete = DeleteTopicsRequest::default().with_topic_names(vec![
            TopicName(StrBytes::from_static_str("orders")),
            TopicName(StrBytes::from_static_str("nope")),
        ]);
        let ResponseKind::DeleteTopics(deleted) =
            cluster.ask_and_wait(6_000, leader, ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(delete))
        else {
            panic!("not a DeleteTopics answer")
        };
        let codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, 3], "UNKNOWN_TOPIC_OR_PARTITION for a topic that is not there");
        cluster.run_until_from(6_000, 6_500);
        for id in IDS {
            assert!(cluster.members[&id].image().topic("orders").is_none());
        }
        let _ = NO_LEADER;
    }

    #[test]
    fn a_request_whose_leader_steps_down_before_its_entry_commits_is_told_to_retry() {
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let request = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic("late", 1, 1)]));
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::CreateTopics as i16)
            .with_request_api_version(7)
            .with_correlation_id(9);
        let frame = codec::encode_request(&header, &request).unwrap();
        // Proposed, then the leader resigns before anything is replicated.
        cluster.members.get_mut(&leader).unwrap().handle_request(now(5_100), ADMIN, frame.slice(4..));
        cluster.members.get_mut(&leader).unwrap().resign(now(5_100));
        cluster.settle(5_100);
        let answer = cluster.admin.pop().expect("answered at once, not left waiting");
        let (_, ResponseKind::CreateTopics(answer)) = codec::decode_response(ApiKey::CreateTopics, 7, answer).unwrap()
        else {
            panic!("not a CreateTopics answer")
        };
        assert_eq!(answer.topics[0].error_code, NOT_CONTROLLER);
        // The client asks again, at the new controller: created, or there already.
        cluster.run_until_from(5_100, 9_000);
        let next = cluster.leader().expect("a new leader");
        let again = cluster.create(9_000, next, vec![topic("late", 1, 1)]);
        assert!([0, 36].contains(&again.topics[0].error_code), "{again:?}");
        cluster.run_until_from(9_000, 9_500);
        assert!(IDS.iter().all(|id| cluster.members[id].image().topic("late").is_some()));
    }

    #[test]
    fn topic_configs_change_through_the_controller_and_every_image_shows_them() {
        use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        use spool_core::metadata::ConfigResource;
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        assert_eq!(cluster.create(5_100, leader, vec![topic("orders", 1, 1)]).topics[0].error_code, 0);
        let change = |resource_type: i8, name: &str, op: i8, key: &str, value: Option<&str>| {
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(op)
                    .with_value(value.map(|v| StrBytes::from_string(v.to_string())))])
        };
        let alter = |cluster: &mut Cluster, at: u64, resources| {
            let request = IncrementalAlterConfigsRequest::default().with_resources(resources);
            let body = RequestKind::IncrementalAlterConfigs(request);
            let ResponseKind::IncrementalAlterConfigs(r) =
                cluster.ask_and_wait(at, leader, ApiKey::IncrementalAlterConfigs, 1, body)
            else {
                panic!("not an IncrementalAlterConfigs answer")
            };
            r.responses.iter().map(|r| r.error_code).collect::<Vec<_>>()
        };
        let codes = alter(
            &mut cluster,
            5_200,
            vec![
                change(2, "orders", 0, "retention.ms", Some("1000")),
                change(2, "orders-typo", 0, "retention.ms", Some("1000")),
                change(2, "orders", 0, "retention.ms", Some("soon")),
                change(4, "1", 0, "log.retention.ms", Some("1000")),
            ],
        );
        // UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG, INVALID_REQUEST.
        assert_eq!(codes, vec![0, 3, 40, 42]);
        cluster.run_until_from(5_200, 5_600);
        let retention = |cluster: &Cluster, id: i32| {
            let resource = ConfigResource::Topic("orders".into());
            cluster.members[&id].image().configs(&resource).and_then(|c| c.get("retention.ms").cloned())
        };
        assert!(IDS.iter().all(|&id| retention(&cluster, id).as_deref() == Some("1000")));
        assert_eq!(alter(&mut cluster, 5_600, vec![change(2, "orders", 1, "retention.ms", None)]), vec![0]);
        cluster.run_until_from(5_600, 6_000);
        assert!(IDS.iter().all(|&id| retention(&cluster, id).is_none()));
    }

    #[test]
    fn an_unclean_election_gives_a_leaderless_partition_a_live_replica_and_a_preferred_one_waits_for_the_isr() {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::ElectLeadersRequest;
        use spool_core::quorum::sessions::SESSION_TIMEOUT_MS;
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let pinned = topic("pinned", -1, -1).with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(7), BrokerId(8)])]);
        assert_eq!(cluster.create(5_100, leader, vec![pinned]).topics[0].error_code, 0);
        let elect = |cluster: &mut Cluster, at: u64, election_type: i8| {
            let request =
                ElectLeadersRequest::default().with_election_type(election_type).with_topic_partitions(Some(vec![
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_static_str("pinned")))
                        .with_partitions(vec![0, 5]),
                ]));
            let ResponseKind::ElectLeaders(r) =
                cluster.ask_and_wait(at, leader, ApiKey::ElectLeaders, 2, RequestKind::ElectLeaders(request))
            else {
                panic!("not an ElectLeaders answer")
            };
            r.replica_election_results[0]
                .partition_result
                .iter()
                .map(|p| (p.partition_id, p.error_code))
                .collect::<Vec<_>>()
        };
        // ELECTION_NOT_NEEDED: 7 leads already; UNKNOWN_TOPIC_OR_PARTITION for a partition not there.
        assert_eq!(elect(&mut cluster, 5_200, 0), vec![(0, 84), (5, 3)]);

        // Only `alive` heartbeat for a session: the others are fenced.
        let heartbeats = |cluster: &mut Cluster, from: u64, alive: &[i32]| {
            let mut at = from;
            while at < from + SESSION_TIMEOUT_MS + 2_000 {
                for &broker in alive {
                    let offset = cluster.members[&leader].image().applied_end() as i64 - 1;
                    let epoch = cluster.members[&leader].image().broker(broker).unwrap().epoch;
                    cluster.heartbeat(at, leader, heartbeat(broker, epoch, offset, false));
                }
                cluster.run_until_from(at, at + 1_000);
                at += 1_000;
            }
            at
        };
        let partition =
            |cluster: &Cluster| cluster.members[&leader].image().topic("pinned").unwrap().partitions[&0].clone();
        // 8 is fenced and leaves the ISR; it comes back, out of the ISR (it must catch up first).
        let at = heartbeats(&mut cluster, 5_200, &[7, 9]);
        assert_eq!((partition(&cluster).leader, partition(&cluster).isr), (7, vec![7]));
        let at = heartbeats(&mut cluster, at, &[7, 8, 9]);
        assert_eq!(partition(&cluster).isr, vec![7]);
        // 7 goes silent and is fenced: no leader, ISR [7] kept (it holds everything committed).
        let at = heartbeats(&mut cluster, at, &[8, 9]);
        assert_eq!((partition(&cluster).leader, partition(&cluster).isr), (NO_LEADER, vec![7]));
        // PREFERRED_LEADER_NOT_AVAILABLE: the preferred replica is fenced.
        assert_eq!(elect(&mut cluster, at, 0)[0], (0, 80));
        // Unclean: 8 leads, alone in the ISR; in every image.
        assert_eq!(elect(&mut cluster, at, 1)[0], (0, 0));
        cluster.run_until_from(at, at + 500);
        for id in IDS {
            let p = cluster.members[&id].image().topic("pinned").unwrap().partitions[&0].clone();
            assert_eq!((p.leader, p.isr), (8, vec![8]), "node {id}");
        }
    }

    #[test]
    fn alter_partition_changes_an_isr_only_for_the_leader_at_the_current_epochs() {
        use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
        use kafka_protocol::messages::AlterPartitionRequest;
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let pinned = topic("pinned", -1, -1).with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(7), BrokerId(8), BrokerId(9)])]);
        let created = cluster.create(5_100, leader, vec![pinned]);
        let topic_id = created.topics[0].topic_id;
        cluster.run_until_from(5_100, 5_500);
        let epoch_of = |cluster: &Cluster, broker: i32| cluster.members[&leader].image().broker(broker).unwrap().epoch;
        let partition =
            |cluster: &Cluster| cluster.members[&leader].image().topic("pinned").unwrap().partitions[&0].clone();
        let before = partition(&cluster);
        assert_eq!((before.leader, before.isr.clone()), (7, vec![7, 8, 9]));
        // (from, leader epoch, partition epoch, [(member, broker epoch)]) -> (top error, partition error)
        let alter = |cluster: &mut Cluster, from: i32, epochs: (i32, i32), isr: Vec<(i32, i64)>| {
            let request = AlterPartitionRequest::default()
                .with_broker_id(BrokerId(from))
                .with_broker_epoch(epoch_of(cluster, from))
                .with_topics(vec![TopicData::default().with_topic_id(topic_id).with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(0)
                        .with_leader_epoch(epochs.0)
                        .with_partition_epoch(epochs.1)
                        .with_new_isr_with_epochs(
                            isr.iter()
                                .map(|&(b, e)| BrokerState::default().with_broker_id(BrokerId(b)).with_broker_epoch(e))
                                .collect(),
                        ),
                ])]);
            let ResponseKind::AlterPartition(r) =
                cluster.ask_and_wait(5_500, leader, ApiKey::AlterPartition, 3, RequestKind::AlterPartition(request))
            else {
                panic!("not an AlterPartition answer")
            };
            let p = &r.topics[0].partitions[0];
            (r.error_code, p.error_code, p.isr.iter().map(|b| b.0).collect::<Vec<_>>(), p.partition_epoch)
        };
        let (le, pe) = (before.leader_epoch, before.partition_epoch);
        let e = |b: i32| epoch_of(&cluster, b);
        let (e7, e8, e9) = (e(7), e(8), e(9));
        // Not the leader: INVALID_REQUEST (42). A stale partition epoch: INVALID_UPDATE_VERSION (95).
        assert_eq!(alter(&mut cluster, 8, (le, pe), vec![(8, e8)]).1, 42);
        assert_eq!(alter(&mut cluster, 7, (le, pe - 1), vec![(7, e7)]).1, 95);
        // The leader drops 9: committed, then answered with the new state, in every image.
        assert_eq!(alter(&mut cluster, 7, (le, pe), vec![(7, e7), (8, e8)]), (0, 0, vec![7, 8], pe + 1));
        cluster.run_until_from(5_500, 5_800);
        for id in IDS {
            let p = cluster.members[&id].image().topic("pinned").unwrap().partitions[&0].clone();
            assert_eq!((p.isr, p.leader_epoch), (vec![7, 8], le), "an ISR change keeps the leader epoch");
        }
        // 9 back in, with a broker epoch that is not its own: INELIGIBLE_REPLICA (107).
        assert_eq!(alter(&mut cluster, 7, (le, pe + 1), vec![(7, e7), (8, e8), (9, e9 + 1)]).1, 107);
        // An ISR without the leader: INVALID_REQUEST; a stale leader epoch: FENCED_LEADER_EPOCH (74).
        assert_eq!(alter(&mut cluster, 7, (le, pe + 1), vec![(8, e8)]).1, 42);
        assert_eq!(alter(&mut cluster, 7, (le - 1, pe + 1), vec![(7, e7)]).1, 74);
        assert_eq!(alter(&mut cluster, 7, (le, pe + 1), vec![(7, e7), (8, e8), (9, e9)]).2, vec![7, 8, 9]);
    }

    #[test]
    fn a_broker_back_as_a_new_incarnation_leaves_its_isrs_and_leads_nothing_in_its_old_epochs() {
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let answer = cluster.create(5_100, leader, vec![topic("events", 3, 3), topic("alone", 3, 1)]);
        assert!(answer.topics.iter().all(|t| t.error_code == 0));
        cluster.run_until_from(5_100, 5_500);
        let partitions = |cluster: &Cluster, name: &str| -> Vec<PartitionImage> {
            cluster.members[&leader].image().topic(name).unwrap().partitions.values().cloned().collect()
        };
        let before = (partitions(&cluster, "events"), partitions(&cluster, "alone"));
        assert!(before.0.iter().any(|p| p.leader == 7), "broker 7 leads a partition of events");

        // Broker 7 restarts (a crash may have taken its unsynced tail) and registers again.
        let ResponseKind::BrokerRegistration(r) =
            cluster.ask_and_wait(5_500, leader, ApiKey::BrokerRegistration, 4, registration(7, 77, "test-cluster"))
        else {
            panic!("not a BrokerRegistration answer")
        };
        assert_eq!(r.error_code, 0);
        cluster.run_until_from(5_500, 6_000);
        for (was, now) in before.0.iter().zip(partitions(&cluster, "events")) {
            assert!(!now.isr.contains(&7), "broker 7 left the ISR {:?}", now.isr);
            if was.leader == 7 {
                assert_ne!(now.leader, 7, "another in-sync replica leads");
                assert!(now.leader_epoch > was.leader_epoch);
            } else {
                assert_eq!((now.leader, now.leader_epoch), (was.leader, was.leader_epoch));
            }
        }
        // The last member of an ISR stays in it: leaderless for a moment, then led again by
        // broker 7 (unfenced with its registration), in a newer epoch.
        for (was, now) in before.1.iter().zip(partitions(&cluster, "alone")) {
            if was.replicas == vec![7] {
                assert_eq!((now.leader, now.isr.clone()), (7, vec![7]));
                assert!(now.leader_epoch >= was.leader_epoch + 2, "{} then {}", was.leader_epoch, now.leader_epoch);
            } else {
                assert_eq!(now.leader_epoch, was.leader_epoch);
            }
        }
    }

    #[test]
    fn a_fenced_leader_leaves_its_partitions_leaderless_and_leads_them_again_when_let_back_in() {
        use spool_core::quorum::sessions::SESSION_TIMEOUT_MS;
        let mut cluster = Cluster::new();
        let leader = cluster.with_brokers();
        let answer = cluster.create(5_100, leader, vec![topic("events", 3, 1)]);
        assert_eq!(answer.topics[0].error_code, 0);
        cluster.run_until_from(5_100, 5_500);
        let epoch_of = |cluster: &Cluster, broker: i32| cluster.members[&leader].image().broker(broker).unwrap().epoch;
        let partition_of = |cluster: &Cluster, id: i32| {
            let image = cluster.members[&id].image();
            image.topic("events").unwrap().partitions.values().find(|p| p.replicas == vec![7]).cloned().unwrap()
        };
        let before = partition_of(&cluster, leader);
        assert_eq!(before.leader, 7);

        // Brokers 8 and 9 heartbeat; 7 goes silent and is fenced: its partition has no leader,
        // in every image, its ISR kept so that it is the one to lead again.
        let mut at = 5_500;
        while at < 5_500 + SESSION_TIMEOUT_MS + 2_000 {
            for broker in [8, 9] {
                let offset = cluster.members[&leader].image().applied_end() as i64 - 1;
                let epoch = epoch_of(&cluster, broker);
                cluster.heartbeat(at, leader, heartbeat(broker, epoch, offset, false));
            }
            cluster.run_until_from(at, at + 1_000);
            at += 1_000;
        }
        for id in IDS {
            let p = partition_of(&cluster, id);
            assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![7]), "node {id}");
            assert!(p.leader_epoch > before.leader_epoch, "a leader change bumps the leader epoch");
        }
        let others = cluster.members[&leader]
            .image()
            .topic("events")
            .unwrap()
            .partitions
            .values()
            .filter(|p| p.leader != NO_LEADER)
            .count();
        assert_eq!(others, 2, "partitions led by live brokers keep their leaders");

        // Back and caught up: let in, and leads its partition again in a newer epoch.
        let offset = cluster.members[&leader].image().applied_end() as i64 - 1;
        let epoch = epoch_of(&cluster, 7);
        cluster.heartbeat(at, leader, heartbeat(7, epoch, offset, false));
        cluster.run_until_from(at, at + 1_000);
        let after = partition_of(&cluster, leader);
        assert_eq!(after.leader, 7);
        assert!(after.leader_epoch > before.leader_epoch + 1);
    }
}

#[test]
fn blocks_of_producer_ids_go_to_registered_brokers_once_each() {
    use kafka_protocol::messages::{AllocateProducerIdsRequest, BrokerId};
    let mut cluster = Cluster::new();
    cluster.run_until(5_000);
    let leader = cluster.leader().unwrap();
    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let ResponseKind::BrokerRegistration(registered) =
        cluster.ask_and_wait(5_000, leader, ApiKey::BrokerRegistration, 4, registration(7, 1, "test-cluster"))
    else {
        panic!("not a BrokerRegistration answer")
    };
    let ask = |cluster: &mut Cluster, to: i32, epoch: i64| {
        let request = AllocateProducerIdsRequest::default().with_broker_id(BrokerId(7)).with_broker_epoch(epoch);
        let body = RequestKind::AllocateProducerIds(request);
        let ResponseKind::AllocateProducerIds(answer) =
            cluster.ask_and_wait(5_100, to, ApiKey::AllocateProducerIds, 0, body)
        else {
            panic!("not an AllocateProducerIds answer")
        };
        answer
    };
    assert_eq!(ask(&mut cluster, follower, registered.broker_epoch).error_code, 41, "NOT_CONTROLLER");
    assert_eq!(ask(&mut cluster, leader, registered.broker_epoch + 1).error_code, 77, "STALE_BROKER_EPOCH");
    let first = ask(&mut cluster, leader, registered.broker_epoch);
    let second = ask(&mut cluster, leader, registered.broker_epoch);
    assert_eq!((first.error_code, second.error_code), (0, 0));
    assert_eq!(first.producer_id_len, 1000);
    assert_eq!(second.producer_id_start.0, first.producer_id_start.0 + 1000, "blocks never overlap");
    cluster.run_until_from(5_100, 5_500);
    for id in IDS {
        assert_eq!(cluster.members[&id].image().next_producer_id(), second.producer_id_start.0 + 1000);
    }
}

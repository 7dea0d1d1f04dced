//! The metadata image: built only by replaying records, refusing what would break it, and
//! reached from a single node's cluster.json without losing anything.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spool_core::meta::{ClusterMeta, TopicMeta, TxnMeta};
use spool_core::metadata::{
    records_from_cluster_meta, ConfigResource, MetadataImage, MetadataRecord, PartitionChange, PartitionRecord,
    NO_LEADER,
};
use spool_core::raft::{Entry, Payload};
use uuid::Uuid;

fn topic_id(n: u128) -> Uuid {
    Uuid::from_u128(0xabc0 + n)
}

fn partition(topic: u128, partition: i32, replicas: &[i32]) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        topic_id: topic_id(topic),
        partition,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas[0],
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

fn entries(records: &[MetadataRecord]) -> Vec<Entry> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Entry { offset: i as u64, epoch: 1, payload: Payload::Data(r.encode()) })
        .collect()
}

#[test]
fn a_leader_change_bumps_the_leader_epoch_and_every_change_the_partition_epoch() {
    let records = vec![
        MetadataRecord::Topic { name: "orders".into(), topic_id: topic_id(1) },
        partition(1, 0, &[1, 2, 3]),
        // The ISR shrinks: same leader, new partition epoch.
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(1),
            partition: 0,
            isr: Some(vec![1, 2]),
            ..Default::default()
        }),
        // Broker 1 goes: broker 2 leads, in a new leader epoch.
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(1),
            partition: 0,
            leader: Some(2),
            isr: Some(vec![2]),
            ..Default::default()
        }),
    ];
    let mut image = MetadataImage::default();
    image.replay(&entries(&records)).unwrap();
    image.check_invariants();
    let p = &image.topic("orders").unwrap().partitions[&0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (2, 1, 2, vec![2]));
    assert_eq!(image.applied_end(), 4);
    assert!(image.replay(&entries(&records)[3..]).is_err(), "an entry is never applied twice");
}

#[test]
fn records_that_would_break_the_image_are_refused_and_change_nothing() {
    let mut image = MetadataImage::default();
    image.apply(0, &MetadataRecord::Topic { name: "t".into(), topic_id: topic_id(1) }).unwrap();
    image.apply(1, &partition(1, 0, &[1, 2])).unwrap();
    image.apply(2, &MetadataRecord::ProducerIds { next_producer_id: 1_000 }).unwrap();
    let before = image.clone();
    let bad = [
        MetadataRecord::Topic { name: "t".into(), topic_id: topic_id(2) },
        partition(2, 0, &[1]),
        partition(1, 2, &[1]),
        partition(1, 1, &[1, 1]),
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(1),
            partition: 0,
            isr: Some(vec![3]),
            ..Default::default()
        }),
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(1),
            partition: 0,
            leader: Some(3),
            ..Default::default()
        }),
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(1),
            partition: 0,
            eligible_leader_replicas: Some(vec![1]),
            ..Default::default()
        }),
        MetadataRecord::ProducerIds { next_producer_id: 999 },
        MetadataRecord::Config {
            resource: ConfigResource::Topic("gone".into()),
            name: "retention.ms".into(),
            value: Some("1".into()),
        },
        MetadataRecord::BrokerFenced { broker_id: 9, fenced: false },
        MetadataRecord::ClusterId { cluster_id: "a".into() },
    ];
    image.apply(3, &MetadataRecord::ClusterId { cluster_id: "b".into() }).unwrap();
    let before_cluster = image.clone();
    for record in &bad {
        assert!(image.apply(4, record).is_err(), "{record:?} was taken");
        image.check_invariants();
    }
    assert_eq!(image, before_cluster);
    assert_ne!(image, before);
    // No leader is a valid state (every replica gone), and a leader can come back to it.
    let leaderless = PartitionChange {
        topic_id: topic_id(1),
        partition: 0,
        leader: Some(NO_LEADER),
        isr: Some(vec![]),
        ..Default::default()
    };
    image.apply(5, &MetadataRecord::PartitionChange(leaderless)).unwrap();
    image.check_invariants();
}

#[test]
fn a_single_node_data_directory_moves_to_the_metadata_log_with_everything_it_held() {
    let meta = ClusterMeta {
        version: 1,
        cluster_id: "spool-cluster".into(),
        node_id: 7,
        producer_id_block_end: 5_000,
        epoch: 12,
        topics: vec![
            TopicMeta {
                name: "orders".into(),
                id: topic_id(1).to_string(),
                partitions: 3,
                configs: BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
                from_cluster: false,
            },
            TopicMeta {
                name: "logs".into(),
                id: topic_id(2).to_string(),
                partitions: 1,
                configs: BTreeMap::new(),
                from_cluster: false,
            },
        ],
        transactions: BTreeMap::from([(
            "tx-1".to_string(),
            TxnMeta { producer_id: 4_001, epoch: 3, timeout_ms: 60_000, commit: None },
        )]),
    };
    let records = records_from_cluster_meta(&meta, |topic, p| if topic == "orders" && p == 1 { 4 } else { 0 }).unwrap();
    let mut image = MetadataImage::default();
    image.replay(&entries(&records)).unwrap();
    image.check_invariants();
    assert_eq!(image.cluster_id(), Some("spool-cluster"));
    for topic in &meta.topics {
        let found = image.topic(&topic.name).unwrap();
        assert_eq!(found.id.to_string(), topic.id);
        assert_eq!(found.partitions.len() as i32, topic.partitions);
        assert!(found.partitions.values().all(|p| p.replicas == [7] && p.isr == [7] && p.leader == 7));
        let configs = image.configs(&ConfigResource::Topic(topic.name.clone())).cloned().unwrap_or_default();
        assert_eq!(configs, topic.configs);
    }
    assert_eq!(image.topic("orders").unwrap().partitions[&1].leader_epoch, 4, "leader epochs never go back");
    assert_eq!(image.next_producer_id(), 5_000);
    assert_eq!(image.transactions(), &meta.transactions);
    assert_eq!(
        MetadataImage::from_snapshot(&image.to_snapshot()).unwrap(),
        image,
        "transactions and configs survive a snapshot"
    );
    let broken = ClusterMeta { topics: vec![TopicMeta { id: "not-a-uuid".into(), ..meta.topics[1].clone() }], ..meta };
    assert!(records_from_cluster_meta(&broken, |_, _| 0).is_err());
}

/// Random records, valid or not, applied one by one: the invariants hold after each, a refused
/// record changes nothing, and replaying the log that was taken rebuilds the same image.
#[test]
fn any_sequence_of_records_keeps_the_image_whole() {
    for seed in 0..300 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pick = |n: u64| (rng.next_u64() % n) as i32;
        let mut image = MetadataImage::default();
        let mut taken = Vec::new();
        for offset in 0..200u64 {
            let topic = pick(3) as u128;
            let replicas: Vec<i32> = (1..=3).filter(|_| pick(3) > 0).collect();
            let replicas = if replicas.is_empty() { vec![1] } else { replicas };
            let some_brokers =
                |pick: &mut dyn FnMut(u64) -> i32| (1..=4).filter(|_| pick(2) == 0).collect::<Vec<i32>>();
            let record = match pick(8) {
                0 => MetadataRecord::Topic { name: format!("t{topic}"), topic_id: topic_id(topic) },
                1 | 2 => partition(topic, pick(3), &replicas),
                3 | 4 => MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: topic_id(topic),
                    partition: pick(3),
                    leader: (pick(2) == 0).then(|| pick(5) - 1),
                    isr: (pick(2) == 0).then(|| some_brokers(&mut pick)),
                    eligible_leader_replicas: (pick(4) == 0).then(|| some_brokers(&mut pick)),
                    replicas: (pick(4) == 0).then(|| some_brokers(&mut pick)),
                }),
                5 => MetadataRecord::RemoveTopic { topic_id: topic_id(topic) },
                6 => MetadataRecord::Config {
                    resource: ConfigResource::Topic(format!("t{topic}")),
                    name: "retention.ms".into(),
                    value: (pick(2) == 0).then(|| "1000".to_string()),
                },
                _ => MetadataRecord::ProducerIds { next_producer_id: pick(1_000) as i64 },
            };
            let before = image.clone();
            match image.apply(offset, &record) {
                Ok(()) => taken.push(Entry { offset, epoch: 1, payload: Payload::Data(record.encode()) }),
                Err(_) => assert_eq!(image, before, "seed {seed}: a refused {record:?} changed the image"),
            }
            image.check_invariants();
        }
        assert!(taken.len() > 20, "seed {seed}: only {} records taken", taken.len());
        // Replaying the records taken (refused ones were never in the log) rebuilds the image.
        let mut replayed = MetadataImage::default();
        replayed.replay(&taken).unwrap();
        assert_eq!(replayed.topics().collect::<Vec<_>>(), image.topics().collect::<Vec<_>>(), "seed {seed}");
        for topic in 0..3 {
            let resource = ConfigResource::Topic(format!("t{topic}"));
            assert_eq!(replayed.configs(&resource), image.configs(&resource), "seed {seed}");
        }
        assert_eq!(replayed.next_producer_id(), image.next_producer_id());
        // A snapshot taken halfway, restored, and replayed on: the same image as replaying it all.
        let half = taken.len() / 2;
        let mut first_half = MetadataImage::default();
        first_half.replay(&taken[..half]).unwrap();
        let mut restored = MetadataImage::from_snapshot(&first_half.to_snapshot()).unwrap();
        assert_eq!(restored, first_half, "seed {seed}: a snapshot restores the image exactly");
        restored.replay(&taken[half..]).unwrap();
        assert_eq!(restored, replayed, "seed {seed}");
    }
}

#[test]
fn a_snapshot_that_is_not_an_image_is_refused() {
    assert!(MetadataImage::from_snapshot(b"not json").is_err());
    assert!(MetadataImage::from_snapshot(b"{}").is_err());
}

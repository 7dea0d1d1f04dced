//! The metadata image: the cluster as the committed metadata log describes it, on every node.
//! It changes only by replaying records in log order; readers never see a record twice or out
//! of order.
//!
//! Invariants (checked by `check_invariants`): topic names and ids map one to one; a topic's
//! partitions are numbered 0..n; every partition has distinct replicas, an ISR and eligible
//! leader replicas within them and apart from each other, and a leader in its ISR (or none).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{BrokerId, ConfigResource, Endpoint, MetadataRecord, PartitionChange, PartitionRecord, NO_LEADER};
use crate::meta::{ClusterMeta, TxnMeta};
use crate::raft::{Entry, Payload};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    pub incarnation: Uuid,
    /// The offset of its registration record (KIP-631's broker epoch).
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub eligible_leader_replicas: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

/// The image's snapshot form: maps with non-string keys as lists, so it is plain JSON.
#[derive(Serialize, Deserialize)]
struct ImageSnapshot {
    applied_end: u64,
    cluster_id: Option<String>,
    brokers: Vec<BrokerRegistration>,
    topics: Vec<TopicImage>,
    configs: Vec<(ConfigResource, BTreeMap<String, String>)>,
    next_producer_id: i64,
    transactions: Vec<(String, TxnMeta)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The offset after the last record applied.
    applied_end: u64,
    cluster_id: Option<String>,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids: BTreeMap<String, Uuid>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    next_producer_id: i64,
    transactions: BTreeMap<String, TxnMeta>,
}

impl MetadataImage {
    pub fn applied_end(&self) -> u64 {
        self.applied_end
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }

    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    pub fn transactions(&self) -> &BTreeMap<String, TxnMeta> {
        &self.transactions
    }

    /// The image as a snapshot's bytes (KIP-630): what `from_snapshot` rebuilds it from exactly,
    /// broker epochs and the applied end included.
    pub fn to_snapshot(&self) -> Bytes {
        let snapshot = ImageSnapshot {
            applied_end: self.applied_end,
            cluster_id: self.cluster_id.clone(),
            brokers: self.brokers.values().cloned().collect(),
            topics: self.topics.values().cloned().collect(),
            configs: self.configs.iter().map(|(r, c)| (r.clone(), c.clone())).collect(),
            next_producer_id: self.next_producer_id,
            transactions: self.transactions.iter().map(|(id, t)| (id.clone(), t.clone())).collect(),
        };
        Bytes::from(serde_json::to_vec(&snapshot).expect("an image serializes"))
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, String> {
        let s: ImageSnapshot = serde_json::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))?;
        let image = MetadataImage {
            applied_end: s.applied_end,
            cluster_id: s.cluster_id,
            brokers: s.brokers.into_iter().map(|b| (b.id, b)).collect(),
            topic_ids: s.topics.iter().map(|t| (t.name.clone(), t.id)).collect(),
            topics: s.topics.into_iter().map(|t| (t.id, t)).collect(),
            configs: s.configs.into_iter().collect(),
            next_producer_id: s.next_producer_id,
            transactions: s.transactions.into_iter().collect(),
        };
        if image.topics.len() != image.topic_ids.len() {
            return Err("metadata snapshot: two topics share a name".to_string());
        }
        Ok(image)
    }

    /// Applies the committed entries from the metadata log, in order.
    pub fn replay<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Result<(), String> {
        for entry in entries {
            if entry.offset < self.applied_end {
                return Err(format!(
                    "metadata entry {} replayed again (applied to {})",
                    entry.offset, self.applied_end
                ));
            }
            if let Payload::Data(bytes) = &entry.payload {
                let records =
                    MetadataRecord::decode_all(bytes).map_err(|e| format!("at offset {}: {e}", entry.offset))?;
                self.apply_all(entry.offset, &records).map_err(|e| format!("at offset {}: {e}", entry.offset))?;
            }
            self.applied_end = entry.offset + 1;
        }
        Ok(())
    }

    /// Moves past a committed entry the image refused (it stays as it was), so every node,
    /// refusing it alike, goes on to the same next entry.
    pub fn pass_over(&mut self, offset: u64) {
        assert!(offset >= self.applied_end, "entry {offset} passed over below the applied end {}", self.applied_end);
        self.applied_end = offset + 1;
    }

    /// Applies the records of one entry, all or none.
    pub fn apply_all(&mut self, offset: u64, records: &[MetadataRecord]) -> Result<(), String> {
        if let [record] = records {
            return self.apply(offset, record);
        }
        // Rare (topic creations): the check on a copy keeps a refusal whole.
        let mut next = self.clone();
        for record in records {
            next.apply(offset, record)?;
        }
        *self = next;
        Ok(())
    }

    /// Applies one record. A record the image cannot take (a partition of an unknown topic, an
    /// ISR outside the replicas...) is refused whole and leaves the image as it was.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), String> {
        match record {
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.as_ref().is_some_and(|c| c != cluster_id) {
                    return Err(format!("cluster id {cluster_id} after {:?}", self.cluster_id));
                }
                self.cluster_id = Some(cluster_id.clone());
            }
            MetadataRecord::RegisterBroker { broker_id, incarnation, endpoints, rack } => {
                let registration = BrokerRegistration {
                    id: *broker_id,
                    incarnation: *incarnation,
                    epoch: offset as i64,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    fenced: true,
                    in_controlled_shutdown: false,
                };
                self.brokers.insert(*broker_id, registration);
            }
            MetadataRecord::BrokerFenced { broker_id, fenced } => {
                let broker = self.brokers.get_mut(broker_id).ok_or(format!("fencing unknown broker {broker_id}"))?;
                broker.fenced = *fenced;
                if !fenced {
                    broker.in_controlled_shutdown = false;
                }
            }
            MetadataRecord::BrokerControlledShutdown { broker_id } => {
                let broker =
                    self.brokers.get_mut(broker_id).ok_or(format!("shutting down unknown broker {broker_id}"))?;
                broker.in_controlled_shutdown = true;
            }
            MetadataRecord::UnregisterBroker { broker_id } => {
                self.brokers.remove(broker_id).ok_or(format!("unregistering unknown broker {broker_id}"))?;
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    return Err(format!("topic {name} ({topic_id}) exists"));
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                let topic = TopicImage { name: name.clone(), id: *topic_id, partitions: BTreeMap::new() };
                self.topics.insert(*topic_id, topic);
            }
            MetadataRecord::Partition(partition) => self.apply_partition(partition)?,
            MetadataRecord::PartitionChange(change) => self.apply_partition_change(change)?,
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or(format!("removing unknown topic {topic_id}"))?;
                self.topic_ids.remove(&topic.name);
                self.configs.remove(&ConfigResource::Topic(topic.name));
            }
            MetadataRecord::Config { resource, name, value } => {
                if let ConfigResource::Topic(topic) = resource {
                    if !self.topic_ids.contains_key(topic) {
                        return Err(format!("config of unknown topic {topic}"));
                    }
                }
                let configs = self.configs.entry(resource.clone()).or_default();
                match value {
                    Some(value) => {
                        configs.insert(name.clone(), value.clone());
                    }
                    None => {
                        configs.remove(name);
                    }
                }
                if configs.is_empty() {
                    self.configs.remove(resource);
                }
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                if *next_producer_id < self.next_producer_id {
                    return Err(format!(
                        "producer ids moved back to {next_producer_id} from {}",
                        self.next_producer_id
                    ));
                }
                self.next_producer_id = *next_producer_id;
            }
            MetadataRecord::Transaction { transactional_id, state } => match state {
                Some(state) => {
                    self.transactions.insert(transactional_id.clone(), state.clone());
                }
                None => {
                    self.transactions.remove(transactional_id);
                }
            },
        }
        Ok(())
    }

    fn apply_partition(&mut self, record: &PartitionRecord) -> Result<(), String> {
        let topic =
            self.topics.get_mut(&record.topic_id).ok_or(format!("partition of unknown topic {}", record.topic_id))?;
        if record.partition != topic.partitions.len() as i32 {
            return Err(format!("partition {} of {} out of order", record.partition, topic.name));
        }
        let partition = PartitionImage {
            replicas: record.replicas.clone(),
            isr: record.isr.clone(),
            eligible_leader_replicas: Vec::new(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
        };
        check_partition(&partition).map_err(|e| format!("{}-{}: {e}", topic.name, record.partition))?;
        topic.partitions.insert(record.partition, partition);
        Ok(())
    }

    fn apply_partition_change(&mut self, change: &PartitionChange) -> Result<(), String> {
        let topic =
            self.topics.get_mut(&change.topic_id).ok_or(format!("change to unknown topic {}", change.topic_id))?;
        let current = topic
            .partitions
            .get(&change.partition)
            .ok_or(format!("change to unknown partition {}-{}", topic.name, change.partition))?;
        let mut next = current.clone();
        if let Some(replicas) = &change.replicas {
            next.replicas = replicas.clone();
        }
        if let Some(isr) = &change.isr {
            next.isr = isr.clone();
        }
        if let Some(elr) = &change.eligible_leader_replicas {
            next.eligible_leader_replicas = elr.clone();
        }
        if let Some(leader) = change.leader {
            if leader != current.leader {
                next.leader = leader;
                next.leader_epoch += 1;
            }
        }
        next.partition_epoch += 1;
        check_partition(&next).map_err(|e| format!("{}-{}: {e}", topic.name, change.partition))?;
        topic.partitions.insert(change.partition, next);
        Ok(())
    }

    pub fn check_invariants(&self) {
        assert_eq!(self.topics.len(), self.topic_ids.len(), "topic maps differ in size");
        for (name, id) in &self.topic_ids {
            let topic = self.topics.get(id).expect("a named topic exists");
            assert_eq!(&topic.name, name, "topic {id} named twice");
            assert_eq!(topic.id, *id);
        }
        for topic in self.topics.values() {
            for (index, (&number, partition)) in topic.partitions.iter().enumerate() {
                assert_eq!(number, index as i32, "{}'s partitions are not numbered 0..n", topic.name);
                if let Err(e) = check_partition(partition) {
                    panic!("{}-{number}: {e}", topic.name);
                }
            }
        }
        for (id, broker) in &self.brokers {
            assert_eq!(*id, broker.id, "broker registered under another id");
            assert!(
                broker.epoch >= 0 && (broker.epoch as u64) < self.applied_end.max(1),
                "broker epoch from the future"
            );
        }
        for resource in self.configs.keys() {
            if let ConfigResource::Topic(name) = resource {
                assert!(self.topic_ids.contains_key(name), "configs of a removed topic {name}");
            }
        }
    }
}

fn check_partition(p: &PartitionImage) -> Result<(), String> {
    let replicas: BTreeSet<BrokerId> = p.replicas.iter().copied().collect();
    if replicas.is_empty() || replicas.len() != p.replicas.len() {
        return Err(format!("replicas {:?} empty or repeated", p.replicas));
    }
    let isr: BTreeSet<BrokerId> = p.isr.iter().copied().collect();
    if isr.len() != p.isr.len() || !isr.is_subset(&replicas) {
        return Err(format!("ISR {:?} repeated or outside the replicas {:?}", p.isr, p.replicas));
    }
    let elr: BTreeSet<BrokerId> = p.eligible_leader_replicas.iter().copied().collect();
    if !elr.is_subset(&replicas) || !elr.is_disjoint(&isr) {
        return Err(format!(
            "eligible leader replicas {:?} outside the replicas or inside the ISR",
            p.eligible_leader_replicas
        ));
    }
    if p.leader != NO_LEADER && !isr.contains(&p.leader) {
        return Err(format!("leader {} outside the ISR {:?}", p.leader, p.isr));
    }
    if p.leader_epoch < 0 || p.partition_epoch < 0 {
        return Err("negative epoch".to_string());
    }
    Ok(())
}

/// The records that describe a single-node data directory's `cluster.json`: how an existing
/// node moves to the metadata log without losing topics, configs, producer ids or transactions.
/// The node becomes broker `meta.node_id`, sole replica and leader of every partition, in the
/// latest leader epoch its log knows (`leader_epoch_of(topic, partition)`), so epochs never go back.
pub fn records_from_cluster_meta(
    meta: &ClusterMeta,
    leader_epoch_of: impl Fn(&str, i32) -> i32,
) -> Result<Vec<MetadataRecord>, String> {
    let node = meta.node_id;
    let mut records = vec![MetadataRecord::ClusterId { cluster_id: meta.cluster_id.clone() }];
    for topic in &meta.topics {
        let topic_id =
            Uuid::parse_str(&topic.id).map_err(|e| format!("topic {} has id {:?}: {e}", topic.name, topic.id))?;
        records.push(MetadataRecord::Topic { name: topic.name.clone(), topic_id });
        for partition in 0..topic.partitions {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition,
                replicas: vec![node],
                isr: vec![node],
                leader: node,
                leader_epoch: leader_epoch_of(&topic.name, partition).max(0),
                partition_epoch: 0,
            }));
        }
        for (name, value) in &topic.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(topic.name.clone()),
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
    }
    records.push(MetadataRecord::ProducerIds { next_producer_id: meta.producer_id_block_end });
    for (transactional_id, state) in &meta.transactions {
        records.push(MetadataRecord::Transaction {
            transactional_id: transactional_id.clone(),
            state: Some(state.clone()),
        });
    }
    Ok(records)
}

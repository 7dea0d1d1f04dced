//! Cluster metadata that must survive restarts: identity, topics with their partition counts and
//! config overrides, the producer-id block, and each transactional id's producer with the
//! decision of a commit in progress. Written whole and atomically; a change is visible only once
//! its write is durable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Created for a topic of the cluster's metadata image (not by this node alone): when the
    /// image no longer has it, under this id, its log is the cluster's to delete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cluster: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub version: u32,
    pub cluster_id: String,
    pub node_id: i32,
    /// Producer ids below this may have been handed out; a restart starts above it.
    pub producer_id_block_end: i64,
    /// Bumped on every change; also mixed into new topic ids.
    pub epoch: u64,
    pub topics: Vec<TopicMeta>,
    #[serde(default)]
    pub transactions: BTreeMap<String, TxnMeta>,
}

/// A transactional id's producer. `commit` is set from the moment a commit is decided until
/// its markers and offsets are durable, so a restart in between finishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<TxnCommit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommit {
    pub partitions: Vec<(String, i32)>,
    pub offsets: Vec<TxnOffset>,
    /// Where the transaction's data starts in each partition that holds some. A restart finds
    /// by these whether the decision is still in progress or outlived its transaction (a later
    /// one of the same producer and epoch may be open there).
    #[serde(default)]
    pub first_offsets: Vec<(String, i32, i64)>,
}

/// An offset committed as part of a transaction, applied to its group when the transaction commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaChange {
    CreateTopic(TopicMeta),
    DeleteTopic(String),
    SetPartitions { topic: String, count: i32 },
    SetConfigs { topic: String, configs: BTreeMap<String, String> },
    ProducerIdBlock { end: i64 },
    SetTransaction { id: String, meta: TxnMeta },
}

impl ClusterMeta {
    pub fn new(cluster_id: String, node_id: i32) -> Self {
        ClusterMeta {
            version: 1,
            cluster_id,
            node_id,
            producer_id_block_end: 0,
            epoch: 0,
            topics: Vec::new(),
            transactions: BTreeMap::new(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn apply(&mut self, change: &MetaChange) {
        self.epoch += 1;
        match change {
            MetaChange::CreateTopic(topic) => {
                self.topics.retain(|t| t.name != topic.name);
                self.topics.push(topic.clone());
                self.topics.sort_by(|a, b| a.name.cmp(&b.name));
            }
            MetaChange::DeleteTopic(name) => self.topics.retain(|t| &t.name != name),
            MetaChange::SetPartitions { topic, count } => {
                if let Some(t) = self.topics.iter_mut().find(|t| &t.name == topic) {
                    t.partitions = *count;
                }
            }
            MetaChange::SetConfigs { topic, configs } => {
                if let Some(t) = self.topics.iter_mut().find(|t| &t.name == topic) {
                    t.configs = configs.clone();
                }
            }
            MetaChange::ProducerIdBlock { end } => self.producer_id_block_end = self.producer_id_block_end.max(*end),
            MetaChange::SetTransaction { id, meta } => {
                self.transactions.insert(id.clone(), meta.clone());
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<ClusterMeta, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("cluster metadata is unreadable: {e}"))
    }

    /// A stable, unique-per-cluster topic id (no randomness in the core): a hash of the cluster
    /// id, the name and the metadata epoch at creation.
    pub fn new_topic_id(&self, name: &str) -> uuid::Uuid {
        let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
        for byte in self.cluster_id.bytes().chain([0]).chain(name.bytes()).chain([0]).chain(self.epoch.to_be_bytes()) {
            h ^= byte as u128;
            h = h.wrapping_mul(0x0000000001000000000000000000013B);
        }
        // Version 4 / variant bits so tools print it like any Kafka topic id.
        h = (h & !(0xF000u128 << 64)) | (0x4000u128 << 64);
        h = (h & !(0xC000u128 << 48)) | (0x8000u128 << 48);
        uuid::Uuid::from_u128(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_changes_apply() {
        let mut meta = ClusterMeta::new("c1".into(), 1);
        let id = meta.new_topic_id("t");
        meta.apply(&MetaChange::CreateTopic(TopicMeta {
            from_cluster: false,
            name: "t".into(),
            id: id.to_string(),
            partitions: 3,
            configs: BTreeMap::new(),
        }));
        meta.apply(&MetaChange::SetPartitions { topic: "t".into(), count: 5 });
        meta.apply(&MetaChange::ProducerIdBlock { end: 1000 });
        let back = ClusterMeta::decode(&meta.encode()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.topic("t").unwrap().partitions, 5);
        assert_ne!(meta.new_topic_id("t"), id, "a recreated topic gets a new id");
        assert!(ClusterMeta::decode(b"{").is_err());
    }
}

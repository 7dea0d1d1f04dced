//! The records of the metadata log: each is one decision of the controller, modelled on Kafka's
//! (`metadata/src/main/resources/common/metadata/*.json`). `kafka-protocol` does not carry these
//! schemas, and only Spool's nodes read this log, so a record is JSON inside a Kafka record's value.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::meta::TxnMeta;

/// A broker id, as Kafka's `node.id`.
pub type BrokerId = i32;

/// Kafka's "no leader" (-1).
pub const NO_LEADER: BrokerId = -1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// A change to one partition; a field left out stays as it is (Kafka's PartitionChangeRecord).
/// Every change bumps the partition epoch; a new leader bumps the leader epoch too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    pub topic_id: Uuid,
    pub partition: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<BrokerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isr: Option<Vec<BrokerId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_leader_replicas: Option<Vec<BrokerId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<BrokerId>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    Broker(BrokerId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker joins, or rejoins as a new incarnation; its broker epoch is this record's offset.
    RegisterBroker {
        broker_id: BrokerId,
        incarnation: Uuid,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    BrokerFenced {
        broker_id: BrokerId,
        fenced: bool,
    },
    BrokerControlledShutdown {
        broker_id: BrokerId,
    },
    UnregisterBroker {
        broker_id: BrokerId,
    },
    Topic {
        name: String,
        topic_id: Uuid,
    },
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    RemoveTopic {
        topic_id: Uuid,
    },
    /// Sets (`Some`) or removes (`None`) a config override.
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// Producer ids below `next_producer_id` are handed out.
    ProducerIds {
        next_producer_id: i64,
    },
    /// A transactional id's producer and decision in progress; `None` forgets it.
    Transaction {
        transactional_id: String,
        state: Option<TxnMeta>,
    },
    /// The cluster's id, written once, first.
    ClusterId {
        cluster_id: String,
    },
}

impl MetadataRecord {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a metadata record serializes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("metadata record: {e}"))
    }

    /// Records that must take effect together (a topic with its partitions), as one log entry:
    /// Raft commits or drops an entry whole, so no node ever sees half of them.
    pub fn encode_all(records: &[MetadataRecord]) -> Bytes {
        assert!(!records.is_empty(), "an entry holds at least one record");
        match records {
            [one] => one.encode(),
            many => Bytes::from(serde_json::to_vec(many).expect("metadata records serialize")),
        }
    }

    /// The records of one entry: a single record, or a list written by `encode_all`.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, String> {
        if bytes.first() == Some(&b'[') {
            let records: Vec<Self> = serde_json::from_slice(bytes).map_err(|e| format!("metadata records: {e}"))?;
            if records.is_empty() {
                return Err("an entry of no records".to_string());
            }
            return Ok(records);
        }
        Ok(vec![Self::decode(bytes)?])
    }
}

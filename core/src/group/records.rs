//! What the group coordinator persists in its internal log (`__consumer_offsets`): committed
//! offsets and group metadata, keyed so the latest record for a key is its current value and a
//! record without a value deletes it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Subscription metadata for the selected protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    Offset { group: String, topic: String, partition: i32, value: Option<Committed> },
    Group { group: String, value: Option<GroupSnapshot> },
}

const KEY_OFFSET: u8 = 1;
const KEY_GROUP: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take_str(buf: &mut &[u8]) -> Option<String> {
    let len = u16::from_be_bytes(buf.get(..2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(buf.get(2..2 + len)?).ok()?.to_string();
    *buf = &buf[2 + len..];
    Some(s)
}

impl GroupRecord {
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = Vec::new();
        match self {
            GroupRecord::Offset { group, topic, partition, value } => {
                key.push(KEY_OFFSET);
                put_str(&mut key, group);
                put_str(&mut key, topic);
                key.extend_from_slice(&partition.to_be_bytes());
                (Bytes::from(key), value.as_ref().map(|v| Bytes::from(serde_json::to_vec(v).expect("serializes"))))
            }
            GroupRecord::Group { group, value } => {
                key.push(KEY_GROUP);
                put_str(&mut key, group);
                (Bytes::from(key), value.as_ref().map(|v| Bytes::from(serde_json::to_vec(v).expect("serializes"))))
            }
        }
    }

    /// None for a record this version does not understand (it is skipped, not fatal).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<GroupRecord> {
        let (&kind, mut rest) = key.split_first()?;
        match kind {
            KEY_OFFSET => {
                let group = take_str(&mut rest)?;
                let topic = take_str(&mut rest)?;
                let partition = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
                let value = match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                };
                Some(GroupRecord::Offset { group, topic, partition, value })
            }
            KEY_GROUP => {
                let group = take_str(&mut rest)?;
                let value = match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                };
                Some(GroupRecord::Group { group, value })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_including_tombstones() {
        let records = [
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(Committed { offset: 42, leader_epoch: 0, metadata: Some("meta ü".into()), commit_ms: 7 }),
            },
            GroupRecord::Offset { group: "g".into(), topic: "t".into(), partition: 3, value: None },
            GroupRecord::Group { group: "g".into(), value: None },
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(GroupRecord::decode(&k, v.as_deref()), Some(r));
        }
        assert_eq!(GroupRecord::decode(&[9, 0], None), None);
    }
}

//! The transaction coordinator's state machine: per transactional id, its producer, the phase
//! of its transaction and what the transaction spans. It decides; the broker writes (metadata,
//! markers, offsets) and reports back. The producer id and epoch of each transactional id, and a
//! commit's decision while it is being carried out, are durable in the cluster metadata; the
//! partitions of an open transaction are not, so a restart aborts open transactions and fences
//! their producers (see `Broker::recover_transactions`).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use crate::meta::{TxnCommit, TxnMeta, TxnOffset};

/// Kafka's transaction.max.timeout.ms default: longer timeouts are refused.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No transaction open.
    Empty,
    Ongoing,
    /// Markers (and for a commit, offsets) are being written.
    Ending {
        commit: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Transaction {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub phase: Phase,
    /// How the last transaction ended, so a retried EndTxn gets the same answer.
    pub last_outcome: Option<bool>,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub offsets: BTreeMap<(String, String, i32), TxnOffset>,
    pub started_ms: i64,
}

impl Transaction {
    pub fn new(meta: &TxnMeta) -> Self {
        Transaction {
            producer_id: meta.producer_id,
            epoch: meta.epoch,
            timeout_ms: meta.timeout_ms,
            phase: Phase::Empty,
            last_outcome: None,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: 0,
        }
    }

    pub fn meta(&self, commit: Option<TxnCommit>) -> TxnMeta {
        TxnMeta { producer_id: self.producer_id, epoch: self.epoch, timeout_ms: self.timeout_ms, commit }
    }

    /// What a commit must make durable.
    pub fn commit_record(&self) -> TxnCommit {
        TxnCommit {
            partitions: self.partitions.iter().cloned().collect(),
            offsets: self.offsets.values().cloned().collect(),
            first_offsets: Vec::new(),
        }
    }

    fn begin_if_empty(&mut self, now_ms: i64) {
        if self.phase == Phase::Empty {
            self.phase = Phase::Ongoing;
            self.started_ms = now_ms;
            self.partitions.clear();
            self.groups.clear();
            self.offsets.clear();
        }
    }

    pub fn deadline(&self) -> Option<i64> {
        (self.phase == Phase::Ongoing).then(|| self.started_ms + self.timeout_ms as i64)
    }
}

/// What EndTxn should do.
#[derive(Debug, PartialEq, Eq)]
pub enum EndStep {
    /// Answer now with this error code (0: a retry of a transaction already ended this way).
    Answer(i16),
    /// Write the markers (after a commit's decision is durable), then answer.
    Finish { commit: bool },
}

#[derive(Default)]
pub struct Transactions {
    pub by_id: BTreeMap<String, Transaction>,
}

impl Transactions {
    pub fn from_meta(metas: &BTreeMap<String, TxnMeta>) -> Self {
        Transactions { by_id: metas.iter().map(|(id, m)| (id.clone(), Transaction::new(m))).collect() }
    }

    /// The transaction of this producer incarnation, or why a request of it is refused.
    pub fn producer(&mut self, id: &str, producer_id: i64, epoch: i16) -> Result<&mut Transaction, ResponseError> {
        let txn = self.by_id.get_mut(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        if txn.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if txn.epoch != epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(txn)
    }

    /// The producer's transaction, ready to take more partitions or groups (opened if need be).
    fn open(&mut self, id: &str, producer_id: i64, epoch: i16, now_ms: i64) -> Result<&mut Transaction, ResponseError> {
        let txn = self.producer(id, producer_id, epoch)?;
        if matches!(txn.phase, Phase::Ending { .. }) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        txn.begin_if_empty(now_ms);
        Ok(txn)
    }

    /// AddPartitionsToTxn.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        self.open(id, producer_id, epoch, now_ms)?.partitions.extend(partitions.iter().cloned());
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets may now be committed in the transaction.
    pub fn add_group(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        self.open(id, producer_id, epoch, now_ms)?.groups.insert(group.to_string());
        Ok(())
    }

    /// TxnOffsetCommit: offsets held until the transaction commits.
    pub fn add_offsets(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<TxnOffset>,
    ) -> Result<(), ResponseError> {
        let txn = self.producer(id, producer_id, epoch)?;
        if txn.phase != Phase::Ongoing || offsets.iter().any(|o| !txn.groups.contains(&o.group)) {
            return Err(ResponseError::InvalidTxnState);
        }
        for o in offsets {
            txn.offsets.insert((o.group.clone(), o.topic.clone(), o.partition), o);
        }
        Ok(())
    }

    /// EndTxn: what to do for a commit (`commit`) or an abort.
    pub fn end(&mut self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<EndStep, ResponseError> {
        let txn = self.producer(id, producer_id, epoch)?;
        match txn.phase {
            Phase::Ongoing => {
                txn.phase = Phase::Ending { commit };
                Ok(EndStep::Finish { commit })
            }
            Phase::Ending { .. } => Err(ResponseError::ConcurrentTransactions),
            Phase::Empty if txn.last_outcome == Some(commit) => Ok(EndStep::Answer(0)),
            Phase::Empty => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Starts aborting the transaction with a bumped epoch, fencing the producer that let it
    /// time out or that a new incarnation replaces. Returns the new producer metadata.
    pub fn abort_fencing(&mut self, id: &str) -> Option<TxnMeta> {
        let txn = self.by_id.get_mut(id)?;
        if txn.phase != Phase::Ongoing {
            return None;
        }
        txn.epoch = txn.epoch.checked_add(1).filter(|e| *e < i16::MAX)?;
        txn.phase = Phase::Ending { commit: false };
        Some(txn.meta(None))
    }

    /// The markers are durable (and a commit's offsets written): the transaction is over.
    pub fn ended(&mut self, id: &str) -> Option<TxnMeta> {
        let txn = self.by_id.get_mut(id)?;
        let Phase::Ending { commit } = txn.phase else {
            return None;
        };
        txn.phase = Phase::Empty;
        txn.last_outcome = Some(commit);
        txn.partitions.clear();
        txn.groups.clear();
        txn.offsets.clear();
        Some(txn.meta(None))
    }

    /// Open transactions past their timeout.
    pub fn expired(&self, now_ms: i64) -> Vec<String> {
        self.by_id.iter().filter(|(_, t)| t.deadline().is_some_and(|d| d <= now_ms)).map(|(id, _)| id.clone()).collect()
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.by_id.values().filter_map(Transaction::deadline).min()
    }

    /// Whether a transactional batch of this producer may go to this partition: its
    /// transaction is open and the partition was added to it.
    pub fn admits(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let txn = self.by_id.get(id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        if txn.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < txn.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if txn.epoch != epoch
            || txn.phase != Phase::Ongoing
            || !txn.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    pub fn by_producer(&self, producer_id: i64) -> Option<&str> {
        self.by_id.iter().find(|(_, t)| t.producer_id == producer_id).map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Transactions {
        let meta = TxnMeta { producer_id: 7, epoch: 3, timeout_ms: 1000, commit: None };
        Transactions::from_meta(&[("t".to_string(), meta)].into_iter().collect())
    }

    #[test]
    fn a_transaction_opens_admits_its_partitions_and_ends_once() {
        let mut txns = one();
        assert_eq!(txns.admits("t", 7, 3, "a", 0), Err(ResponseError::InvalidTxnState), "nothing open yet");
        txns.add_partitions("t", 7, 3, &[("a".into(), 0)], 100).unwrap();
        assert_eq!(txns.admits("t", 7, 3, "a", 0), Ok(()));
        assert_eq!(txns.admits("t", 7, 3, "a", 1), Err(ResponseError::InvalidTxnState), "not added");
        assert_eq!(txns.admits("t", 7, 2, "a", 0), Err(ResponseError::InvalidProducerEpoch));
        assert_eq!(txns.admits("t", 8, 3, "a", 0), Err(ResponseError::InvalidProducerIdMapping));
        assert_eq!(txns.next_deadline(), Some(1100));
        assert_eq!(txns.end("t", 7, 3, true), Ok(EndStep::Finish { commit: true }));
        assert_eq!(txns.end("t", 7, 3, true), Err(ResponseError::ConcurrentTransactions), "markers in flight");
        assert_eq!(txns.add_partitions("t", 7, 3, &[("a".into(), 1)], 200), Err(ResponseError::ConcurrentTransactions));
        assert!(txns.ended("t").is_some());
        assert_eq!(txns.end("t", 7, 3, true), Ok(EndStep::Answer(0)), "a retried commit");
        assert_eq!(txns.end("t", 7, 3, false), Err(ResponseError::InvalidTxnState), "abort after commit");
        assert_eq!(txns.next_deadline(), None);
    }

    #[test]
    fn a_timed_out_transaction_aborts_with_a_bumped_epoch() {
        let mut txns = one();
        txns.add_partitions("t", 7, 3, &[("a".into(), 0)], 0).unwrap();
        assert!(txns.expired(999).is_empty());
        assert_eq!(txns.expired(1000), vec!["t".to_string()]);
        let meta = txns.abort_fencing("t").unwrap();
        assert_eq!(meta.epoch, 4);
        assert_eq!(txns.end("t", 7, 3, true), Err(ResponseError::InvalidProducerEpoch), "the old producer is fenced");
        assert!(txns.ended("t").is_some());
        assert_eq!(txns.by_id["t"].last_outcome, Some(false));
    }

    #[test]
    fn offsets_need_their_group_added_first() {
        let mut txns = one();
        let offset = TxnOffset {
            group: "g".into(),
            topic: "a".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: None,
        };
        txns.add_partitions("t", 7, 3, &[("a".into(), 0)], 0).unwrap();
        assert_eq!(txns.add_offsets("t", 7, 3, vec![offset.clone()]), Err(ResponseError::InvalidTxnState));
        txns.add_group("t", 7, 3, "g", 0).unwrap();
        txns.add_offsets("t", 7, 3, vec![offset.clone()]).unwrap();
        assert_eq!(txns.by_id["t"].commit_record().offsets, vec![offset]);
    }
}

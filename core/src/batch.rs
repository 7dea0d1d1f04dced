//! RecordBatch v2 (magic 2) header access and validation. Records stay opaque bytes: the broker
//! validates the header and CRC, rewrites baseOffset and partitionLeaderEpoch in place (not
//! CRC-covered), and never re-encodes records.

use bytes::{Bytes, BytesMut};

pub const BASE_OFFSET: usize = 0;
pub const BATCH_LENGTH: usize = 8;
pub const PARTITION_LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORDS_COUNT: usize = 57;
/// Size of the batch header up to the first record.
pub const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub const LOG_OVERHEAD: usize = 12;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused. Each maps to a Kafka error code in the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, a length that disagrees with the buffer, or a bad count.
    Malformed(&'static str),
    UnsupportedMagic(i8),
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Malformed(why) => write!(f, "malformed record batch: {why}"),
            BatchError::UnsupportedMagic(m) => write!(f, "unsupported record batch magic {m}"),
            BatchError::CrcMismatch { stored, computed } => {
                write!(f, "record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A read-only view of one whole, length-checked batch. Constructed only by [`Batch::parse`] or
/// [`Batch::validate`], so every accessor can index without bounds worries.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Total size of the batch starting at `buf[0]`, from its header, if the header is present.
    pub fn total_len(buf: &[u8]) -> Option<usize> {
        if buf.len() < LOG_OVERHEAD {
            return None;
        }
        let declared = i32_at(buf, BATCH_LENGTH);
        if declared < 0 {
            return None;
        }
        Some(LOG_OVERHEAD + declared as usize)
    }

    /// Takes the first batch of `buf` after checking its framing (not its CRC).
    pub fn parse(buf: &'a [u8]) -> Result<Batch<'a>, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Malformed("shorter than a batch header"));
        }
        let total = Batch::total_len(buf).ok_or(BatchError::Malformed("negative batch length"))?;
        if total < HEADER_LEN {
            return Err(BatchError::Malformed("batch length below header size"));
        }
        if total > buf.len() {
            return Err(BatchError::Malformed("batch length runs past the end of the data"));
        }
        let magic = buf[MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let batch = Batch { bytes: &buf[..total] };
        if batch.records_count() < 0 || batch.last_offset_delta() < 0 {
            return Err(BatchError::Malformed("negative record count or offset delta"));
        }
        Ok(batch)
    }

    /// [`Batch::parse`] plus the CRC-32C over bytes 21..end.
    pub fn validate(buf: &'a [u8]) -> Result<Batch<'a>, BatchError> {
        let batch = Batch::parse(buf)?;
        let computed = batch.compute_crc();
        if computed != batch.stored_crc() {
            return Err(BatchError::CrcMismatch { stored: batch.stored_crc(), computed });
        }
        Ok(batch)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(self.bytes, BASE_OFFSET)
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.bytes, LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.bytes, PARTITION_LEADER_EPOCH)
    }
    pub fn stored_crc(&self) -> u32 {
        i32_at(self.bytes, CRC) as u32
    }
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }
    pub fn attributes(&self) -> i16 {
        i16_at(self.bytes, ATTRIBUTES)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & ATTR_COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_LOG_APPEND_TIME != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.bytes, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.bytes, MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.bytes, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16_at(self.bytes, PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.bytes, BASE_SEQUENCE)
    }
    pub fn records_count(&self) -> i32 {
        i32_at(self.bytes, RECORDS_COUNT)
    }
    /// Sequence of the last record, wrapping at i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        let base = self.base_sequence();
        if base < 0 {
            return base;
        }
        let last = base as i64 + self.last_offset_delta() as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
    pub fn records(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }
    /// The type of a control batch's record (0 ABORT, 1 COMMIT, ...); None for other batches or
    /// a control record that does not parse.
    pub fn control_type(&self) -> Option<i16> {
        if !self.is_control() || self.compression() != 0 {
            return None;
        }
        // length, attributes (1 byte), timestampDelta, offsetDelta, keyLength, key.
        let mut at = 0usize;
        let records = self.records();
        read_varint(records, &mut at)?;
        at += 1;
        read_varint(records, &mut at)?;
        read_varint(records, &mut at)?;
        let key_len = read_varint(records, &mut at)?;
        if key_len < 4 {
            return None;
        }
        let key = records.get(at..at + 4)?;
        Some(i16::from_be_bytes([key[2], key[3]]))
    }
}

/// A zigzag varint as records use it.
pub(crate) fn read_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// A transaction marker: a control batch of one COMMIT (`commit`) or ABORT record for the
/// producer's transaction, as the coordinator writes it into each partition of the transaction.
pub fn transaction_marker(producer_id: i64, producer_epoch: i16, commit: bool, now_ms: i64) -> Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let kind: i16 = if commit { 1 } else { 0 };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    // EndTxnMarker value: version 0, coordinator epoch (one coordinator here, epoch 0).
    let value = [0u8; 6];
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::copy_from_slice(&value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("a marker encodes");
    buf.freeze()
}

/// Iterates the whole batches at the front of `buf`, stopping at the first byte range that is not a
/// whole, valid batch. Yields `(position, batch)`.
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    check_crc: bool,
    stop: Option<BatchError>,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8], check_crc: bool) -> Self {
        Batches { buf, position: 0, check_crc, stop: None }
    }
    /// Bytes consumed by whole batches so far.
    pub fn position(&self) -> usize {
        self.position
    }
    /// Why iteration stopped early, if it stopped on something other than the end of the data or
    /// a partial trailing batch.
    pub fn stop_reason(&self) -> Option<&BatchError> {
        self.stop.as_ref()
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = (usize, Batch<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.position..];
        if rest.is_empty() || self.stop.is_some() {
            return None;
        }
        // A partial trailing batch (declared length past the end) is simply the end.
        match Batch::total_len(rest) {
            Some(total) if total > rest.len() && total >= HEADER_LEN => return None,
            None if rest.len() < LOG_OVERHEAD => return None,
            _ => {}
        }
        let parsed = if self.check_crc { Batch::validate(rest) } else { Batch::parse(rest) };
        match parsed {
            Ok(batch) => {
                let at = self.position;
                self.position += batch.len();
                Some((at, batch))
            }
            Err(e) => {
                self.stop = Some(e);
                None
            }
        }
    }
}

/// Rewrites the fields the leader owns: baseOffset and partitionLeaderEpoch, which the CRC does not
/// cover, so the stored CRC stays valid.
pub fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(batch.len() >= HEADER_LEN, "stamp needs a whole batch header");
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// For LogAppendTime topics: sets the timestamp type bit and maxTimestamp, which the CRC covers,
/// so the CRC is recomputed.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(batch.len() >= HEADER_LEN, "set_log_append_time needs a whole batch header");
    let attributes = i16_at(batch, ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a produce payload into owned, validated batches. Kafka clients send one batch per
/// partition; more are accepted as long as each is whole and valid.
pub fn split_produce_records(records: &Bytes) -> Result<Vec<BytesMut>, BatchError> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let batch = Batch::validate(&records[position..])?;
        out.push(BytesMut::from(batch.bytes()));
        position += batch.len();
    }
    if out.is_empty() {
        return Err(BatchError::Malformed("no record batch in produce data"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_batches {
    //! Builds real batches with the kafka-protocol encoder, the same bytes clients send.
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    pub fn batch_with(
        count: usize,
        producer: Option<(i64, i16, i32)>,
        compression: Compression,
        timestamp: i64,
    ) -> Bytes {
        let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder batches records whose offset - sequence is constant.
                sequence: base_sequence + i as i32,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
        buf.freeze()
    }

    pub fn batch(count: usize) -> Bytes {
        batch_with(count, None, Compression::None, 1_700_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::test_batches::batch;
    use super::*;

    #[test]
    fn a_client_batch_validates_and_survives_stamping() {
        let bytes = batch(3);
        let parsed = Batch::validate(&bytes).expect("valid");
        assert_eq!(parsed.records_count(), 3);
        assert_eq!(parsed.last_offset_delta(), 2);
        let mut owned = bytes.to_vec();
        stamp(&mut owned, 41, 7);
        let stamped = Batch::validate(&owned).expect("stamping keeps the CRC valid");
        assert_eq!(stamped.base_offset(), 41);
        assert_eq!(stamped.last_offset(), 43);
        assert_eq!(stamped.partition_leader_epoch(), 7);
    }

    #[test]
    fn a_flipped_bit_in_the_crc_range_is_a_crc_mismatch() {
        let mut owned = batch(2).to_vec();
        let last = owned.len() - 1;
        owned[last] ^= 0x01;
        assert!(matches!(Batch::validate(&owned), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn wrong_magic_and_bad_lengths_are_refused() {
        let mut owned = batch(1).to_vec();
        owned[MAGIC] = 1;
        assert_eq!(Batch::validate(&owned).unwrap_err(), BatchError::UnsupportedMagic(1));
        let owned = batch(1).to_vec();
        assert!(matches!(Batch::validate(&owned[..owned.len() - 1]), Err(BatchError::Malformed(_))));
        let mut long = batch(1).to_vec();
        long[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(Batch::validate(&long), Err(BatchError::Malformed(_))));
    }

    #[test]
    fn log_append_time_rewrites_max_timestamp_with_a_fresh_crc() {
        let mut owned = batch(2).to_vec();
        set_log_append_time(&mut owned, 99);
        let parsed = Batch::validate(&owned).expect("CRC recomputed");
        assert!(parsed.is_log_append_time());
        assert_eq!(parsed.max_timestamp(), 99);
    }

    #[test]
    fn batches_iterator_stops_at_a_partial_tail() {
        let mut log = Vec::new();
        for n in 1..=3 {
            log.extend_from_slice(&batch(n));
        }
        let whole = log.len();
        log.extend_from_slice(&batch(2)[..20]);
        let mut it = Batches::new(&log, true);
        assert_eq!(it.by_ref().count(), 3);
        assert_eq!(it.position(), whole);
        assert!(it.stop_reason().is_none());
    }
}

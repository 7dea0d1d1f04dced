//! The records inside a v2 batch, walked without trusting any declared length or count, and
//! decompressed with a bound. Client batches are checked here before they are appended (Kafka's
//! `LogValidator` for `AppendOrigin.CLIENT`), so nothing stored can make a reader allocate by a
//! forged count or a compression bomb.

use std::borrow::Cow;
use std::io::Read;

use crate::batch::{Batch, BatchError};

/// The largest a batch may grow when decompressed. A compressed batch that expands past this is
/// refused as a client's, and read back at batch granularity as a stored one.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

const CODEC_NONE: i16 = 0;
const CODEC_GZIP: i16 = 1;
const CODEC_SNAPPY: i16 = 2;
const CODEC_LZ4: i16 = 3;
const CODEC_ZSTD: i16 = 4;

/// One record's fields that readers need; key and value borrow from the records area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

fn varlong(buf: &[u8], at: &mut usize) -> Result<i64, &'static str> {
    crate::batch::read_varint(buf, at).ok_or("record ends inside a varint, or one is longer than 10 bytes")
}

fn varint(buf: &[u8], at: &mut usize) -> Result<i32, &'static str> {
    i32::try_from(varlong(buf, at)?).map_err(|_| "varint out of 32-bit range")
}

/// A length-prefixed field: -1 is null when `nullable`, any other length must fit in `buf`.
fn sized<'a>(buf: &'a [u8], at: &mut usize, nullable: bool) -> Result<Option<&'a [u8]>, &'static str> {
    let len = varint(buf, at)?;
    if len == -1 && nullable {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    let end = at.checked_add(len).filter(|end| *end <= buf.len()).ok_or("length runs past the record")?;
    let field = &buf[*at..end];
    *at = end;
    Ok(Some(field))
}

fn record(buf: &[u8]) -> Result<RecordView<'_>, &'static str> {
    let mut at = 0;
    buf.first().ok_or("record has no attributes")?;
    at += 1;
    let timestamp_delta = varlong(buf, &mut at)?;
    let offset_delta = varint(buf, &mut at)?;
    let key = sized(buf, &mut at, true)?;
    let value = sized(buf, &mut at, true)?;
    let headers = varint(buf, &mut at)?;
    // Each header takes at least two bytes: no count can exceed what is left.
    if headers < 0 || headers as usize > buf.len() - at {
        return Err("header count out of range");
    }
    for _ in 0..headers {
        sized(buf, &mut at, false)?;
        sized(buf, &mut at, true)?;
    }
    if at != buf.len() {
        return Err("record length disagrees with its fields");
    }
    Ok(RecordView { offset_delta, timestamp_delta, key, value })
}

/// Visits the `count` records of an uncompressed records area in order. Fails on the first
/// malformed record, on fewer or more records than `count`, or on bytes left over.
pub fn for_each_record<'a>(
    records: &'a [u8],
    count: i32,
    mut visit: impl FnMut(RecordView<'a>),
) -> Result<(), &'static str> {
    let mut at = 0;
    let count = usize::try_from(count).map_err(|_| "negative record count")?;
    // A record takes at least seven bytes: no count can exceed what the area holds.
    if count > records.len() {
        return Err("record count exceeds the batch");
    }
    for _ in 0..count {
        let len = varint(records, &mut at)?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let end = at.checked_add(len).filter(|end| *end <= records.len()).ok_or("record runs past the batch")?;
        visit(record(&records[at..end])?);
        at = end;
    }
    if at != records.len() {
        return Err("bytes after the last record");
    }
    Ok(())
}

/// The records area of `batch`, decompressed, refusing to grow past `limit` bytes. An
/// uncompressed area is borrowed, not copied.
pub fn decompressed<'a>(batch: &Batch<'a>, limit: usize) -> Result<Cow<'a, [u8]>, String> {
    let data = batch.records();
    let mut out = Vec::new();
    let bounded = |reader: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), String> {
        reader.take(limit as u64 + 1).read_to_end(out).map_err(|e| format!("cannot decompress: {e}"))?;
        if out.len() > limit {
            return Err(format!("decompresses to more than {limit} bytes"));
        }
        Ok(())
    };
    match batch.compression() {
        CODEC_NONE => return Ok(Cow::Borrowed(data)),
        CODEC_GZIP => bounded(&mut flate2::read::GzDecoder::new(data), &mut out)?,
        CODEC_SNAPPY => snappy(data, limit, &mut out)?,
        CODEC_LZ4 => {
            let mut decoder = lz4::Decoder::new(data).map_err(|e| format!("cannot decompress: {e}"))?;
            bounded(&mut decoder, &mut out)?
        }
        CODEC_ZSTD => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(|e| format!("cannot decompress: {e}"))?;
            bounded(&mut decoder, &mut out)?
        }
        other => return Err(format!("unknown compression codec {other}")),
    }
    Ok(Cow::Owned(out))
}

/// Kafka's snappy: xerial framing (a magic header, then length-prefixed blocks) or, as the Java
/// client also accepts, one raw block.
fn snappy(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), String> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_LEN: usize = 16;
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| format!("bad snappy block: {e}"))?;
        if out.len().saturating_add(len) > limit {
            return Err(format!("decompresses to more than {limit} bytes"));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[start..])
            .map_err(|e| format!("bad snappy block: {e}"))?;
        Ok(())
    };
    if !data.starts_with(XERIAL_MAGIC) {
        return block(data, out);
    }
    let mut at = XERIAL_HEADER_LEN.min(data.len());
    while at < data.len() {
        let len_bytes = data.get(at..at + 4).ok_or("snappy block length cut short")?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        at += 4;
        let end = at.checked_add(len).filter(|end| *end <= data.len()).ok_or("snappy block runs past the batch")?;
        block(&data[at..end], out)?;
        at = end;
    }
    Ok(())
}

/// Why a client's batch is refused: Kafka's CORRUPT_MESSAGE for bytes that do not frame or
/// checksum, INVALID_RECORD for a well-formed batch that breaks the rules for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBatchError {
    Corrupt(BatchError),
    Invalid(String),
}

/// Kafka's checks on batches a client produces: no control batches (markers are the
/// coordinator's), a record count that matches the offset range, consecutive offset deltas and
/// records that parse whole, compressed ones included.
///
/// The CRC is left to the append, which checks it anyway; it is computed here only for a batch
/// that breaks a rule, since a batch that fails its CRC is corrupt whatever else is wrong.
pub fn check_client_batches(records: &[u8]) -> Result<(), ClientBatchError> {
    let mut position = 0;
    while position < records.len() {
        let batch = Batch::parse(&records[position..]).map_err(ClientBatchError::Corrupt)?;
        position += batch.len();
        if let Err(why) = check_client_batch(&batch) {
            Batch::validate(batch.bytes()).map_err(ClientBatchError::Corrupt)?;
            return Err(ClientBatchError::Invalid(why));
        }
    }
    Ok(())
}

fn check_client_batch(batch: &Batch<'_>) -> Result<(), String> {
    if batch.is_control() {
        return Err("clients are not allowed to write control records".into());
    }
    let count = batch.records_count();
    if count <= 0 || count as i64 != batch.last_offset_delta() as i64 + 1 {
        return Err(format!(
            "record count {count} does not match the batch's offset range of {} offsets",
            batch.last_offset_delta() as i64 + 1
        ));
    }
    let area = decompressed(batch, MAX_DECOMPRESSED_BATCH_BYTES)?;
    let mut expected = 0i32;
    let mut out_of_order = false;
    for_each_record(&area, count, |r| {
        out_of_order |= r.offset_delta != expected;
        expected = expected.wrapping_add(1);
    })
    .map_err(|e| format!("malformed record: {e}"))?;
    if out_of_order {
        return Err("record offset deltas are not consecutive from 0".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::test_batches::batch_with;
    use kafka_protocol::records::Compression;

    fn offsets_and_values(bytes: &[u8]) -> Vec<(i32, String)> {
        let batch = Batch::validate(bytes).unwrap();
        let area = decompressed(&batch, MAX_DECOMPRESSED_BATCH_BYTES).unwrap();
        let mut seen = Vec::new();
        for_each_record(&area, batch.records_count(), |r| {
            seen.push((r.offset_delta, String::from_utf8(r.value.unwrap().to_vec()).unwrap()))
        })
        .unwrap();
        seen
    }

    #[test]
    fn every_codec_the_clients_use_walks_to_the_same_records() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let bytes = batch_with(3, None, compression, 1_700_000_000_000);
            assert_eq!(
                offsets_and_values(&bytes),
                [(0, "value-0".to_string()), (1, "value-1".into()), (2, "value-2".into())],
                "{compression:?}"
            );
            assert_eq!(check_client_batches(&bytes), Ok(()), "{compression:?}");
        }
    }

    /// Re-signs a batch after editing it, as an attacker with a CRC routine would.
    fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&bytes[crate::batch::ATTRIBUTES..]);
        bytes[crate::batch::CRC..crate::batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn a_forged_header_count_is_refused_without_allocating_for_it() {
        let bytes = batch_with(1, None, Compression::None, 0).to_vec();
        // The only record ends with its header count (0): make it the largest varint.
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        assert_eq!(forged[last], 0);
        forged.truncate(last);
        forged.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let grown = (forged.len() - bytes.len()) as i32;
        let length_at = crate::batch::HEADER_LEN;
        assert!(forged[length_at] < 0x40, "a one-byte record length");
        forged[length_at] += 2 * grown as u8;
        let total = i32::from_be_bytes(forged[8..12].try_into().unwrap()) + grown;
        forged[8..12].copy_from_slice(&total.to_be_bytes());
        let forged = resign(forged);
        let err = check_client_batches(&forged).unwrap_err();
        assert_eq!(err, ClientBatchError::Invalid("malformed record: header count out of range".into()));
    }

    #[test]
    fn control_batches_and_count_mismatches_are_client_errors() {
        let bytes = batch_with(2, None, Compression::None, 0).to_vec();
        let mut control = bytes.clone();
        control[crate::batch::ATTRIBUTES + 1] |= 0x20;
        assert!(
            matches!(check_client_batches(&resign(control)), Err(ClientBatchError::Invalid(m)) if m.contains("control"))
        );
        let mut count = bytes.clone();
        count[crate::batch::RECORDS_COUNT + 3] = 9;
        assert!(
            matches!(check_client_batches(&resign(count)), Err(ClientBatchError::Invalid(m)) if m.contains("count"))
        );
        // A CRC failure is never an INVALID_RECORD: corrupt when the bytes also break a rule,
        // otherwise left to the append (which answers CORRUPT_MESSAGE).
        let mut crc = bytes.clone();
        crc[crate::batch::HEADER_LEN + 3] ^= 1;
        assert!(!matches!(check_client_batches(&crc), Err(ClientBatchError::Invalid(_))));
        let mut both = bytes;
        both[crate::batch::RECORDS_COUNT + 3] = 9;
        assert!(matches!(check_client_batches(&both), Err(ClientBatchError::Corrupt(_))));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let bytes = batch_with(1, None, Compression::Gzip, 0);
        let batch = Batch::validate(&bytes).unwrap();
        let err = decompressed(&batch, 10).unwrap_err();
        assert!(err.contains("more than 10 bytes"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_record_areas_are_errors_not_panics() {
        let bytes = batch_with(3, None, Compression::None, 0);
        let batch = Batch::validate(&bytes).unwrap();
        let area = batch.records();
        for cut in 0..area.len() {
            assert!(for_each_record(&area[..cut], 3, |_| {}).is_err(), "cut at {cut}");
        }
        for seed in 0..2000u32 {
            let garbage: Vec<u8> = (0..40).map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) >> 3) as u8).collect();
            let _ = for_each_record(&garbage, (seed % 50) as i32, |_| {});
        }
    }
}

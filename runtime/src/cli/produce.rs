//! `spool produce TOPIC`: one record per line (stdin or `--message`), sent as each line is entered,
//! keyed with `--key-separator`, partitioned like Kafka's default partitioner (murmur2 of the key),
//! acknowledged by all replicas.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use tokio::sync::mpsc;

use super::{call, connect, topic::parse_configs, Client, Stop};

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in chunks.by_ref() {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

const BATCH_LINES: usize = 1000;

/// Reads lines on a thread of their own (a terminal blocks), so each line can be sent as soon as
/// it is entered. With `prompt`, shows Kafka's console-producer prompt `>` before each line.
pub fn read_lines(input: Box<dyn BufRead + Send>, prompt: bool) -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(BATCH_LINES);
    std::thread::spawn(move || {
        let mut input = input;
        loop {
            if prompt {
                eprint!(">");
            }
            let mut line = String::new();
            let read = input.read_line(&mut line);
            let line = match read {
                Ok(0) => return,
                Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => Err(e),
            };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends every line as a record as soon as it arrives (the lines that arrive together go in one
/// request), until the input ends or a stop is requested. Returns how many records were sent.
pub async fn run(
    bootstrap: &str,
    topic: &str,
    key_separator: Option<&str>,
    headers: &[String],
    mut lines: mpsc::Receiver<std::io::Result<String>>,
    clock: fn() -> i64,
    mut stop: Stop,
) -> Result<usize> {
    let headers: IndexMap<StrBytes, Option<Bytes>> =
        parse_configs(headers)?.into_iter().map(|(k, v)| (StrBytes::from_string(k), Some(Bytes::from(v)))).collect();
    let mut client = connect(bootstrap).await?;
    let partitions = super::consume::partition_count(&mut client, topic, true).await?;
    let mut unkeyed = 0i32;
    let mut sent = 0usize;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait() => None,
            line = lines.recv() => line,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first?];
        while batch.len() < BATCH_LINES {
            match lines.try_recv() {
                Ok(line) => batch.push(line?),
                Err(_) => break,
            }
        }
        let now_ms = clock();
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for line in &batch {
            let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line.clone()),
            };
            let partition = match &key {
                Some(k) => partition_for(k, partitions),
                None => {
                    unkeyed = (unkeyed + 1) % partitions;
                    unkeyed
                }
            };
            let records = by_partition.entry(partition).or_default();
            let offset = records.len() as i64;
            records.push(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: -1 + offset as i32,
                timestamp: now_ms,
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
            });
        }
        produce(&mut client, topic, &by_partition).await?;
        sent += batch.len();
    }
    Ok(sent)
}

async fn produce(client: &mut Client, topic: &str, by_partition: &BTreeMap<i32, Vec<Record>>) -> Result<()> {
    let data = by_partition
        .iter()
        .map(|(p, records)| {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                records,
                &RecordEncodeOptions { version: 2, compression: Compression::None },
            )
            .expect("records encode");
            produce_request::PartitionProduceData::default().with_index(*p).with_records(Some(buf.freeze()))
        })
        .collect();
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(data),
    ]);
    let ResponseKind::Produce(r) = call(client, 7, request).await? else { bail!("unexpected answer to Produce") };
    for p in r.responses.iter().flat_map(|t| t.partition_responses.iter()) {
        if p.error_code != 0 {
            bail!(
                "producing to {topic}-{} failed: {}",
                p.index,
                super::error_text(p.error_code, p.error_message.as_deref())
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}

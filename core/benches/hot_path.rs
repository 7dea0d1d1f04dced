//! Hot-path micro-benchmarks: batch validation and CRC, append with offset assignment, trimming
//! fetched bytes, and request decode / response encode. `cargo bench -p spool-core`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use spool_core::batch::Batch;
use spool_core::codec;
use spool_core::config::{Durability, TopicConfig};
use spool_core::ops::Ops;
use spool_core::partition::{trim_fetched, PartitionLog};
use spool_core::records;
use spool_core::storage::TopicPartition;

fn batch(records: usize, value_len: usize) -> Bytes {
    batch_compressed(records, value_len, Compression::None)
}

fn batch_compressed(records: usize, value_len: usize, compression: Compression) -> Bytes {
    let value = Bytes::from(vec![b'x'; value_len]);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.freeze()
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for (records, size) in [(1, 1024), (16, 1024), (160, 100)] {
        let b = batch(records, size);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("{records}x{size}B"), |bench| {
            bench.iter(|| Batch::validate(&b).unwrap().records_count())
        });
    }
    // What a produced batch costs beyond its CRC: Kafka's client-batch checks, records walked
    // (and decompressed when compressed).
    for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4), ("zstd", Compression::Zstd)] {
        let b = batch_compressed(16, 1024, compression);
        g.throughput(Throughput::Bytes(16 * 1024));
        g.bench_function(format!("client_checks_16x1KB_{name}"), |bench| {
            bench.iter(|| records::check_client_batches(&b).is_ok())
        });
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let b = batch(16, 1024);
    g.throughput(Throughput::Bytes(64 * b.len() as u64));
    g.bench_function("64_batches_of_16x1KB", |bench| {
        bench.iter_batched(
            || (PartitionLog::create(TopicPartition::new("t", 0), TopicConfig::default(), 0), Ops::default()),
            |(mut log, mut ops)| {
                for _ in 0..64 {
                    log.append(&b, 0, Durability::Fsync, &mut ops).unwrap();
                }
                while ops.pop().is_some() {}
                log.log_end_offset()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn trim(c: &mut Criterion) {
    let mut g = c.benchmark_group("fetch_trim");
    let mut log = BytesMut::new();
    for i in 0..64 {
        let mut b = batch(16, 1024).to_vec();
        spool_core::batch::stamp(&mut b, i * 16, 0);
        log.extend_from_slice(&b);
    }
    let log = log.freeze();
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.bench_function("1MB_from_the_middle", |bench| bench.iter(|| trim_fetched(&log, 16 * 32, 1 << 20).unwrap().len()));
    g.finish();
}

fn codec_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let records = batch(16, 1024);
    let produce =
        ProduceRequest::default().with_acks(-1).with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_records(Some(records.clone()))
            ])]);
    let header = RequestHeader::default().with_request_api_key(0).with_request_api_version(9).with_correlation_id(1);
    let frame = codec::encode_request(&header, &produce.into()).unwrap().slice(4..);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode_produce_16KB", |bench| bench.iter(|| codec::decode_request(frame.clone()).ok().is_some()));
    let mut big = BytesMut::new();
    for _ in 0..64 {
        big.extend_from_slice(&records);
    }
    let fetch = ResponseKind::Fetch(FetchResponse::default().with_responses(
        vec![fetch_response::FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")))
        .with_partitions(vec![fetch_response::PartitionData::default().with_records(Some(big.freeze()))])],
    ));
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("encode_fetch_1MB", |bench| bench.iter(|| codec::encode_response(1, 12, &fetch).unwrap().len()));
    g.finish();
}

criterion_group!(benches, validate, append, trim, codec_paths);
criterion_main!(benches);

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    fetch_request, join_group_request, produce_request, ApiKey, FetchRequest, JoinGroupRequest, ProduceRequest,
    RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use proptest::prelude::*;
use proptest::test_runner::Config;

use super::sample::{build, put_length, Rng};
use super::*;
use crate::api_versions::{CONTROLLER_APIS, SERVED_APIS};
use crate::codec::{decode_request, encode_request, DecodeFailure};

/// The frame of the bug report: size prefix, Metadata v1, correlation 5, client "fuzz", then a
/// topic array of 0x7fffffff entries and nothing else.
const BOMB: &[u8] = b"\x00\x00\x00\x12\x00\x03\x00\x01\x00\x00\x00\x05\x00\x04fuzz\x7f\xff\xff\xff";

#[test]
fn the_reported_frame_is_refused_before_the_crate_decodes_it() {
    assert_eq!(BOMB.len(), 22);
    let mut frame = Bytes::from_static(&BOMB[4..]);
    let header = RequestHeader::decode(&mut frame, ApiKey::Metadata.request_header_version(1)).unwrap();
    assert_eq!((header.request_api_key, header.request_api_version, header.correlation_id), (3, 1, 5));
    let reason = check_request_body(ApiKey::Metadata, 1, &frame).unwrap_err();
    assert!(reason.contains("MetadataRequest.topics"), "{reason}");

    let Err(DecodeFailure::Close(reason)) = decode_request(Bytes::from_static(&BOMB[4..])) else {
        panic!("the codec accepted the frame");
    };
    assert!(reason.starts_with("bad Metadata v1 request body: MetadataRequest.topics"), "{reason}");
}

#[test]
fn null_is_accepted_only_where_the_crate_accepts_it() {
    // Metadata v1: topics is nullable (all topics).
    assert_eq!(check_request_body(ApiKey::Metadata, 1, &(-1i32).to_be_bytes()), Ok(()));
    // DeleteGroups v0: groups_names is not.
    assert!(check_request_body(ApiKey::DeleteGroups, 0, &(-1i32).to_be_bytes()).is_err());
    assert!(check_request_body(ApiKey::Metadata, 1, &(-2i32).to_be_bytes()).is_err());
}

#[test]
fn malformed_varints_and_oversized_tags_are_refused() {
    // ApiVersions v3: two compact strings, then the tagged fields.
    let six_byte_varint = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    assert!(check_request_body(ApiKey::ApiVersions, 3, &six_byte_varint).is_err());
    let oversized_unknown_tag = [1, 1, 1, 99, 0x7f, 0];
    assert!(check_request_body(ApiKey::ApiVersions, 3, &oversized_unknown_tag).is_err());
    let small_unknown_tag = [1, 1, 1, 99, 1, 0];
    assert_eq!(check_request_body(ApiKey::ApiVersions, 3, &small_unknown_tag), Ok(()));
    assert!(check_request_body(ApiKey::ApiVersions, 3, &[1, 1, 0x7f]).is_err(), "more tagged fields than bytes");
}

fn every_served_version() -> impl Iterator<Item = (ApiKey, i16)> {
    SERVED_APIS.iter().chain(CONTROLLER_APIS).flat_map(|api| (api.served_min..=api.max).map(move |v| (api.key, v)))
}

fn config() -> Config {
    Config { cases: 256, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    /// The table agrees with the crate: what the walker takes whole, the crate decodes whole.
    #[test]
    fn bodies_built_from_the_table_pass_the_walker_and_the_crate(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        for (key, version) in every_served_version() {
            let message = request_schema(key).expect("every served API has a schema");
            let (body, _) = build(message, version, &mut rng);
            prop_assert_eq!(walk(message, version, &body), Ok(body.len()), "{:?} v{} {:?}", key, version, body);
            let mut bytes = Bytes::from(body.clone());
            let decoded = RequestKind::decode(key, &mut bytes, version);
            prop_assert!(decoded.is_ok(), "{:?} v{} {:?}: {:?}", key, version, body, decoded.err());
            prop_assert!(!bytes.has_remaining(), "{:?} v{} {:?}: crate left {} bytes", key, version, body, bytes.len());
        }
    }

    #[test]
    fn an_inflated_count_or_a_truncated_body_is_refused(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        for (key, version) in every_served_version() {
            let message = request_schema(key).expect("every served API has a schema");
            let (body, counts) = build(message, version, &mut rng);
            if !counts.is_empty() {
                let count = counts[rng.below(counts.len() as u64) as usize];
                let rest = &body[count.at + count.width..];
                // Just past the bytes left, or far past them.
                let excess = if rng.one_in(2) { 1 } else { 1 + rng.below(i32::MAX as u64 / 2) as usize };
                let inflated = rest.len() + excess;
                let mut bad = body[..count.at].to_vec();
                put_length(&mut bad, Some(inflated), count.compact, true);
                bad.extend_from_slice(rest);
                let reason = check_request_body(key, version, &bad);
                let refused = reason.as_ref().is_err_and(|r| r.contains("bytes left"));
                prop_assert!(refused, "{:?} v{} {:?}: {:?}", key, version, bad, reason);
            }
            if !body.is_empty() {
                let cut = rng.below(body.len() as u64) as usize;
                let refused = check_request_body(key, version, &body[..cut]).is_err();
                prop_assert!(refused, "{:?} v{} cut at {}", key, version, cut);
            }
        }
    }
}

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[test]
fn requests_encoded_by_the_crate_are_accepted() {
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(topic("orders")).with_partition_data(vec![
            produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(crate::batch::test_batches::batch(1))),
        ]),
    ]);
    let fetch =
        FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(topic("orders")).with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(42)
                    .with_partition_max_bytes(1 << 20),
                fetch_request::FetchPartition::default().with_partition(1).with_partition_max_bytes(1 << 20),
            ]),
        ]);
    let join = JoinGroupRequest::default()
        .with_group_id(StrBytes::from_static_str("billing").into())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(60_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x06orders")),
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("roundrobin"))
                .with_metadata(Bytes::new()),
        ]);
    for (key, version, body) in [
        (ApiKey::Produce, 9, RequestKind::Produce(produce)),
        (ApiKey::Fetch, 12, RequestKind::Fetch(fetch)),
        (ApiKey::JoinGroup, 5, RequestKind::JoinGroup(join)),
    ] {
        let mut encoded = BytesMut::new();
        body.encode(&mut encoded, version).unwrap();
        let message = request_schema(key).unwrap();
        assert_eq!(walk(message, version, &encoded), Ok(encoded.len()), "{key:?} v{version}");

        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let frame = encode_request(&header, &body).unwrap();
        let decoded = decode_request(frame.slice(4..)).unwrap_or_else(|e| panic!("{key:?} v{version}: {e:?}"));
        assert_eq!(decoded.body, body);
    }
}

#[test]
fn a_request_of_more_array_elements_than_the_bound_is_refused() {
    // Metadata v1 with 1,000,001 topics of one-character names: 3 bytes each on the wire, about
    // 72 bytes each once decoded.
    let count = MAX_ELEMENTS_PER_REQUEST + 1;
    let mut body = (count as i32).to_be_bytes().to_vec();
    for _ in 0..count {
        body.extend_from_slice(&[0, 1, b'x']);
    }
    let reason = check_request_body(ApiKey::Metadata, 1, &body).unwrap_err();
    assert!(reason.contains("array elements in one request"), "{reason}");
    body[..4].copy_from_slice(&(MAX_ELEMENTS_PER_REQUEST as i32).to_be_bytes());
    body.truncate(4 + 3 * MAX_ELEMENTS_PER_REQUEST);
    assert_eq!(check_request_body(ApiKey::Metadata, 1, &body), Ok(()), "the bound itself is accepted");
}

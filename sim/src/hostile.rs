//! A client that breaks the protocol while the real workload runs: garbage and mutated request
//! frames, declared lengths far past the frame, truncated frames, size prefixes it never
//! completes, and writes a byte at a time. The broker must survive all of it (a panic fails the
//! seed) and keep serving the checked clients (their liveness checks).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use madsim::rand::{thread_rng, Rng};
use spool_core::codec;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::draw;
use crate::scenario::broker_addr;

/// How a seed's hostile client behaves; zero attacks leaves it out.
#[derive(Clone, Debug)]
pub struct Hostile {
    pub attacks: u64,
}

impl Hostile {
    pub fn draw(scenario: &str) -> Hostile {
        let on = draw::int(&format!("{scenario}.hostile"), 0..2) == 1;
        Hostile { attacks: if on { draw::int(&format!("{scenario}.hostile_attacks"), 1..60) } else { 0 } }
    }
}

const CLIENT_ID: &str = "hostile";
/// The header bytes of every template: api key, version, correlation id, client id.
const HEADER_LEN: usize = 2 + 2 + 4 + 2 + CLIENT_ID.len();

/// Valid requests the attacks start from. None of them can change the checked topics, however
/// their bodies are mutated (the api key is never touched).
fn templates() -> Vec<Bytes> {
    let frame = |key: i16, version: i16, body: RequestKind| {
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        codec::encode_request(&header, &body).expect("encode").slice(4..)
    };
    let name = || TopicName(StrBytes::from_static_str("hostile"));
    let records = crate::scenario::producer_batch((-1, -1), -1, false, &["h".to_string()]);
    vec![
        frame(3, 1, MetadataRequest::default().with_topics(Some(vec![])).into()),
        frame(
            3,
            12,
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name()))]))
                .into(),
        ),
        frame(
            0,
            9,
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records))])])
                .into(),
        ),
        frame(1, 12, crate::scenario::fetch_request_for("hostile", 0, 0).into()),
        frame(
            11,
            5,
            JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("hostile-group")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))])
                .into(),
        ),
        frame(
            2,
            7,
            ListOffsetsRequest::default()
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default().with_name(name()).with_partitions(
                    vec![list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)],
                )])
                .into(),
        ),
    ]
}

/// One frame of an attack, with its size prefix as the attack wants it.
fn attack_frame(templates: &[Bytes]) -> (Vec<u8>, Option<usize>) {
    let mut rng = thread_rng();
    let template = &templates[rng.gen_range(0..templates.len())];
    let mut body = template.to_vec();
    match rng.gen_range(0..5) {
        // Random bytes over the body.
        0 => {
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(HEADER_LEN..body.len());
                body[at] = rng.gen();
            }
        }
        // A declared length (4 bytes of 0x7f..ff) planted anywhere in the body.
        1 => {
            let at = rng.gen_range(HEADER_LEN..body.len().saturating_sub(4).max(HEADER_LEN + 1));
            let end = (at + 4).min(body.len());
            body[at..end].iter_mut().for_each(|b| *b = 0xff);
            body[at] = 0x7f;
        }
        // Cut short, with a prefix that still claims the whole frame (a stalled sender).
        2 => {
            let full = body.len();
            body.truncate(rng.gen_range(0..full));
            return (body, Some(full));
        }
        // Cut short and framed honestly.
        3 => body.truncate(rng.gen_range(0..body.len())),
        // Garbage after a valid api key and version.
        _ => {
            for b in body.iter_mut().skip(4) {
                *b = rng.gen();
            }
        }
    }
    (body, None)
}

/// Runs the attacks, one connection each, then leaves.
pub async fn attack(hostile: Hostile) {
    let templates = templates();
    for _ in 0..hostile.attacks {
        let Ok(mut stream) = TcpStream::connect(broker_addr()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (body, claimed) = attack_frame(&templates);
        let size = claimed.unwrap_or(body.len()) as i32;
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let slow = thread_rng().gen_bool(0.2);
        let send = async {
            if slow {
                for b in &bytes {
                    stream.write_all(&[*b]).await?;
                    stream.flush().await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                stream.write_all(&bytes).await?;
            }
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), send).await;
        // Stay a while (a stalled frame stays open until the broker drops it), then go.
        let linger = thread_rng().gen_range(0..3_000);
        tokio::time::sleep(Duration::from_millis(linger)).await;
        drop(stream);
    }
}

//! The version ranges we advertise in ApiVersions. This table is ours, not the codec's: clients
//! turn features on from it (librdkafka before 2.11.1 checks exact old versions), so it is a
//! compatibility contract. See docs/architecture.md, "Advertised versions".

use kafka_protocol::messages::ApiKey;

/// One API we serve: the advertised range and the lowest version we actually accept.
#[derive(Clone, Copy, Debug)]
pub struct ServedApi {
    pub key: ApiKey,
    pub advertised_min: i16,
    pub max: i16,
    /// Below this (but inside the advertised range) the request is refused: Produce 0-2 are
    /// advertised only because old librdkafka disables gzip/snappy/lz4 otherwise.
    pub served_min: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ServedApi {
    ServedApi { key, advertised_min: min, max, served_min: min }
}

pub const SERVED_APIS: &[ServedApi] = &[
    ServedApi { key: ApiKey::Produce, advertised_min: 0, max: 12, served_min: 3 },
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 10),
    api(ApiKey::Metadata, 0, 13),
    // FindCoordinator 0 must be advertised: old librdkafka gates LZ4 on it.
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::AddPartitionsToTxn, 0, 3),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 4),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::ElectLeaders, 0, 2),
    // Advertised only by a broker in a metadata quorum, which forwards it to the controller.
    api(ApiKey::DescribeQuorum, 0, 2),
];

/// What the controller listener serves: the quorum's own messages, at the one version Spool's
/// nodes speak (see raft::wire), and what Kafka's tools ask a controller (KIP-919).
pub const CONTROLLER_APIS: &[ServedApi] = &[
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::Vote, 2, 2),
    api(ApiKey::BeginQuorumEpoch, 1, 1),
    api(ApiKey::EndQuorumEpoch, 1, 1),
    api(ApiKey::Fetch, 17, 17),
    api(ApiKey::FetchSnapshot, 1, 1),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::DescribeCluster, 1, 1),
    api(ApiKey::BrokerRegistration, 0, 4),
    api(ApiKey::BrokerHeartbeat, 0, 1),
    // Brokers forward their clients' topic and config changes here as the clients sent them.
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::ElectLeaders, 0, 2),
    // Brokers' blocks of producer ids (KIP-730).
    api(ApiKey::AllocateProducerIds, 0, 0),
    // Partition leaders' ISR changes (KIP-497), with broker epochs (KIP-903).
    api(ApiKey::AlterPartition, 3, 3),
];

pub fn served(key: ApiKey) -> Option<&'static ServedApi> {
    served_in(SERVED_APIS, key)
}

pub fn served_in(table: &'static [ServedApi], key: ApiKey) -> Option<&'static ServedApi> {
    table.iter().find(|api| api.key == key)
}

/// Whether a request of this key and version is decoded and answered.
pub fn accepts(key: ApiKey, version: i16) -> bool {
    accepts_in(SERVED_APIS, key, version)
}

pub fn accepts_in(table: &'static [ServedApi], key: ApiKey, version: i16) -> bool {
    served_in(table, key).is_some_and(|api| version >= api.served_min && version <= api.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_one_the_codec_can_decode() {
        for api in SERVED_APIS.iter().chain(CONTROLLER_APIS) {
            let codec = api.key.valid_versions();
            assert!(api.served_min >= codec.min && api.max <= codec.max, "{:?}", api.key);
            assert!(api.advertised_min <= api.served_min);
        }
    }

    #[test]
    fn old_librdkafka_feature_probes_find_their_exact_versions() {
        // rd_kafka_feature_map (librdkafka <= 2.11.0): each probe needs one exact version.
        for (key, version) in [
            (ApiKey::Produce, 0),
            (ApiKey::Produce, 3),
            (ApiKey::Produce, 7),
            (ApiKey::Fetch, 4),
            (ApiKey::Fetch, 10),
            (ApiKey::FindCoordinator, 0),
            (ApiKey::ListOffsets, 1),
            (ApiKey::InitProducerId, 0),
        ] {
            let api = served(key).expect("served");
            assert!(api.advertised_min <= version && version <= api.max, "{key:?} {version}");
        }
    }
}

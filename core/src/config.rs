//! Broker settings and per-topic configs: names, defaults and validation, as Kafka spells them.

use std::collections::BTreeMap;

/// Whether a produce with acks=1/all waits for fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the batch is fsynced (the default).
    Fsync,
    /// Acknowledge once the batch is written to the OS; fsync continues in the background.
    /// A machine crash can lose acknowledged records.
    Relaxed,
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub num_partitions: i32,
    /// Kafka's `default.replication.factor`: for topics created without one, in a cluster.
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub durability: Durability,
    /// Largest request frame accepted, in bytes.
    pub max_request_bytes: usize,
    /// How often retention and segment.ms are checked.
    pub retention_check_interval_ms: i64,
    /// How often the recovery points are written: after a crash, segments below a partition's
    /// recovery point are trusted without being read.
    pub recovery_point_interval_ms: i64,
    /// How long a partition stays offline after a failed write or fsync (a full disk) before the
    /// broker asks its driver to restart it in place, recovering the data directory as after a
    /// crash: the partition comes back once the disk takes writes again.
    pub offline_restart_after_ms: i64,
    /// The longest the driver waits between restarts in place while they keep failing (each in a
    /// row waits twice as long as the one before).
    pub offline_restart_max_ms: i64,
    /// Defaults for topics that do not override them.
    pub topic_defaults: TopicConfig,
    /// Rare-path injection for simulation; always `None` in production.
    pub buggify: Option<crate::buggify::BuggifyConfig>,
    pub group: crate::group::GroupConfig,
    /// The settings as given, under Kafka's names, for DescribeConfigs.
    pub settings: crate::settings::BrokerSettings,
}

impl BrokerConfig {
    pub fn single_node(host: &str, port: i32) -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_host: host.to_string(),
            advertised_port: port,
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            durability: Durability::Fsync,
            max_request_bytes: 100 * 1024 * 1024,
            retention_check_interval_ms: 300_000,
            recovery_point_interval_ms: 10_000,
            offline_restart_after_ms: 15_000,
            offline_restart_max_ms: 600_000,
            topic_defaults: TopicConfig::default(),
            buggify: None,
            group: crate::group::GroupConfig::default(),
            settings: crate::settings::BrokerSettings::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The resolved values a partition log runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i64,
    pub timestamp_type: TimestampType,
    pub index_interval_bytes: i64,
    /// acks=all writes are refused (NOT_ENOUGH_REPLICAS) while the ISR is smaller.
    pub min_insync_replicas: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            index_interval_bytes: 4096,
            min_insync_replicas: 1,
        }
    }
}

/// Every topic config key we know, with its default as text. Kafka answers DescribeConfigs with
/// the full list, so clients and tools see the effective value of each.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64, String> {
    let parsed: i64 =
        value.trim().parse().map_err(|_| format!("Invalid value {value} for configuration {key}: not a number"))?;
    if parsed < min {
        return Err(format!("Invalid value {value} for configuration {key}: must be at least {min}"));
    }
    Ok(parsed)
}

impl TopicConfig {
    /// Applies the overrides on top of `defaults`, refusing unknown keys and bad values with a
    /// message fit for an INVALID_CONFIG answer.
    pub fn resolve(defaults: &TopicConfig, overrides: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        let mut config = defaults.clone();
        for (key, value) in overrides {
            match key.as_str() {
                "retention.ms" => config.retention_ms = parse_i64(key, value, -1)?,
                "retention.bytes" => config.retention_bytes = parse_i64(key, value, -1)?,
                "segment.bytes" => config.segment_bytes = parse_i64(key, value, 100)?,
                "segment.ms" => config.segment_ms = parse_i64(key, value, 1)?,
                "max.message.bytes" => config.max_message_bytes = parse_i64(key, value, 0)?,
                "index.interval.bytes" => config.index_interval_bytes = parse_i64(key, value, 0)?,
                "message.timestamp.type" => {
                    config.timestamp_type = match value.as_str() {
                        "CreateTime" => TimestampType::CreateTime,
                        "LogAppendTime" => TimestampType::LogAppendTime,
                        _ => {
                            return Err(format!(
                                "Invalid value {value} for configuration message.timestamp.type: \
                                 must be CreateTime or LogAppendTime"
                            ))
                        }
                    }
                }
                "cleanup.policy" => {
                    if value != "delete" {
                        return Err(format!(
                            "Invalid value {value} for configuration cleanup.policy: \
                             only 'delete' is supported (log compaction is not implemented)"
                        ));
                    }
                }
                "compression.type" => {
                    if value != "producer" {
                        return Err(format!(
                            "Invalid value {value} for configuration compression.type: only \
                             'producer' is supported (batches are stored as the producer sent them)"
                        ));
                    }
                }
                "min.insync.replicas" => config.min_insync_replicas = parse_i64(key, value, 1)?,
                _ => return Err(format!("Unknown topic config name: {key}")),
            }
        }
        Ok(config)
    }

    /// The effective value of a known key, as text.
    pub fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "cleanup.policy" => "delete".to_string(),
            "compression.type" => "producer".to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn overrides_apply_and_bad_input_is_explained() {
        let d = TopicConfig::default();
        let c = TopicConfig::resolve(&d, &overrides(&[("retention.ms", "1000"), ("segment.bytes", "4096")])).unwrap();
        assert_eq!((c.retention_ms, c.segment_bytes), (1000, 4096));
        assert_eq!(c.value_of("retention.ms").as_deref(), Some("1000"));
        let e = TopicConfig::resolve(&d, &overrides(&[("no.such.key", "1")])).unwrap_err();
        assert!(e.contains("Unknown topic config name"), "{e}");
        let e = TopicConfig::resolve(&d, &overrides(&[("retention.ms", "soon")])).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        assert!(TopicConfig::resolve(&d, &overrides(&[("cleanup.policy", "compact")])).is_err());
    }

    #[test]
    fn every_listed_key_has_a_value() {
        let d = TopicConfig::default();
        for key in TOPIC_CONFIG_KEYS {
            assert!(d.value_of(key).is_some(), "{key}");
        }
    }
}

//! Broker settings under Kafka's names, as users bring them in a `server.properties`. Each is
//! known with its type and default; an unknown name is refused by name. Some are accepted for
//! compatibility but do nothing in Spool (thread counts, ZooKeeper, settings of a cluster this
//! single node is not yet part of); the runtime says so when one is set. DescribeConfigs on the
//! broker answers every setting with its source.

use std::collections::BTreeMap;

use crate::config::{BrokerConfig, TimestampType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Kafka's DEFAULT_CONFIG.
    Default,
    /// Kafka's STATIC_BROKER_CONFIG: set in the file, the environment, an override or a flag.
    Static,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int { min: i64 },
    Bool,
    Text,
    TimestampType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Applied,
    /// Accepted so that a Kafka `server.properties` starts Spool, with no effect.
    Ignored,
}

struct Spec {
    name: &'static str,
    default: &'static str,
    kind: Kind,
    effect: Effect,
}

const fn applied(name: &'static str, default: &'static str, kind: Kind) -> Spec {
    Spec { name, default, kind, effect: Effect::Applied }
}

const fn ignored(name: &'static str, default: &'static str) -> Spec {
    Spec { name, default, kind: Kind::Text, effect: Effect::Ignored }
}

const MS_PER_HOUR: i64 = 3_600_000;

/// Every broker setting Spool knows, in name order within each group.
const SPECS: &[Spec] = &[
    // Identity, listeners and storage (the runtime reads these).
    applied("node.id", "1", Kind::Int { min: 0 }),
    applied("broker.id", "-1", Kind::Int { min: -1 }),
    applied("listeners", "PLAINTEXT://127.0.0.1:9092", Kind::Text),
    applied("advertised.listeners", "", Kind::Text),
    applied("log.dirs", "./spool-data", Kind::Text),
    applied("log.dir", "", Kind::Text),
    // The metadata quorum (the runtime reads these).
    applied("controller.listener.names", "CONTROLLER", Kind::Text),
    applied("controller.quorum.voters", "", Kind::Text),
    // Topics.
    applied("auto.create.topics.enable", "true", Kind::Bool),
    applied("num.partitions", "1", Kind::Int { min: 1 }),
    applied("default.replication.factor", "1", Kind::Int { min: 1 }),
    applied("min.insync.replicas", "1", Kind::Int { min: 1 }),
    applied("log.retention.hours", "168", Kind::Int { min: -1 }),
    applied("log.retention.minutes", "", Kind::Int { min: -1 }),
    applied("log.retention.ms", "", Kind::Int { min: -1 }),
    applied("log.retention.bytes", "-1", Kind::Int { min: -1 }),
    applied("log.segment.bytes", "1073741824", Kind::Int { min: 100 }),
    applied("log.roll.hours", "168", Kind::Int { min: 1 }),
    applied("log.roll.ms", "", Kind::Int { min: 1 }),
    applied("log.index.interval.bytes", "4096", Kind::Int { min: 0 }),
    applied("log.message.timestamp.type", "CreateTime", Kind::TimestampType),
    applied("message.max.bytes", "1048588", Kind::Int { min: 0 }),
    applied("log.retention.check.interval.ms", "300000", Kind::Int { min: 10 }),
    // Consumer groups.
    applied("group.min.session.timeout.ms", "6000", Kind::Int { min: 1 }),
    applied("group.max.session.timeout.ms", "1800000", Kind::Int { min: 1 }),
    applied("group.initial.rebalance.delay.ms", "3000", Kind::Int { min: 0 }),
    applied("offsets.retention.minutes", "10080", Kind::Int { min: 1 }),
    applied("offsets.retention.check.interval.ms", "600000", Kind::Int { min: 1 }),
    // Connections (the runtime reads these).
    applied("socket.request.max.bytes", "104857600", Kind::Int { min: 1 }),
    applied("queued.max.request.bytes", "536870912", Kind::Int { min: 1 }),
    applied("max.connections", "10000", Kind::Int { min: 1 }),
    applied("max.connections.per.ip", "1000", Kind::Int { min: 1 }),
    applied("connections.max.idle.ms", "600000", Kind::Int { min: 1 }),
    // Accepted, no effect in Spool today.
    ignored("controller.quorum.bootstrap.servers", ""),
    ignored("group.coordinator.rebalance.protocols", "classic,consumer"),
    ignored("inter.broker.listener.name", ""),
    ignored("listener.security.protocol.map", ""),
    ignored("log.cleaner.enable", "true"),
    ignored("log.flush.interval.messages", ""),
    ignored("log.flush.interval.ms", ""),
    ignored("num.io.threads", "8"),
    ignored("num.network.threads", "3"),
    ignored("num.recovery.threads.per.data.dir", "1"),
    ignored("offsets.topic.num.partitions", "50"),
    ignored("offsets.topic.replication.factor", "1"),
    ignored("process.roles", "broker,controller"),
    ignored("share.coordinator.state.topic.min.isr", "1"),
    ignored("share.coordinator.state.topic.replication.factor", "1"),
    ignored("socket.receive.buffer.bytes", "102400"),
    ignored("socket.send.buffer.bytes", "102400"),
    ignored("transaction.state.log.min.isr", "1"),
    ignored("transaction.state.log.num.partitions", "50"),
    ignored("transaction.state.log.replication.factor", "1"),
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The broker's settings: every known one, with its value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings { values: SPECS.iter().map(|s| (s.name, (s.default.to_string(), Source::Default))).collect() }
    }
}

impl BrokerSettings {
    /// Sets one setting; an unknown name or a value of the wrong kind is refused with a message
    /// naming it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let spec = spec(name.trim()).ok_or_else(|| format!("unknown broker setting {name:?}"))?;
        let value = value.trim();
        match spec.kind {
            Kind::Int { min } => {
                let parsed: i64 = value
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for {}: not a whole number", spec.name))?;
                if parsed < min {
                    return Err(format!("invalid value {value} for {}: must be at least {min}", spec.name));
                }
            }
            Kind::Bool => {
                if value != "true" && value != "false" {
                    return Err(format!("invalid value {value:?} for {}: must be true or false", spec.name));
                }
            }
            Kind::TimestampType => {
                if value != "CreateTime" && value != "LogAppendTime" {
                    return Err(format!(
                        "invalid value {value:?} for {}: must be CreateTime or LogAppendTime",
                        spec.name
                    ));
                }
            }
            Kind::Text => {}
        }
        self.values.insert(spec.name, (value.to_string(), Source::Static));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(v, _)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name).map(|v| v.parse().expect("validated when set"))
    }

    /// A whole-number setting that has a default, so always a value.
    fn int(&self, name: &str) -> i64 {
        self.get_i64(name).unwrap_or_else(|| panic!("{name} has a default"))
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|(_, source)| *source == Source::Static)
    }

    /// The settings given that Spool accepts but does not act on.
    pub fn ignored_but_set(&self) -> Vec<&'static str> {
        SPECS.iter().filter(|s| s.effect == Effect::Ignored && self.is_set(s.name)).map(|s| s.name).collect()
    }

    /// Every setting with its value (empty when it has none) and source, as DescribeConfigs
    /// answers them.
    pub fn describe(&self) -> impl Iterator<Item = (&'static str, &str, Source)> {
        self.values.iter().map(|(name, (value, source))| (*name, value.as_str(), *source))
    }

    /// The node id: `node.id`, or the older `broker.id` when only that is set.
    pub fn node_id(&self) -> i32 {
        let id = if !self.is_set("node.id") && self.is_set("broker.id") {
            self.int("broker.id")
        } else {
            self.int("node.id")
        };
        id.max(0) as i32
    }

    /// Sets the core's configuration from these settings (the runtime applies the listener,
    /// storage and connection ones itself).
    pub fn apply(&self, config: &mut BrokerConfig) {
        config.node_id = self.node_id();
        config.auto_create_topics = self.get("auto.create.topics.enable") == Some("true");
        config.num_partitions = self.int("num.partitions") as i32;
        config.default_replication_factor = self.int("default.replication.factor").min(i16::MAX as i64) as i16;
        config.max_request_bytes = self.int("socket.request.max.bytes") as usize;
        config.retention_check_interval_ms = self.int("log.retention.check.interval.ms");
        // As Kafka: log.retention.ms, else minutes, else hours.
        let retention_ms = self
            .get_i64("log.retention.ms")
            .or_else(|| self.get_i64("log.retention.minutes").map(|m| if m < 0 { -1 } else { m * 60_000 }))
            .or_else(|| self.get_i64("log.retention.hours").map(|h| if h < 0 { -1 } else { h * MS_PER_HOUR }));
        let topics = &mut config.topic_defaults;
        if let Some(ms) = retention_ms {
            topics.retention_ms = ms;
        }
        if let Some(ms) =
            self.get_i64("log.roll.ms").or_else(|| self.get_i64("log.roll.hours").map(|h| h * MS_PER_HOUR))
        {
            topics.segment_ms = ms;
        }
        topics.retention_bytes = self.int("log.retention.bytes");
        topics.segment_bytes = self.int("log.segment.bytes");
        topics.index_interval_bytes = self.int("log.index.interval.bytes");
        topics.min_insync_replicas = self.int("min.insync.replicas");
        topics.max_message_bytes = self.int("message.max.bytes");
        topics.timestamp_type = match self.get("log.message.timestamp.type") {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        let group = &mut config.group;
        group.min_session_timeout_ms = self.int("group.min.session.timeout.ms").min(i32::MAX as i64) as i32;
        group.max_session_timeout_ms = self.int("group.max.session.timeout.ms").min(i32::MAX as i64) as i32;
        group.initial_rebalance_delay_ms = self.int("group.initial.rebalance.delay.ms");
        group.offsets_retention_ms = self.int("offsets.retention.minutes") * 60_000;
        group.offsets_retention_check_interval_ms = self.int("offsets.retention.check.interval.ms");
        config.settings = self.clone();
    }

    /// Settings that contradict each other.
    pub fn check(&self) -> Result<(), String> {
        let min = self.int("group.min.session.timeout.ms");
        let max = self.get_i64("group.max.session.timeout.ms").unwrap_or(i64::MAX);
        if min > max {
            return Err(format!("group.min.session.timeout.ms ({min}) is above group.max.session.timeout.ms ({max})"));
        }
        Ok(())
    }
}

/// The Kafka setting a `SPOOL_`-prefixed environment variable names, as the Kafka image maps
/// `KAFKA_` ones: `_` is `.`, `__` is `_`, `___` is `-` (`SPOOL_LOG_RETENTION_HOURS` is
/// `log.retention.hours`). None if it names no known setting.
pub fn setting_of_env(variable: &str) -> Option<&'static str> {
    let rest = variable.strip_prefix("SPOOL_")?;
    let name =
        rest.to_ascii_lowercase().replace("___", "-").replace("__", "\u{0}").replace('_', ".").replace('\u{0}', "_");
    spec(&name).map(|s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_bad_values_are_refused_by_name() {
        let mut settings = BrokerSettings::default();
        assert!(settings.set("log.retention.hourz", "1").unwrap_err().contains("log.retention.hourz"));
        assert!(settings.set("num.partitions", "0").unwrap_err().contains("at least 1"));
        assert!(settings.set("auto.create.topics.enable", "yes").unwrap_err().contains("true or false"));
        assert!(settings.set("group.min.session.timeout.ms", "soon").unwrap_err().contains("whole number"));
        assert_eq!(settings, BrokerSettings::default(), "a refused setting changes nothing");
    }

    #[test]
    fn retention_follows_kafkas_precedence_and_groups_take_their_timeouts() {
        let mut settings = BrokerSettings::default();
        settings.set("log.retention.hours", "2").unwrap();
        let mut config = BrokerConfig::single_node("h", 9092);
        settings.apply(&mut config);
        assert_eq!(config.topic_defaults.retention_ms, 2 * MS_PER_HOUR);
        settings.set("log.retention.minutes", "3").unwrap();
        settings.apply(&mut config);
        assert_eq!(config.topic_defaults.retention_ms, 180_000);
        settings.set("log.retention.ms", "-1").unwrap();
        settings.set("group.min.session.timeout.ms", "500").unwrap();
        settings.set("broker.id", "4").unwrap();
        settings.apply(&mut config);
        assert_eq!(config.topic_defaults.retention_ms, -1);
        assert_eq!(config.group.min_session_timeout_ms, 500);
        assert_eq!(config.node_id, 4, "broker.id stands in for node.id when only it is set");
        let described: Vec<_> =
            config.settings.describe().filter(|(_, _, s)| *s == Source::Static).map(|(n, ..)| n).collect();
        assert_eq!(
            described,
            [
                "broker.id",
                "group.min.session.timeout.ms",
                "log.retention.hours",
                "log.retention.minutes",
                "log.retention.ms"
            ]
        );
    }

    #[test]
    fn the_defaults_are_the_cores_defaults() {
        let mut config = BrokerConfig::single_node("h", 9092);
        let before = config.clone();
        BrokerSettings::default().apply(&mut config);
        assert_eq!((config.topic_defaults.clone(), config.group.clone()), (before.topic_defaults, before.group));
        assert_eq!((config.num_partitions, config.auto_create_topics, config.node_id), (1, true, 1));
    }

    #[test]
    fn environment_variables_map_as_the_kafka_image_maps_them() {
        assert_eq!(setting_of_env("SPOOL_LOG_RETENTION_HOURS"), Some("log.retention.hours"));
        assert_eq!(setting_of_env("SPOOL_GROUP_MIN_SESSION_TIMEOUT_MS"), Some("group.min.session.timeout.ms"));
        assert_eq!(setting_of_env("SPOOL_BIN"), None);
        assert_eq!(setting_of_env("KAFKA_NUM_PARTITIONS"), None);
    }
}

//! How AlterConfigs and IncrementalAlterConfigs change a topic's overrides, and the checks on
//! the result: one set of rules for a single node and for the active controller.

use std::collections::BTreeMap;

use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::is_internal_topic;
use crate::config::TopicConfig;

/// One resource of an AlterConfigs or IncrementalAlterConfigs request: its type, its name and
/// its new overrides (or why they cannot be made).
pub type ResourceChange = (i8, StrBytes, Result<BTreeMap<String, String>, String>);

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// AlterConfigs: the request's (name, value) pairs are the whole new override set.
pub fn replaced(configs: impl Iterator<Item = (String, Option<String>)>) -> Result<BTreeMap<String, String>, String> {
    configs
        .map(|(key, value)| value.map(|v| (key.clone(), v)).ok_or(format!("Null value not supported for {key}")))
        .collect()
}

/// IncrementalAlterConfigs: (name, operation, value) applied to the current overrides; SET (0)
/// and DELETE (1) are supported.
pub fn incrementally(
    mut overrides: BTreeMap<String, String>,
    changes: impl Iterator<Item = (String, i8, Option<String>)>,
) -> Result<BTreeMap<String, String>, String> {
    for (key, operation, value) in changes {
        match (operation, value) {
            (0, Some(v)) => {
                overrides.insert(key, v);
            }
            (0, None) => return Err(format!("Null value not supported for {key}")),
            (1, _) => {
                overrides.remove(&key);
            }
            (2 | 3, _) => return Err(format!("APPEND and SUBTRACT are not supported for {key}")),
            (op, _) => return Err(format!("unknown config operation {op}")),
        }
    }
    Ok(overrides)
}

/// Checks a resource's new override set: only existing, non-internal topics can be changed, and
/// the overrides must resolve against the broker's defaults. Returns the overrides.
pub fn checked(
    defaults: &TopicConfig,
    resource_type: i8,
    name: &str,
    topic_exists: bool,
    next: Result<BTreeMap<String, String>, String>,
) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    if resource_type == RESOURCE_BROKER {
        return Err((
            ResponseError::InvalidRequest,
            "broker configs are static: set them with spool serve flags".into(),
        ));
    }
    if resource_type != RESOURCE_TOPIC {
        return Err((ResponseError::InvalidRequest, format!("resource type {resource_type} is not supported")));
    }
    if !topic_exists {
        return Err((ResponseError::UnknownTopicOrPartition, format!("Topic {name} does not exist")));
    }
    if is_internal_topic(name) {
        return Err((
            ResponseError::InvalidRequest,
            format!("{name} is an internal topic owned by the broker: it cannot be reconfigured"),
        ));
    }
    let next = next.map_err(|e| (ResponseError::InvalidConfig, e))?;
    TopicConfig::resolve(defaults, &next).map_err(|e| (ResponseError::InvalidConfig, e))?;
    Ok(next)
}

/// The per-resource answer of AlterConfigs and IncrementalAlterConfigs (two types, one shape).
pub trait ConfigAnswer {
    fn named(resource_type: i8, name: StrBytes) -> Self;
    fn refused(self, error: ResponseError, message: String) -> Self;
}

macro_rules! config_answer {
    ($t:ty) => {
        impl ConfigAnswer for $t {
            fn named(resource_type: i8, name: StrBytes) -> Self {
                Self::default().with_resource_type(resource_type).with_resource_name(name)
            }
            fn refused(self, error: ResponseError, message: String) -> Self {
                self.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
            }
        }
    };
}
config_answer!(alter_configs_response::AlterConfigsResourceResponse);
config_answer!(incremental_alter_configs_response::AlterConfigsResourceResponse);

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn incremental_operations_set_and_delete_and_refuse_the_rest() {
        let current = set(&[("retention.ms", "1000"), ("cleanup.policy", "delete")]);
        let changes =
            vec![("retention.ms".to_string(), 1, None), ("segment.bytes".to_string(), 0, Some("2048".to_string()))];
        assert_eq!(
            incrementally(current.clone(), changes.into_iter()),
            Ok(set(&[("cleanup.policy", "delete"), ("segment.bytes", "2048")]))
        );
        assert!(incrementally(current.clone(), std::iter::once(("a".to_string(), 2, None))).is_err());
        assert!(incrementally(current, std::iter::once(("a".to_string(), 0, None))).is_err());
    }

    #[test]
    fn checks_name_the_kafka_error() {
        let defaults = TopicConfig::default();
        let ok = Ok(set(&[("retention.ms", "5")]));
        assert_eq!(
            checked(&defaults, RESOURCE_TOPIC, "t", true, ok.clone()),
            ok.clone().map_err(|_: String| unreachable!())
        );
        let code = |r: Result<_, (ResponseError, String)>| r.unwrap_err().0;
        assert_eq!(
            code(checked(&defaults, RESOURCE_TOPIC, "t", false, ok.clone())),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(code(checked(&defaults, RESOURCE_BROKER, "0", true, ok.clone())), ResponseError::InvalidRequest);
        assert_eq!(
            code(checked(&defaults, RESOURCE_TOPIC, "__consumer_offsets", true, ok)),
            ResponseError::InvalidRequest
        );
        let bad = Ok(set(&[("retention.ms", "soon")]));
        assert_eq!(code(checked(&defaults, RESOURCE_TOPIC, "t", true, bad)), ResponseError::InvalidConfig);
    }
}

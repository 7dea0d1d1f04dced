//! Topic administration (create, delete, add partitions, configs, delete records) and producer
//! ids. Metadata changes are answered only once they are durable.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Broker, RequestCtx};
use crate::config::{TopicConfig, TOPIC_CONFIG_KEYS};
use crate::config_changes::{self, ConfigAnswer, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::meta::{MetaChange, TopicMeta};
use crate::settings::{BrokerSettings, Source};

const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Where a topic config's value comes from, most specific first, as Kafka's
/// `include_synonyms` lists it: the topic's own override (if any), then the broker-wide default
/// under its broker name (Kafka's `ServerTopicConfigSynonyms`; durations in whole hours under
/// their `.hours` name, as a Kafka broker's defaults are).
/// The broker settings that give a topic config its default, in Kafka's precedence.
fn broker_names_of(key: &str) -> &'static [&'static str] {
    match key {
        "retention.ms" => &["log.retention.ms", "log.retention.minutes", "log.retention.hours"],
        "segment.ms" => &["log.roll.ms", "log.roll.hours"],
        "segment.bytes" => &["log.segment.bytes"],
        "retention.bytes" => &["log.retention.bytes"],
        "max.message.bytes" => &["message.max.bytes"],
        "index.interval.bytes" => &["log.index.interval.bytes"],
        "cleanup.policy" => &["log.cleanup.policy"],
        "message.timestamp.type" => &["log.message.timestamp.type"],
        "compression.type" => &["compression.type"],
        "min.insync.replicas" => &["min.insync.replicas"],
        _ => &[],
    }
}

/// Where a topic config's value comes from when the topic does not override it: a broker
/// setting the user gave (STATIC_BROKER_CONFIG), or Kafka's default.
fn topic_default_source(key: &str, settings: &BrokerSettings) -> i8 {
    if broker_names_of(key).iter().any(|name| settings.is_set(name)) {
        SOURCE_STATIC_BROKER_CONFIG
    } else {
        SOURCE_DEFAULT_CONFIG
    }
}

/// Kafka's synonyms of a topic config, most preferred first: the topic's override, the broker
/// settings given, then the default under its broker name.
fn topic_config_synonyms(key: &str, value: &str, source: i8, settings: &BrokerSettings) -> Vec<(String, String, i8)> {
    let mut synonyms = Vec::new();
    if source == SOURCE_TOPIC_CONFIG {
        synonyms.push((key.to_string(), value.to_string(), source));
    }
    let names = broker_names_of(key);
    for name in names {
        if settings.is_set(name) {
            synonyms.push((
                name.to_string(),
                settings.get(name).unwrap_or_default().to_string(),
                SOURCE_STATIC_BROKER_CONFIG,
            ));
        }
    }
    let Some(&last) = names.last() else { return synonyms };
    let default =
        BrokerSettings::default().get(last).map(str::to_string).or_else(|| TopicConfig::default().value_of(key));
    if let Some(default) = default {
        synonyms.push((last.to_string(), default, SOURCE_DEFAULT_CONFIG));
    }
    synonyms
}

const MAX_PARTITIONS: i32 = 10_000;

/// The topics the broker owns (Kafka's `Topic.isInternal`): clients may read them but never
/// create, delete, reconfigure, grow, truncate or produce to them.
pub(crate) fn is_internal_topic(name: &str) -> bool {
    matches!(name, super::OFFSETS_TOPIC | TRANSACTION_STATE_TOPIC)
}

/// Reserved for transaction state, as in Kafka, though Spool keeps that state in its metadata.
const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

fn internal_topic_refused(name: &str, what: &str) -> (ResponseError, String) {
    (ResponseError::InvalidRequest, format!("{name} is an internal topic owned by the broker: it cannot be {what}"))
}

/// Why a CreateTopics entry's name cannot be created, by Kafka's rules common to a single node
/// and the controller: repeated in the request, invalid, internal, taken, or colliding.
pub(crate) fn creatable_name_problem(
    name: &str,
    repeated: bool,
    exists: bool,
    colliding: Option<String>,
) -> Option<(ResponseError, String)> {
    if repeated {
        Some((ResponseError::InvalidRequest, format!("Topic {name} appears more than once in the request")))
    } else if let Err(e) = validate_topic_name(name) {
        Some((ResponseError::InvalidTopicException, e))
    } else if is_internal_topic(name) {
        Some(internal_topic_refused(name, "created by a client"))
    } else if exists {
        Some((ResponseError::TopicAlreadyExists, format!("Topic '{name}' already exists.")))
    } else {
        colliding.map(|other| {
            (ResponseError::InvalidTopicException, format!("Topic '{name}' collides with existing topic: {other}"))
        })
    }
}

/// A CreateTopics entry's configs as overrides, or the first one with a null value.
pub(crate) fn requested_overrides(
    configs: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<BTreeMap<String, String>, String> {
    configs
        .iter()
        .map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.to_string(), v.to_string()))
                .ok_or_else(|| format!("Null value not supported for topic config {}", c.name.as_str()))
        })
        .collect()
}

/// Kafka's topic name rules.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("Topic name cannot be \"{name}\""));
    }
    if name.len() > 249 {
        return Err(format!("Topic name is longer than 249 characters: {name}"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "Topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => 7,
        "compression.type" | "message.timestamp.type" => 2,
        "index.interval.bytes" | "max.message.bytes" | "min.insync.replicas" => 3,
        _ => 5,
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Broker {
    /// A topic whose name differs from `name` only by '.' against '_': Kafka refuses such a
    /// pair, since both map to the same metric names.
    fn colliding_topic(&self, name: &str) -> Option<String> {
        let folded = name.replace('.', "_");
        self.desired_meta
            .topics
            .iter()
            .find(|t| t.name != name && t.name.replace('.', "_") == folded)
            .map(|t| t.name.clone())
    }

    /// Queues creation of an unknown topic with the broker defaults. Returns false when
    /// auto-creation is off or the name is invalid.
    pub(crate) fn maybe_auto_create(&mut self, name: &str) -> bool {
        if self.in_cluster() && !is_internal_topic(name) {
            if !self.config.auto_create_topics || validate_topic_name(name).is_err() {
                return false;
            }
            if !self.view_topics().is_some_and(|t| t.contains_key(name)) {
                self.auto_create_in_cluster(name);
            }
            return true;
        }
        if !self.config.auto_create_topics
            || validate_topic_name(name).is_err()
            || is_internal_topic(name)
            || (!self.topic_exists_or_pending(name) && self.colliding_topic(name).is_some())
        {
            return false;
        }
        if !self.topic_exists_or_pending(name) {
            tracing::info!(topic = name, partitions = self.config.num_partitions, "auto-creating topic");
            let id = self.desired_meta.new_topic_id(name).to_string();
            self.queue_meta_silent(MetaChange::CreateTopic(TopicMeta {
                from_cluster: false,
                name: name.to_string(),
                id,
                partitions: self.config.num_partitions,
                configs: BTreeMap::new(),
            }));
        }
        true
    }

    fn config_entries(&self, config: &TopicConfig, overrides: &BTreeMap<String, String>) -> Vec<(String, String, i8)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|key| {
                let source = if overrides.contains_key(*key) {
                    SOURCE_TOPIC_CONFIG
                } else {
                    topic_default_source(key, &self.config.settings)
                };
                (key.to_string(), config.value_of(key).unwrap_or_default(), source)
            })
            .collect()
    }

    pub(crate) fn handle_create_topics(&mut self, ctx: RequestCtx, request: CreateTopicsRequest) {
        let mut changes = Vec::new();
        let mut results = Vec::new();
        let mut seen = BTreeSet::new();
        let duplicates: BTreeSet<String> = request
            .topics
            .iter()
            .filter(|t| !seen.insert(t.name.0.to_string()))
            .map(|t| t.name.0.to_string())
            .collect();
        for t in request.topics {
            let name = t.name.0.to_string();
            let fail = |code: ResponseError, message: String| {
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            };
            let partitions = if t.num_partitions == -1 { self.config.num_partitions } else { t.num_partitions };
            let overrides = requested_overrides(&t.configs);
            let single_node =
                |ids: &[kafka_protocol::messages::BrokerId]| ids.len() == 1 && ids[0].0 == self.config.node_id;
            let colliding = self.colliding_topic(&name);
            let name_problem = creatable_name_problem(
                &name,
                duplicates.contains(&name),
                self.topic_exists_or_pending(&name),
                colliding,
            );
            let result = if let Some((code, message)) = name_problem {
                Err(fail(code, message))
            } else if !t.assignments.is_empty() && !t.assignments.iter().all(|a| single_node(&a.broker_ids)) {
                Err(fail(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replicas must be exactly [{}] on a single-node broker", self.config.node_id),
                ))
            } else if t.assignments.is_empty() && !(1..=MAX_PARTITIONS).contains(&partitions) {
                Err(fail(
                    ResponseError::InvalidPartitions,
                    format!("Number of partitions must be between 1 and {MAX_PARTITIONS}, was {partitions}"),
                ))
            } else if t.assignments.is_empty() && !(t.replication_factor == -1 || t.replication_factor == 1) {
                Err(fail(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "Replication factor {} is not possible: this single-node broker supports only 1",
                        t.replication_factor
                    ),
                ))
            } else {
                overrides
                    .clone()
                    .and_then(|o| TopicConfig::resolve(&self.config.topic_defaults, &o))
                    .map_err(|e| fail(ResponseError::InvalidConfig, e))
            };
            match result {
                Err(r) => results.push(r),
                Ok(config) => {
                    let overrides = overrides.unwrap_or_default();
                    let partitions = if t.assignments.is_empty() { partitions } else { t.assignments.len() as i32 };
                    let id = self.desired_meta.new_topic_id(&name);
                    let configs = self
                        .config_entries(&config, &overrides)
                        .into_iter()
                        .map(|(k, v, source)| {
                            CreatableTopicConfigs::default()
                                .with_name(text(&k))
                                .with_value(Some(text(&v)))
                                .with_config_source(source)
                        })
                        .collect();
                    results.push(
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_topic_id(id)
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                            .with_configs(Some(configs)),
                    );
                    if !request.validate_only {
                        let meta = TopicMeta {
                            name: name.clone(),
                            id: id.to_string(),
                            partitions,
                            configs: overrides,
                            from_cluster: false,
                        };
                        let change = MetaChange::CreateTopic(meta);
                        self.desired_meta.apply(&change);
                        changes.push(change);
                    }
                }
            }
        }
        // queue_meta applies each change to desired_meta itself; undo the early application used
        // above to catch names repeated across this request's topics.
        for change in &changes {
            if let MetaChange::CreateTopic(t) = change {
                self.desired_meta.apply(&MetaChange::DeleteTopic(t.name.clone()));
            }
        }
        let body = ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results));
        self.queue_meta_respond(changes, ctx, body);
    }

    pub(crate) fn handle_delete_topics(&mut self, ctx: RequestCtx, request: DeleteTopicsRequest) {
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= 6 {
            request.topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
        } else {
            request.topic_names.into_iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
        };
        let mut changes = Vec::new();
        let mut responses = Vec::new();
        for (name, id) in wanted {
            let name = name.or_else(|| self.topics.values().find(|t| t.id == id).map(|t| t.name.to_string()));
            let result =
                DeletableTopicResult::default().with_name(name.clone().map(|n| TopicName(n.into()))).with_topic_id(id);
            match name {
                Some(n) if is_internal_topic(&n) => {
                    let (code, message) = internal_topic_refused(&n, "deleted");
                    responses.push(
                        result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message))),
                    );
                }
                Some(n)
                    if self.topic_exists_or_pending(&n) && !changes.contains(&MetaChange::DeleteTopic(n.clone())) =>
                {
                    let topic_id = self.topics.get(n.as_str()).map_or(id, |t| t.id);
                    changes.push(MetaChange::DeleteTopic(n));
                    responses.push(result.with_topic_id(topic_id));
                }
                Some(n) => responses.push(
                    result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!("Topic {n} does not exist")))),
                ),
                None => responses.push(result.with_error_code(ResponseError::UnknownTopicId.code())),
            }
        }
        let body = ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses));
        self.queue_meta_respond(changes, ctx, body);
    }

    pub(crate) fn handle_create_partitions(&mut self, ctx: RequestCtx, request: CreatePartitionsRequest) {
        let mut changes = Vec::new();
        let mut results = Vec::new();
        for t in request.topics {
            let name = t.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let current = self.desired_meta.topic(&name).map(|m| m.partitions);
            let error = match current {
                _ if is_internal_topic(&name) => Some(internal_topic_refused(&name, "given more partitions")),
                None => Some((ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."))),
                Some(n) if t.count <= n => Some((
                    ResponseError::InvalidPartitions,
                    format!("Topic currently has {n} partitions, which is higher than the requested {}.", t.count),
                )),
                Some(_) if t.count > MAX_PARTITIONS => {
                    Some((ResponseError::InvalidPartitions, format!("at most {MAX_PARTITIONS} partitions")))
                }
                Some(n)
                    if t.assignments.as_ref().is_some_and(|a| {
                        !a.is_empty() && a.len() as i32 != t.count - n
                            || !a.iter().all(|x| x.broker_ids.len() == 1 && x.broker_ids[0].0 == self.config.node_id)
                    }) =>
                {
                    Some((
                        ResponseError::InvalidReplicaAssignment,
                        format!("replicas must be exactly [{}] on a single-node broker", self.config.node_id),
                    ))
                }
                Some(_) => None,
            };
            match error {
                Some((code, message)) => results
                    .push(result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)))),
                None => {
                    if !request.validate_only {
                        changes.push(MetaChange::SetPartitions { topic: name, count: t.count });
                    }
                    results.push(result);
                }
            }
        }
        let body = ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results));
        self.queue_meta_respond(changes, ctx, body);
    }

    pub(crate) fn handle_describe_configs(&mut self, ctx: RequestCtx, request: DescribeConfigsRequest) {
        let include_synonyms = request.include_synonyms;
        let results = request
            .resources
            .into_iter()
            .map(|r| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                let entries: Vec<(String, String, i8, bool)> = match r.resource_type {
                    RESOURCE_TOPIC => match self.topic_config_of(r.resource_name.as_str()) {
                        Some((config, overrides)) => self
                            .config_entries(&config, &overrides)
                            .into_iter()
                            .map(|(k, v, s)| (k, v, s, false))
                            .collect(),
                        None => {
                            return result
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                .with_error_message(Some(StrBytes::from_string(format!(
                                    "Topic {} does not exist",
                                    r.resource_name.as_str()
                                ))))
                        }
                    },
                    RESOURCE_BROKER => self.broker_config_entries(),
                    other => {
                        return result.with_error_code(ResponseError::InvalidRequest.code()).with_error_message(Some(
                            StrBytes::from_string(format!("resource type {other} is not supported")),
                        ))
                    }
                };
                let configs = entries
                    .into_iter()
                    .filter(|(k, ..)| {
                        r.configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.is_empty() || keys.iter().any(|w| w.as_str() == k))
                    })
                    .map(|(k, v, source, read_only)| {
                        let synonyms = if !include_synonyms {
                            Vec::new()
                        } else if r.resource_type == RESOURCE_TOPIC {
                            topic_config_synonyms(&k, &v, source, &self.config.settings)
                        } else {
                            vec![(k.clone(), v.clone(), source)]
                        };
                        DescribeConfigsResourceResult::default()
                            .with_name(text(&k))
                            // A setting without a value (Kafka's null), such as an unset log.retention.ms.
                            .with_value((!v.is_empty() || r.resource_type == RESOURCE_TOPIC).then(|| text(&v)))
                            .with_read_only(read_only)
                            .with_config_source(source)
                            .with_config_type(config_type(&k))
                            .with_synonyms(
                                synonyms
                                    .into_iter()
                                    .map(|(name, value, source)| {
                                        DescribeConfigsSynonym::default()
                                            .with_name(text(&name))
                                            .with_value(Some(text(&value)))
                                            .with_source(source)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
        self.respond(ctx, ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results)));
    }

    /// A topic's effective config and its overrides: in a cluster the image's (every broker
    /// answers alike, hosting the topic or not), else the local topic's.
    fn topic_config_of(&self, name: &str) -> Option<(TopicConfig, BTreeMap<String, String>)> {
        if self.in_cluster() && !is_internal_topic(name) {
            let view = self.view_topics()?.get(name)?;
            let defaults = &self.config.topic_defaults;
            let config = TopicConfig::resolve(defaults, &view.configs).unwrap_or_else(|_| defaults.clone());
            return Some((config, view.configs.clone()));
        }
        let topic = self.topics.get(name)?;
        let config = topic.partitions.first().map_or_else(|| self.config.topic_defaults.clone(), |p| p.config.clone());
        Some((config, topic.overrides.clone()))
    }

    /// Every broker setting under its Kafka name, with where its value came from.
    fn broker_config_entries(&self) -> Vec<(String, String, i8, bool)> {
        self.config
            .settings
            .describe()
            .map(|(name, value, source)| {
                let source = match source {
                    Source::Default => SOURCE_DEFAULT_CONFIG,
                    Source::Static => SOURCE_STATIC_BROKER_CONFIG,
                };
                (name.to_string(), value.to_string(), source, true)
            })
            .collect()
    }

    /// A topic's new override set, checked: the change that takes the topic there, or why not.
    fn prepare_config_change(
        &self,
        resource_type: i8,
        name: &str,
        overrides: Result<BTreeMap<String, String>, String>,
    ) -> Result<MetaChange, (ResponseError, String)> {
        let exists = self.desired_meta.topic(name).is_some();
        let configs = config_changes::checked(&self.config.topic_defaults, resource_type, name, exists, overrides)?;
        Ok(MetaChange::SetConfigs { topic: name.to_string(), configs })
    }

    /// AlterConfigs and IncrementalAlterConfigs: each resource's new overrides, as `next` makes
    /// them from the current ones, checked, then written together and answered once durable.
    fn alter_configs<A: ConfigAnswer>(
        &mut self,
        ctx: RequestCtx,
        resources: Vec<config_changes::ResourceChange>,
        validate_only: bool,
        body: impl FnOnce(Vec<A>) -> ResponseKind,
    ) {
        let mut changes = Vec::new();
        let mut responses = Vec::new();
        for (resource_type, name, next) in resources {
            let response = A::named(resource_type, name.clone());
            match self.prepare_config_change(resource_type, name.as_str(), next) {
                Ok(change) => {
                    if !validate_only {
                        changes.push(change);
                    }
                    responses.push(response);
                }
                Err((code, m)) => responses.push(response.refused(code, m)),
            }
        }
        self.queue_meta_respond(changes, ctx, body(responses));
    }

    pub(crate) fn handle_alter_configs(&mut self, ctx: RequestCtx, request: AlterConfigsRequest) {
        let resources = request
            .resources
            .into_iter()
            .map(|r| {
                let pairs = r.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())));
                (r.resource_type, r.resource_name, config_changes::replaced(pairs))
            })
            .collect();
        self.alter_configs(ctx, resources, request.validate_only, |responses| {
            ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
        });
    }

    pub(crate) fn handle_incremental_alter_configs(
        &mut self,
        ctx: RequestCtx,
        request: IncrementalAlterConfigsRequest,
    ) {
        let resources = request
            .resources
            .into_iter()
            .map(|r| {
                let current = self.desired_meta.topic(r.resource_name.as_str()).map(|t| t.configs.clone());
                let ops = r
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string())));
                (r.resource_type, r.resource_name, config_changes::incrementally(current.unwrap_or_default(), ops))
            })
            .collect();
        self.alter_configs(ctx, resources, request.validate_only, |responses| {
            ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default().with_responses(responses))
        });
    }

    pub(crate) fn handle_delete_records(&mut self, ctx: RequestCtx, request: DeleteRecordsRequest) {
        let mut moved = false;
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        if is_internal_topic(t.name.0.as_str()) {
                            // Kafka's answer: InvalidTopicException, "Cannot delete records of internal topic".
                            return result.with_error_code(ResponseError::InvalidTopicException.code());
                        }
                        let tp = crate::storage::TopicPartition::new(t.name.0.as_str(), p.partition_index);
                        if let Err(error) = self.served_partition(&tp) {
                            return result.with_error_code(error.code());
                        }
                        let log = self
                            .topics
                            .get_mut(t.name.0.as_str())
                            .and_then(|t| t.partitions.get_mut(usize::try_from(p.partition_index).ok()?));
                        let Some(log) = log else {
                            return result.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let target = if p.offset == -1 { log.high_watermark() } else { p.offset };
                        let before = log.log_start_offset;
                        let outcome = log.advance_log_start(target, &mut self.ops);
                        match outcome {
                            Ok(start) => {
                                moved |= start != before;
                                result.with_low_watermark(start)
                            }
                            Err(_) => result.with_error_code(ResponseError::OffsetOutOfRange.code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        if moved {
            self.mark_log_starts_dirty();
        }
        self.respond(ctx, ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics)));
    }

    pub(crate) fn handle_init_producer_id(&mut self, now_ms: i64, ctx: RequestCtx, request: InitProducerIdRequest) {
        if request.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty()) {
            self.init_transactional_producer(now_ms, ctx, request);
            return;
        }
        // Idempotent producers always get a fresh id (as Kafka does without a transactional id).
        match self.allocate_producer_id() {
            Some(id) => {
                let body = InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0);
                self.respond(ctx, ResponseKind::InitProducerId(body));
            }
            None => self.request_producer_id_block(ctx, request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TopicPartition;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "has space", "slash/", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_topic_partition_names_its_directory() {
        assert_eq!(TopicPartition::new("t", 3).dir_name(), "t-3");
    }
}

//! The active controller's topic decisions: CreateTopics, CreatePartitions and DeleteTopics, and
//! partition leaders after brokers are fenced or let in. Each is a pure function of the image:
//! the records to write (one log entry per topic, so it commits whole or not at all) and the
//! answer to give once they are committed.
//!
//! Until partitions replicate (the replication issue), a new partition's ISR is its leader alone:
//! Metadata then tells the truth (a follower holds nothing yet), and a fenced leader leaves its
//! partition without a leader until it returns, rather than electing an empty replica.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::{creatable_name_problem, is_internal_topic, requested_overrides};
use crate::config::TopicConfig;
use crate::config_changes;
use crate::metadata::{
    BrokerId, ConfigResource, MetadataImage, MetadataRecord, PartitionChange, PartitionRecord, NO_LEADER,
};

/// Partitions one topic may have (as the single-node broker allows).
pub const MAX_PARTITIONS: i32 = 10_000;
/// Kafka's `DYNAMIC_TOPIC_CONFIG` config source.
const SOURCE_TOPIC_CONFIG: i8 = 1;

/// What a topic gets when its request leaves it out (Kafka's `num.partitions`,
/// `default.replication.factor` and the broker's topic config defaults).
#[derive(Clone, Debug)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub config: TopicConfig,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults { num_partitions: 1, replication_factor: 1, config: TopicConfig::default() }
    }
}

/// One topic's part of a request: the entry to write (None: an answer at once) and its answer,
/// which stands only if that entry commits as written.
#[derive(Debug)]
pub struct Decision<A> {
    pub entry: Option<Vec<MetadataRecord>>,
    pub answer: A,
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A new topic's id: drawn from the cluster, the name and where its entry goes, so it is the
/// same on every node that replays the log and differs for a topic deleted and created again.
pub fn topic_id(cluster_id: &str, name: &str, offset: u64) -> Uuid {
    let mut seed = Vec::with_capacity(cluster_id.len() + name.len() + 10);
    seed.extend_from_slice(cluster_id.as_bytes());
    seed.push(0);
    seed.extend_from_slice(name.as_bytes());
    seed.push(0);
    seed.extend_from_slice(&offset.to_be_bytes());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, &seed)
}

/// Brokers new replicas may go to: registered, unfenced and not shutting down, by id.
fn usable_brokers(image: &MetadataImage) -> Vec<BrokerId> {
    image.brokers().filter(|b| !b.fenced && !b.in_controlled_shutdown).map(|b| b.id).collect()
}

fn is_usable(image: &MetadataImage, id: BrokerId) -> bool {
    image.broker(id).is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
}

/// Replicas for partitions `first..first + count`: striped over the usable brokers from a start
/// drawn from the topic id, so leaders spread evenly and topics do not all start at one broker.
fn place(brokers: &[BrokerId], id: Uuid, first: i32, count: i32, replication_factor: usize) -> Vec<Vec<BrokerId>> {
    assert!(replication_factor >= 1 && replication_factor <= brokers.len(), "placement checked by the caller");
    let start = (id.as_u128() % brokers.len() as u128) as usize;
    (first..first + count)
        .map(|p| (0..replication_factor).map(|j| brokers[(start + p as usize + j) % brokers.len()]).collect())
        .collect()
}

/// A partition's record: led by its first usable replica, which is its whole ISR for now.
fn partition_record(image: &MetadataImage, topic_id: Uuid, partition: i32, replicas: Vec<BrokerId>) -> PartitionRecord {
    let leader = replicas.iter().copied().find(|&r| is_usable(image, r)).unwrap_or(NO_LEADER);
    // A new partition is empty everywhere: every live replica is in sync.
    let isr: Vec<BrokerId> = replicas.iter().copied().filter(|&r| is_usable(image, r)).collect();
    PartitionRecord { topic_id, partition, replicas, isr, leader, leader_epoch: 0, partition_epoch: 0 }
}

/// Checks explicit replica lists: distinct registered brokers, the same count each, one at least
/// usable (it leads).
fn check_assignment(image: &MetadataImage, lists: &[Vec<BrokerId>]) -> Result<(), String> {
    let Some(first) = lists.first() else {
        return Err("the assignment is empty".to_string());
    };
    for (index, replicas) in lists.iter().enumerate() {
        if replicas.is_empty() {
            return Err(format!("partition {index} has no replicas"));
        }
        if replicas.len() != first.len() {
            return Err("All partitions should have the same number of replicas".to_string());
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(format!("Duplicate brokers not allowed in replica assignment: {replicas:?}"));
        }
        if let Some(unknown) = replicas.iter().find(|&&r| image.broker(r).is_none()) {
            return Err(format!(
                "The manual partition assignment includes broker {unknown}, but no such broker is registered."
            ));
        }
        if !replicas.iter().any(|&r| is_usable(image, r)) {
            return Err(format!(
                "All brokers specified in the manual partition assignment for partition {index} are fenced or in \
                 controlled shutdown."
            ));
        }
    }
    Ok(())
}

fn replication_error(rf: i16, usable: usize) -> Option<String> {
    if rf <= 0 {
        return Some("Replication factor must be larger than 0, or -1 to use the default value.".to_string());
    }
    if rf as usize > usable {
        return Some(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached \
             because only {usable} broker(s) are registered."
        ));
    }
    None
}

/// A topic whose name differs only by '.' against '_' (Kafka refuses such a pair: their metric
/// names collide).
fn colliding_topic(image: &MetadataImage, name: &str) -> Option<String> {
    let folded = name.replace('.', "_");
    image.topics().find(|t| t.name != name && t.name.replace('.', "_") == folded).map(|t| t.name.clone())
}

/// CreateTopics. `next_offset` is where the first entry will go: each topic's id is drawn from
/// the offset its own entry takes, one entry per topic created.
pub fn create_topics(
    image: &MetadataImage,
    defaults: &TopicDefaults,
    cluster_id: &str,
    next_offset: u64,
    request: &CreateTopicsRequest,
) -> Vec<Decision<CreatableTopicResult>> {
    let mut seen = BTreeMap::new();
    for t in &request.topics {
        *seen.entry(t.name.0.to_string()).or_insert(0) += 1;
    }
    let mut offset = next_offset;
    let mut decisions = Vec::new();
    for t in &request.topics {
        let name = t.name.0.to_string();
        let fail = |code: ResponseError, message: String| Decision {
            entry: None,
            answer: CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code.code())
                .with_error_message(Some(text(message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        };
        let overrides = requested_overrides(&t.configs);
        let usable = usable_brokers(image);
        let rf = if t.replication_factor == -1 { defaults.replication_factor } else { t.replication_factor };
        let partitions = if t.num_partitions == -1 { defaults.num_partitions } else { t.num_partitions };
        let assigned: Vec<Vec<BrokerId>> = {
            let mut a: Vec<_> = t.assignments.iter().collect();
            a.sort_by_key(|a| a.partition_index);
            a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect()
        };
        let exists = image.topic(&name).is_some();
        let name_problem = creatable_name_problem(&name, seen[&name] > 1, exists, colliding_topic(image, &name));
        let error = if name_problem.is_some() {
            name_problem
        } else if let Err(e) = overrides.clone().and_then(|o| TopicConfig::resolve(&defaults.config, &o)) {
            Some((ResponseError::InvalidConfig, e))
        } else if !t.assignments.is_empty() {
            let indexes: Vec<i32> = {
                let mut i: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
                i.sort_unstable();
                i
            };
            if t.num_partitions != -1 || t.replication_factor != -1 {
                Some((
                    ResponseError::InvalidRequest,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at \
                     the same time."
                        .to_string(),
                ))
            } else if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) || indexes.len() as i32 > MAX_PARTITIONS {
                Some((
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence".to_string(),
                ))
            } else {
                check_assignment(image, &assigned).err().map(|e| (ResponseError::InvalidReplicaAssignment, e))
            }
        } else if !(1..=MAX_PARTITIONS).contains(&partitions) {
            Some((
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS}, was {partitions}"),
            ))
        } else {
            replication_error(rf, usable.len()).map(|e| (ResponseError::InvalidReplicationFactor, e))
        };
        if let Some((code, message)) = error {
            decisions.push(fail(code, message));
            continue;
        }
        let overrides = overrides.unwrap_or_default();
        let id = topic_id(cluster_id, &name, offset);
        let lists = if assigned.is_empty() { place(&usable, id, 0, partitions, rf as usize) } else { assigned };
        let (partitions, rf) = (lists.len() as i32, lists[0].len() as i16);
        let configs = overrides
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfigs::default()
                    .with_name(text(k.as_str()))
                    .with_value(Some(text(v.as_str())))
                    .with_config_source(SOURCE_TOPIC_CONFIG)
            })
            .collect();
        let answer = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_topic_id(id)
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(Some(configs));
        if request.validate_only {
            decisions.push(Decision { entry: None, answer });
            continue;
        }
        let mut records = vec![MetadataRecord::Topic { name: name.clone(), topic_id: id }];
        records.extend(
            lists
                .into_iter()
                .enumerate()
                .map(|(p, replicas)| MetadataRecord::Partition(partition_record(image, id, p as i32, replicas))),
        );
        records.extend(overrides.into_iter().map(|(key, value)| MetadataRecord::Config {
            resource: ConfigResource::Topic(name.clone()),
            name: key,
            value: Some(value),
        }));
        decisions.push(Decision { entry: Some(records), answer });
        offset += 1;
    }
    decisions
}

/// DeleteTopics, by name (v0-5) or by name or id (v6+).
pub fn delete_topics(
    image: &MetadataImage,
    version: i16,
    request: &DeleteTopicsRequest,
) -> Vec<Decision<DeletableTopicResult>> {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let mut removing = BTreeSet::new();
    wanted
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => image.topic(n),
                None => image.topic_by_id(id),
            };
            let result = DeletableTopicResult::default()
                .with_name(name.clone().or_else(|| topic.map(|t| t.name.clone())).map(|n| TopicName(text(n))))
                .with_topic_id(topic.map_or(id, |t| t.id));
            let error = |code: ResponseError, message: String| Decision {
                entry: None,
                answer: result.clone().with_error_code(code.code()).with_error_message(Some(text(message))),
            };
            match (topic, name) {
                (Some(t), _) if is_internal_topic(&t.name) => {
                    error(ResponseError::InvalidRequest, format!("Topic {} is internal and cannot be deleted", t.name))
                }
                (Some(t), _) if !removing.insert(t.id) => Decision { entry: None, answer: result },
                (Some(t), _) => {
                    Decision { entry: Some(vec![MetadataRecord::RemoveTopic { topic_id: t.id }]), answer: result }
                }
                (None, Some(n)) => error(ResponseError::UnknownTopicOrPartition, format!("Topic {n} does not exist")),
                (None, None) => error(ResponseError::UnknownTopicId, format!("Topic id {id} does not exist")),
            }
        })
        .collect()
}

/// CreatePartitions: the new partitions placed as a new topic's would be, or as assigned.
pub fn create_partitions(
    image: &MetadataImage,
    request: &CreatePartitionsRequest,
) -> Vec<Decision<CreatePartitionsTopicResult>> {
    let mut seen = BTreeMap::new();
    for t in &request.topics {
        *seen.entry(t.name.0.to_string()).or_insert(0) += 1;
    }
    request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let topic = image.topic(&name);
            let current = topic.map_or(0, |t| t.partitions.len() as i32);
            let rf = topic.and_then(|t| t.partitions.get(&0)).map_or(0, |p| p.replicas.len());
            let usable = usable_brokers(image);
            let assigned: Option<Vec<Vec<BrokerId>>> =
                t.assignments.as_ref().map(|a| a.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect());
            let error = if seen[&name] > 1 {
                Some((ResponseError::InvalidRequest, "Duplicate topic in request.".to_string()))
            } else if is_internal_topic(&name) {
                Some((ResponseError::InvalidRequest, format!("Topic {name} is internal")))
            } else if topic.is_none() {
                Some((ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")))
            } else if t.count <= current {
                Some((
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {current} partitions, which is higher than the requested {}.",
                        t.count
                    ),
                ))
            } else if t.count > MAX_PARTITIONS {
                Some((ResponseError::InvalidPartitions, format!("at most {MAX_PARTITIONS} partitions")))
            } else if let Some(lists) = assigned.as_ref().filter(|a| !a.is_empty()) {
                if lists.len() as i32 != t.count - current {
                    Some((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "Attempted to add {} additional partition(s), but only {} assignment(s) were specified.",
                            t.count - current,
                            lists.len()
                        ),
                    ))
                } else if lists[0].len() != rf {
                    Some((
                        ResponseError::InvalidReplicaAssignment,
                        format!("The manual partition assignment has {} replicas, the topic {rf}", lists[0].len()),
                    ))
                } else {
                    check_assignment(image, lists).err().map(|e| (ResponseError::InvalidReplicaAssignment, e))
                }
            } else {
                replication_error(rf as i16, usable.len()).map(|e| (ResponseError::InvalidReplicationFactor, e))
            };
            if let Some((code, message)) = error {
                return Decision {
                    entry: None,
                    answer: result.with_error_code(code.code()).with_error_message(Some(text(message))),
                };
            }
            let id = topic.expect("checked").id;
            if request.validate_only {
                return Decision { entry: None, answer: result };
            }
            let lists = match assigned.filter(|a| !a.is_empty()) {
                Some(lists) => lists,
                None => place(&usable, id, current, t.count - current, rf),
            };
            let records = lists
                .into_iter()
                .zip(current..)
                .map(|(replicas, p)| MetadataRecord::Partition(partition_record(image, id, p, replicas)))
                .collect();
            Decision { entry: Some(records), answer: result }
        })
        .collect()
}

/// The leaders and ISRs the image should have, as Kafka's controller keeps them when brokers
/// are fenced or shut down: such a broker leaves every ISR it is in, unless no usable member
/// would be left (then the ISR stays, so one of its members leads again when it returns, with
/// everything committed); a partition whose leader is unusable moves to the first usable member
/// of its ISR, or is left without one; one without a leader takes a usable ISR member.
pub fn leader_changes(image: &MetadataImage) -> Vec<PartitionChange> {
    let mut changes = Vec::new();
    for topic in image.topics() {
        for (&partition, p) in &topic.partitions {
            let usable: Vec<BrokerId> = p.isr.iter().copied().filter(|&r| is_usable(image, r)).collect();
            let isr = if usable.is_empty() { p.isr.clone() } else { usable };
            let leader = if p.leader != NO_LEADER && isr.contains(&p.leader) && is_usable(image, p.leader) {
                p.leader
            } else {
                isr.iter().copied().find(|&r| is_usable(image, r)).unwrap_or(NO_LEADER)
            };
            if leader != p.leader || isr != p.isr {
                changes.push(PartitionChange {
                    topic_id: topic.id,
                    partition,
                    leader: (leader != p.leader).then_some(leader),
                    isr: (isr != p.isr).then_some(isr),
                    ..PartitionChange::default()
                });
            }
        }
    }
    changes
}

/// A broker that comes back as a new incarnation (restarted, perhaps after a crash that took
/// its unsynced tail) leaves the ISRs it is in and gives up what it led, as Kafka's controller
/// does on an unclean restart. Leading again in its old epoch, it would write new records at
/// offsets its followers already hold from before the crash, under the same epoch, where no
/// follower could tell them apart; in an ISR, it would count as holding what it must first
/// check against the leader (its recovered high watermark is not known committed). The last
/// member of an ISR stays in it, without leading until it is usable again (a new epoch).
pub fn restarted_broker_changes(image: &MetadataImage, broker: BrokerId) -> Vec<PartitionChange> {
    let mut changes = Vec::new();
    for topic in image.topics() {
        for (&partition, p) in topic.partitions.iter().filter(|(_, p)| p.isr.contains(&broker)) {
            let others: Vec<BrokerId> = p.isr.iter().copied().filter(|&r| r != broker).collect();
            let isr = (!others.is_empty()).then_some(others);
            let leader = (p.leader == broker).then(|| {
                let next = isr.iter().flatten().copied().find(|&r| is_usable(image, r));
                next.unwrap_or(NO_LEADER)
            });
            if isr.is_some() || leader.is_some() {
                changes.push(PartitionChange { topic_id: topic.id, partition, leader, isr, ..Default::default() });
            }
        }
    }
    changes
}

/// A topic's new overrides (from `config_changes`), checked as a single node checks them: the
/// Config records that take the image there, one entry (None when nothing changes), or why not.
pub fn config_change(
    image: &MetadataImage,
    defaults: &TopicDefaults,
    resource_type: i8,
    name: &str,
    next: Result<BTreeMap<String, String>, String>,
) -> Result<Option<Vec<MetadataRecord>>, (ResponseError, String)> {
    let next = config_changes::checked(&defaults.config, resource_type, name, image.topic(name).is_some(), next)?;
    let resource = ConfigResource::Topic(name.to_string());
    let current = image.configs(&resource).cloned().unwrap_or_default();
    let mut records: Vec<MetadataRecord> = current
        .keys()
        .filter(|k| !next.contains_key(*k))
        .map(|k| MetadataRecord::Config { resource: resource.clone(), name: k.clone(), value: None })
        .collect();
    records.extend(next.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| MetadataRecord::Config {
        resource: resource.clone(),
        name: k.clone(),
        value: Some(v.clone()),
    }));
    Ok((!records.is_empty()).then_some(records))
}

/// A topic's overrides in the image (empty if it has none).
pub fn overrides_of(image: &MetadataImage, name: &str) -> BTreeMap<String, String> {
    image.configs(&ConfigResource::Topic(name.to_string())).cloned().unwrap_or_default()
}

/// What an ElectLeaders request comes to.
#[derive(Debug, Default)]
pub struct Election {
    /// (topic, partition, why) of each partition not elected.
    pub refused: Vec<(String, i32, ResponseError)>,
    pub changes: Vec<PartitionChange>,
    /// (topic, partition) of each partition the changes elect a leader for.
    pub elected: Vec<(String, i32)>,
}

/// ElectLeaders (KIP-460): preferred (0) moves leadership to each partition's first replica
/// when it is in the ISR and usable; unclean (1) gives a leaderless partition whose ISR has no
/// usable replica any usable replica, which becomes its whole ISR (what it lacks is lost, as the
/// caller asked). `None` names every partition. Returns each partition's result and the changes.
pub fn elect_leaders(image: &MetadataImage, election_type: i8, wanted: Option<Vec<(String, Vec<i32>)>>) -> Election {
    let all = wanted.is_none();
    let wanted: Vec<(String, Vec<i32>)> = wanted
        .unwrap_or_else(|| image.topics().map(|t| (t.name.clone(), t.partitions.keys().copied().collect())).collect());
    let (mut failed, mut changes, mut elected) = (Vec::new(), Vec::new(), Vec::new());
    for (name, partitions) in wanted {
        for partition in partitions {
            let topic = image.topic(&name);
            let Some((topic, p)) = topic.and_then(|t| t.partitions.get(&partition).map(|p| (t, p))) else {
                failed.push((name.clone(), partition, ResponseError::UnknownTopicOrPartition));
                continue;
            };
            let choice = match election_type {
                0 => {
                    let preferred = p.replicas[0];
                    if p.leader == preferred {
                        Err(ResponseError::ElectionNotNeeded)
                    } else if p.isr.contains(&preferred) && is_usable(image, preferred) {
                        Ok((preferred, None))
                    } else {
                        Err(ResponseError::PreferredLeaderNotAvailable)
                    }
                }
                1 => {
                    if p.leader != NO_LEADER || p.isr.iter().any(|&r| is_usable(image, r)) {
                        Err(ResponseError::ElectionNotNeeded)
                    } else {
                        match p.replicas.iter().copied().find(|&r| is_usable(image, r)) {
                            Some(r) => Ok((r, Some(vec![r]))),
                            None => Err(ResponseError::EligibleLeadersNotAvailable),
                        }
                    }
                }
                _ => Err(ResponseError::InvalidRequest),
            };
            match choice {
                Ok((leader, isr)) => {
                    changes.push(PartitionChange {
                        topic_id: topic.id,
                        partition,
                        leader: Some(leader),
                        isr,
                        ..PartitionChange::default()
                    });
                    elected.push((name.clone(), partition));
                }
                // Asked for every partition, the ones that need nothing are not listed (Kafka).
                Err(ResponseError::ElectionNotNeeded) if all => {}
                Err(error) => failed.push((name.clone(), partition, error)),
            }
        }
    }
    Election { refused: failed, changes, elected }
}

/// One partition of an AlterPartition request (KIP-497): the ISR its leader proposes, with the
/// broker epoch of each member (-1: not given).
#[derive(Clone, Debug)]
pub struct IsrProposal {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<(BrokerId, i64)>,
}

/// AlterPartition from broker `leader`: each proposal checked as Kafka's controller checks it
/// (`validateAlterPartitionData`): a stale leader epoch is fenced; a proposal not from the
/// leader, or an ISR outside the replicas or without the leader, is invalid; a stale partition
/// epoch is INVALID_UPDATE_VERSION; a member that is fenced, shutting down or of another broker
/// epoch (KIP-903) is INELIGIBLE_REPLICA. Returns each proposal's refusal (None: taken) and the
/// changes for those taken that change anything.
pub fn alter_partition(
    image: &MetadataImage,
    leader: BrokerId,
    proposals: &[IsrProposal],
) -> (Vec<Option<ResponseError>>, Vec<PartitionChange>) {
    let mut refusals = Vec::new();
    let mut changes = Vec::new();
    for proposal in proposals {
        let partition = image.topic_by_id(proposal.topic_id).and_then(|t| t.partitions.get(&proposal.partition));
        let isr: Vec<BrokerId> = proposal.isr.iter().map(|(id, _)| *id).collect();
        let refusal = match partition {
            None => Some(ResponseError::UnknownTopicOrPartition),
            Some(p) if proposal.leader_epoch < p.leader_epoch => Some(ResponseError::FencedLeaderEpoch),
            Some(p) if proposal.leader_epoch > p.leader_epoch => Some(ResponseError::NotController),
            Some(p) if p.leader != leader => Some(ResponseError::InvalidRequest),
            Some(p) if proposal.partition_epoch != p.partition_epoch => Some(ResponseError::InvalidUpdateVersion),
            Some(p)
                if !isr.contains(&leader)
                    || isr.iter().any(|r| !p.replicas.contains(r))
                    || isr.iter().collect::<BTreeSet<_>>().len() != isr.len() =>
            {
                Some(ResponseError::InvalidRequest)
            }
            Some(p) => {
                let ineligible = proposal.isr.iter().any(|&(id, epoch)| {
                    !p.isr.contains(&id)
                        && (!is_usable(image, id) || (epoch >= 0 && image.broker(id).is_none_or(|b| b.epoch != epoch)))
                });
                ineligible.then_some(ResponseError::IneligibleReplica)
            }
        };
        if let (None, Some(p)) = (refusal, partition) {
            let mut sorted = isr.clone();
            sorted.sort_unstable();
            let mut current = p.isr.clone();
            current.sort_unstable();
            if sorted != current {
                changes.push(PartitionChange {
                    topic_id: proposal.topic_id,
                    partition: proposal.partition,
                    isr: Some(isr),
                    ..PartitionChange::default()
                });
            }
        }
        refusals.push(refusal);
    }
    (refusals, changes)
}

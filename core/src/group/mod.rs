//! The classic group coordinator (JoinGroup / SyncGroup / Heartbeat / LeaveGroup and committed
//! offsets) as a state machine. Inputs are plain arguments with `now_ms`; outputs are answers for
//! waiting requests (by token) and records to persist. Committed offsets and assignments take
//! effect only once the broker reports their records durable ([`GroupCoordinator::persisted`]).

pub mod records;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use records::{Committed, GroupRecord, GroupSnapshot, MemberSnapshot};

/// Identifies a request waiting for an answer; the broker maps it to a connection.
pub type Token = u64;
pub type PersistId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    pub max_metadata_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            max_metadata_bytes: 4096,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Clone, Debug)]
pub struct JoinArgs {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: (member id, instance id, subscription metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Clone, Debug)]
pub struct SyncArgs {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// What OffsetDelete did: the pending write (if anything was deleted) and the partitions kept
/// because the group's members subscribe to their topics.
#[derive(Debug)]
pub struct OffsetDeletion {
    pub persist: Option<PersistId>,
    pub refused: Vec<(String, i32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Join(Token, JoinResult),
    Sync(Token, SyncResult),
    /// Append these records to the internal log, then call `persisted(id, ok)`.
    Persist(PersistId, Vec<GroupRecord>),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    session_deadline: i64,
    /// Set when the member joined in the current rebalance (so it is not dropped at its end).
    joined_this_round: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Ordered by join time, which decides the leader when the old one is gone.
    pub members: BTreeMap<String, Member>,
    join_order: Vec<String>,
    /// Dynamic members told MEMBER_ID_REQUIRED, with the time their id expires.
    pending_members: BTreeMap<String, i64>,
    static_members: BTreeMap<String, String>,
    rebalance_deadline: i64,
    /// During the initial delay of a group that was empty.
    initial_delay_until: Option<i64>,
    /// The leader's assignment waiting to be durable.
    pending_assignment: Option<(PersistId, i32, BTreeMap<String, Bytes>)>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    empty_since: i64,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            join_order: Vec::new(),
            pending_members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            rebalance_deadline: 0,
            initial_delay_until: None,
            pending_assignment: None,
            offsets: BTreeMap::new(),
            empty_since: now_ms,
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((vote, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(vote).or_default() += 1;
            }
        }
        // Highest vote; ties go to the first member's preference order.
        candidates
            .into_iter()
            .max_by_key(|c| {
                (
                    votes.get(c).copied().unwrap_or(0),
                    usize::MAX - first.protocols.iter().position(|(n, _)| n == *c).unwrap_or(0),
                )
            })
            .cloned()
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        // Some protocol must remain common to all members.
        protocols.iter().any(|(p, _)| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == p)))
    }

    /// Topics the members subscribe to under the chosen consumer protocol; None when some
    /// member's subscription cannot be read (then every topic counts as subscribed).
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        let protocol = self.protocol.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(decode_consumer_subscription(&member.metadata_for(protocol))?);
        }
        Some(topics)
    }

    fn snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupSnapshot {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    metadata: m.metadata_for(&protocol).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }
}

#[derive(Debug)]
enum PendingPersist {
    Offsets { group: String, entries: Vec<((String, i32), Option<Committed>)> },
    Assignment { group: String },
    Other,
}

/// Why an offset commit was refused as a whole.
pub type CommitError = ResponseError;

pub struct GroupCoordinator {
    pub config: GroupConfig,
    groups: BTreeMap<String, Group>,
    outputs: VecDeque<Output>,
    pending: BTreeMap<PersistId, PendingPersist>,
    next_persist: PersistId,
    next_member: u64,
    loading: bool,
    next_expiry_check: i64,
    started_ms: i64,
}

fn err(e: ResponseError) -> i16 {
    e.code()
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, now_ms: i64) -> Self {
        let next_expiry_check = now_ms + config.offsets_retention_check_interval_ms;
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            outputs: VecDeque::new(),
            pending: BTreeMap::new(),
            next_persist: 0,
            next_member: 0,
            loading: true,
            next_expiry_check,
            started_ms: now_ms,
        }
    }

    pub fn is_loading(&self) -> bool {
        self.loading
    }

    /// Replays one record of the internal log while loading.
    pub fn load(&mut self, record: GroupRecord, now_ms: i64) {
        match record {
            GroupRecord::Offset { group, topic, partition, value } => {
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
                match value {
                    Some(c) => {
                        g.offsets.insert((topic, partition), c);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            GroupRecord::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            GroupRecord::Group { group, value: Some(snapshot) } => {
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
                g.generation = snapshot.generation;
                g.protocol_type = snapshot.protocol_type;
                g.protocol = snapshot.protocol.clone();
                g.leader = snapshot.leader;
                g.members.clear();
                g.join_order.clear();
                g.static_members.clear();
                for m in snapshot.members {
                    g.join_order.push(m.member_id.clone());
                    if let Some(i) = &m.instance_id {
                        g.static_members.insert(i.clone(), m.member_id.clone());
                    }
                    let protocol = snapshot.protocol.clone().unwrap_or_default();
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            member_id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            protocols: vec![(protocol, Bytes::from(m.metadata))],
                            assignment: Bytes::from(m.assignment),
                            awaiting_join: None,
                            awaiting_sync: None,
                            session_deadline: 0,
                            joined_this_round: false,
                        },
                    );
                }
                g.state = if g.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
            }
        }
    }

    /// Loading is done: restored members get a fresh session to come back in.
    pub fn finish_loading(&mut self, now_ms: i64) {
        self.loading = false;
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                m.session_deadline = now_ms + m.session_timeout_ms as i64;
            }
            if g.members.is_empty() {
                g.empty_since = now_ms;
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn next_deadline(&self) -> Option<i64> {
        let mut next = Some(self.next_expiry_check);
        // While loading, `tick` does nothing: restored members' zero deadlines would spin it.
        if self.loading {
            return next;
        }
        for g in self.groups.values() {
            let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
            if g.state == GroupState::PreparingRebalance {
                consider(g.initial_delay_until.unwrap_or(g.rebalance_deadline).min(g.rebalance_deadline));
            }
            for m in g.members.values() {
                if m.awaiting_join.is_none() {
                    consider(m.session_deadline);
                }
            }
            for &t in g.pending_members.values() {
                consider(t);
            }
        }
        next
    }

    fn persist(&mut self, records: Vec<GroupRecord>, pending: PendingPersist) -> PersistId {
        self.next_persist += 1;
        let id = self.next_persist;
        self.pending.insert(id, pending);
        self.outputs.push_back(Output::Persist(id, records));
        id
    }

    /// A member id unique within the group, also across coordinator restarts: the hash mixes in
    /// the time this coordinator started, and a collision with a known member draws again.
    fn new_member_id(&mut self, group: &str, client_id: &str) -> String {
        let prefix = if client_id.is_empty() { "member" } else { client_id };
        loop {
            self.next_member += 1;
            let mut h: u64 = 0xcbf29ce484222325;
            for b in group.bytes().chain(self.started_ms.to_be_bytes()).chain(self.next_member.to_be_bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
            let id = format!("{prefix}-{h:016x}{:08x}", self.next_member as u32);
            let taken = self
                .groups
                .get(group)
                .is_some_and(|g| g.members.contains_key(&id) || g.pending_members.contains_key(&id));
            if !taken {
                return id;
            }
        }
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, token: Token, args: JoinArgs, now_ms: i64) {
        let fail = |e: ResponseError, member: &str| JoinResult {
            error: err(e),
            generation: -1,
            member_id: member.to_string(),
            ..Default::default()
        };
        if self.loading {
            return self
                .outputs
                .push_back(Output::Join(token, fail(ResponseError::CoordinatorLoadInProgress, &args.member_id)));
        }
        if args.group.is_empty() {
            return self.outputs.push_back(Output::Join(token, fail(ResponseError::InvalidGroupId, &args.member_id)));
        }
        if args.session_timeout_ms < self.config.min_session_timeout_ms
            || args.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return self
                .outputs
                .push_back(Output::Join(token, fail(ResponseError::InvalidSessionTimeout, &args.member_id)));
        }
        if args.protocol_type.is_empty() || args.protocols.is_empty() {
            return self
                .outputs
                .push_back(Output::Join(token, fail(ResponseError::InconsistentGroupProtocol, &args.member_id)));
        }
        let group = self.groups.entry(args.group.clone()).or_insert_with(|| Group::new(&args.group, now_ms));
        if group.state == GroupState::Dead {
            *group = Group::new(&args.group, now_ms);
        }
        if !group.supports(&args.protocol_type, &args.protocols) {
            return self
                .outputs
                .push_back(Output::Join(token, fail(ResponseError::InconsistentGroupProtocol, &args.member_id)));
        }
        if args.member_id.is_empty() {
            return self.join_new_member(token, args, now_ms);
        }
        let group = self.groups.get_mut(&args.group).expect("just ensured");
        if let Some(instance) = &args.instance_id {
            if group.static_members.get(instance).is_some_and(|m| m != &args.member_id) {
                return self
                    .outputs
                    .push_back(Output::Join(token, fail(ResponseError::FencedInstanceId, &args.member_id)));
            }
        }
        if group.pending_members.remove(&args.member_id).is_some() {
            self.add_member(token, args, now_ms);
            return;
        }
        if !group.members.contains_key(&args.member_id) {
            return self.outputs.push_back(Output::Join(token, fail(ResponseError::UnknownMemberId, &args.member_id)));
        }
        self.join_known_member(token, args, now_ms);
    }

    fn join_new_member(&mut self, token: Token, args: JoinArgs, now_ms: i64) {
        let group = self.groups.get_mut(&args.group).expect("exists");
        if let Some(instance) = args.instance_id.clone() {
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                return self.rejoin_static_member(token, args, old_id, now_ms);
            }
        }
        let member_id = self.new_member_id(&args.group, &args.client_id);
        let group = self.groups.get_mut(&args.group).expect("exists");
        if args.require_known_member_id && args.instance_id.is_none() {
            group.pending_members.insert(member_id.clone(), now_ms + args.session_timeout_ms as i64);
            let result = JoinResult {
                error: err(ResponseError::MemberIdRequired),
                generation: -1,
                member_id,
                ..Default::default()
            };
            self.outputs.push_back(Output::Join(token, result));
            return;
        }
        self.add_member(token, JoinArgs { member_id, ..args }, now_ms);
    }

    /// A static member restarting with a new member id takes the old one's place. With
    /// unchanged protocols in a settled group it keeps its assignment without a rebalance.
    fn rejoin_static_member(&mut self, token: Token, args: JoinArgs, old_id: String, now_ms: i64) {
        let new_id = self.new_member_id(&args.group, &args.client_id);
        let group = self.groups.get_mut(&args.group).expect("exists");
        let mut member = group.members.remove(&old_id).expect("static member is a member");
        if let Some(t) = member.awaiting_join.take() {
            self.outputs.push_back(Output::Join(
                t,
                JoinResult {
                    error: err(ResponseError::FencedInstanceId),
                    generation: -1,
                    member_id: old_id.clone(),
                    ..Default::default()
                },
            ));
        }
        if let Some(t) = member.awaiting_sync.take() {
            self.outputs.push_back(Output::Sync(
                t,
                SyncResult { error: err(ResponseError::FencedInstanceId), ..Default::default() },
            ));
        }
        member.member_id = new_id.clone();
        member.session_deadline = now_ms + args.session_timeout_ms as i64;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.client_id = args.client_id.clone();
        member.client_host = args.client_host.clone();
        member.protocols = args.protocols.clone();
        group.members.insert(new_id.clone(), member);
        for id in group.join_order.iter_mut() {
            if *id == old_id {
                *id = new_id.clone();
            }
        }
        group.static_members.insert(args.instance_id.clone().expect("static"), new_id.clone());
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        // As in Kafka: in a Stable group a restarted static member takes its old place (and
        // assignment) without a rebalance, as long as the group would still pick the same
        // protocol. The leader gets the member list again; its SyncGroup in Stable changes nothing.
        // While CompletingRebalance the leader may be assigning to the old member id, which the
        // new one could never collect, so the group rebalances.
        let settled = group.state == GroupState::Stable && group.select_protocol() == group.protocol;
        if settled {
            {
                let members = if was_leader { Self::member_list(group) } else { Vec::new() };
                let result = JoinResult {
                    error: 0,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id: new_id,
                    members,
                };
                self.outputs.push_back(Output::Join(token, result));
                // Persist the new member id so a coordinator restart still knows it.
                let record =
                    GroupRecord::Group { group: args.group.clone(), value: Some(self.groups[&args.group].snapshot()) };
                self.persist(vec![record], PendingPersist::Other);
            }
        } else {
            {
                let member = group.members.get_mut(&new_id).expect("inserted");
                member.awaiting_join = Some(token);
                member.joined_this_round = true;
                self.prepare_rebalance(&args.group, now_ms);
                self.maybe_complete_join(&args.group, now_ms);
            }
        }
    }

    fn add_member(&mut self, token: Token, args: JoinArgs, now_ms: i64) {
        let group = self.groups.get_mut(&args.group).expect("exists");
        let member = Member {
            member_id: args.member_id.clone(),
            instance_id: args.instance_id.clone(),
            client_id: args.client_id,
            client_host: args.client_host,
            session_timeout_ms: args.session_timeout_ms,
            rebalance_timeout_ms: args.rebalance_timeout_ms,
            protocol_type: args.protocol_type.clone(),
            protocols: args.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(token),
            awaiting_sync: None,
            session_deadline: now_ms + args.session_timeout_ms as i64,
            joined_this_round: true,
        };
        if group.members.is_empty() {
            group.protocol_type = Some(args.protocol_type);
        }
        if let Some(instance) = &args.instance_id {
            group.static_members.insert(instance.clone(), args.member_id.clone());
        }
        group.join_order.push(args.member_id.clone());
        group.members.insert(args.member_id.clone(), member);
        let was_empty = group.state == GroupState::Empty;
        if was_empty || group.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(&args.group, now_ms);
        } else if let Some(until) = group.initial_delay_until {
            // Each new member of a forming group extends the initial delay, within the timeout.
            let extended = (now_ms + self.config.initial_rebalance_delay_ms).min(group.rebalance_deadline);
            group.initial_delay_until = Some(until.max(extended));
        }
        self.maybe_complete_join(&args.group, now_ms);
    }

    fn join_known_member(&mut self, token: Token, args: JoinArgs, now_ms: i64) {
        let group = self.groups.get_mut(&args.group).expect("exists");
        let is_leader = group.leader.as_deref() == Some(args.member_id.as_str());
        let state = group.state;
        let generation = group.generation;
        let member = group.members.get_mut(&args.member_id).expect("known");
        member.session_deadline = now_ms + args.session_timeout_ms as i64;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        let unchanged = member.protocols == args.protocols;
        match state {
            GroupState::PreparingRebalance => {
                if let Some(old) = member.awaiting_join.replace(token) {
                    self.outputs.push_back(Output::Join(
                        old,
                        JoinResult {
                            error: err(ResponseError::RebalanceInProgress),
                            generation: -1,
                            member_id: args.member_id.clone(),
                            ..Default::default()
                        },
                    ));
                }
                let member =
                    self.groups.get_mut(&args.group).expect("exists").members.get_mut(&args.member_id).expect("known");
                member.protocols = args.protocols;
                member.joined_this_round = true;
                self.maybe_complete_join(&args.group, now_ms);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(state == GroupState::Stable && is_leader) =>
            {
                // A retry, or a follower's rejoin with nothing new: answer with the current generation.
                let group = &self.groups[&args.group];
                let members = if is_leader { Self::member_list(group) } else { Vec::new() };
                let result = JoinResult {
                    error: 0,
                    generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id: args.member_id,
                    members,
                };
                self.outputs.push_back(Output::Join(token, result));
            }
            _ => {
                member.protocols = args.protocols;
                member.awaiting_join = Some(token);
                member.joined_this_round = true;
                self.prepare_rebalance(&args.group, now_ms);
                self.maybe_complete_join(&args.group, now_ms);
            }
        }
    }

    fn member_list(group: &Group) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = group.protocol.clone().unwrap_or_default();
        group
            .join_order
            .iter()
            .filter_map(|id| group.members.get(id))
            .map(|m| (m.member_id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
            .collect()
    }

    fn prepare_rebalance(&mut self, group_id: &str, now_ms: i64) {
        let delay = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("exists");
        let timeout = group.members.values().map(|m| m.rebalance_timeout_ms.max(0) as i64).max().unwrap_or(0);
        // A rebalance abandons any in-flight sync: waiting followers must rejoin.
        for m in group.members.values_mut() {
            if let Some(t) = m.awaiting_sync.take() {
                self.outputs.push_back(Output::Sync(
                    t,
                    SyncResult { error: err(ResponseError::RebalanceInProgress), ..Default::default() },
                ));
            }
            if m.awaiting_join.is_none() {
                m.joined_this_round = false;
            }
        }
        group.pending_assignment = None;
        group.initial_delay_until =
            if group.state == GroupState::Empty && delay > 0 { Some(now_ms + delay.min(timeout.max(1))) } else { None };
        group.rebalance_deadline = now_ms + timeout;
        group.state = GroupState::PreparingRebalance;
    }

    fn maybe_complete_join(&mut self, group_id: &str, now_ms: i64) {
        let group = &self.groups[group_id];
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        if group.initial_delay_until.is_some_and(|t| now_ms < t) {
            return;
        }
        let all_joined = group.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined || now_ms >= group.rebalance_deadline {
            self.complete_join(group_id, now_ms);
        }
    }

    fn complete_join(&mut self, group_id: &str, now_ms: i64) {
        let group = self.groups.get_mut(group_id).expect("exists");
        // Members that did not rejoin in time are out.
        let gone: Vec<String> =
            group.members.values().filter(|m| m.awaiting_join.is_none()).map(|m| m.member_id.clone()).collect();
        for id in gone {
            Self::remove_member(group, &id);
        }
        group.initial_delay_until = None;
        group.generation += 1;
        if group.members.is_empty() {
            tracing::info!(group = group_id, generation = group.generation, "group is empty");
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            group.empty_since = now_ms;
            let record = GroupRecord::Group { group: group_id.to_string(), value: Some(group.snapshot()) };
            self.persist(vec![record], PendingPersist::Other);
            return;
        }
        group.protocol = group.select_protocol();
        if group.leader.as_ref().is_none_or(|l| !group.members.contains_key(l)) {
            group.leader = group.join_order.iter().find(|id| group.members.contains_key(*id)).cloned();
        }
        group.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = group_id,
            generation = group.generation,
            members = group.members.len(),
            protocol = group.protocol.as_deref().unwrap_or(""),
            "group rebalanced"
        );
        let members = Self::member_list(group);
        let leader = group.leader.clone().unwrap_or_default();
        let mut answers = Vec::new();
        for m in group.members.values_mut() {
            m.session_deadline = now_ms + m.session_timeout_ms as i64;
            m.joined_this_round = false;
            m.assignment = Bytes::new();
            if let Some(token) = m.awaiting_join.take() {
                answers.push((
                    token,
                    JoinResult {
                        error: 0,
                        generation: group.generation,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol.clone(),
                        leader: leader.clone(),
                        member_id: m.member_id.clone(),
                        members: if m.member_id == leader { members.clone() } else { Vec::new() },
                    },
                ));
            }
        }
        for (token, result) in answers {
            self.outputs.push_back(Output::Join(token, result));
        }
    }

    fn remove_member(group: &mut Group, member_id: &str) -> Option<Member> {
        let member = group.members.remove(member_id)?;
        group.join_order.retain(|id| id != member_id);
        if let Some(instance) = &member.instance_id {
            if group.static_members.get(instance).is_some_and(|m| m == member_id) {
                group.static_members.remove(instance);
            }
        }
        Some(member)
    }

    /// A member is gone (left or expired): answer its waiting requests and rebalance the rest.
    fn member_gone(&mut self, group_id: &str, member_id: &str, now_ms: i64) {
        let group = self.groups.get_mut(group_id).expect("exists");
        let Some(member) = Self::remove_member(group, member_id) else {
            return;
        };
        if let Some(t) = member.awaiting_join {
            self.outputs.push_back(Output::Join(
                t,
                JoinResult {
                    error: err(ResponseError::UnknownMemberId),
                    generation: -1,
                    member_id: member_id.to_string(),
                    ..Default::default()
                },
            ));
        }
        if let Some(t) = member.awaiting_sync {
            self.outputs.push_back(Output::Sync(
                t,
                SyncResult { error: err(ResponseError::UnknownMemberId), ..Default::default() },
            ));
        }
        let group = &self.groups[group_id];
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group_id, now_ms);
                self.maybe_complete_join(group_id, now_ms);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group_id, now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
        let group = &self.groups[group_id];
        if group.members.is_empty() && group.state == GroupState::PreparingRebalance {
            self.complete_join(group_id, now_ms);
        }
    }

    // ---- SyncGroup ----

    pub fn sync(&mut self, token: Token, args: SyncArgs, _now_ms: i64) {
        let fail = |e: ResponseError| SyncResult { error: err(e), ..Default::default() };
        if self.loading {
            return self.outputs.push_back(Output::Sync(token, fail(ResponseError::CoordinatorLoadInProgress)));
        }
        let Some(group) = self.groups.get_mut(&args.group) else {
            return self.outputs.push_back(Output::Sync(token, fail(ResponseError::UnknownMemberId)));
        };
        if let Some(instance) = &args.instance_id {
            if group.static_members.get(instance).is_some_and(|m| m != &args.member_id) {
                return self.outputs.push_back(Output::Sync(token, fail(ResponseError::FencedInstanceId)));
            }
        }
        if !group.members.contains_key(&args.member_id) {
            return self.outputs.push_back(Output::Sync(token, fail(ResponseError::UnknownMemberId)));
        }
        if args.generation != group.generation {
            return self.outputs.push_back(Output::Sync(token, fail(ResponseError::IllegalGeneration)));
        }
        if args.protocol_type.as_ref().is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || args.protocol_name.as_ref().is_some_and(|n| Some(n) != group.protocol.as_ref())
        {
            return self.outputs.push_back(Output::Sync(token, fail(ResponseError::InconsistentGroupProtocol)));
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        match group.state {
            GroupState::PreparingRebalance => {
                self.outputs.push_back(Output::Sync(token, fail(ResponseError::RebalanceInProgress)))
            }
            GroupState::Stable => {
                let assignment = group.members[&args.member_id].assignment.clone();
                let result = ok(group, assignment);
                self.outputs.push_back(Output::Sync(token, result));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&args.member_id).expect("known");
                if let Some(old) = member.awaiting_sync.replace(token) {
                    self.outputs.push_back(Output::Sync(old, fail(ResponseError::RebalanceInProgress)));
                }
                let is_leader = group.leader.as_deref() == Some(args.member_id.as_str());
                if is_leader && group.pending_assignment.is_none() {
                    let assignments: BTreeMap<String, Bytes> = group
                        .members
                        .keys()
                        .map(|id| {
                            (
                                id.clone(),
                                args.assignments
                                    .iter()
                                    .find(|(m, _)| m == id)
                                    .map(|(_, a)| a.clone())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect();
                    let mut snapshot = group.snapshot();
                    for m in &mut snapshot.members {
                        m.assignment = assignments.get(&m.member_id).map(|a| a.to_vec()).unwrap_or_default();
                    }
                    let generation = group.generation;
                    let record = GroupRecord::Group { group: args.group.clone(), value: Some(snapshot) };
                    let id = self.persist(vec![record], PendingPersist::Assignment { group: args.group.clone() });
                    self.groups.get_mut(&args.group).expect("exists").pending_assignment =
                        Some((id, generation, assignments));
                }
            }
            GroupState::Empty | GroupState::Dead => {
                self.outputs.push_back(Output::Sync(token, fail(ResponseError::UnknownMemberId)))
            }
        }
    }

    // ---- Heartbeat and LeaveGroup ----

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> i16 {
        if self.loading {
            return err(ResponseError::CoordinatorLoadInProgress);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return err(ResponseError::UnknownMemberId);
        };
        if let Some(instance) = instance_id {
            if group.static_members.get(instance).is_some_and(|m| m != member_id) {
                return err(ResponseError::FencedInstanceId);
            }
        }
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.members.get_mut(member_id) else {
            return err(ResponseError::UnknownMemberId);
        };
        if generation != current {
            return err(ResponseError::IllegalGeneration);
        }
        member.session_deadline = now_ms + member.session_timeout_ms as i64;
        match state {
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
            GroupState::Empty | GroupState::Dead => err(ResponseError::UnknownMemberId),
        }
    }

    /// Returns the top-level error and one error per leaving member.
    pub fn leave(&mut self, group_id: &str, members: &[(String, Option<String>)], now_ms: i64) -> (i16, Vec<i16>) {
        if self.loading {
            return (err(ResponseError::CoordinatorLoadInProgress), Vec::new());
        }
        if !self.groups.contains_key(group_id) {
            return (
                err(ResponseError::UnknownMemberId),
                members.iter().map(|_| err(ResponseError::UnknownMemberId)).collect(),
            );
        }
        let mut errors = Vec::new();
        for (member_id, instance) in members {
            let group = &self.groups[group_id];
            // A static member may leave by instance id alone.
            let target = match instance {
                Some(i) => match group.static_members.get(i) {
                    Some(m) if member_id.is_empty() || m == member_id => Some(m.clone()),
                    Some(_) => {
                        errors.push(err(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => None,
                },
                None => group.members.contains_key(member_id).then(|| member_id.clone()),
            };
            let pending = self.groups.get_mut(group_id).expect("exists").pending_members.remove(member_id).is_some();
            match target {
                Some(id) => {
                    self.member_gone(group_id, &id, now_ms);
                    errors.push(0);
                }
                None if pending => errors.push(0),
                None => errors.push(err(ResponseError::UnknownMemberId)),
            }
        }
        (0, errors)
    }

    // ---- time ----

    pub fn tick(&mut self, now_ms: i64) {
        // Restored members have no session yet, and the log is still being replayed.
        if self.loading {
            return;
        }
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let expired: Vec<String> = self.groups[&id]
                .members
                .values()
                .filter(|m| m.awaiting_join.is_none() && m.session_deadline <= now_ms)
                .map(|m| m.member_id.clone())
                .collect();
            for member in expired {
                tracing::info!(group = %id, member, "member session expired");
                self.member_gone(&id, &member, now_ms);
            }
            let group = self.groups.get_mut(&id).expect("exists");
            group.pending_members.retain(|_, t| *t > now_ms);
            if group.state == GroupState::PreparingRebalance {
                self.maybe_complete_join(&id, now_ms);
            }
        }
        if now_ms >= self.next_expiry_check && !self.loading {
            self.next_expiry_check = now_ms + self.config.offsets_retention_check_interval_ms;
            self.expire_offsets(now_ms);
        }
    }

    /// Offsets of groups that stayed empty longer than the retention are deleted, and so is the
    /// group once it has none left.
    fn expire_offsets(&mut self, now_ms: i64) {
        let retention = self.config.offsets_retention_ms;
        let expired: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.state == GroupState::Empty && now_ms - g.empty_since > retention)
            .map(|g| g.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %id, "expiring the offsets of an empty group");
            self.delete_group_records(&id);
        }
    }

    fn delete_group_records(&mut self, id: &str) {
        let Some(group) = self.groups.get_mut(id) else {
            return;
        };
        let mut records: Vec<GroupRecord> = group
            .offsets
            .keys()
            .map(|(t, p)| GroupRecord::Offset { group: id.to_string(), topic: t.clone(), partition: *p, value: None })
            .collect();
        records.push(GroupRecord::Group { group: id.to_string(), value: None });
        group.state = GroupState::Dead;
        group.offsets.clear();
        self.persist(records, PendingPersist::Other);
        self.groups.remove(id);
    }

    // ---- offsets ----

    /// Validates a commit and asks for its records to be persisted. The offsets become visible
    /// once `persisted` is called with the returned id.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<((String, i32), Committed)>,
        now_ms: i64,
    ) -> Result<PersistId, CommitError> {
        self.check_committer(group_id, generation, member_id, instance_id)?;
        self.write_offsets(group_id, offsets, now_ms)
    }

    /// Whether this member of this generation may commit offsets for the group.
    fn check_committer(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), CommitError> {
        if self.loading {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get(group_id) else {
            return if generation < 0 { Ok(()) } else { Err(ResponseError::IllegalGeneration) };
        };
        if let Some(instance) = instance_id {
            if group.static_members.get(instance).is_some_and(|m| m != member_id) {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        let simple = generation < 0 && member_id.is_empty();
        if simple {
            if group.state != GroupState::Empty && group.state != GroupState::Dead {
                return Err(ResponseError::UnknownMemberId);
            }
            return Ok(());
        }
        if !group.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// TxnOffsetCommit: a member's generation is checked as for OffsetCommit; a producer that
    /// names no member (older clients) may commit into a group with members, as in Kafka.
    pub fn check_transactional_committer(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), CommitError> {
        if generation < 0 && member_id.is_empty() && !self.loading && !group_id.is_empty() {
            return Ok(());
        }
        self.check_committer(group_id, generation, member_id, instance_id)
    }

    /// Writes the offsets of a committed transaction (checked when they were sent).
    pub fn commit_transactional(
        &mut self,
        group_id: &str,
        offsets: Vec<((String, i32), Committed)>,
        now_ms: i64,
    ) -> Result<PersistId, CommitError> {
        if self.loading {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        self.write_offsets(group_id, offsets, now_ms)
    }

    fn write_offsets(
        &mut self,
        group_id: &str,
        offsets: Vec<((String, i32), Committed)>,
        now_ms: i64,
    ) -> Result<PersistId, CommitError> {
        if !self.groups.contains_key(group_id) {
            self.groups.insert(group_id.to_string(), Group::new(group_id, now_ms));
        }
        let records = offsets
            .iter()
            .map(|((t, p), c)| GroupRecord::Offset {
                group: group_id.to_string(),
                topic: t.clone(),
                partition: *p,
                value: Some(c.clone()),
            })
            .collect();
        let entries = offsets.into_iter().map(|(k, c)| (k, Some(c))).collect();
        Ok(self.persist(records, PendingPersist::Offsets { group: group_id.to_string(), entries }))
    }

    /// Deletes committed offsets (OffsetDelete). As in KIP-496, a group with members keeps the
    /// offsets of topics its members subscribe to; those partitions come back in `refused`.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<OffsetDeletion, ResponseError> {
        if self.loading {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let Some(group) = self.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        let (refused, deletable): (Vec<_>, Vec<_>) = match group.state {
            GroupState::Empty | GroupState::Dead => (Vec::new(), partitions),
            _ if group.protocol_type.as_deref() == Some("consumer") => {
                let subscribed = group.subscribed_topics();
                partitions.into_iter().partition(|(topic, _)| subscribed.as_ref().is_none_or(|s| s.contains(topic)))
            }
            _ => return Err(ResponseError::NonEmptyGroup),
        };
        let present: Vec<(String, i32)> = deletable.into_iter().filter(|k| group.offsets.contains_key(k)).collect();
        if present.is_empty() {
            return Ok(OffsetDeletion { persist: None, refused });
        }
        let records = present
            .iter()
            .map(|(t, p)| GroupRecord::Offset {
                group: group_id.to_string(),
                topic: t.clone(),
                partition: *p,
                value: None,
            })
            .collect();
        let entries = present.into_iter().map(|k| (k, None)).collect();
        let persist = Some(self.persist(records, PendingPersist::Offsets { group: group_id.to_string(), entries }));
        Ok(OffsetDeletion { persist, refused })
    }

    /// DeleteGroups: only empty groups can go.
    pub fn delete_group(&mut self, group_id: &str) -> i16 {
        if self.loading {
            return err(ResponseError::CoordinatorLoadInProgress);
        }
        match self.groups.get(group_id) {
            None => err(ResponseError::GroupIdNotFound),
            Some(g) if g.state != GroupState::Empty && g.state != GroupState::Dead => err(ResponseError::NonEmptyGroup),
            Some(_) => {
                self.delete_group_records(group_id);
                0
            }
        }
    }

    /// A topic was deleted: every group's committed offsets for it go, with tombstones, so a
    /// topic created again under the name starts without them (Kafka's cleanup on deletion).
    /// Commits for it still being written are dropped too.
    pub fn forget_topic(&mut self, topic: &str) {
        for pending in self.pending.values_mut() {
            if let PendingPersist::Offsets { entries, .. } = pending {
                entries.retain(|((t, _), _)| t != topic);
            }
        }
        let affected: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .iter()
            .map(|(id, g)| (id.clone(), g.offsets.keys().filter(|(t, _)| t == topic).cloned().collect::<Vec<_>>()))
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        for (group, keys) in affected {
            let g = self.groups.get_mut(&group).expect("listed above");
            for key in &keys {
                g.offsets.remove(key);
            }
            let records = keys
                .into_iter()
                .map(|(topic, partition)| GroupRecord::Offset { group: group.clone(), topic, partition, value: None })
                .collect();
            self.persist(records, PendingPersist::Other);
        }
    }

    /// Topics any group holds committed offsets for.
    pub fn topics_with_offsets(&self) -> BTreeSet<String> {
        self.groups.values().flat_map(|g| g.offsets.keys().map(|(t, _)| t.clone())).collect()
    }

    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.groups.get(group_id)?.offsets.get(&(topic.to_string(), partition))
    }

    /// The broker made a persist durable (or failed to).
    pub fn persisted(&mut self, id: PersistId, ok: bool, now_ms: i64) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            PendingPersist::Offsets { group, entries } => {
                if !ok {
                    return;
                }
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now_ms));
                for (key, value) in entries {
                    match value {
                        Some(c) => {
                            g.offsets.insert(key, c);
                        }
                        None => {
                            g.offsets.remove(&key);
                        }
                    }
                }
            }
            PendingPersist::Assignment { group } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                let Some((pending_id, generation, assignments)) = g.pending_assignment.take() else {
                    return;
                };
                if pending_id != id || generation != g.generation || g.state != GroupState::CompletingRebalance {
                    return;
                }
                if !ok {
                    // The leader's sync fails; everyone rejoins.
                    self.prepare_rebalance(&group, now_ms);
                    return;
                }
                g.state = GroupState::Stable;
                let mut answers = Vec::new();
                for m in g.members.values_mut() {
                    m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
                    if let Some(t) = m.awaiting_sync.take() {
                        answers.push((
                            t,
                            SyncResult {
                                error: 0,
                                protocol_type: g.protocol_type.clone(),
                                protocol_name: g.protocol.clone(),
                                assignment: m.assignment.clone(),
                            },
                        ));
                    }
                }
                for (t, r) in answers {
                    self.outputs.push_back(Output::Sync(t, r));
                }
            }
            PendingPersist::Other => {}
        }
    }

    /// Partitions assigned to members of the group in its current generation, decoded from the
    /// consumer protocol (for checks and `group describe`).
    pub fn assigned_partitions(&self, group_id: &str) -> BTreeMap<String, BTreeSet<(String, i32)>> {
        let mut out = BTreeMap::new();
        if let Some(g) = self.groups.get(group_id) {
            for m in g.members.values() {
                out.insert(m.member_id.clone(), decode_consumer_assignment(&m.assignment).into_iter().collect());
            }
        }
        out
    }
}

/// Reads the topics of a ConsumerProtocolSubscription (version, [topic], ...); None if malformed.
pub fn decode_consumer_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let count = i32::from_be_bytes(bytes.get(2..6)?.try_into().ok()?);
    let mut at = 6usize;
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let len = usize::try_from(len).ok()?;
        topics.push(std::str::from_utf8(bytes.get(at..at + len)?).ok()?.to_string());
        at += len;
    }
    Some(topics)
}

/// Decodes a ConsumerProtocolAssignment (version, [topic, [partition]], user data) leniently.
pub fn decode_consumer_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut at = 2usize;
    let read_i32 = |at: &mut usize| -> Option<i32> {
        let v = i32::from_be_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?);
        *at += 4;
        Some(v)
    };
    let Some(topics) = read_i32(&mut at) else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(len) = bytes.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]]) as usize) else {
            return out;
        };
        at += 2;
        let Some(topic) = bytes.get(at..at + len).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_string) else {
            return out;
        };
        at += len;
        let Some(n) = read_i32(&mut at) else {
            return out;
        };
        for _ in 0..n.max(0) {
            let Some(p) = read_i32(&mut at) else {
                return out;
            };
            out.push((topic.clone(), p));
        }
    }
    out
}

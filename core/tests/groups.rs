//! The group coordinator under random interleavings of joins, syncs, heartbeats, leaves,
//! commits, silent crashes and time, driven by simulated well-behaved and faulty members.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use proptest::prelude::*;
use spool_core::group::records::Committed;
use spool_core::group::{GroupConfig, GroupCoordinator, GroupState, JoinArgs, Output, SyncArgs};

const GROUP: &str = "g";
const PARTITIONS: i32 = 6;
const SESSION_MS: i32 = 10_000;

#[derive(Clone, Debug)]
enum Op {
    NewMember,
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    Commit(usize),
    Crash(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::NewMember),
        3 => (0usize..8).prop_map(Op::Join),
        3 => (0usize..8).prop_map(Op::Sync),
        3 => (0usize..8).prop_map(Op::Heartbeat),
        1 => (0usize..8).prop_map(Op::Leave),
        2 => (0usize..8).prop_map(Op::Commit),
        1 => (0usize..8).prop_map(Op::Crash),
        3 => (1u16..4000).prop_map(Op::Advance),
    ]
}

#[derive(Default, Clone, Debug)]
struct Member {
    id: String,
    generation: i32,
    leader: bool,
    members: Vec<String>,
    synced: bool,
    crashed: bool,
    left: bool,
}

/// A range assignment over the member list the leader received (what a real leader computes).
fn assign(members: &[String]) -> Vec<(String, Bytes)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mine: Vec<i32> = (0..PARTITIONS).filter(|p| *p as usize % sorted.len() == i).collect();
            let mut b = vec![0u8, 0, 0, 0, 0, 1, 0, 1, b't'];
            b.extend_from_slice(&(mine.len() as i32).to_be_bytes());
            for p in mine {
                b.extend_from_slice(&p.to_be_bytes());
            }
            b.extend_from_slice(&(-1i32).to_be_bytes());
            (m.clone(), Bytes::from(b))
        })
        .collect()
}

struct World {
    c: GroupCoordinator,
    now: i64,
    members: Vec<Member>,
    next_token: u64,
    tokens: BTreeMap<u64, (usize, bool)>,
    /// generation -> member -> partitions, from successful syncs.
    owned: BTreeMap<i32, BTreeMap<String, BTreeSet<i32>>>,
}

impl World {
    fn new() -> Self {
        let config =
            GroupConfig { initial_rebalance_delay_ms: 3000, min_session_timeout_ms: 1000, ..Default::default() };
        let mut c = GroupCoordinator::new(config, 0);
        c.finish_loading(0);
        World { c, now: 0, members: Vec::new(), next_token: 0, tokens: BTreeMap::new(), owned: BTreeMap::new() }
    }

    fn token(&mut self, member: usize, is_join: bool) -> u64 {
        self.next_token += 1;
        self.tokens.insert(self.next_token, (member, is_join));
        self.next_token
    }

    fn join(&mut self, i: usize) {
        let t = self.token(i, true);
        let args = JoinArgs {
            group: GROUP.into(),
            member_id: self.members[i].id.clone(),
            instance_id: None,
            client_id: format!("c{i}"),
            client_host: "h".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: 15_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            require_known_member_id: true,
        };
        self.c.join(t, args, self.now);
        self.drain();
    }

    fn sync(&mut self, i: usize) {
        let m = &self.members[i];
        if m.generation < 0 || m.id.is_empty() {
            return;
        }
        let assignments = if m.leader { assign(&m.members) } else { Vec::new() };
        let args = SyncArgs {
            group: GROUP.into(),
            generation: m.generation,
            member_id: m.id.clone(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        };
        let t = self.token(i, false);
        self.c.sync(t, args, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.c.poll_output() {
            match out {
                Output::Persist(id, _) => self.c.persisted(id, true, self.now),
                Output::Join(t, r) => {
                    let (i, _) = self.tokens.remove(&t).expect("known token");
                    let m = &mut self.members[i];
                    if r.error == ResponseError::MemberIdRequired.code() {
                        m.id = r.member_id;
                    } else if r.error == 0 {
                        m.id = r.member_id.clone();
                        m.generation = r.generation;
                        m.leader = r.leader == r.member_id;
                        m.members = r.members.iter().map(|(id, _, _)| id.clone()).collect();
                        m.synced = false;
                    } else if r.error == ResponseError::UnknownMemberId.code() {
                        m.id.clear();
                        m.generation = -1;
                    }
                }
                Output::Sync(t, r) => {
                    let (i, _) = self.tokens.remove(&t).expect("known token");
                    let m = &mut self.members[i];
                    if r.error == 0 {
                        m.synced = true;
                        let parts: BTreeSet<i32> = spool_core::group::decode_consumer_assignment(&r.assignment)
                            .into_iter()
                            .map(|(_, p)| p)
                            .collect();
                        self.owned.entry(m.generation).or_default().insert(m.id.clone(), parts);
                    } else {
                        m.synced = false;
                        if r.error == ResponseError::UnknownMemberId.code() {
                            m.id.clear();
                            m.generation = -1;
                        }
                    }
                }
            }
        }
    }

    fn live(&self, i: usize) -> bool {
        i < self.members.len() && !self.members[i].crashed && !self.members[i].left
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::NewMember if self.members.len() < 8 => {
                self.members.push(Member { generation: -1, ..Default::default() });
                let i = self.members.len() - 1;
                self.join(i);
            }
            Op::Join(i) if self.live(i) => self.join(i),
            Op::Sync(i) if self.live(i) => self.sync(i),
            Op::Heartbeat(i) if self.live(i) && !self.members[i].id.is_empty() => {
                let m = self.members[i].clone();
                let e = self.c.heartbeat(GROUP, m.generation, &m.id, None, self.now);
                self.drain();
                if e == ResponseError::UnknownMemberId.code() {
                    self.members[i].id.clear();
                    self.members[i].generation = -1;
                }
            }
            Op::Leave(i) if self.live(i) && !self.members[i].id.is_empty() => {
                let id = self.members[i].id.clone();
                self.c.leave(GROUP, &[(id, None)], self.now);
                self.members[i].left = true;
                self.drain();
            }
            Op::Commit(i) if self.live(i) && !self.members[i].id.is_empty() => {
                let m = self.members[i].clone();
                let before = self.c.group(GROUP).map(|g| (g.generation, g.state, g.members.contains_key(&m.id)));
                let offsets = vec![(
                    ("t".to_string(), 0),
                    Committed { offset: 1, leader_epoch: 0, metadata: None, commit_ms: self.now },
                )];
                let result = self.c.commit(GROUP, m.generation, &m.id, None, offsets, self.now);
                if result.is_ok() {
                    let (generation, state, member) = before.expect("group exists");
                    prop_assert!(member, "a commit from a non-member was accepted");
                    prop_assert_eq!(generation, m.generation, "a commit from a fenced generation was accepted");
                    prop_assert!(state != GroupState::CompletingRebalance);
                }
                self.drain();
            }
            Op::Crash(i) if self.live(i) => self.members[i].crashed = true,
            Op::Advance(ms) => {
                self.now += ms as i64;
                self.c.tick(self.now);
                self.drain();
            }
            _ => {}
        }
        Ok(())
    }

    /// No partition is owned by two members of one generation.
    fn check_exclusive(&self) -> Result<(), TestCaseError> {
        for (generation, owners) in &self.owned {
            let mut seen = BTreeMap::new();
            for (member, parts) in owners {
                for p in parts {
                    if let Some(other) = seen.insert(*p, member) {
                        prop_assert!(
                            false,
                            "partition {} owned by {} and {} in generation {}",
                            p,
                            other,
                            member,
                            generation
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn groups_stay_exclusive_fence_commits_and_converge(ops in proptest::collection::vec(op(), 1..120)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op)?;
            w.check_exclusive()?;
        }
        // Faults stop: live members behave; the group must settle.
        let live: Vec<usize> = (0..w.members.len()).filter(|&i| w.live(i)).collect();
        for _ in 0..200 {
            for &i in &live {
                let m = w.members[i].clone();
                let state = w.c.group(GROUP).map(|g| (g.state, g.generation));
                match state {
                    Some((_, g)) if m.generation == g && !m.id.is_empty() && !m.synced => w.sync(i),
                    Some((_, g)) if m.generation == g && !m.id.is_empty() => {
                        let e = w.c.heartbeat(GROUP, m.generation, &m.id, None, w.now);
                        w.drain();
                        if e != 0 {
                            w.join(i);
                        }
                    }
                    _ => w.join(i),
                }
            }
            w.now += 500;
            w.c.tick(w.now);
            w.drain();
            w.check_exclusive()?;
        }
        let g = w.c.group(GROUP);
        if live.is_empty() {
            prop_assert!(g.is_none_or(|g| g.members.is_empty()), "crashed members must be expired");
        } else {
            let g = g.expect("group exists");
            prop_assert_eq!(g.state, GroupState::Stable, "the group settles once faults stop");
            let ids: BTreeSet<&String> = live.iter().map(|&i| &w.members[i].id).collect();
            let members: BTreeSet<&String> = g.members.keys().collect();
            prop_assert_eq!(ids, members, "exactly the live members remain");
            let owners = &w.owned[&g.generation];
            let covered: BTreeSet<i32> = owners.values().flatten().cloned().collect();
            prop_assert_eq!(covered.len() as i32, PARTITIONS, "every partition is owned in the final generation");
        }
    }
}

#[test]
fn a_fresh_member_needs_its_id_then_gets_the_group_after_the_initial_delay() {
    let mut w = World::new();
    w.members.push(Member { generation: -1, ..Default::default() });
    w.join(0);
    assert!(!w.members[0].id.is_empty(), "MEMBER_ID_REQUIRED hands out an id");
    w.join(0);
    assert_eq!(w.members[0].generation, -1, "held during the initial rebalance delay");
    assert_eq!(w.c.next_deadline(), Some(3000));
    w.now = 3000;
    w.c.tick(w.now);
    w.drain();
    assert_eq!(w.members[0].generation, 1);
    assert!(w.members[0].leader);
    w.sync(0);
    assert!(w.members[0].synced);
    assert_eq!(w.c.group(GROUP).unwrap().state, GroupState::Stable);
}

/// A coordinator with no initial delay, and the answers it gave, by request token.
struct Harness {
    c: GroupCoordinator,
    joins: BTreeMap<u64, spool_core::group::JoinResult>,
    syncs: BTreeMap<u64, spool_core::group::SyncResult>,
}

impl Harness {
    fn new() -> Self {
        let mut c = GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..Default::default() }, 0);
        c.finish_loading(0);
        Harness { c, joins: BTreeMap::new(), syncs: BTreeMap::new() }
    }

    fn join(&mut self, token: u64, member: &str, instance: Option<&str>, topics: &[&str]) {
        let args = JoinArgs {
            group: GROUP.into(),
            member_id: member.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription(topics))],
            require_known_member_id: true,
        };
        self.c.join(token, args, 0);
        self.drain();
    }

    fn sync(&mut self, token: u64, generation: i32, member: &str, assignments: &[(&str, &'static [u8])]) {
        let args = SyncArgs {
            group: GROUP.into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from_static(a))).collect(),
        };
        self.c.sync(token, args, 0);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.c.poll_output() {
            match o {
                Output::Join(t, r) => {
                    self.joins.insert(t, r);
                }
                Output::Sync(t, r) => {
                    self.syncs.insert(t, r);
                }
                Output::Persist(id, _) => self.c.persisted(id, true, 0),
            }
        }
    }

    fn state(&self) -> GroupState {
        self.c.group(GROUP).unwrap().state
    }

    /// Two static members "a" and "b" subscribed to `topics`, synced and Stable.
    fn stable_pair(&mut self, topics: &[&str]) -> (String, String, i32) {
        self.join(1, "", Some("a"), topics);
        let a = self.joins[&1].member_id.clone();
        self.join(2, "", Some("b"), topics);
        // "a" learns of the rebalance (as from a heartbeat) and rejoins.
        self.join(3, &a, Some("a"), topics);
        let b = self.joins[&2].member_id.clone();
        let generation = self.joins[&2].generation;
        assert_eq!(self.joins[&3].generation, generation);
        let plan: [(&str, &'static [u8]); 2] = [(&a, b"A"), (&b, b"B")];
        self.sync(4, generation, &a, &plan);
        self.sync(5, generation, &b, &plan);
        assert_eq!(self.state(), GroupState::Stable);
        (a, b, generation)
    }
}

/// A ConsumerProtocolSubscription v0 for these topics.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        out.extend_from_slice(&(t.len() as i16).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let mut h = Harness::new();
    let (a, b, generation) = h.stable_pair(&["t"]);
    // "b" restarts: a new join with no member id and the same instance id.
    h.join(6, "", Some("b"), &["t"]);
    let rejoined = h.joins[&6].clone();
    assert_eq!((rejoined.error, rejoined.generation), (0, generation), "same generation, no rebalance");
    assert_ne!(rejoined.member_id, b, "a new member id replaces the old one");
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(h.c.heartbeat(GROUP, generation, &a, Some("a"), 1), 0, "the other member is not asked to rejoin");
    assert_eq!(
        h.c.heartbeat(GROUP, generation, &b, Some("b"), 1),
        ResponseError::FencedInstanceId.code(),
        "the old incarnation is fenced"
    );
    assert_eq!(&h.c.group(GROUP).unwrap().members[&rejoined.member_id].assignment[..], b"B", "it keeps its assignment");
}

#[test]
fn a_static_member_restarting_while_the_leader_assigns_causes_a_rebalance() {
    let mut h = Harness::new();
    let (a, b, generation) = h.stable_pair(&["t"]);
    // A third member makes the group rebalance; both old members rejoin, so the leader is now
    // assigning (CompletingRebalance) to the member ids it was given.
    h.join(7, "", None, &["t"]);
    let c_id = h.joins[&7].member_id.clone();
    h.join(8, &c_id, None, &["t"]);
    h.join(9, &a, Some("a"), &["t"]);
    h.join(10, &b, Some("b"), &["t"]);
    let assigning = h.joins[&10].generation;
    assert!(assigning > generation);
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    // "b" restarts now; the leader's plan names its old id, which the new one cannot collect.
    h.join(11, "", Some("b"), &["t"]);
    assert!(!h.joins.contains_key(&11), "held for a new rebalance, not answered with a stale generation");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    // Everyone rejoins; the new generation lists the new incarnation of "b".
    h.join(12, &a, Some("a"), &["t"]);
    h.join(13, &c_id, None, &["t"]);
    let rejoined = h.joins[&11].clone();
    assert_eq!(rejoined.error, 0);
    assert!(rejoined.generation > assigning);
    let leader = [&h.joins[&12], &h.joins[&13], &rejoined].into_iter().find(|r| !r.members.is_empty()).unwrap();
    assert!(leader.members.iter().any(|(id, _, _)| *id == rejoined.member_id), "the leader assigns to the new id");
    assert!(leader.members.iter().all(|(id, _, _)| *id != b), "and not to the fenced one");
}

#[test]
fn offset_delete_keeps_only_topics_the_members_subscribe_to() {
    let mut h = Harness::new();
    let (a, _b, generation) = h.stable_pair(&["new"]);
    let commits = [(("old".to_string(), 0), 5), (("old".to_string(), 1), 6), (("new".to_string(), 0), 7)];
    let commit =
        h.c.commit(GROUP, generation, &a, None, commits.iter().map(|(k, o)| (k.clone(), committed(*o))).collect(), 0);
    assert!(commit.is_ok(), "{commit:?}");
    h.drain();
    let asked = vec![("old".to_string(), 0), ("old".to_string(), 1), ("new".to_string(), 0)];
    let deletion = h.c.delete_offsets(GROUP, asked).expect("a consumer group with members");
    assert_eq!(deletion.refused, vec![("new".to_string(), 0)]);
    assert!(deletion.persist.is_some());
    h.drain();
    assert!(h.c.committed(GROUP, "old", 0).is_none());
    assert!(h.c.committed(GROUP, "old", 1).is_none());
    assert_eq!(h.c.committed(GROUP, "new", 0).map(|c| c.offset), Some(7));
}

fn committed(offset: i64) -> Committed {
    Committed { offset, leader_epoch: -1, metadata: None, commit_ms: 0 }
}

#[test]
fn time_passing_while_the_log_is_replayed_expires_no_restored_member() {
    use spool_core::group::records::{GroupRecord, GroupSnapshot, MemberSnapshot};
    let mut c = GroupCoordinator::new(GroupConfig::default(), 0);
    let member = MemberSnapshot {
        member_id: "m1".into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        metadata: vec![],
        assignment: vec![1],
    };
    let snapshot = GroupSnapshot {
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        generation: 3,
        leader: Some("m1".into()),
        members: vec![member],
    };
    c.load(GroupRecord::Group { group: "g".into(), value: Some(snapshot) }, 0);
    // A slow read: ticks arrive before the rest of the log is replayed, and none is asked for
    // before the next offsets-expiry check.
    assert!(c.next_deadline().is_none_or(|at| at > 5_000), "no deadline spins the loop while loading");
    c.tick(5_000);
    assert!(c.poll_output().is_none(), "nothing is written while loading");
    c.finish_loading(6_000);
    let g = c.groups().next().expect("the group was restored");
    assert_eq!((g.state, g.generation, g.members.len()), (GroupState::Stable, 3, 1));
    // The restored member has a full session from the end of loading.
    c.tick(15_000);
    assert_eq!(c.groups().next().unwrap().members.len(), 1);
    c.tick(16_001);
    let g = c.groups().next().unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Empty, 0), "then it expires as any member does");
}

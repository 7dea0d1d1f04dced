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
            Op::NewMember => {
                if self.members.len() < 8 {
                    self.members.push(Member { generation: -1, ..Default::default() });
                    let i = self.members.len() - 1;
                    self.join(i);
                }
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

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let mut c = GroupCoordinator::new(GroupConfig { initial_rebalance_delay_ms: 0, ..Default::default() }, 0);
    c.finish_loading(0);
    let join = |c: &mut GroupCoordinator, token: u64, member: &str, instance: &str| {
        c.join(
            token,
            JoinArgs {
                group: GROUP.into(),
                member_id: member.into(),
                instance_id: Some(instance.into()),
                client_id: "c".into(),
                client_host: "h".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
                require_known_member_id: true,
            },
            0,
        );
    };
    let mut results = BTreeMap::new();
    let mut drain = |c: &mut GroupCoordinator, results: &mut BTreeMap<u64, spool_core::group::JoinResult>| {
        while let Some(o) = c.poll_output() {
            match o {
                Output::Join(t, r) => {
                    results.insert(t, r);
                }
                Output::Persist(id, _) => c.persisted(id, true, 0),
                Output::Sync(..) => {}
            }
        }
    };
    join(&mut c, 1, "", "a");
    drain(&mut c, &mut results);
    let a = results[&1].member_id.clone();
    join(&mut c, 2, "", "b");
    // "a" learns of the rebalance (as from a heartbeat) and rejoins.
    join(&mut c, 6, &a, "a");
    drain(&mut c, &mut results);
    let b = results[&2].member_id.clone();
    assert_eq!(results[&6].generation, results[&2].generation);
    let generation = results[&2].generation;
    for (token, member) in [(3, &a), (4, &b)] {
        let args = SyncArgs {
            group: GROUP.into(),
            generation,
            member_id: member.clone(),
            instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))],
        };
        c.sync(token, args, 0);
    }
    drain(&mut c, &mut results);
    assert_eq!(c.group(GROUP).unwrap().state, GroupState::Stable);
    // "b" restarts: a new join with no member id and the same instance id.
    join(&mut c, 5, "", "b");
    drain(&mut c, &mut results);
    let rejoined = &results[&5];
    assert_eq!((rejoined.error, rejoined.generation), (0, generation), "same generation, no rebalance");
    assert_ne!(rejoined.member_id, b, "a new member id replaces the old one");
    assert_eq!(c.group(GROUP).unwrap().state, GroupState::Stable);
    assert_eq!(c.heartbeat(GROUP, generation, &a, Some("a"), 1), 0, "the other member is not asked to rejoin");
    assert_eq!(
        c.heartbeat(GROUP, generation, &b, Some("b"), 1),
        ResponseError::FencedInstanceId.code(),
        "the old incarnation is fenced"
    );
    assert_eq!(&c.group(GROUP).unwrap().members[&rejoined.member_id].assignment[..], b"B", "it keeps its assignment");
}

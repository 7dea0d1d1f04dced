//! The replicated cluster: three nodes, each a combined controller and broker as `spool serve
//! --controller-quorum-voters` runs them (the runtime's quorum loop and broker event loop, over
//! simulated TCP and modelled disks). Idempotent acks=all producers write a topic with three
//! replicas while a nemesis kills, power-cuts, pauses and isolates nodes, mostly the partition's
//! leader, so leaders change under load.
//!
//! Checked after every turn of every broker (Kafka's RaftEventSimulationTest does the same for
//! its quorum): one leader per leader epoch; a high watermark never moves back within a process;
//! every replica a leader counts holds the high watermark on its disk. After the faults stop:
//! every producer finishes; every acknowledged record is read back at its offset, once, from the
//! leader; the restarted replicas rejoin the ISR; and, after the leader is stopped, the same
//! from the new one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use spool_core::config::BrokerConfig;
use spool_core::mem_disk::MemDisk;
use spool_core::quorum::{TopicDefaults, Voter};
use spool_core::storage::TopicPartition;
use spool_core::Broker;
use spool_runtime::client::Client;
use spool_runtime::quorum::{self, QuorumOptions};
use spool_runtime::server::{serve, RestartNode, ServerOptions};

use crate::disk::{DiskFaults, SharedDisk, SimDisk, SimStorage};
use crate::draw;
use crate::faults::NetFaults;
use crate::quorum_disk::{DiskSpeed, QuorumDiskState, SharedQuorumDisk, SimQuorumDisk};
use crate::scenario::{self, BrokerKnobs};

const TOPIC: &str = "replicated";
const NODES: i32 = 3;
const BROKER_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
/// How long after the faults stop the cluster has to finish the work and converge.
const HEAL_LIMIT: Duration = Duration::from_secs(120);
/// A client gives up on one request after this long (a produce waits up to 5 s at the leader).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

fn ip(id: i32) -> String {
    format!("10.0.2.{id}")
}

fn broker_addr(id: i32) -> SocketAddr {
    format!("{}:{BROKER_PORT}", ip(id)).parse().expect("address")
}

pub fn run_seed(seed: u64) -> Result<String, String> {
    crate::seed::simulate(seed, scenario)
}

/// What one seed draws about the workload.
#[derive(Clone, Debug)]
struct Params {
    min_insync: i64,
    producers: u64,
    batches: u64,
    records_per_batch: u64,
    value_bytes: u64,
}

impl Params {
    fn draw() -> Params {
        Params {
            min_insync: draw::int("cluster.min_insync", 1..4) as i64,
            producers: draw::int("cluster.producers", 1..3),
            batches: draw::int("cluster.batches", 10..80),
            records_per_batch: draw::int("cluster.records_per_batch", 1..4),
            value_bytes: draw::int("cluster.value_bytes", 0..600),
        }
    }
}

/// A broker as it last showed itself.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// (process incarnation, replaced in place): a high watermark may go back across either.
    life: (u64, u64),
    leading: Option<i32>,
    high_watermark: i64,
    /// The high watermark this life started with: recovery sets it to the durable end, which
    /// may hold a tail never committed; a follower whose leader diverges below it copies the
    /// log afresh, and only that takes a high watermark back.
    recovered_high_watermark: i64,
    durable_end: i64,
}

/// What the brokers have shown the checker after each turn, and what it concluded.
#[derive(Default)]
struct Checker {
    /// The leader of each leader epoch, as first seen leading it.
    leaders: BTreeMap<i32, i32>,
    seen: BTreeMap<i32, Seen>,
    /// The partition's ISR as committed in the metadata log, from the furthest applied image
    /// any node has shown: (applied end, ISR).
    committed_isr: (u64, Vec<i32>),
    /// The partition's leader in that image.
    committed_leader: i32,
    incarnations: BTreeMap<i32, u64>,
    violation: Option<String>,
    observations: u64,
}

impl Checker {
    fn observe_image(&mut self, image: &spool_core::metadata::MetadataImage) {
        let applied = image.applied_end();
        if applied <= self.committed_isr.0 {
            return;
        }
        if let Some(p) = image.topic(TOPIC).and_then(|t| t.partitions.get(&0)) {
            self.committed_isr = (applied, p.isr.clone());
            self.committed_leader = p.leader;
        }
    }

    fn observe(&mut self, id: i32, incarnation: u64, replaced: u64, broker: &Broker) {
        self.observations += 1;
        let tp = TopicPartition::new(TOPIC, 0);
        let Some(log) = broker.partition(&tp) else { return };
        let mut now = Seen {
            life: (incarnation, replaced),
            leading: log.is_leading().then_some(log.leader_epoch),
            high_watermark: log.high_watermark(),
            recovered_high_watermark: log.high_watermark(),
            durable_end: log.durable_end(),
        };
        if let Some(before) = self.seen.get(&id).filter(|b| b.life == now.life) {
            now.recovered_high_watermark = before.recovered_high_watermark;
        }
        let before = self.seen.insert(id, now);
        if self.violation.is_some() {
            return;
        }
        if let Err(e) = self.check(id, before, now) {
            self.violation = Some(format!("node {id}: {e}"));
        }
    }

    fn check(&mut self, id: i32, before: Option<Seen>, now: Seen) -> Result<(), String> {
        if let Some(epoch) = now.leading {
            let first = *self.leaders.entry(epoch).or_insert(id);
            if first != id {
                return Err(format!("leads {TOPIC}-0 in leader epoch {epoch}, which node {first} led"));
            }
        }
        if let Some(before) = before.filter(|b| b.life == now.life) {
            let copied_afresh = before.high_watermark == before.recovered_high_watermark
                && now.leading.is_none()
                && now.durable_end == now.high_watermark;
            if now.high_watermark < before.high_watermark && !copied_afresh {
                return Err(format!(
                    "the high watermark went back from {} to {}",
                    before.high_watermark, now.high_watermark
                ));
            }
        }
        // What a leader's high watermark covers is on the disk of every replica in the ISR the
        // metadata log holds (any of them may be elected next).
        let isr = if now.leading.is_some() { self.committed_isr.1.clone() } else { Vec::new() };
        for replica in isr.into_iter().filter(|&r| r != id) {
            let durable = self.seen.get(&replica).map_or(0, |s| s.durable_end);
            if durable < now.high_watermark {
                return Err(format!(
                    "leads with high watermark {} while node {replica}, in the committed ISR {:?}, has {durable} on \
                     its disk",
                    now.high_watermark, self.committed_isr.1
                ));
            }
        }
        Ok(())
    }
}

type SharedChecker = Arc<Mutex<Checker>>;

/// Everything a node keeps across restarts, and how it runs.
struct Cluster {
    voters: Vec<Voter>,
    log_disks: BTreeMap<i32, SharedDisk>,
    quorum_disks: BTreeMap<i32, SharedQuorumDisk>,
    disk_speed: DiskSpeed,
    knobs: BrokerKnobs,
    net: NetFaults,
    checker: SharedChecker,
    nodes: BTreeMap<i32, NodeHandle>,
}

fn start_node(handle: &Handle, cluster: &Cluster, id: i32) -> NodeHandle {
    let voters = cluster.voters.clone();
    let log_disk = cluster.log_disks[&id].clone();
    let quorum_disk = cluster.quorum_disks[&id].clone();
    let speed = cluster.disk_speed;
    let knobs = cluster.knobs.clone();
    let conn_faults = cluster.net.hook();
    let checker = cluster.checker.clone();
    handle
        .create_node()
        .name(format!("node-{id}"))
        .ip(ip(id).parse().expect("ip"))
        .init(move || {
            let (voters, log_disk, quorum_disk) = (voters.clone(), log_disk.clone(), quorum_disk.clone());
            let (knobs, conn_faults, checker) = (knobs.clone(), conn_faults.clone(), checker.clone());
            async move {
                // A node that must restart (a partition went offline) starts again as a new
                // incarnation, as its supervisor would start `spool serve` again.
                let node = (id, &voters[..], &log_disk, &quorum_disk, speed);
                while let Err(reason) = run_node(node, &knobs, &conn_faults, &checker).await {
                    tracing::warn!("node {id} restarts: {reason}");
                    // A supervisor's restart takes a moment (and the old listeners close).
                    tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(100..2000))).await;
                }
            }
        })
        .build()
}

/// One incarnation of a node, wired as `spool serve` wires it: the quorum hands the broker its
/// view of the cluster. Returns only when the broker asks for the node to restart.
async fn run_node(
    (id, voters, log_disk, quorum_disk, speed): (i32, &[Voter], &SharedDisk, &SharedQuorumDisk, DiskSpeed),
    knobs: &BrokerKnobs,
    conn_faults: &spool_runtime::server::ConnFaults,
    checker: &SharedChecker,
) -> Result<(), String> {
    let incarnation = {
        let mut c = checker.lock().expect("checker");
        let n = c.incarnations.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let (view_tx, view_rx) = tokio::sync::watch::channel(spool_core::ClusterView::default());
    let quorum_options = QuorumOptions {
        node_id: id,
        voters: voters.to_vec(),
        listen: Some(format!("{}:{CONTROLLER_PORT}", ip(id)).parse().expect("address")),
        seed: thread_rng().gen(),
        proposals: None,
        observer: Some({
            let checker = checker.clone();
            Arc::new(move |member: &spool_core::quorum::QuorumMember| {
                checker.lock().expect("checker").observe_image(member.image());
            })
        }),
        snapshot_every: quorum::SNAPSHOT_EVERY,
        topic_defaults: TopicDefaults { num_partitions: 1, replication_factor: 3, ..Default::default() },
        register: Some(quorum::registration::Registration {
            node_id: id,
            host: ip(id),
            port: BROKER_PORT,
            rack: None,
            incarnation: uuid::Uuid::from_u128(thread_rng().gen()),
        }),
        cluster_view: Some(view_tx),
    };
    let (stop_quorum, quorum_stop) = tokio::sync::oneshot::channel();
    let disk = SimQuorumDisk { shared: quorum_disk.clone(), speed };
    let quorum = tokio::spawn(async move {
        if let Err(e) = quorum::run(quorum_options, disk, None, quorum_stop).await {
            panic!("node {id}'s quorum failed: {e:#}");
        }
    });
    let mut config = BrokerConfig::single_node(&ip(id), BROKER_PORT as i32);
    config.node_id = id;
    config.default_replication_factor = 3;
    knobs.apply(&mut config);
    let mut options = ServerOptions::new(broker_addr(id), config);
    options.cluster_view = Some(view_rx);
    options.conn_faults = Some(conn_faults.clone());
    options.turn_time = Some(knobs.turn_time());
    let observing = checker.clone();
    options.observer = Some(Arc::new(move |broker: &Broker, replaced: u64| {
        observing.lock().expect("checker").observe(id, incarnation, replaced, broker);
    }));
    let (_keep_running, stop) = tokio::sync::oneshot::channel();
    let served = serve(options, SimStorage { disk: log_disk.clone() }, stop, None).await;
    // The quorum stops (and lets go of its listener) before the next incarnation starts.
    let _ = stop_quorum.send(());
    let _ = quorum.await;
    match served {
        Ok(()) => Ok(()),
        Err(e) => match e.downcast::<RestartNode>() {
            Ok(restart) => Err(restart.to_string()),
            // Connections of the last incarnation may still hold the port for a moment (the
            // simulated network, unlike a real one, refuses to bind it again meanwhile).
            Err(e) if format!("{e:#}").contains("address already in use") => Err(format!("{e:#}")),
            Err(e) => panic!("node {id}'s broker failed: {e:#}"),
        },
    }
}

async fn scenario() -> Result<String, String> {
    let params = Params::draw();
    let steps = draw::int("cluster.nemesis_steps", 0..12);
    let latency_ms = draw::int("cluster.max_latency_ms", 1..50);
    NetSim::current().update_config(|c| {
        c.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_ms.max(2));
    });
    let disk_faults = DiskFaults::draw("cluster", false);
    let disk_speed = DiskSpeed {
        fsync_ms: draw::int("cluster.quorum_fsync_ms", 0..30),
        stall: draw::rate("cluster.quorum_fsync_stall", 0.001, 0.02),
    };
    let ids: Vec<i32> = (1..=NODES).collect();
    let handle = Handle::current();
    let mut cluster = Cluster {
        voters: ids.iter().map(|&id| Voter { id, host: ip(id), port: CONTROLLER_PORT }).collect(),
        log_disks: ids.iter().map(|&id| (id, SimDisk::new(MemDisk::new(), disk_faults.clone()))).collect(),
        quorum_disks: ids
            .iter()
            .map(|&id| (id, SharedQuorumDisk::new(Mutex::new(QuorumDiskState::default()))))
            .collect(),
        disk_speed,
        knobs: BrokerKnobs::draw("cluster"),
        net: NetFaults::draw("cluster"),
        checker: SharedChecker::default(),
        nodes: BTreeMap::new(),
    };
    let mut alive = crate::seed::KillOnExit::new(&handle);
    for &id in &ids {
        let node = start_node(&handle, &cluster, id);
        alive.add(&node);
        cluster.nodes.insert(id, node);
    }
    let client = handle.create_node().name("clients").ip("10.0.2.100".parse().expect("ip")).build();
    alive.add(&client);
    let progress = Progress::default();
    let workload = client.spawn(produce_all(params.clone(), progress.clone(), cluster.checker.clone()));
    let applied = nemesis(&handle, &cluster, steps).await;
    // Healed: no more faults of any kind; progress is owed from here on.
    for disk in cluster.log_disks.values() {
        disk.lock().expect("disk").faulty = false;
    }
    for disk in cluster.quorum_disks.values() {
        disk.lock().expect("disk").healed = true;
    }
    cluster.net.active.store(false, std::sync::atomic::Ordering::Relaxed);
    let violation = || cluster.checker.lock().expect("checker").violation.clone();
    let acked = match tokio::time::timeout(HEAL_LIMIT, workload).await {
        Err(_) => {
            return Err(violation().unwrap_or_else(|| {
                format!(
                    "liveness: the producers did not finish within {}s after faults stopped; last: {}",
                    HEAL_LIMIT.as_secs(),
                    progress.lock().expect("progress")
                )
            }))
        }
        Ok(joined) => joined.map_err(|e| format!("workload task failed: {e}"))??,
    };
    if let Some(v) = violation() {
        return Err(v);
    }
    let acked = scenario::by_offset(acked, None)?;
    // A new leader's high watermark may trail what was acknowledged until its followers fetch.
    let acked_end = acked.keys().next_back().map_or(0, |last| *last as usize + 1);
    let log = client.spawn(read_all(acked_end)).await.map_err(|e| format!("reader task failed: {e}"))??;
    scenario::check(&acked, &log, None).map_err(|e| format!("read from the leader: {e}"))?;

    // Every replica back in the ISR, then the leader stopped: the next one must serve the same.
    let leader = client.spawn(wait_for_full_isr()).await.map_err(|e| format!("metadata task failed: {e}"))??;
    handle.kill(cluster.nodes[&leader].id());
    let new_leader =
        client.spawn(wait_for_leader_other_than(leader)).await.map_err(|e| format!("metadata task failed: {e}"))??;
    // Back again, so that a min.insync.replicas of 3 lets the new leader's high watermark move.
    handle.restart(cluster.nodes[&leader].id());
    let again = client.spawn(read_all(log.len())).await.map_err(|e| format!("reader task failed: {e}"))??;
    scenario::check(&acked, &again, None)
        .map_err(|e| format!("read again after node {leader} stopped and node {new_leader} took over: {e}"))?;
    if let Some(v) = violation() {
        return Err(v);
    }
    let checker = cluster.checker.lock().expect("checker");
    Ok(format!(
        "cluster of {NODES}, min.insync.replicas={}: {applied:?}; {} records acknowledged, log end {}, {} leader \
         epochs, {} observations",
        params.min_insync,
        acked.len(),
        again.len(),
        checker.leaders.len(),
        checker.observations
    ))
}

#[derive(Default, Debug)]
struct Applied {
    kills: u64,
    power_losses: u64,
    pauses: u64,
    isolations: u64,
    one_way: u64,
    links: u64,
}

/// The partition's leader as the brokers last showed it (the one in the newest leader epoch).
fn current_leader(cluster: &Cluster) -> Option<i32> {
    let checker = cluster.checker.lock().expect("checker");
    checker.seen.iter().filter_map(|(&id, s)| s.leading.map(|e| (e, id))).max().map(|(_, id)| id)
}

async fn nemesis(handle: &Handle, cluster: &Cluster, steps: u64) -> Applied {
    let mut applied = Applied::default();
    let net = NetSim::current();
    let pause = |range: std::ops::Range<u64>| tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(range)));
    for _ in 0..steps {
        pause(10..3000).await;
        // Mostly the leader, where the interesting failures are.
        let victim = match current_leader(cluster) {
            Some(l) if thread_rng().gen_bool(0.6) => l,
            _ => thread_rng().gen_range(1..=NODES),
        };
        let node = cluster.nodes[&victim].id();
        let say = |what: &str| {
            let what = format!("{what} node {victim}");
            tracing::info!("nemesis: {what}");
            spool_runtime::trace::describe("nemesis", spool_runtime::server::now_ms(), || what, String::new);
        };
        match thread_rng().gen_range(0..6) {
            0 => {
                // The process dies; the page cache (unsynced writes) survives.
                say("kill");
                handle.kill(node);
                applied.kills += 1;
                pause(1..3000).await;
                handle.restart(node);
            }
            1 => {
                say("power loss");
                handle.kill(node);
                cluster.log_disks[&victim].lock().expect("disk").power_loss();
                cluster.quorum_disks[&victim].lock().expect("disk").power_loss();
                applied.power_losses += 1;
                pause(1..3000).await;
                handle.restart(node);
            }
            2 => {
                // A zombie: it wakes up after the others may have moved on without it.
                say("pause");
                handle.pause(node);
                applied.pauses += 1;
                pause(100..8000).await;
                handle.resume(node);
            }
            3 => {
                say("isolate");
                net.clog_node(node);
                applied.isolations += 1;
                pause(100..8000).await;
                net.unclog_node(node);
            }
            4 => {
                // One link, one way: a bridge or an asymmetric partition between two nodes.
                let other = thread_rng().gen_range(1..=NODES);
                say(&format!("cut the link to node {other} of"));
                let other = cluster.nodes[&other].id();
                net.clog_link(node, other);
                applied.links += 1;
                pause(100..8000).await;
                net.unclog_link(node, other);
            }
            _ => {
                let inbound = thread_rng().gen_bool(0.5);
                say(if inbound { "cut what comes in to" } else { "cut what goes out of" });
                if inbound {
                    net.clog_node_in(node);
                } else {
                    net.clog_node_out(node);
                }
                applied.one_way += 1;
                pause(100..8000).await;
                if inbound {
                    net.unclog_node_in(node);
                } else {
                    net.unclog_node_out(node);
                }
            }
        }
    }
    applied
}

/// Where the producers are, for a liveness failure's message.
type Progress = Arc<Mutex<String>>;

fn note(progress: &Progress, what: String) {
    *progress.lock().expect("progress") = what;
}

/// A connection to a node, tried until it answers.
async fn connect(id: i32) -> Client {
    loop {
        if let Ok(c) = Client::connect(broker_addr(id), REQUEST_TIMEOUT).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The topic's partition as some node describes it: (leader, ISR), or None if that node does
/// not answer or knows no leader.
async fn describe() -> Option<(i32, Vec<i32>)> {
    describe_at(thread_rng().gen_range(1..=NODES)).await
}

async fn describe_at(id: i32) -> Option<(i32, Vec<i32>)> {
    let mut client = Client::connect(broker_addr(id), REQUEST_TIMEOUT).await.ok()?;
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
    let Ok(ResponseKind::Metadata(m)) = client.call(12, request).await else { return None };
    let partition = m.topics.first()?.partitions.first()?;
    let leader = partition.leader_id.0;
    (leader > 0).then(|| (leader, partition.isr_nodes.iter().map(|b| b.0).collect()))
}

/// A connection to the partition's leader, as the metadata names it.
async fn connect_to_leader() -> (i32, Client) {
    loop {
        if let Some((leader, _)) = describe().await {
            if let Ok(client) = Client::connect(broker_addr(leader), REQUEST_TIMEOUT).await {
                return (leader, client);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the topic through any node (which forwards it to the controller), asking again
/// through faults until it exists.
async fn create_topic(min_insync: i64) {
    let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("min.insync.replicas"))
                .with_value(Some(StrBytes::from_string(min_insync.to_string())))]),
    ]);
    loop {
        let mut client = connect(thread_rng().gen_range(1..=NODES)).await;
        if let Ok(ResponseKind::CreateTopics(r)) = client.call(7, create.clone()).await {
            let code = r.topics[0].error_code;
            if code == 0 || code == ResponseError::TopicAlreadyExists.code() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idempotent producer id from any node.
async fn init_producer_id() -> i64 {
    loop {
        let mut client = connect(thread_rng().gen_range(1..=NODES)).await;
        let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        if let Ok(ResponseKind::InitProducerId(r)) = client.call(4, request).await {
            if r.error_code == 0 {
                return r.producer_id.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn produce_all(params: Params, progress: Progress, checker: SharedChecker) -> Result<Vec<(i64, String)>, String> {
    note(&progress, "creating the topic".to_string());
    create_topic(params.min_insync).await;
    let producers: Vec<_> = (0..params.producers)
        .map(|p| tokio::spawn(produce_batches(p, params.clone(), progress.clone(), checker.clone())))
        .collect();
    let mut acked = Vec::new();
    for producer in producers {
        acked.extend(producer.await.map_err(|e| format!("producer task failed: {e}"))??);
    }
    Ok(acked)
}

/// One idempotent producer: every batch until acknowledged, to whichever node leads, retrying
/// the same batch (same sequence) after errors, as a Kafka client does through a leader change.
/// Values are `p<producer>-b<batch>-r<record>-<padding>`; returns acknowledged (offset, value).
async fn produce_batches(
    producer: u64,
    params: Params,
    progress: Progress,
    checker: SharedChecker,
) -> Result<Vec<(i64, String)>, String> {
    note(&progress, format!("producer {producer}: taking a producer id"));
    let producer_id = init_producer_id().await;
    let mut acked = Vec::new();
    let mut sequence = 0i32;
    let mut leader = None;
    for b in 0..params.batches {
        let pad = "x".repeat(params.value_bytes as usize);
        let values: Vec<String> =
            (0..params.records_per_batch).map(|r| format!("p{producer}-b{b}-r{r}-{pad}")).collect();
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(scenario::producer_batch((producer_id, 0), sequence, false, &values)))]),
        ]);
        loop {
            let (at, client) = match &mut leader {
                Some(l) => l,
                None => leader.insert(connect_to_leader().await),
            };
            let at = *at;
            match client.call(9, request.clone()).await {
                Ok(ResponseKind::Produce(r)) => {
                    let p = &r.responses[0].partition_responses[0];
                    if p.error_code == 0 {
                        acked.extend(values.iter().enumerate().map(|(i, v)| (p.base_offset + i as i64, v.clone())));
                        break;
                    }
                    // The leader lost the producer's state or a batch it acknowledged: data loss.
                    let lost = [
                        ResponseError::OutOfOrderSequenceNumber,
                        ResponseError::UnknownProducerId,
                        ResponseError::InvalidProducerEpoch,
                        ResponseError::CorruptMessage,
                    ];
                    // A deposed leader that has not heard (cut off from the quorum) refuses by its
                    // stale state: the client asks the leader the metadata log names.
                    let deposed = checker.lock().expect("checker").committed_leader != at;
                    if lost.iter().any(|e| e.code() == p.error_code) && !deposed {
                        return Err(format!(
                            "producer {producer} batch {b} (sequence {sequence}) refused by node {at} with error {}: {:?}",
                            p.error_code, p.error_message
                        ));
                    }
                    note(
                        &progress,
                        format!("producer {producer} batch {b}: node {at} answered error {}", p.error_code),
                    );
                    leader = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(other) => return Err(format!("unexpected response {other:?}")),
                Err(e) => {
                    note(&progress, format!("producer {producer} batch {b}: node {at}: {e}"));
                    leader = None;
                }
            }
        }
        sequence += values.len() as i32;
    }
    Ok(acked)
}

/// Reads the whole partition from its leader, from offset 0 up to the high watermark, and at
/// least `at_least` records (a new leader's high watermark may take a moment to get there).
async fn read_all(at_least: usize) -> Result<Vec<String>, String> {
    let started = tokio::time::Instant::now();
    let mut log: Vec<String> = Vec::new();
    let (mut at, mut client) = connect_to_leader().await;
    loop {
        if started.elapsed() > HEAL_LIMIT {
            return Err(format!(
                "liveness: reading stalled at offset {} (wanted at least {at_least}) on node {at}",
                log.len()
            ));
        }
        let fetch = scenario::fetch_request_for(TOPIC, 0, log.len() as i64);
        let p = match client.call(12, fetch).await {
            Ok(ResponseKind::Fetch(r)) => r.responses[0].partitions[0].clone(),
            Ok(other) => return Err(format!("unexpected response {other:?}")),
            Err(_) => {
                (at, client) = connect_to_leader().await;
                continue;
            }
        };
        if p.error_code != 0 {
            if p.error_code == ResponseError::OffsetOutOfRange.code() && p.log_start_offset > log.len() as i64 {
                return Err(format!("node {at}'s log starts at {}: records were lost", p.log_start_offset));
            }
            // Not the leader any more, or not yet able to serve: ask again, as a consumer does.
            tokio::time::sleep(Duration::from_millis(100)).await;
            (at, client) = connect_to_leader().await;
            continue;
        }
        if log.len() as i64 >= p.high_watermark {
            if log.len() >= at_least {
                return Ok(log);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut records = p.records.unwrap_or_default();
        while !records.is_empty() {
            let set =
                RecordBatchDecoder::decode(&mut records).map_err(|e| format!("fetched bytes do not decode: {e}"))?;
            for r in set.records {
                if r.offset < log.len() as i64 {
                    continue;
                }
                if r.offset != log.len() as i64 {
                    return Err(format!("offset gap on node {at}: expected {}, got {}", log.len(), r.offset));
                }
                log.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned());
            }
        }
    }
}

/// Waits until every replica is in the ISR again (restarted ones caught up); returns the leader.
async fn wait_for_full_isr() -> Result<i32, String> {
    let started = tokio::time::Instant::now();
    loop {
        // Every node must show it: one whose metadata lags may still show an ISR since shrunk.
        let mut views = Vec::new();
        for id in 1..=NODES {
            views.push(describe_at(id).await);
        }
        if let Some(Some((leader, isr))) = views.first().cloned() {
            if views.iter().all(|v| v.as_ref().is_some_and(|(l, i)| *l == leader && i.len() == NODES as usize)) {
                return Ok(leader);
            }
            if started.elapsed() > HEAL_LIMIT {
                return Err(format!("liveness: the ISR is {isr:?} (leader {leader}) {HEAL_LIMIT:?} after healing"));
            }
        } else if started.elapsed() > HEAL_LIMIT {
            return Err(format!("liveness: no leader {HEAL_LIMIT:?} after healing"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the metadata names a leader other than `old`.
async fn wait_for_leader_other_than(old: i32) -> Result<i32, String> {
    let started = tokio::time::Instant::now();
    loop {
        if let Some((leader, _)) = describe().await.filter(|(l, _)| *l != old) {
            return Ok(leader);
        }
        if started.elapsed() > HEAL_LIMIT {
            return Err(format!("liveness: no leader took over from node {old} within {HEAL_LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

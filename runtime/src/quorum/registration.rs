//! A broker's life with the active controller (KIP-631): BrokerRegistration, sent to the voters'
//! controller listeners in turn until the leader takes it and it is committed; then a
//! BrokerHeartbeat every interval, so the controller keeps it unfenced (and lets it in again once
//! caught up after it was fenced). A stale epoch (the controller no longer knows this
//! registration) means registering again.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::{
    broker_registration_request, BrokerHeartbeatRequest, BrokerId, BrokerRegistrationRequest, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spool_core::quorum::Voter;
use spool_core::raft::NodeId;

use tokio::sync::watch;

use crate::client::Client;

const VERSION: i16 = 4;
const HEARTBEAT_VERSION: i16 = 1;
/// Kafka's `broker.heartbeat.interval.ms`; the controller fences after 9 s of silence.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2_000);
/// Until the controller lets it in, a broker heartbeats this often (Kafka's does too).
const FENCED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Who registers, and where clients reach it.
#[derive(Clone, Debug)]
pub struct Registration {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// New for each process: the controller tells a restart from a retry by it.
    pub incarnation: uuid::Uuid,
}

/// Registers, then heartbeats for as long as the task runs; registers again when the controller
/// no longer knows this registration. `applied` is how far this node's metadata image is.
/// Once `shut_down` turns true it asks the controller to fence it (controlled shutdown) and
/// returns when told it may stop; not yet registered, it returns at once.
pub async fn keep_registered(
    me: Registration,
    voters: Vec<Voter>,
    cluster_id: String,
    applied: watch::Receiver<u64>,
    mut shut_down: watch::Receiver<bool>,
) {
    loop {
        let registered = tokio::select! {
            biased;
            _ = shut_down.wait_for(|&stop| stop) => return,
            registered = register(&me, &voters, &cluster_id) => registered,
        };
        let (epoch, controller) = registered;
        match heartbeat_until_stale(&me, &voters, epoch, controller, &applied, &mut shut_down).await {
            Heartbeats::Stale => {
                tracing::info!(
                    broker = me.node_id,
                    "the controller no longer knows this registration; registering again"
                )
            }
            Heartbeats::ShutDown => {
                tracing::info!(broker = me.node_id, "controlled shutdown: the controller fenced this broker");
                return;
            }
            Heartbeats::LoopGone => return,
        }
    }
}

enum Heartbeats {
    /// The controller does not know this registration (any more).
    Stale,
    /// Asked to shut down, and told it may.
    ShutDown,
    /// The quorum loop is gone (it dropped the shutdown sender): nobody waits for this task.
    LoopGone,
}

/// Heartbeats, starting with the controller that took the registration and moving on to the
/// next voter when one is not the leader or cannot be reached; returns when the epoch is stale,
/// or once a shutdown asked for is granted.
async fn heartbeat_until_stale(
    me: &Registration,
    voters: &[Voter],
    epoch: i64,
    mut controller: usize,
    applied: &watch::Receiver<u64>,
    shut_down: &mut watch::Receiver<bool>,
) -> Heartbeats {
    let mut client: Option<Client> = None;
    let mut fenced = true;
    loop {
        let stopping = *shut_down.borrow();
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(me.node_id))
            .with_broker_epoch(epoch)
            // The last offset applied, inclusive (Kafka's meaning), not the end.
            .with_current_metadata_offset(*applied.borrow() as i64 - 1)
            .with_want_shut_down(stopping);
        let voter = &voters[controller % voters.len()];
        let answer = match client.as_mut() {
            Some(c) => c.call(HEARTBEAT_VERSION, request).await,
            None => match connect(voter).await {
                Ok(mut c) => {
                    let answer = c.call(HEARTBEAT_VERSION, request).await;
                    client = Some(c);
                    answer
                }
                Err(e) => Err(e),
            },
        };
        let pause = match answer {
            Ok(ResponseKind::BrokerHeartbeat(a)) if a.error_code == 0 && stopping && a.should_shut_down => {
                return Heartbeats::ShutDown;
            }
            Ok(ResponseKind::BrokerHeartbeat(a)) if a.error_code == 0 => {
                if fenced != a.is_fenced {
                    tracing::info!(broker = me.node_id, fenced = a.is_fenced, "broker heartbeat: fencing changed");
                }
                fenced = a.is_fenced;
                if fenced || stopping {
                    FENCED_HEARTBEAT_INTERVAL
                } else {
                    HEARTBEAT_INTERVAL
                }
            }
            Ok(ResponseKind::BrokerHeartbeat(a)) if a.error_code == ResponseError::StaleBrokerEpoch.code() => {
                return Heartbeats::Stale
            }
            other => {
                tracing::debug!(controller = voter.id, "broker heartbeat: {:?}", other.map(|_| "not answered"));
                client = None;
                controller += 1;
                pause_before(controller, voters)
            }
        };
        // A shutdown asked for meanwhile is sent at once; the loop gone (the sender dropped), stop.
        if let Ok(Err(_)) = tokio::time::timeout(pause, shut_down.wait_for(|&stop| stop && !stopping)).await {
            return Heartbeats::LoopGone;
        }
    }
}

/// Registers until one controller confirms it; returns the broker epoch and which voter took it.
async fn register(me: &Registration, voters: &[Voter], cluster_id: &str) -> (i64, usize) {
    let incarnation = me.incarnation;
    let request = BrokerRegistrationRequest::default()
        .with_broker_id(BrokerId(me.node_id))
        .with_cluster_id(StrBytes::from_string(cluster_id.to_string()))
        .with_incarnation_id(incarnation)
        .with_rack(me.rack.clone().map(StrBytes::from_string))
        .with_listeners(vec![broker_registration_request::Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_string(me.host.clone()))
            .with_port(me.port)
            .with_security_protocol(0)]);
    let mut attempt = 0u32;
    loop {
        let index = attempt as usize % voters.len();
        let voter = &voters[index];
        attempt += 1;
        match ask(voter, request.clone()).await {
            Ok(epoch) => {
                tracing::info!(controller = voter.id, broker_epoch = epoch, "registered with the metadata quorum");
                return (epoch, index);
            }
            Err(why) => tracing::debug!(controller = voter.id, "broker registration: {why}"),
        }
        tokio::time::sleep(pause_before(attempt as usize, voters)).await;
    }
}

/// Before asking the next voter after the `attempt`th failed: briefly, and longer once every
/// voter was asked in turn, so that a cluster without a leader is not hammered.
fn pause_before(attempt: usize, voters: &[Voter]) -> Duration {
    Duration::from_millis(if attempt.is_multiple_of(voters.len()) { 500 } else { 50 })
}

async fn connect(voter: &Voter) -> Result<Client, String> {
    let address = format!("{}:{}", voter.host, voter.port);
    let address: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(address.as_str())
            .await
            .map_err(|e| format!("resolving {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to nothing"))?,
    };
    Ok(Client::connect(address, Duration::from_secs(2)).await?.with_client_id("spool-broker"))
}

async fn ask(voter: &Voter, request: BrokerRegistrationRequest) -> Result<i64, String> {
    let mut client = connect(voter).await?;
    let ResponseKind::BrokerRegistration(answer) = client.call(VERSION, request).await? else {
        return Err("not a BrokerRegistration answer".to_string());
    };
    match answer.error_code {
        0 => Ok(answer.broker_epoch),
        code => Err(ResponseError::try_from_code(code).map_or(format!("error {code}"), |e| format!("{e:?}"))),
    }
}

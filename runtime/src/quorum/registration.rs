//! A broker's registration with the active controller (KIP-631's BrokerRegistration): sent to
//! the voters' controller listeners in turn until the leader takes it and it is committed.
//! Heartbeats and fencing come with replication.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::{broker_registration_request, BrokerId, BrokerRegistrationRequest, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spool_core::quorum::Voter;
use spool_core::raft::NodeId;

use crate::client::Client;

const VERSION: i16 = 4;

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

/// Registers until one controller confirms it; returns the broker epoch.
pub async fn register(me: Registration, voters: Vec<Voter>, cluster_id: String) -> i64 {
    let incarnation = me.incarnation;
    let request = BrokerRegistrationRequest::default()
        .with_broker_id(BrokerId(me.node_id))
        .with_cluster_id(StrBytes::from_string(cluster_id))
        .with_incarnation_id(incarnation)
        .with_rack(me.rack.clone().map(StrBytes::from_string))
        .with_listeners(vec![broker_registration_request::Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_string(me.host.clone()))
            .with_port(me.port)
            .with_security_protocol(0)]);
    let mut attempt = 0u32;
    loop {
        let voter = &voters[attempt as usize % voters.len()];
        attempt += 1;
        match ask(voter, request.clone()).await {
            Ok(epoch) => {
                tracing::info!(controller = voter.id, broker_epoch = epoch, "registered with the metadata quorum");
                return epoch;
            }
            Err(why) => tracing::debug!(controller = voter.id, "broker registration: {why}"),
        }
        let pause = if (attempt as usize).is_multiple_of(voters.len()) { 500 } else { 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn ask(voter: &Voter, request: BrokerRegistrationRequest) -> Result<i64, String> {
    let address = format!("{}:{}", voter.host, voter.port);
    let address: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(address.as_str())
            .await
            .map_err(|e| format!("resolving {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to nothing"))?,
    };
    let mut client = Client::connect(address, Duration::from_secs(2)).await?.with_client_id("spool-broker");
    let ResponseKind::BrokerRegistration(answer) = client.call(VERSION, request).await? else {
        return Err("not a BrokerRegistration answer".to_string());
    };
    match answer.error_code {
        0 => Ok(answer.broker_epoch),
        code => Err(ResponseError::try_from_code(code).map_or(format!("error {code}"), |e| format!("{e:?}"))),
    }
}

//! `spool cluster info`: brokers, controller, cluster id and the API versions served.

use anyhow::{bail, Result};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, ResponseKind};
use serde_json::json;

use super::{call, connect, table, Output};

pub async fn info(bootstrap: &str, output: Output) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let ResponseKind::ApiVersions(v) = call(&mut client, 3, ApiVersionsRequest::default()).await? else {
        bail!("unexpected answer to ApiVersions")
    };
    let ResponseKind::Metadata(m) =
        call(&mut client, 12, MetadataRequest::default().with_topics(Some(Vec::new()))).await?
    else {
        bail!("unexpected answer to Metadata")
    };
    let cluster = m.cluster_id.as_deref().unwrap_or("-").to_string();
    let brokers: Vec<(i32, String, i32)> =
        m.brokers.iter().map(|b| (b.node_id.0, b.host.to_string(), b.port)).collect();
    let apis: Vec<(String, i16, i16)> = v
        .api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).map_or(format!("key {}", k.api_key), |a| format!("{a:?}")),
                k.min_version,
                k.max_version,
            )
        })
        .collect();
    Ok(match output {
        Output::Json => {
            let doc = json!({
                "cluster_id": cluster, "controller": m.controller_id.0,
                "brokers": brokers.iter().map(|(id, h, p)| json!({"id": id, "host": h, "port": p})).collect::<Vec<_>>(),
                "api_versions": apis.iter().map(|(n, lo, hi)| json!({"api": n, "min": lo, "max": hi})).collect::<Vec<_>>(),
            });
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        Output::Table => {
            let mut out = format!("Cluster {cluster}, controller {}\n\n", m.controller_id.0);
            out.push_str(&table(
                &["BROKER", "HOST", "PORT"],
                brokers.iter().map(|(i, h, p)| vec![i.to_string(), h.clone(), p.to_string()]).collect(),
            ));
            out.push('\n');
            out.push_str(&table(
                &["API", "MIN", "MAX"],
                apis.iter().map(|(n, lo, hi)| vec![n.clone(), lo.to_string(), hi.to_string()]).collect(),
            ));
            out
        }
    })
}

//! `spool topic`, `produce`, `consume`, `group reset-offsets` and `cluster info` against a real
//! server on a loopback port.

use std::io::Cursor;

use spool_core::config::BrokerConfig;
use spool_runtime::cli::{self, consume::ConsumeOptions, group::ResetTo, Output};
use spool_runtime::disk::FileStorage;
use spool_runtime::server::{serve, ServerOptions};
use tokio::sync::oneshot;

async fn start(dir: &std::path::Path) -> String {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::mem::forget(stop_tx);
    let options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), BrokerConfig::single_node("127.0.0.1", 0));
    tokio::spawn(serve(options, FileStorage::new(dir.to_path_buf()), stop_rx, Some(ready_tx)));
    ready_rx.await.unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_records_offsets_and_cluster_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let configs = vec!["retention.ms=86400000".to_string()];
    assert_eq!(cli::topic::create(&b, "orders", 3, 1, &configs).await.unwrap(), "Created topic orders.\n");
    let again = cli::topic::create(&b, "orders", 3, 1, &[]).await.unwrap_err().to_string();
    assert!(again.contains("TopicAlreadyExists"), "{again}");
    let rf = cli::topic::create(&b, "other", 1, 3, &[]).await.unwrap_err().to_string();
    assert!(rf.contains("InvalidReplicationFactor"), "{rf}");
    let bad = cli::topic::create(&b, "x", 1, 1, &["nonsense".to_string()]).await.unwrap_err().to_string();
    assert!(bad.contains("KEY=VALUE"), "{bad}");

    let lines = "alice:1\nbob:2\nalice:3\ncarol:4\n";
    cli::produce::run(
        &b,
        "orders",
        Some(":"),
        &["src=test".to_string()],
        cli::produce::read_lines(Box::new(Cursor::new(lines)), false),
        || 1_700_000_000_000,
        cli::Stop::never(),
    )
    .await
    .unwrap();
    insta::assert_snapshot!("topic_list", cli::topic::list(&b, Output::Table).await.unwrap());
    let described = cli::topic::describe(&b, "orders", Output::Table).await.unwrap();
    let id_line = described.lines().next().unwrap().to_string();
    let id = id_line.split("TopicId: ").nth(1).unwrap().split('\t').next().unwrap().to_string();
    insta::assert_snapshot!("topic_describe", described.replace(&id, "<topic-id>"));

    // Keys land where Kafka's default partitioner puts them: alice twice in the same partition.
    let options = |max| ConsumeOptions {
        group: None,
        from_beginning: true,
        max_messages: Some(max),
        timeout: Some(std::time::Duration::from_secs(5)),
        format: "%k=%s %h\\n".to_string(),
        output: Output::Table,
    };
    cli::consume::run(&b, "orders", options(4), cli::Stop::never()).await.unwrap();
    let mut in_group = options(4);
    in_group.group = Some("readers".into());
    cli::consume::run(&b, "orders", in_group, cli::Stop::never()).await.unwrap();
    let lag_free = cli::group::describe(&b, "readers", Output::Json).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&lag_free).unwrap();
    assert!(doc["partitions"].as_array().unwrap().iter().all(|p| p["lag"] == 0), "{lag_free}");

    let reset = cli::group::reset_offsets(&b, "readers", "orders", ResetTo::Earliest, Output::Table).await.unwrap();
    insta::assert_snapshot!("group_reset", reset);
    let doc: serde_json::Value =
        serde_json::from_str(&cli::group::describe(&b, "readers", Output::Json).await.unwrap()).unwrap();
    let lag: i64 = doc["partitions"].as_array().unwrap().iter().map(|p| p["lag"].as_i64().unwrap()).sum();
    assert_eq!(lag, 4, "every record is unread again");

    cli::topic::alter(&b, "orders", Some(4), &["retention.ms=1000".to_string()]).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&cli::topic::describe(&b, "orders", Output::Json).await.unwrap()).unwrap();
    assert_eq!(json["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(json["configs"]["retention.ms"], "1000");

    let info = cli::cluster::info(&b, Output::Table).await.unwrap();
    assert!(info.contains("Produce") && info.contains("JoinGroup"), "{info}");
    assert_eq!(cli::topic::delete(&b, "orders").await.unwrap(), "Deleted topic orders.\n");
    let gone = cli::topic::describe(&b, "orders", Output::Table).await.unwrap_err().to_string();
    assert!(gone.contains("UnknownTopicOrPartition"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_named_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let options = ConsumeOptions {
        group: None,
        from_beginning: true,
        max_messages: Some(1),
        timeout: Some(std::time::Duration::from_secs(2)),
        format: "%s\\n".to_string(),
        output: Output::Table,
    };
    let bad = cli::consume::run(&b, "a/b", options, cli::Stop::never()).await.unwrap_err().to_string();
    assert!(bad.contains("InvalidTopicException") && bad.contains("ASCII letters"), "{bad}");
    assert!(!bad.contains("error 17"), "{bad}");
    let text = cli::error_text(10, None);
    assert!(text.starts_with("MessageTooLarge: ") && text.contains("max.message.bytes"), "{text}");
    assert_eq!(cli::error_text(36, Some("Topic 'x' already exists.")), "TopicAlreadyExists: Topic 'x' already exists.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_timeout_counts_from_the_group_join_not_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    cli::topic::create(&b, "late", 1, 1, &[]).await.unwrap();
    let lines = "a\nb\n";
    let lines = cli::produce::read_lines(Box::new(Cursor::new(lines)), false);
    cli::produce::run(&b, "late", None, &[], lines, || 1_700_000_000_000, cli::Stop::never()).await.unwrap();
    // The join alone takes longer than the time-out (the broker's 3 s initial rebalance delay).
    let options = ConsumeOptions {
        group: Some("late-readers".into()),
        from_beginning: true,
        max_messages: None,
        timeout: Some(std::time::Duration::from_millis(500)),
        format: "%s\\n".to_string(),
        output: Output::Table,
    };
    cli::consume::run(&b, "late", options, cli::Stop::never()).await.unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&cli::group::describe(&b, "late-readers", Output::Json).await.unwrap()).unwrap();
    assert_eq!(doc["partitions"][0]["committed_offset"], 2, "both records consumed before the time-out: {doc}");
}

//! The `spool` binary.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use spool_core::config::{BrokerConfig, Durability};
use spool_core::settings::BrokerSettings;
use spool_runtime::cli::{self, Output};
use spool_runtime::disk::FileStorage;
use spool_runtime::limits::ConnectionLimits;
use spool_runtime::quorum;
use spool_runtime::server::{serve, ServerOptions};
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(name = "spool", version, about = "A Kafka-compatible message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge acks=1/all produces only after fsync.
    Fsync,
    /// Acknowledge after the write reaches the OS; a machine crash can lose acknowledged records.
    Relaxed,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Broker settings under Kafka's names, in server.properties format. The flags below win
    /// over it, and so do --override and SPOOL_ variables (SPOOL_LOG_RETENTION_HOURS is
    /// log.retention.hours). Unknown names are refused.
    #[arg(long, env = "SPOOL_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// A broker setting under its Kafka name, NAME=VALUE (repeatable), as kafka-server-start's.
    #[arg(long = "override", value_name = "NAME=VALUE")]
    overrides: Vec<String>,
    /// Address to listen on [default: 127.0.0.1:9092] (Kafka's listeners).
    #[arg(long, env = "SPOOL_LISTEN")]
    listen: Option<String>,
    /// Address clients are told to connect to (defaults to --listen; Kafka's advertised.listeners).
    #[arg(long, env = "SPOOL_ADVERTISED")]
    advertised: Option<String>,
    /// Kafka's controller.quorum.voters, ID@HOST:PORT,...: this node joins that metadata quorum
    /// (as a voter if its id is listed, else as an observer).
    #[arg(long, env = "SPOOL_CONTROLLER_QUORUM_VOTERS")]
    controller_quorum_voters: Option<String>,
    /// Where a voter's controller listener binds (Kafka's CONTROLLER:// listener).
    #[arg(long, env = "SPOOL_CONTROLLER_LISTEN")]
    controller_listen: Option<String>,
    /// Where topics, logs and metadata are kept [default: ./spool-data] (Kafka's log.dirs).
    #[arg(long, env = "SPOOL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This node's id [default: 1] (Kafka's node.id).
    #[arg(long, env = "SPOOL_NODE_ID", allow_negative_numbers = true)]
    node_id: Option<i32>,
    /// Partitions of topics created automatically or without a count [default: 1].
    #[arg(long, env = "SPOOL_NUM_PARTITIONS", allow_negative_numbers = true)]
    num_partitions: Option<i32>,
    /// Replicas of topics created without a replication factor, in a cluster [default: 1]
    /// (Kafka's default.replication.factor).
    #[arg(long, env = "SPOOL_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<i16>,
    /// acks=all writes are refused while a partition has fewer in-sync replicas [default: 1]
    /// (Kafka's min.insync.replicas; a topic may override it).
    #[arg(long, env = "SPOOL_MIN_INSYNC_REPLICAS")]
    min_insync_replicas: Option<i64>,
    /// Create unknown topics on Metadata and Produce requests [default: true].
    #[arg(long, env = "SPOOL_AUTO_CREATE_TOPICS", action = clap::ArgAction::Set)]
    auto_create_topics: Option<bool>,
    #[arg(long, env = "SPOOL_DURABILITY", value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// Largest request frame accepted, in bytes [default: 104857600] (Kafka's
    /// socket.request.max.bytes).
    #[arg(long, env = "SPOOL_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Bytes of request frames buffered across all connections [default: 536870912] (Kafka's
    /// queued.max.request.bytes); a connection whose frame does not fit waits before reading it.
    #[arg(long, env = "SPOOL_MAX_BUFFERED_REQUEST_BYTES")]
    max_buffered_request_bytes: Option<usize>,
    /// Connections open at once [default: 10000] (Kafka's max.connections); more are closed on
    /// accept.
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections open at once from one IP address [default: 1000] (Kafka's
    /// max.connections.per.ip).
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// A connection with nothing received and nothing in flight for this long is closed
    /// [default: 600000] (Kafka's connections.max.idle.ms).
    #[arg(long, env = "SPOOL_CONNECTIONS_MAX_IDLE_MS")]
    connections_max_idle_ms: Option<u64>,
    /// Once a request's size has arrived, the whole request must arrive within this time.
    #[arg(long, env = "SPOOL_REQUEST_FRAME_TIMEOUT_MS", default_value_t = 60_000)]
    request_frame_timeout_ms: u64,
    /// Requests of one connection read and not yet answered; the connection is not read further
    /// until answers go out.
    #[arg(long, env = "SPOOL_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION", default_value_t = 100)]
    max_in_flight_requests_per_connection: usize,
    /// Bytes of answers waiting for one client to read them; the connection is not read further
    /// until it does.
    #[arg(long, env = "SPOOL_MAX_QUEUED_RESPONSE_BYTES_PER_CONNECTION", default_value_t = 64 * 1024 * 1024)]
    max_queued_response_bytes_per_connection: usize,
    /// How often retention is applied, in milliseconds [default: 300000] (Kafka's
    /// log.retention.check.interval.ms).
    #[arg(long, env = "SPOOL_RETENTION_CHECK_INTERVAL_MS", allow_negative_numbers = true)]
    retention_check_interval_ms: Option<i64>,
    /// How often each partition's recovery point is recorded, in milliseconds: after a crash,
    /// recovery reads only what was written since.
    #[arg(long, env = "SPOOL_RECOVERY_POINT_INTERVAL_MS", default_value_t = 10_000)]
    recovery_point_interval_ms: i64,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(ServeArgs),
    /// Inspect consumer groups (on any Kafka-compatible broker).
    Group(GroupArgs),
    /// Exit 0 if the broker answers ApiVersions (for container health checks).
    Health(ClientArgs),
    /// Create, list, describe, alter and delete topics.
    Topic(TopicArgs),
    /// The cluster as the broker describes it.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Produce one record per line of standard input.
    Produce {
        #[command(flatten)]
        client: ClientArgs,
        topic: String,
        /// Split each line into KEY and VALUE at the first occurrence of this separator.
        #[arg(long)]
        key_separator: Option<String>,
        /// A header for every record, KEY=VALUE (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Produce this line instead of reading standard input (repeatable).
        #[arg(long = "message")]
        messages: Vec<String>,
    },
    /// Print records of a topic.
    Consume {
        #[command(flatten)]
        client: ClientArgs,
        topic: String,
        /// Consume as a member of this consumer group, committing as it goes (without it: a generated
        /// `console-consumer-NNNNN` group that commits nothing, as Kafka's console consumer).
        #[arg(long)]
        group: Option<String>,
        /// Start from the earliest offset when there is no committed one.
        #[arg(long)]
        from_beginning: bool,
        /// Exit after this many records.
        #[arg(long, allow_negative_numbers = true)]
        max_messages: Option<usize>,
        /// Exit after this many milliseconds without a new record.
        #[arg(long, allow_negative_numbers = true)]
        timeout_ms: Option<u64>,
        /// %t topic, %p partition, %o offset, %k key, %s value, %T timestamp, %h headers.
        #[arg(long, default_value = "%s\\n")]
        format: String,
    },
}

#[derive(clap::Args)]
struct TopicArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        partitions: i32,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, KEY=VALUE (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Topics and their partition counts.
    List,
    /// Partitions (leader, replicas, log start/end offsets) and configs of a topic.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Add partitions and/or change configs.
    Alter {
        name: String,
        #[arg(long, allow_negative_numbers = true)]
        partitions: Option<i32>,
        #[arg(long = "config")]
        configs: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ClientArgs {
    /// A broker to start from.
    #[arg(long, env = "SPOOL_BOOTSTRAP", default_value = "127.0.0.1:9092", global = true)]
    bootstrap_server: String,
    #[arg(long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Args)]
struct GroupArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Every group the broker coordinates, with its state.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag of one group.
    Describe { group: String },
    /// Move the committed offsets of an inactive group on a topic.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        #[arg(long, conflicts_with = "to_offset")]
        to_latest: bool,
        #[arg(long, allow_negative_numbers = true)]
        to_offset: Option<i64>,
    },
    /// Delete a group that has no members, with its committed offsets.
    Delete { group: String },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Brokers, controller, cluster id and the API versions served.
    Info,
    /// The metadata quorum: its leader, epoch and high watermark, and each voter's and
    /// observer's log end and lag (asked on a controller listener).
    Quorum {
        /// Controller listeners to ask (HOST:PORT,...); any one finds the leader.
        #[arg(long, env = "SPOOL_BOOTSTRAP_CONTROLLER")]
        bootstrap_controller: String,
    },
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// What clients are told to connect to. Listening on every address (0.0.0.0 or ::) names no
/// address a client can use: as Kafka does, advertise the machine's host name then, and say so.
fn advertised_address(advertised: Option<&str>, listen: &str) -> Result<(String, i32)> {
    if let Some(advertised) = advertised {
        return split_host_port(advertised);
    }
    let (host, port) = split_host_port(listen)?;
    if host != "0.0.0.0" && host != "::" {
        return Ok((host, port));
    }
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    tracing::warn!(
        "--listen {listen} without --advertised: advertising {name}:{port}; set --advertised (SPOOL_ADVERTISED) \
         to the address clients use"
    );
    Ok((name, port))
}

fn split_host_port(addr: &str) -> Result<(String, i32)> {
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("{addr} is not HOST:PORT"))?;
    Ok((
        host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port.parse().with_context(|| format!("bad port in {addr}"))?,
    ))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and `docker logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Topic(args) => run_client(async move {
            let b = args.client.bootstrap_server;
            let output = args.client.output;
            match args.command {
                TopicCommand::Create { name, partitions, replication_factor, configs } => {
                    cli::topic::create(&b, &name, partitions, replication_factor, &configs).await
                }
                TopicCommand::List => cli::topic::list(&b, output).await,
                TopicCommand::Describe { name } => cli::topic::describe(&b, &name, output).await,
                TopicCommand::Delete { name } => cli::topic::delete(&b, &name).await,
                TopicCommand::Alter { name, partitions, configs } => {
                    cli::topic::alter(&b, &name, partitions, &configs).await
                }
            }
        }),
        Command::Produce { client, topic, key_separator, headers, messages } => run_client(async move {
            let interactive = messages.is_empty() && std::io::IsTerminal::is_terminal(&std::io::stdin());
            let input: Box<dyn std::io::BufRead + Send> = if messages.is_empty() {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                Box::new(std::io::Cursor::new(messages.join("\n")))
            };
            let lines = cli::produce::read_lines(input, interactive);
            let clock = spool_runtime::server::now_ms;
            let bootstrap = &client.bootstrap_server;
            let sent = cli::produce::run(
                bootstrap,
                &topic,
                key_separator.as_deref(),
                &headers,
                lines,
                clock,
                stop_on_signals(),
            )
            .await?;
            if interactive {
                eprintln!("{sent} record(s) sent to {topic}");
            }
            Ok(String::new())
        }),
        Command::Consume { client, topic, group, from_beginning, max_messages, timeout_ms, format } => {
            run_client(async move {
                let options = cli::consume::ConsumeOptions {
                    group,
                    from_beginning,
                    max_messages,
                    timeout: timeout_ms.map(std::time::Duration::from_millis),
                    format,
                    output: client.output,
                };
                cli::consume::run(&client.bootstrap_server, &topic, options, stop_on_signals()).await
            })
        }
        Command::Cluster { client, command: ClusterCommand::Quorum { bootstrap_controller } } => {
            run_client(async move { cli::cluster::quorum(&bootstrap_controller, client.output).await })
        }
        Command::Cluster { client, command: ClusterCommand::Info } => {
            run_client(async move { cli::cluster::info(&client.bootstrap_server, client.output).await })
        }
        Command::Health(args) => run_client(async move { cli::health(&args.bootstrap_server).await }),
        Command::Group(args) => run_client(async move {
            let ClientArgs { bootstrap_server, output } = args.client;
            match args.command {
                GroupCommand::List => cli::group::list(&bootstrap_server, output).await,
                GroupCommand::Describe { group } => cli::group::describe(&bootstrap_server, &group, output).await,
                GroupCommand::Delete { group } => cli::group::delete(&bootstrap_server, &group).await,
                GroupCommand::ResetOffsets { group, topic, to_earliest, to_latest, to_offset } => {
                    let to = match (to_earliest, to_latest, to_offset) {
                        (true, _, _) => cli::group::ResetTo::Earliest,
                        (_, true, _) => cli::group::ResetTo::Latest,
                        (_, _, Some(o)) if o < 0 => {
                            anyhow::bail!(
                                "--to-offset {o}: an offset is 0 or more (or use --to-earliest / --to-latest)"
                            )
                        }
                        (_, _, Some(o)) => cli::group::ResetTo::Offset(o),
                        _ => anyhow::bail!("say where to: --to-earliest, --to-latest or --to-offset N"),
                    };
                    cli::group::reset_offsets(&bootstrap_server, &group, &topic, to, output).await
                }
            }
        }),
    }
}

/// Runs a client command: its output on stdout, or its error on stderr with exit code 1.
fn run_client(command: impl std::future::Future<Output = Result<String>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match runtime.block_on(command) {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The flags given, as the Kafka settings they stand for.
fn flag_settings(args: &ServeArgs) -> Vec<(&'static str, String)> {
    let mut flags = Vec::new();
    let mut flag = |name, value: Option<String>| {
        if let Some(value) = value {
            flags.push((name, value));
        }
    };
    flag("listeners", args.listen.as_ref().map(|l| format!("PLAINTEXT://{l}")));
    flag("advertised.listeners", args.advertised.as_ref().map(|a| format!("PLAINTEXT://{a}")));
    flag("controller.quorum.voters", args.controller_quorum_voters.clone());
    flag("log.dirs", args.data_dir.as_ref().map(|d| d.display().to_string()));
    flag("node.id", args.node_id.map(|v| v.to_string()));
    flag("num.partitions", args.num_partitions.map(|v| v.to_string()));
    flag("default.replication.factor", args.default_replication_factor.map(|v| v.to_string()));
    flag("min.insync.replicas", args.min_insync_replicas.map(|v| v.to_string()));
    flag("auto.create.topics.enable", args.auto_create_topics.map(|v| v.to_string()));
    flag("socket.request.max.bytes", args.max_request_bytes.map(|v| v.to_string()));
    flag("queued.max.request.bytes", args.max_buffered_request_bytes.map(|v| v.to_string()));
    flag("max.connections", args.max_connections.map(|v| v.to_string()));
    flag("max.connections.per.ip", args.max_connections_per_ip.map(|v| v.to_string()));
    flag("connections.max.idle.ms", args.connections_max_idle_ms.map(|v| v.to_string()));
    flag("log.retention.check.interval.ms", args.retention_check_interval_ms.map(|v| v.to_string()));
    flags
}

/// The environment variables `spool`'s own flags read, in any command (SPOOL_BOOTSTRAP too).
fn own_variables() -> Vec<String> {
    fn collect(command: &clap::Command, into: &mut Vec<String>) {
        into.extend(command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
        for sub in command.get_subcommands() {
            collect(sub, into);
        }
    }
    use clap::CommandFactory;
    let mut variables = Vec::new();
    collect(&Cli::command(), &mut variables);
    variables
}

fn setting<T: std::str::FromStr>(settings: &BrokerSettings, name: &str) -> T {
    settings.get(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} is validated and has a default"))
}

fn run_serve(args: ServeArgs) -> Result<()> {
    let settings = spool_runtime::broker_settings::load(
        args.config_file.as_deref(),
        std::env::vars(),
        &own_variables(),
        &args.overrides,
        &flag_settings(&args),
    )?;
    let listeners = settings.get("listeners").unwrap_or_default().to_string();
    let controller_names = settings.get("controller.listener.names").unwrap_or_default().to_string();
    let listen_at = spool_runtime::broker_settings::first_listener(&listeners, &controller_names)?;
    let listen = resolve(&listen_at)?;
    let advertised = match settings.get("advertised.listeners") {
        Some(a) => Some(spool_runtime::broker_settings::first_listener(a, &controller_names)?),
        None => None,
    };
    let (host, port) = advertised_address(advertised.as_deref(), &listen_at)?;
    let data_dir = match (settings.is_set("log.dirs"), settings.get("log.dir")) {
        (false, Some(dir)) => dir.to_string(),
        _ => settings.get("log.dirs").unwrap_or("./spool-data").to_string(),
    };
    if data_dir.contains(',') {
        bail!("log.dirs {data_dir:?}: Spool keeps one data directory");
    }
    let mut broker = BrokerConfig::single_node(&host, port);
    settings.apply(&mut broker);
    broker.recovery_point_interval_ms = args.recovery_point_interval_ms.max(10);
    broker.durability = match args.durability {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let mut options = ServerOptions::new(listen, broker);
    options.limits = ConnectionLimits {
        max_request_bytes: setting(&settings, "socket.request.max.bytes"),
        max_buffered_request_bytes: setting(&settings, "queued.max.request.bytes"),
        max_connections: setting(&settings, "max.connections"),
        max_connections_per_ip: setting(&settings, "max.connections.per.ip"),
        idle_timeout: Duration::from_millis(setting(&settings, "connections.max.idle.ms")),
        frame_timeout: Duration::from_millis(args.request_frame_timeout_ms),
        max_in_flight_requests: args.max_in_flight_requests_per_connection.max(1),
        max_queued_response_bytes: args.max_queued_response_bytes_per_connection,
    };
    if options.limits.max_request_bytes > options.limits.max_buffered_request_bytes {
        bail!("socket.request.max.bytes (--max-request-bytes) cannot exceed queued.max.request.bytes (--max-buffered-request-bytes)");
    }
    let data_dir = PathBuf::from(data_dir);
    let quorum = match settings.get("controller.quorum.voters").filter(|v| !v.is_empty()) {
        Some(voters) => {
            let voters = quorum::parse_voters(voters)?;
            let node_id = options.broker.node_id;
            let listen_at = args
                .controller_listen
                .clone()
                .or_else(|| spool_runtime::broker_settings::controller_listener(&listeners, &controller_names));
            let listen = match (&listen_at, voters.iter().any(|v| v.id == node_id)) {
                (Some(at), _) => Some(resolve(at)?),
                (None, true) => bail!(
                    "node {node_id} is a voter in controller.quorum.voters but has no controller listener: set \
                     --controller-listen HOST:PORT or add CONTROLLER://HOST:PORT to listeners"
                ),
                (None, false) => None,
            };
            // The broker registers its client listener with the active controller, and learns
            // the other brokers from the image.
            let (view_tx, view_rx) = tokio::sync::watch::channel(spool_core::ClusterView::default());
            options.cluster_view = Some(view_rx);
            let register = (options.broker.advertised_port > 0).then(|| quorum::registration::Registration {
                node_id,
                host: options.broker.advertised_host.clone(),
                port: options.broker.advertised_port as u16,
                rack: None,
                incarnation: uuid::Uuid::from_u128(rand::random()),
            });
            let quorum_options = quorum::QuorumOptions {
                node_id,
                voters,
                listen,
                seed: rand::random(),
                proposals: None,
                observer: None,
                snapshot_every: quorum::SNAPSHOT_EVERY,
                topic_defaults: spool_core::quorum::TopicDefaults {
                    num_partitions: options.broker.num_partitions,
                    replication_factor: options.broker.default_replication_factor,
                    config: options.broker.topic_defaults.clone(),
                },
                register,
                cluster_view: Some(view_tx),
            };
            Some((quorum_options, quorum::store::FileQuorumDisk::new(data_dir.join(quorum::METADATA_DIR))))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (quorum_stop_tx, quorum_stop_rx) = oneshot::channel();
        let (quorum_done_tx, quorum_done_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = quorum_stop_tx.send(());
            // As Kafka, the controlled shutdown (this broker fenced) comes before the listeners
            // close: clients are sent elsewhere before this broker stops answering them.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), quorum_done_rx).await;
            let _ = stop_tx.send(());
        });
        let mut quorum_done = Some(quorum_done_tx);
        let quorum = quorum.map(|(options, disk)| {
            let done = quorum_done.take();
            tokio::spawn(async move {
                if let Err(e) = quorum::run(options, disk, None, quorum_stop_rx).await {
                    // As a Kafka controller halts when its metadata log fails: nothing may run on
                    // a quorum state the disk does not hold.
                    tracing::error!("metadata quorum failed: {e:#}");
                    std::process::exit(1);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            })
        });
        // Without a quorum nothing comes first.
        drop(quorum_done);
        let served = serve(options, FileStorage::new(data_dir), stop_rx, None).await;
        if let Err(e) = &served {
            // A node that must restart (or a broker that failed) stops at once, quorum and all;
            // a supervisor (compose's restart policy, systemd) starts it again.
            tracing::error!("stopping the node: {e:#}");
            std::process::exit(1);
        }
        if let Some(quorum) = quorum {
            let _ = quorum.await;
        }
        served
    })
}

/// The first Ctrl-C or SIGTERM asks a client command to stop cleanly; a second one exits at once.
fn stop_on_signals() -> cli::Stop {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
        wait_for_signal().await;
        std::process::exit(130);
    });
    cli::Stop::new(rx)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

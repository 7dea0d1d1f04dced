//! `cargo xtask cluster up|down`: a cluster of `spool serve` nodes on this machine, each broker
//! and controller at once, for trying Spool as a cluster (docs/cluster.md). Node i listens for
//! clients on port i9092 and for the other controllers on i9093; its data and log are under
//! target/cluster/.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::{root, run_cmd};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Build the broker and start the nodes in the background; prints the bootstrap list.
    Up {
        /// How many nodes (all voters), 1 to 5.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
    },
    /// Stop the nodes `up` started (SIGTERM: each hands over and shuts down cleanly).
    Down,
}

fn dir() -> PathBuf {
    root().join("target/cluster")
}

fn client_port(node: u16) -> u16 {
    node * 10_000 + 9092
}

fn controller_port(node: u16) -> u16 {
    node * 10_000 + 9093
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Up { nodes } => up(nodes),
        ClusterCommand::Down => down(),
    }
}

fn up(nodes: u16) -> Result<()> {
    if !(1..=5).contains(&nodes) {
        bail!("--nodes {nodes}: between 1 and 5 (node i listens on port i9092)");
    }
    if pid_files()?.next().is_some() {
        bail!("a cluster is already up (target/cluster/*.pid): `cargo xtask cluster down` first");
    }
    run_cmd("cargo", &["build", "--release", "--bin", "spool"], &[])?;
    std::fs::create_dir_all(dir())?;
    let voters: Vec<String> = (1..=nodes).map(|i| format!("{i}@127.0.0.1:{}", controller_port(i))).collect();
    let voters = voters.join(",");
    for node in 1..=nodes {
        let log = std::fs::File::create(dir().join(format!("node{node}.log")))?;
        let child = std::process::Command::new(root().join("target/release/spool"))
            .args(["serve", "--node-id", &node.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", client_port(node))])
            .args(["--controller-listen", &format!("127.0.0.1:{}", controller_port(node))])
            .args(["--controller-quorum-voters", &voters])
            .arg("--data-dir")
            .arg(dir().join(format!("node{node}")))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {node}"))?;
        std::fs::write(dir().join(format!("node{node}.pid")), child.id().to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in 1..=nodes {
        while TcpStream::connect(("127.0.0.1", client_port(node))).is_err() {
            if Instant::now() > deadline {
                bail!("node {node} did not listen within 30 s: see target/cluster/node{node}.log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let bootstrap: Vec<String> = (1..=nodes).map(|i| format!("127.0.0.1:{}", client_port(i))).collect();
    let controllers: Vec<String> = (1..=nodes).map(|i| format!("127.0.0.1:{}", controller_port(i))).collect();
    println!("{nodes} nodes up (logs and data in target/cluster/)");
    println!("bootstrap servers:   {}", bootstrap.join(","));
    println!("bootstrap controllers: {}", controllers.join(","));
    println!("stop them with: cargo xtask cluster down");
    Ok(())
}

fn pid_files() -> Result<impl Iterator<Item = PathBuf>> {
    let entries = match std::fs::read_dir(dir()) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    Ok(entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pid")))
}

fn down() -> Result<()> {
    let mut stopped = 0;
    for pid_file in pid_files()? {
        let pid = std::fs::read_to_string(&pid_file)?.trim().to_string();
        // Already gone (killed, or the machine restarted): nothing to stop.
        let _ = run_cmd("kill", &["-TERM", &pid], &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while PathBuf::from(format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::remove_file(&pid_file)?;
        stopped += 1;
    }
    println!("{stopped} node(s) stopped; their data stays in target/cluster/");
    Ok(())
}

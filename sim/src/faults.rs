//! Process and network faults for one seed, and the nemesis that applies them to the broker node
//! during the fault phase: power loss, process kill, pause, partitions (whole or one-way), and
//! connection resets and half-open connections inside the broker's connection handling. Each
//! seed draws which of these it uses and how often (swarm testing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use spool_runtime::server::{ConnFault, ConnFaults};

use crate::disk::SharedDisk;
use crate::draw;

/// Faults on the broker's connections, asked once per request frame.
#[derive(Clone, Debug)]
pub struct NetFaults {
    pub reset: f64,
    pub half_open: f64,
    /// Faults fire only while this is set (the fault phase).
    pub active: Arc<AtomicBool>,
}

impl NetFaults {
    pub fn draw(scenario: &str) -> NetFaults {
        NetFaults {
            reset: draw::rate(&format!("{scenario}.conn_reset"), 0.001, 0.05),
            half_open: draw::rate(&format!("{scenario}.conn_half_open"), 0.0005, 0.01),
            active: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn hook(&self) -> ConnFaults {
        let this = self.clone();
        Arc::new(move || {
            if !this.active.load(Ordering::Relaxed) {
                ConnFault::None
            } else if draw::happens(this.reset) {
                ConnFault::Reset { deliver: thread_rng().gen_bool(0.5) }
            } else if draw::happens(this.half_open) {
                ConnFault::HalfOpen
            } else {
                ConnFault::None
            }
        })
    }
}

/// What the nemesis does to the broker node, step by step.
#[derive(Clone, Debug)]
pub struct Nemesis {
    pub steps: u64,
    /// Relative weights; zero leaves the fault out of this seed.
    pub power_loss: u64,
    pub kill: u64,
    pub pause: u64,
    pub isolate: u64,
    pub one_way: u64,
    /// Whether an operator restarts a broker whose disk reported errors; without one, the
    /// broker's own restart in place must bring its partitions back.
    pub operator: bool,
}

impl Nemesis {
    pub fn draw(scenario: &str) -> Nemesis {
        let weight = |name: &str| draw::int(&format!("{scenario}.{name}"), 0..4);
        Nemesis {
            steps: draw::int(&format!("{scenario}.nemesis_steps"), 0..8),
            power_loss: weight("power_loss"),
            kill: weight("kill"),
            pause: weight("pause"),
            isolate: weight("isolate"),
            one_way: weight("one_way"),
            operator: draw::int(&format!("{scenario}.operator"), 0..2) == 1,
        }
    }
}

/// What the nemesis did, for the report.
#[derive(Default, Debug)]
pub struct Applied {
    pub power_losses: u64,
    pub kills: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub operator_restarts: u64,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} power losses, {} kills, {} pauses, {} partitions, {} restarts after disk errors",
            self.power_losses, self.kills, self.pauses, self.partitions, self.operator_restarts
        )
    }
}

/// Logs a nemesis action, and prints it among the broker's events with `-v`.
fn say(what: impl Into<String>) {
    let what: String = what.into();
    tracing::info!("nemesis: {what}");
    spool_runtime::trace::describe("nemesis", spool_runtime::server::now_ms(), || what, String::new);
}

fn pause_for(range: std::ops::Range<u64>) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(range)))
}

/// Runs the fault phase against `broker`, then heals: faults stop, links unclog, and a node
/// whose disk reported errors is restarted (as an operator or supervisor would).
pub async fn run(nemesis: &Nemesis, broker: &NodeHandle, disk: &SharedDisk, net: &NetFaults) -> Applied {
    let handle = Handle::current();
    let mut applied = Applied::default();
    let weights = [nemesis.power_loss, nemesis.kill, nemesis.pause, nemesis.isolate, nemesis.one_way];
    let total: u64 = weights.iter().sum();
    for _ in 0..nemesis.steps {
        pause_for(10..3000).await;
        if nemesis.operator {
            restart_after_disk_errors(&handle, broker, disk, &mut applied).await;
        }
        if total == 0 {
            continue;
        }
        let mut pick = thread_rng().gen_range(0..total);
        let action = weights.iter().position(|w| {
            if pick < *w {
                return true;
            }
            pick -= w;
            false
        });
        match action {
            Some(0) => {
                say("power loss");
                handle.kill(broker.id());
                disk.lock().expect("disk").power_loss();
                applied.power_losses += 1;
                pause_for(1..500).await;
                handle.restart(broker.id());
            }
            Some(1) => {
                // The process dies; the page cache (unsynced writes) survives.
                say("kill");
                handle.kill(broker.id());
                applied.kills += 1;
                pause_for(1..500).await;
                handle.restart(broker.id());
            }
            Some(2) => {
                say("pause");
                handle.pause(broker.id());
                applied.pauses += 1;
                pause_for(100..5000).await;
                handle.resume(broker.id());
            }
            Some(3) => {
                let net = NetSim::current();
                say("isolate");
                net.clog_node(broker.id());
                applied.partitions += 1;
                pause_for(100..8000).await;
                net.unclog_node(broker.id());
            }
            Some(4) => {
                let net = NetSim::current();
                let inbound = thread_rng().gen_bool(0.5);
                say(format!("one-way partition inbound={inbound}"));
                if inbound {
                    net.clog_node_in(broker.id());
                } else {
                    net.clog_node_out(broker.id());
                }
                applied.partitions += 1;
                pause_for(100..8000).await;
                if inbound {
                    net.unclog_node_in(broker.id());
                } else {
                    net.unclog_node_out(broker.id());
                }
            }
            _ => unreachable!("a weighted pick lands on one of the faults"),
        }
    }
    // Healing: no more faults of any kind.
    say("faults stop");
    disk.lock().expect("disk").faulty = false;
    net.active.store(false, Ordering::Relaxed);
    if nemesis.operator {
        restart_after_disk_errors(&handle, broker, disk, &mut applied).await;
    }
    applied
}

async fn restart_after_disk_errors(handle: &Handle, broker: &NodeHandle, disk: &SharedDisk, applied: &mut Applied) {
    if disk.lock().expect("disk").errors_since_start == 0 {
        return;
    }
    say("restart after disk errors");
    handle.kill(broker.id());
    applied.operator_restarts += 1;
    pause_for(1..500).await;
    handle.restart(broker.id());
}

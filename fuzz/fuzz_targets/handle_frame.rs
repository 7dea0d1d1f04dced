//! One request frame (without its size prefix) into a running broker over an in-memory disk.
//! The broker must never panic or abort, whatever the bytes; libFuzzer's `-malloc_limit_mb`
//! turns an allocation sized by a forged length into a finding too.

#![no_main]

use std::cell::RefCell;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spool_core::config::BrokerConfig;
use spool_core::mem_disk::MemDisk;
use spool_core::{loader, Action, Broker, ConnId};

const START_MS: i64 = 1_700_000_000_000;
/// A broker lives this many inputs, then starts afresh, so state a fuzzer builds up (topics,
/// groups) stays bounded.
const INPUTS_PER_BROKER: u32 = 2_000;

struct Harness {
    broker: Broker,
    disk: MemDisk,
    now: i64,
    inputs: u32,
    next_conn: ConnId,
}

impl Harness {
    fn new() -> Self {
        let mut disk = MemDisk::new();
        let config = BrokerConfig::single_node("127.0.0.1", 9092);
        let (state, repairs) = loader::load(&mut disk, config.node_id, 4096, || "fuzz".to_string()).expect("load");
        disk.apply_repairs(&repairs);
        let broker = Broker::new(config, state, START_MS);
        let mut harness = Harness { broker, disk, now: START_MS, inputs: 0, next_conn: 0 };
        harness.run();
        harness
    }

    /// Carries out every action, completing storage at once, as a driver with a fast disk.
    fn run(&mut self) {
        while let Some(action) = self.broker.poll_action() {
            if let Action::Storage(op) = action {
                if let Some(completion) = self.disk.execute(op) {
                    self.broker.handle_completion(self.now, completion);
                }
            }
        }
    }

    fn feed(&mut self, frame: &[u8]) {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.broker.handle_connect(conn);
        self.broker.handle_frame(self.now, conn, Bytes::copy_from_slice(frame));
        self.run();
        // Time passes a little: parked fetches and group timers fire now and then.
        self.now += 7;
        self.broker.handle_tick(self.now);
        self.run();
        self.broker.handle_disconnect(conn);
        self.run();
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fuzz_target!(|frame: &[u8]| {
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let harness = cell.get_or_insert_with(Harness::new);
        harness.feed(frame);
        harness.inputs += 1;
        if harness.inputs >= INPUTS_PER_BROKER {
            *cell = None;
        }
    });
});

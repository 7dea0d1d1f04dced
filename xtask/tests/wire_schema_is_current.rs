//! core/src/wire_guard/schema.rs is what `cargo xtask gen-wire-schema` makes from the kafka-protocol
//! in Cargo.lock and from SERVED_APIS: upgrading the crate or serving another API without
//! regenerating fails here, before the walker can disagree with the decoder it guards.

#[allow(dead_code)]
#[path = "../src/gen_wire_schema.rs"]
mod gen_wire_schema;

use std::path::Path;

#[test]
fn wire_schema_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace");
    let generated = gen_wire_schema::generate(root).expect("the generator understands the crate's decoders");
    let committed = std::fs::read_to_string(root.join(gen_wire_schema::SCHEMA_PATH)).expect("schema.rs exists");
    assert!(generated == committed, "{} is stale: run `cargo xtask gen-wire-schema`", gen_wire_schema::SCHEMA_PATH);
}

//! `cargo xtask image`: a static `spool` binary and the `spool:latest` image built FROM scratch.

use anyhow::{Context, Result};

use crate::{root, run_cmd};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the statically linked binary; returns its path.
pub fn static_binary() -> Result<std::path::PathBuf> {
    // With an explicit --target, RUSTFLAGS reach only the target's crates, not build scripts.
    run_cmd(
        "cargo",
        &["build", "--release", "--bin", "spool", "--target", TARGET, "--target-dir", "target/static"],
        &[
            ("RUSTFLAGS", "-C target-feature=+crt-static".to_string()),
            // The image carries no debug info: smaller, and logs still name functions.
            ("CARGO_PROFILE_RELEASE_DEBUG", "false".to_string()),
            ("CARGO_PROFILE_RELEASE_STRIP", "symbols".to_string()),
        ],
    )?;
    Ok(root().join(format!("target/static/{TARGET}/release/spool")))
}

pub fn run(tag: &str) -> Result<()> {
    let binary = static_binary()?;
    let context = root().join("target/image");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(context.join("data"))?;
    std::fs::copy(&binary, context.join("spool")).context("staging the binary")?;
    run_cmd("docker", &["build", "-t", tag, "-f", "Dockerfile", &context.display().to_string()], &[])?;
    let size = std::fs::metadata(&binary)?.len();
    println!("image {tag}: binary {:.1} MB (the image holds only the binary)", size as f64 / 1e6);
    Ok(())
}

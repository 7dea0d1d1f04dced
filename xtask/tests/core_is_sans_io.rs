//! core/ stays sans-IO (checked from outside it, so the list below is not in core/): no I/O, clocks, threads or unseeded randomness in its source, and no
//! I/O crate among its dependencies. This fails the build's tests the moment one sneaks in.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net",
    "std::fs",
    "std::io::stdin",
    "Instant::now",
    "SystemTime::now",
    "thread::spawn",
    "std::thread",
    "thread_rng",
    "rand::rng()",
    "OsRng",
    "std::env::var",
    "std::process",
];
const FORBIDDEN_DEPENDENCIES: &[&str] =
    &["tokio", "madsim", "mio", "async-std", "socket2", "libc", "nix", "rand", "getrandom"];

fn scan(dir: &Path, hits: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, hits);
        } else if path.extension().is_some_and(|e| e == "rs") {
            for (n, line) in fs::read_to_string(&path).unwrap().lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for needle in FORBIDDEN {
                    if code.contains(needle) {
                        hits.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
}

#[test]
fn core_source_does_no_io_and_reads_no_clock() {
    let mut hits = Vec::new();
    scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src"), &mut hits);
    assert!(hits.is_empty(), "core/ must stay sans-IO:\n{}", hits.join("\n"));
}

#[test]
fn core_depends_on_no_io_crate() {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for line in deps.lines() {
        let name = line.split(['=', ' ', '.']).next().unwrap_or("").trim();
        assert!(!FORBIDDEN_DEPENDENCIES.contains(&name), "core/Cargo.toml depends on {name}");
    }
}

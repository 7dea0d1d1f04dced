#!/usr/bin/env bash
# Builds librdkafka 2.12.1's library, test runner and examples from the source tree shipped
# inside the crate rdkafka-sys 4.10.0+2.12.1 (crates.io). Idempotent: every step is skipped when
# its result is already in place.
#
#   LIBRDKAFKA_DIR   where the tree is unpacked and built  (default: <repo>/target/librdkafka)
#   LIBRDKAFKA_WORK  throwaway cargo project + logs        (default: <repo>/target/librdkafka-build)
#
# Results: $LIBRDKAFKA_DIR/tests/test-runner, $LIBRDKAFKA_DIR/examples/rdkafka_performance, and
# Apache Kafka's command-line tools (tests/kafka-tools/install.sh) for $KAFKA_PATH.
# Uses only Debian's apt, crates.io (through cargo) and Maven Central. No librdkafka source is committed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
LIBRDKAFKA_DIR="${LIBRDKAFKA_DIR:-$REPO_ROOT/target/librdkafka}"
LIBRDKAFKA_WORK="${LIBRDKAFKA_WORK:-$REPO_ROOT/target/librdkafka-build}"
CRATE_VERSION="4.10.0+2.12.1"
LIBRDKAFKA_VERSION="2.12.1"
# sha256 of rdkafka-sys-4.10.0+2.12.1.crate as published on crates.io (also checked by cargo).
CRATE_SHA256="e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77"
JOBS="${JOBS:-$(nproc)}"

log() { echo "build.sh: $*" >&2; }

# --- 1. Debian build dependencies -----------------------------------------------------------
# rapidjson-dev: the tests use it to check statistics JSON (0053, 0110 skip themselves without it)
pkgs=(build-essential python3 pkg-config libssl-dev zlib1g-dev libzstd-dev liblz4-dev libsasl2-dev rapidjson-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  log "Debian packages already present"
fi

# --- 2. The librdkafka tree from the crate ----------------------------------------------------
if [ -f "$LIBRDKAFKA_DIR/.spool-unpacked" ] && [ "$(cat "$LIBRDKAFKA_DIR/.spool-unpacked")" = "$CRATE_VERSION" ]; then
  log "librdkafka tree $LIBRDKAFKA_DIR present"
else
  log "fetching rdkafka-sys $CRATE_VERSION from crates.io"
  mkdir -p "$LIBRDKAFKA_WORK/fetch/src"
  cat > "$LIBRDKAFKA_WORK/fetch/Cargo.toml" <<TOML
[package]
name = "spool-librdkafka-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
rdkafka-sys = { version = "=${CRATE_VERSION%%+*}", default-features = false }
TOML
  : > "$LIBRDKAFKA_WORK/fetch/src/lib.rs"
  (cd "$LIBRDKAFKA_WORK/fetch" && cargo fetch --quiet)
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  crate_file="$(ls "$CARGO_HOME"/registry/cache/*/rdkafka-sys-"$CRATE_VERSION".crate | head -n1)"
  echo "$CRATE_SHA256  $crate_file" | sha256sum --check --quiet
  rm -rf "$LIBRDKAFKA_DIR" "$LIBRDKAFKA_WORK/unpack"
  mkdir -p "$LIBRDKAFKA_WORK/unpack"
  tar -xzf "$crate_file" -C "$LIBRDKAFKA_WORK/unpack" "rdkafka-sys-$CRATE_VERSION/librdkafka"
  mv "$LIBRDKAFKA_WORK/unpack/rdkafka-sys-$CRATE_VERSION/librdkafka" "$LIBRDKAFKA_DIR"
  rm -rf "$LIBRDKAFKA_WORK/unpack"
  echo "$CRATE_VERSION" > "$LIBRDKAFKA_DIR/.spool-unpacked"
fi

# --- 3. Build: library, examples, test runner -----------------------------------------------
cd "$LIBRDKAFKA_DIR"
# (Re)configure when never configured, or when configured before rapidjson-dev was installed.
if [ ! -f Makefile.config ] || { [ -f /usr/include/rapidjson/schema.h ] && ! grep -q '^WITH_RAPIDJSON=[[:space:]]*y' Makefile.config; }; then
  log "configure"
  ./configure --prefix="$LIBRDKAFKA_DIR/_install" > "$LIBRDKAFKA_WORK/configure.log" 2>&1 \
    || { tail -n 40 "$LIBRDKAFKA_WORK/configure.log"; exit 1; }
fi
if [ ! -f src/librdkafka.a ] || [ ! -f src-cpp/librdkafka++.a ]; then
  log "make libs (about a minute on 2 cores)"
  make -j"$JOBS" libs > "$LIBRDKAFKA_WORK/make-libs.log" 2>&1 || { tail -n 40 "$LIBRDKAFKA_WORK/make-libs.log"; exit 1; }
fi
if [ ! -x examples/rdkafka_performance ]; then
  log "make -C examples"
  make -j"$JOBS" -C examples > "$LIBRDKAFKA_WORK/make-examples.log" 2>&1 || { tail -n 40 "$LIBRDKAFKA_WORK/make-examples.log"; exit 1; }
fi
if [ ! -x tests/test-runner ] || [ Makefile.config -nt tests/test-runner ]; then
  log "make -C tests build"
  make -j"$JOBS" -C tests build > "$LIBRDKAFKA_WORK/make-tests.log" 2>&1 || { tail -n 40 "$LIBRDKAFKA_WORK/make-tests.log"; exit 1; }
fi

# --- 4. Kafka's kafka-topics.sh, which some tests call through $KAFKA_PATH ------------------------
bash "$REPO_ROOT/tests/kafka-tools/install.sh"

log "librdkafka $LIBRDKAFKA_VERSION ready: $LIBRDKAFKA_DIR/tests/test-runner, $LIBRDKAFKA_DIR/examples/rdkafka_performance"

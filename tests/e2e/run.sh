#!/usr/bin/env bash
# Runs the end-to-end suite with the venv made by install.sh. Extra args go to pytest;
# if none of them names a test file or directory, the whole of tests/e2e runs.
#   SPOOL_BIN  broker binary (default: <repo>/target/release/spool)
set -euo pipefail
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/../.." && pwd)"
E2E_VENV="${E2E_VENV:-$REPO_ROOT/target/e2e-venv}"
targets=("$E2E_DIR")
for a in "$@"; do
  case "$a" in -*) ;; *) if [ -e "${a%%::*}" ]; then targets=(); fi ;; esac
done
exec "$E2E_VENV/bin/python" -m pytest "${targets[@]}" "$@"

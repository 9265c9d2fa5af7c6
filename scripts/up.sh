#!/usr/bin/env bash
# One command to a working single-machine classgrid: installs and starts
# PostgreSQL if needed, builds, and runs `classgrid up` (broker, one local
# agent, one edge) in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo
ensure_python
ensure_postgres
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
cargo build --release --locked --bin classgrid --bin classgrid-broker --bin classgrid-agent --bin classgrid-edge
echo "classgrid: binaries are in $CARGO_TARGET_DIR/release (add it to PATH to use \`classgrid\` directly)"
exec "$CARGO_TARGET_DIR/release/classgrid" up "$@"

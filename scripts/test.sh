#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against a real
# PostgreSQL, and end-to-end tests over the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo
ensure_python
ensure_postgres
# The agent's container and slurm runtimes are tested against real peers:
# Podman's Docker-compatible API and a one-machine Slurm, stopped afterwards.
ensure_podman
ensure_slurm
trap 'stop_slurm; stop_podman' EXIT
# Builds can be shared across clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
# End-to-end tests start the real binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked

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
# A real Prometheus for the broker's metrics and the Grafana dashboard.
ensure_prometheus
ensure_haproxy
trap 'stop_slurm; stop_podman' EXIT
# Builds can be shared across clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
# The Python platform clients (tests/clients) and Schemathesis run from a
# virtual environment beside the build cache, installed quietly once.
PYENV="$(dirname "$CARGO_TARGET_DIR")/pyenv"
if ! "$PYENV/bin/python" -c 'import grpc_tools, schemathesis, openapi_spec_validator' 2>/dev/null; then
  python3 -m venv "$PYENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$PYENV"; }
  "$PYENV/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools schemathesis openapi-spec-validator
fi
# The rendered Kubernetes manifests are checked against the schemas.
"$PYENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null ||
  "$PYENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate
# tests/traces.rs receives the broker's spans with a real OTLP/gRPC server.
"$PYENV/bin/python" -c 'import opentelemetry.proto' 2>/dev/null ||
  "$PYENV/bin/pip" install -q --disable-pip-version-check opentelemetry-proto
export CLASSGRID_PYTHON="$PYENV/bin/python"
# The console's browser tests: Debian's chromium driven by playwright-core.
ensure_chromium "$(dirname "$CARGO_TARGET_DIR")/console-node"
# End-to-end tests start the real binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
# The REST API against its own OpenAPI document, on a live broker.
scripts/schemathesis.sh

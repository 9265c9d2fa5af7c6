#!/usr/bin/env bash
# Schemathesis against /openapi.json on a live broker (fresh database,
# --insecure-dev, a minted district-admin token): no 5xx and no response
# that breaks the document. Bounded by --max-examples per operation.
# Needs the built broker (BIN_DIR, default $CARGO_TARGET_DIR/debug) and a
# Python with schemathesis and openapi-spec-validator (CLASSGRID_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_postgres
command -v curl >/dev/null || apt_install curl
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
BIN_DIR="${BIN_DIR:-$TARGET/debug}"
PY="${CLASSGRID_PYTHON:-python3}"
EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
PG="postgres://postgres@127.0.0.1:5432"
DB="cg_schemathesis_$$"
WORK=$(mktemp -d)
psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
cleanup() {
  [ -n "${BROKER_PID:-}" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# Ports come from below Linux's ephemeral range (32768+), where an outgoing
# connection could already hold one. A broker that still fails to bind, or
# does not answer, is started again on other ports; its log is shown if none works.
start_broker() {
  PORT_HTTP=$((20000 + RANDOM % 12000)); PORT_GRPC=$((PORT_HTTP + 1))
  "$BIN_DIR/classgrid-broker" serve --database-url "$PG/$DB" --insecure-dev --log-format text \
    --grpc-addr "127.0.0.1:$PORT_GRPC" --http-addr "127.0.0.1:$PORT_HTTP" --rate-limit-per-s 100000 \
    >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT_HTTP/healthz" >/dev/null && return 0
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null
  BROKER_PID=
  return 1
}
started=
for _ in 1 2 3; do start_broker && { started=1; break; }; done
[ -n "$started" ] || { echo "the broker did not start; its log:"; tail -50 "$WORK/broker.log"; exit 1; }
TOKEN=$("$BIN_DIR/classgrid-broker" admin-token --database-url "$PG/$DB" --insecure-dev --log-format text)
# A school to book at, so that generated requests can get past "unknown site".
"$BIN_DIR/classgrid" --grpc-url "http://127.0.0.1:$PORT_GRPC" --token "$TOKEN" sites create school-a >/dev/null

curl -sf "http://127.0.0.1:$PORT_HTTP/openapi.json" -o "$WORK/openapi.json"
"$PY" -m openapi_spec_validator "$WORK/openapi.json"
"$PY" -m schemathesis.cli run "http://127.0.0.1:$PORT_HTTP/openapi.json" \
  --url "http://127.0.0.1:$PORT_HTTP" -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --exclude-path '/v1/lessons/{id}/events' --no-color \
  || { echo "schemathesis failed; broker log:"; tail -50 "$WORK/broker.log"; exit 1; }

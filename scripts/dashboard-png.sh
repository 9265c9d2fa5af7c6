#!/usr/bin/env bash
# Draws the Grafana dashboard (deploy/grafana/classgrid-region.json) from
# real data: tests/deploy.rs starts a broker, an agent and an edge with
# lessons running, scraped by a real Prometheus; with CLASSGRID_DASHBOARD_DATA
# set it then runs a few minutes of bookings (a bell of three classes, one
# lesson every 15 s, a booking too large for the region every 30 s) and asks
# Prometheus every panel's queries over the whole run. dashboard-png.py
# draws those answers with matplotlib, each panel where Grafana puts it.
#
#   scripts/dashboard-png.sh [OUT.png]
#
# OUT.png defaults to docs/screenshots/dashboard-region.png; the query
# answers are kept beside it in $CARGO_TARGET_DIR/dashboard-data.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo
ensure_postgres
ensure_prometheus
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
out=${1:-docs/screenshots/dashboard-region.png}
PYENV="$(dirname "$CARGO_TARGET_DIR")/pyenv"
[ -x "$PYENV/bin/python" ] || PYENV="$HOME/.cache/classgrid/pyenv"
[ -x "$PYENV/bin/python" ] || { ensure_python; python3 -m venv "$PYENV"; }
"$PYENV/bin/python" -c 'import matplotlib' 2>/dev/null ||
  "$PYENV/bin/pip" install -q --disable-pip-version-check matplotlib
data="$CARGO_TARGET_DIR/dashboard-data.json"
rm -f "$data"
# The end-to-end test starts the real binaries.
cargo build --locked --bins -p classgrid-broker -p classgrid-agent -p classgrid-edge
CLASSGRID_DASHBOARD_DATA="$data" cargo test --locked -p classgrid-e2e --test deploy \
  region_metrics_pass_promtool_and_feed_every_dashboard_query -- --exact --nocapture
[ -s "$data" ] || { echo "dashboard-png: the test wrote no $data (prometheus missing?)" >&2; exit 1; }
"$PYENV/bin/python" scripts/dashboard-png.py "$data" "$out" "commit $(git rev-parse --short HEAD)"

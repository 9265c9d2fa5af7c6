#!/bin/bash
# Alternates `classgrid bench storm` on two builds of `classgrid`, N pairs,
# the order swapped every pair so that drift on a shared machine falls on
# both; prints each run, then each build's median running_s and the median
# paired difference. Usage: scripts/bench-ab.sh N OLD_BIN NEW_BIN [storm flags…]
# (docs/benchmarks.md: "Tracing off against the build before decision 099").
set -euo pipefail
n=$1 old=$2 new=$3
shift 3
out=$(mktemp)
for i in $(seq 1 "$n"); do
  if [ $((i % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    if [ "$which" = old ]; then bin=$old; else bin=$new; fi
    line=$(cd /tmp && timeout 300 "$bin" bench storm "$@" 2>&1 | grep '^storm seats=' | tail -1 || true)
    echo "pair=$i build=$which $line" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
runs = {"old": {}, "new": {}}
for l in open(sys.argv[1]):
    m = re.search(r"pair=(\d+) build=(\w+) .*running_s=([\d.]+)", l)
    if m:
        runs[m.group(2)][int(m.group(1))] = float(m.group(3))
pairs = sorted(set(runs["old"]) & set(runs["new"]))
if not pairs:
    sys.exit("no pair completed")
d = [runs["new"][i] - runs["old"][i] for i in pairs]
print(f"pairs={len(pairs)} old_running_s_p50={statistics.median(runs['old'].values()):.3f} "
      f"new_running_s_p50={statistics.median(runs['new'].values()):.3f} "
      f"paired_diff_ms_p50={statistics.median(d) * 1000:+.0f} new_slower_in={sum(x > 0 for x in d)}")
PY
rm -f "$out"

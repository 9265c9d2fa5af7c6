#!/usr/bin/env bash
# Issue 24's check on a real NVIDIA GPU. Prepared, not yet run on a GPU.
#
# What it checks, each printed as PASS/FAIL, and it exits non-zero on any FAIL:
#   1. `classgrid-agent devices --json` through NVML against `nvidia-smi
#      --query-gpu` on the same machine: same GPUs (by UUID), names, memory.
#   2. The same through the nvidia-smi fallback. The agent has no "no NVML"
#      flag; naming the tool (`--tool nvidia-smi=PATH`) turns NVML off
#      (agent/src/config.rs, `discover_options`), so that is what forces it.
#   3. With MIG on: the MIG instances the agent reports against `nvidia-smi -L`,
#      and that no MIG parent without instances is offered.
#   4. MPS memory slices: NOT an agent check. The agent never applies MPS
#      limits today: agent/src/supervisor.rs builds its ControlEnv with
#      `mps_configured = false`, so a seat gets plain time-slicing (or
#      HAMi-core when configured), never `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`.
#      With MPS_SELF_TEST=1 the script instead starts an MPS daemon itself and
#      runs two "seats" with the environment that classgrid_devices::slice_controls
#      gives an MPS slice (names copied from agent/devices/src/slice.rs; its
#      tests/slice.rs asserts them): one allocates beyond its slice and must
#      fail, the other must keep running. That checks the crate's variables
#      under MPS, not an agent setup, and it says so when it runs.
#
# Usage (repository root):
#   AGENT=path/to/classgrid-agent scripts/gpu-check.sh
# Without AGENT it builds `cargo build --release -p classgrid-agent` when cargo
# is there. On the lent GPU machine (no network, 5 minutes) bring a binary
# built here, e.g. `cargo build --release -p classgrid-agent` and carry
# target/release/classgrid-agent. Raw tool outputs are saved under $OUT (or a
# temporary folder, printed at the end) so they can become fixtures.
# Needs: bash, python3 (standard library only; CUDA is reached with ctypes
# through the driver's libcuda.so.1, so nothing is installed from PyPI).
set -uo pipefail
cd "$(dirname "$0")/.."

OUTDIR="${OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
mkdir -p "$OUTDIR"
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
die() { echo "FAIL (stopping): $*" >&2; exit 2; }
START=$(date +%s)

command -v nvidia-smi >/dev/null || die "nvidia-smi not on PATH: this is not an NVIDIA machine"
command -v python3 >/dev/null || die "python3 is needed to compare the JSON"
SMI="$(command -v nvidia-smi)"

AGENT="${AGENT:-}"
if [ -z "$AGENT" ]; then
  command -v cargo >/dev/null || die "no AGENT binary given and no cargo to build one"
  echo "building classgrid-agent (release)…"
  cargo build --release -p classgrid-agent --locked || die "build failed"
  AGENT="${CARGO_TARGET_DIR:-target}/release/classgrid-agent"
fi
[ -x "$AGENT" ] || die "agent binary $AGENT is not executable"

echo "== machine"
"$SMI" --version | head -3 || true
# Raw outputs, kept for fixtures and for reading the result afterwards.
"$SMI" > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
"$SMI" -L > "$OUTDIR/nvidia-smi-L.txt" 2>&1 || true
"$SMI" -q -x > "$OUTDIR/nvidia-smi-q-x.xml" 2>&1 || true
FIELDS=index,uuid,name,pci.bus_id,memory.total,mig.mode.current
"$SMI" --query-gpu=$FIELDS --format=csv > "$OUTDIR/nvidia-smi-query.csv" \
  || die "nvidia-smi --query-gpu failed: $(head -1 "$OUTDIR/nvidia-smi-query.csv")"
cat "$OUTDIR/nvidia-smi-query.csv"

echo "== agent: NVML path"
# The JSON does not say which path answered. NVML must load, and where no GPU
# has MIG on (MIG instances need nvidia-smi) the run gets a PATH without
# nvidia-smi, so only NVML can have produced the devices.
# DRY_RUN=1 is for testing this script with fake tools on a machine without
# a GPU: it skips this requirement and says so; its results prove nothing.
if [ "${DRY_RUN:-0}" = "1" ]; then
  echo "DRY RUN: NVML not required; results below are about fake tools, not a GPU"
else
  python3 -c 'import ctypes; ctypes.CDLL("libnvidia-ml.so.1")' \
    || die "libnvidia-ml.so.1 does not load: the NVML path cannot be checked"
fi
NVML_PATH="$PATH"
MIG_ANY=$(python3 - "$OUTDIR/nvidia-smi-query.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), skipinitialspace=True))
col = [h.split(" [")[0] for h in rows[0]].index("mig.mode.current")
print(any(r[col].strip().lower() == "enabled" for r in rows[1:] if r))
PY
) || die "could not read mig.mode.current from nvidia-smi --query-gpu"
if [ "$MIG_ANY" = "False" ]; then
  NVML_PATH=/nonexistent
  echo "(no MIG: running with PATH=$NVML_PATH, so nvidia-smi cannot be the source)"
fi
PATH="$NVML_PATH" "$AGENT" devices --json > "$OUTDIR/agent-nvml.json" 2> "$OUTDIR/agent-nvml.stderr" \
  || die "classgrid-agent devices --json failed: $(head -3 "$OUTDIR/agent-nvml.stderr")"
cat "$OUTDIR/agent-nvml.stderr"
echo "== agent: nvidia-smi fallback (--tool nvidia-smi=$SMI turns NVML off)"
"$AGENT" devices --json --tool "nvidia-smi=$SMI" > "$OUTDIR/agent-smi.json" 2> "$OUTDIR/agent-smi.stderr" \
  || die "classgrid-agent devices --json --tool nvidia-smi=… failed: $(head -3 "$OUTDIR/agent-smi.stderr")"
cat "$OUTDIR/agent-smi.stderr"

# Compares one agent JSON with the nvidia-smi CSV and -L; prints PASS/FAIL
# lines itself and exits 1 when anything differs.
compare() {
  python3 - "$1" "$2" "$OUTDIR/nvidia-smi-query.csv" "$OUTDIR/nvidia-smi-L.txt" <<'PY'
import csv, json, re, sys
label, agent_path, csv_path, list_path = sys.argv[1:5]
agent = json.load(open(agent_path))
rows = list(csv.reader(open(csv_path), skipinitialspace=True))
head = [h.split(" [")[0] for h in rows[0]]
truth = [dict(zip(head, r)) for r in rows[1:] if r]
devs = agent["devices"]
gpus = [d for d in devs if d["vendor"] == "nvidia" and d["mig_parent"] is None]
migs = [d for d in devs if d["vendor"] == "nvidia" and d["mig_parent"] is not None]
bad = 0
def check(ok, what):
    global bad
    print(("PASS" if ok else "FAIL") + f": [{label}] {what}")
    bad += 0 if ok else 1
by_uuid = {d["uuid"]: d for d in gpus}
for t in truth:
    mig_on = t["mig.mode.current"].strip().lower() == "enabled"
    total = int(re.sub(r"[^0-9]", "", t["memory.total"]) or 0)
    d = by_uuid.get(t["uuid"])
    children = [m for m in migs if d is not None and m["mig_parent"] == d["index"]]
    if mig_on and d is None:
        # Allowed only when the agent said it could not read any instance.
        named = any(f"GPU {t['index']}" in w and "MIG" in w for w in agent["warnings"])
        check(named, f"GPU {t['index']} (MIG on) left out, with a warning naming it")
        continue
    check(d is not None, f"GPU {t['index']} {t['uuid']} reported")
    if d is None:
        continue
    check(d["model"] == t["name"], f"GPU {t['index']} name {d['model']!r} == {t['name']!r}")
    check(abs(d["memory_total_mib"] - total) <= 1,
          f"GPU {t['index']} memory {d['memory_total_mib']} MiB == {total} MiB (±1)")
    check(d["index"] == int(t["index"]), f"GPU {t['index']} index {d['index']}")
    check(d["bus_id"] is None or d["bus_id"].lower() == t["pci.bus_id"].lower(),
          f"GPU {t['index']} bus id {d['bus_id']} == {t['pci.bus_id']}")
    if mig_on:
        check(d["sharing"] == ["mig"], f"GPU {t['index']} offers only mig: {d['sharing']}")
        listed = re.findall(r"^\s+MIG .*UUID: (MIG-[^)]+)\)", open(list_path).read(), re.M)
        check(len(children) > 0, f"GPU {t['index']} has {len(children)} MIG instance(s) in the agent")
        check(sorted(m["uuid"] or "" for m in migs) == sorted(listed),
              f"MIG UUIDs match nvidia-smi -L ({len(listed)} listed)")
check(len(gpus) <= len(truth), f"no extra GPUs ({len(gpus)} reported, {len(truth)} in nvidia-smi)")
print(f"[{label}] warnings: {agent['warnings']}")
sys.exit(1 if bad else 0)
PY
}
compare nvml "$OUTDIR/agent-nvml.json" || fail "NVML path differs from nvidia-smi (see the lines above)"
compare nvidia-smi "$OUTDIR/agent-smi.json" || fail "nvidia-smi fallback differs from nvidia-smi (see above)"

echo "== MPS memory slices"
if [ "${MPS_SELF_TEST:-0}" != "1" ]; then
  echo "SKIPPED: the agent applies no MPS limits (supervisor.rs: ControlEnv mps_configured=false),"
  echo "         so there is no agent MPS setup to check. MPS_SELF_TEST=1 checks the crate's MPS"
  echo "         variables under an MPS daemon started by this script instead."
else
  echo "NOTE: this checks classgrid_devices::slice_controls' MPS variables under an MPS daemon"
  echo "      started here, NOT the agent (which never starts or uses MPS)."
  command -v nvidia-cuda-mps-control >/dev/null || die "nvidia-cuda-mps-control not found"
  if "$SMI" --query-gpu=mig.mode.current --format=csv,noheader -i 0 | grep -qi enabled; then
    die "GPU 0 has MIG on: the MPS check needs a whole GPU"
  fi
  UUID0=$("$SMI" --query-gpu=uuid --format=csv,noheader -i 0)
  MPSDIR=$(mktemp -d)
  export CUDA_MPS_PIPE_DIRECTORY="$MPSDIR/pipe" CUDA_MPS_LOG_DIRECTORY="$MPSDIR/log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || die "could not start the MPS control daemon"
  trap 'echo quit | nvidia-cuda-mps-control >/dev/null 2>&1; rm -rf "$MPSDIR"' EXIT
  # One seat: a CUDA context under MPS, then allocations, via the driver API.
  # Prints what happened; exit 0 = all allocations as expected.
  cat > "$MPSDIR/seat.py" <<'PY'
import ctypes, sys, time
role, first_mib, hold_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
cu = ctypes.CDLL("libcuda.so.1")
def ok(r, what):
    if r != 0:
        print(f"{role}: {what} failed with CUresult {r}", flush=True)
    return r == 0
dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
if not (ok(cu.cuInit(0), "cuInit") and ok(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        and ok(cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")):
    sys.exit(3)
r = cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(first_mib << 20))
print(f"{role}: allocating {first_mib} MiB -> CUresult {r}", flush=True)
if role == "over":
    # CUDA_ERROR_OUT_OF_MEMORY (2) is the expected answer beyond the slice.
    sys.exit(0 if r == 2 else 1)
if r != 0:
    sys.exit(1)
deadline = time.time() + hold_s
while time.time() < deadline:          # stay alive while the other seat fails
    time.sleep(0.5)
r = cu.cuMemAlloc_v2(ctypes.byref(ctypes.c_uint64()), ctypes.c_size_t(64 << 20))
print(f"{role}: still running, 64 MiB more -> CUresult {r}", flush=True)
sys.exit(0 if r == 0 else 1)
PY
  # The environment slice_controls gives an MPS slice of 2048 MiB at 50 %.
  seat_env() { env CUDA_VISIBLE_DEVICES="$UUID0" CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50 \
      CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=2048M" "$@"; }
  seat_env timeout 120 python3 "$MPSDIR/seat.py" keeps 1024 20 & KEEP=$!
  sleep 5
  if seat_env timeout 60 python3 "$MPSDIR/seat.py" over 3072 0; then
    pass "a seat allocating 3072 MiB beyond its 2048 MiB MPS slice was refused"
  else
    fail "a seat allocating beyond its 2048 MiB MPS slice was not refused as expected"
  fi
  if wait "$KEEP"; then
    pass "the other seat kept running and could still allocate within its slice"
  else
    fail "the other seat did not survive (exit $?)"
  fi
fi

echo "== done in $(( $(date +%s) - START )) s; outputs in $OUTDIR"
if [ "$FAILS" -gt 0 ]; then
  echo "gpu-check: $FAILS check(s) FAILED" >&2
  exit 1
fi
echo "gpu-check: all checks passed${DRY_RUN:+ (DRY RUN with fake tools: proves nothing about a GPU)}"

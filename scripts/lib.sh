# Shared by scripts/up.sh and scripts/test.sh: install and start what
# classgrid needs on a Debian machine, saying what it does.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "classgrid: need root to run: $*" >&2; return 1; fi
}

apt_install() {
  echo "classgrid: installing $* from Debian packages" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || {
    as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# PostgreSQL at 127.0.0.1:5432 for user postgres: installed when missing,
# started when stopped. A server this script installs gets trust auth for
# postgres on loopback only, as the single-machine installation expects.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  local fresh=0
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
    fresh=1
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  if [ "$fresh" = 1 ]; then
    local hba="/etc/postgresql/$ver/main/pg_hba.conf"
    if ! as_root grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
      as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    fi
  fi
  echo "classgrid: starting PostgreSQL $ver" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  echo "classgrid: PostgreSQL did not start at 127.0.0.1:5432" >&2
  return 1
}

ensure_cargo() {
  if ! command -v cargo >/dev/null; then
    echo "classgrid: cargo is missing. Install Rust (https://rustup.rs), then run this again." >&2
    return 1
  fi
}

ensure_python() {
  command -v python3 >/dev/null || apt_install python3
}

# Podman's Docker-compatible API, for the agent's container runtime and its
# tests: installed when missing, started on a socket under /tmp with runc and
# explicit ulimits (what works on these machines), plus a small busybox image
# built locally, since no image can be pulled. Exports
# CLASSGRID_TEST_CONTAINER_SOCKET and CLASSGRID_TEST_CONTAINER_IMAGE.
CLASSGRID_PODMAN_DIR=/tmp/classgrid-podman
ensure_podman() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
    apt_install podman runc busybox-static
  fi
  local dir=$CLASSGRID_PODMAN_DIR image=localhost/classgrid-mini:1
  mkdir -p "$dir"
  cat > "$dir/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF="$dir/containers.conf"
  if ! as_root podman image exists "$image"; then
    echo "classgrid: building the test image $image from busybox" >&2
    local rootfs="$dir/rootfs"
    rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/www"
    cp /bin/busybox "$rootfs/bin/"
    (cd "$rootfs/bin" && for a in sh sleep echo cat httpd nc ls; do ln -sf busybox "$a"; done)
    echo "classgrid seat" > "$rootfs/www/index.html"
    tar -C "$rootfs" -cf "$dir/rootfs.tar" .
    as_root env CONTAINERS_CONF="$CONTAINERS_CONF" podman import --quiet "$dir/rootfs.tar" "$image" >/dev/null
  fi
  local sock="$dir/podman.sock"
  if ! curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    echo "classgrid: starting Podman's Docker-compatible API on $sock" >&2
    rm -f "$sock"
    # The shell writes its own pid and then becomes the service, so that
    # stop_podman signals the service itself.
    as_root env CONTAINERS_CONF="$CONTAINERS_CONF" sh -c \
      'echo $$ > "$1"; exec podman system service --time=0 "unix://$2"' sh "$dir/service.pid" "$sock" \
      >"$dir/service.log" 2>&1 </dev/null &
    local ok=0
    for _ in $(seq 1 60); do
      if curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.5
    done
    if [ "$ok" != 1 ]; then
      echo "classgrid: Podman's API did not answer on $sock; see $dir/service.log" >&2
      return 1
    fi
  fi
  export CLASSGRID_TEST_CONTAINER_SOCKET="$sock" CLASSGRID_TEST_CONTAINER_IMAGE="$image"
}

# Stops the Podman service ensure_podman started (and only that one).
stop_podman() {
  local pidf="$CLASSGRID_PODMAN_DIR/service.pid" pid
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  as_root kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  rm -f "$pidf" "$CLASSGRID_PODMAN_DIR/podman.sock"
}

# A one-machine Slurm cluster (slurmctld + slurmd, munge for auth) for the
# agent's slurm runtime and its tests, configured under /tmp so that it never
# touches a real /etc/slurm. The node declares many CPUs (config_overrides),
# as TESTBEDS.md describes. Exports SLURM_CONF; needs root.
CLASSGRID_SLURM_DIR=/tmp/classgrid-slurm
ensure_slurm() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt_install slurm-wlm munge
  fi
  local dir=$CLASSGRID_SLURM_DIR host
  host=$(hostname -s)
  as_root mkdir -p "$dir/spool" "$dir/state" /run/munge
  if [ ! -s /etc/munge/munge.key ]; then as_root mungekey --create >/dev/null 2>&1 || true; fi
  as_root chown munge:munge /run/munge
  if ! munge -n >/dev/null 2>&1; then
    as_root runuser -u munge -- /usr/sbin/munged
  fi
  as_root tee "$dir/slurm.conf" >/dev/null <<CONF
ClusterName=classgrid
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
NodeName=$host CPUs=64 RealMemory=65536 State=UNKNOWN
PartitionName=classgrid Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  if ! scontrol ping 2>/dev/null | grep -q UP; then
    echo "classgrid: starting a one-machine Slurm (slurmctld, slurmd) under $dir" >&2
    as_root env SLURM_CONF="$SLURM_CONF" slurmctld -c
    as_root env SLURM_CONF="$SLURM_CONF" slurmd
  fi
  for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then return 0; fi
    sleep 1
  done
  echo "classgrid: Slurm did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  return 1
}

# Cancels every job, waits until the queue is empty (otherwise job steps are
# left running), then stops the daemons ensure_slurm started.
stop_slurm() {
  [ -f "$CLASSGRID_SLURM_DIR/slurm.conf" ] || return 0
  export SLURM_CONF="$CLASSGRID_SLURM_DIR/slurm.conf"
  scancel --full --quiet --user=root 2>/dev/null || true
  for _ in $(seq 1 30); do
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 1
  done
  for d in slurmd slurmctld; do
    local pidf="$CLASSGRID_SLURM_DIR/$d.pid"
    [ -f "$pidf" ] && as_root kill "$(cat "$pidf")" 2>/dev/null || true
  done
}

# Headless Chromium (Debian's package, never a downloaded browser), Node.js
# and playwright-core for the console's browser tests (tests/console.rs).
# CJK fonts let screenshots show the zh-CN console. playwright-core goes
# into $1 (beside the build cache); exports CLASSGRID_CONSOLE_NODE_DIR.
ensure_chromium() {
  local dir=$1
  # Only what is missing: a machine with Node.js from elsewhere (nodesource
  # bundles npm) cannot take Debian's npm beside it.
  local want=()
  command -v chromium >/dev/null || want+=(chromium)
  command -v node >/dev/null || want+=(nodejs)
  command -v npm >/dev/null || want+=(npm)
  [ -n "$(ls /usr/share/fonts/opentype/noto/NotoSansCJK* 2>/dev/null)" ] || want+=(fonts-noto-cjk)
  if [ ${#want[@]} -gt 0 ]; then
    apt_install "${want[@]}"
  fi
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
    echo "classgrid: installing playwright-core (npm) into $dir" >&2
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-audit --no-fund --silent playwright-core@1 >/dev/null)
  fi
  export CLASSGRID_CONSOLE_NODE_DIR="$dir"
}

# Prometheus and promtool (Debian's prometheus, 2.42) for tests/deploy.rs:
# promtool lints the broker's /metrics, and a Prometheus of the test's own,
# on a loopback port, answers the dashboard's queries. The service the
# package installs is left alone.
ensure_prometheus() {
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    apt_install prometheus
  fi
}

# HAProxy (Debian's), the reference load balancer in front of several broker
# replicas: tests/ha.rs runs it in the foreground with a config of its own.
ensure_haproxy() {
  if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    apt_install haproxy
  fi
}

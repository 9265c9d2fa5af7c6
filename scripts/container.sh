#!/usr/bin/env bash
# Builds or checks the classgrid image (deploy/container/Containerfile), the
# one the Kubernetes manifests run.
#
#   scripts/container.sh build [TAG]   the real image, from the workspace
#                                      (pulls the Rust and Debian images)
#   scripts/container.sh check         without any registry: the final stage
#                                      built from this host's binaries
#
# `check` is for machines that can pull nothing (the project's CI). It
# builds the Containerfile with two stand-ins passed as build arguments: the
# binaries of $CARGO_TARGET_DIR (release if built, else debug; run `cargo
# build --bins` first), stripped, as the `binaries` stage, and a runtime
# base made of this host's glibc (Debian 12, as the real base) and a static
# busybox as sh. Then it checks the image as the manifests use it: user
# 10001, every binary answers --version, the init containers' `sh -c`
# works, and the broker serves /healthz against the local PostgreSQL.
# Needs root podman and runc (../shared/TESTBEDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"
BINS=(classgrid-broker classgrid-edge classgrid-agent classgrid)
file=deploy/container/Containerfile
ignore=deploy/container/Containerfile.dockerignore

conf=$(mktemp)
cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$conf

case "${1:-}" in
  build)
    tag=${2:-classgrid:$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)}
    podman build -f "$file" --ignorefile "$ignore" -t "$tag" .
    exit 0
    ;;
  check) ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

profile=release
[ -x "$CARGO_TARGET_DIR/release/classgrid-broker" ] || profile=debug
for b in "${BINS[@]}"; do
  [ -x "$CARGO_TARGET_DIR/$profile/$b" ] || {
    echo "container.sh: no $CARGO_TARGET_DIR/$profile/$b; run cargo build --bins" >&2
    exit 1
  }
done

work=$(mktemp -d)
id=$$
bin_img=localhost/classgrid-check-binaries:$id
base_img=localhost/classgrid-check-runtime:$id
img=localhost/classgrid:check-$id
db=classgrid_container_check_$id
ctr=classgrid-check-$id
cleanup() {
  podman rm -f "$ctr" >/dev/null 2>&1 || true
  podman rmi -f "$img" "$bin_img" "$base_img" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work" "$conf"
}
trap cleanup EXIT

# The binaries stand-in: what the build stage leaves in /out.
mkdir -p "$work/bin/out/etc/ssl/certs" "$work/bin/out/home"
for b in "${BINS[@]}"; do
  objcopy --strip-debug "$CARGO_TARGET_DIR/$profile/$b" "$work/bin/out/$b"
done
cp /etc/ssl/certs/ca-certificates.crt "$work/bin/out/etc/ssl/certs/"
tar -C "$work/bin" -cf "$work/bin.tar" .
podman import -q "$work/bin.tar" "$bin_img" >/dev/null

# The runtime stand-in: this host's loader and the libraries the binaries
# link (ldd), sh from busybox, and a writable /tmp.
root=$work/root
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh test; do ln -sf busybox "$root/bin/$a"; done
for b in "${BINS[@]}"; do
  ldd "$work/bin/out/$b" | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
tar -C "$root" -cf "$work/root.tar" .
podman import -q --change 'ENV PATH=/usr/bin:/bin' "$work/root.tar" "$base_img" >/dev/null

podman build -q --pull=never -f "$file" --ignorefile "$ignore" \
  --build-arg BINARIES="$bin_img" --build-arg RUNTIME_IMAGE="$base_img" \
  -t "$img" . >/dev/null
echo "built $img from $profile binaries"

user=$(podman image inspect -f '{{.Config.User}}' "$img")
[ "$user" = "10001:10001" ] || { echo "image user is '$user', not 10001:10001" >&2; exit 1; }
for b in "${BINS[@]}"; do
  v=$(podman run --rm --entrypoint "$b" "$img" --version)
  echo "  $b --version: $v"
done
# The init containers' command: sh, test, and exec of a binary on PATH.
podman run --rm --entrypoint sh "$img" -c 'test -f /nonexistent || exec classgrid-agent --version' >/dev/null
echo "  sh -c '… || exec classgrid-agent …' works"

# The broker, as the image's entrypoint, serving against this host's
# PostgreSQL on the host network.
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
gport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman run -d --name "$ctr" --network host "$img" serve \
  --database-url "postgres://postgres@127.0.0.1:5432/$db" \
  --http-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$gport" \
  --insecure-dev --log-format text >/dev/null
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
    echo "  the broker in the image serves /healthz (port $port)"
    curl -fsS "http://127.0.0.1:$port/metrics" | grep -q '^classgrid_bookings_admitted_total ' \
      && echo "  and /metrics"
    echo "container check passed"
    exit 0
  fi
  sleep 1
done
echo "the broker in the image did not serve /healthz; its log:" >&2
podman logs "$ctr" >&2
exit 1

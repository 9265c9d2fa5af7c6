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

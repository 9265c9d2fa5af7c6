#!/usr/bin/env bash
# Builds the Debian packages classgrid-agent, classgrid-edge and
# classgrid-broker with cargo-deb (release build), and checks each with
# lintian: any lintian error fails the script.
#
#   scripts/package.sh [--no-build] [--out DIR] [PACKAGE...]
#
# PACKAGE is agent, edge or broker (default: all three). --no-build packages
# the release binaries already in $CARGO_TARGET_DIR/release. The .deb files
# go to DIR (default: $CARGO_TARGET_DIR/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/classgrid/target}"

build=1 out="$CARGO_TARGET_DIR/debian" pkgs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --out) out=$2; shift ;;
    agent | edge | broker) pkgs+=("classgrid-$1") ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(classgrid-agent classgrid-edge classgrid-broker)

if ! command -v cargo-deb >/dev/null; then
  echo "classgrid: installing cargo-deb from crates.io" >&2
  cargo install cargo-deb --locked
fi
command -v lintian >/dev/null || apt_install lintian

# The packages' version is the workspace's, and their revision comes from
# deploy/debian/changelog, whose newest entry must name that version:
# Debian tools read the changelog, so the two must not drift apart.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
top=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' deploy/debian/changelog)
if [ "${top%-*}" != "$version" ]; then
  echo "package.sh: deploy/debian/changelog's newest entry is $top, but the workspace is version $version;" >&2
  echo "  add an entry for $version-1 at the top of deploy/debian/changelog" >&2
  exit 1
fi
revision=${top##*-}

if [ "$build" = 1 ]; then
  args=()
  for p in "${pkgs[@]}"; do args+=(-p "$p"); done
  cargo build --release --locked "${args[@]}"
fi

mkdir -p "$out"
for p in "${pkgs[@]}"; do
  deb=$(cargo deb --no-build --locked -p "$p" --deb-revision "$revision" -o "$out" | tail -1)
  # --fail-on error: warnings are reported, errors fail the build. The
  # overrides shipped in each package say why the rest are accepted.
  if report=$(lintian --fail-on error "$deb" 2>&1); then rc=0; else rc=$?; fi
  printf '%s\n' "$report" | grep -v 'running with root privileges' >&2 || true
  if [ "$rc" != 0 ]; then
    echo "package.sh: lintian found errors in $deb" >&2
    exit 1
  fi
  echo "$deb"
done

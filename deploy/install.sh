#!/usr/bin/env bash
# Installs Arc (arc-gateway) as a systemd service, following the deployment guide:
#   1. ./target/release/arc-gateway -> /usr/local/bin/arc-gateway
#   2. create /etc/arc/
#   3. arc.example.json -> /etc/arc/arc.json (an existing arc.json is kept)
#   4. deploy/arc-gateway.service -> /etc/systemd/system/
#   5. systemctl daemon-reload && systemctl enable arc-gateway
# Idempotent: running it again gives the same result. Step 5 is skipped, with a message, when
# DESTDIR is set or the machine is not running systemd.
#
# Usage: deploy/install.sh [--prefix DIR] [--destdir DIR] [--binary PATH] [--xdp] [--no-enable]
#   --prefix DIR    installation prefix of the binary (default /usr/local; the unit follows it)
#   --destdir DIR   stage everything under DIR (also the DESTDIR environment variable)
#   --binary PATH   binary to install (default ./target/release/arc-gateway)
#   --xdp           also install the XDP drop-in (arc-gateway.service.d/xdp.conf)
#   --no-enable     skip daemon-reload and enable
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

prefix="/usr/local"
destdir="${DESTDIR:-}"
binary="$repo/target/release/arc-gateway"
with_xdp=0
enable=1

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --binary=*) binary="${1#*=}"; shift ;;
    --xdp) with_xdp=1; shift ;;
    --no-enable) enable=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$prefix" in
  /*) ;;
  *) echo "install.sh: --prefix must be an absolute path, got: $prefix" >&2; exit 2 ;;
esac
prefix="${prefix%/}"
destdir="${destdir%/}"

if [ ! -x "$binary" ]; then
  echo "install.sh: no executable at $binary; build it first: cargo build --release" >&2
  exit 1
fi

bindir="$destdir$prefix/bin"
confdir="$destdir/etc/arc"
unitdir="$destdir/etc/systemd/system"

# 1. the binary
install -d -m 0755 "$bindir"
install -m 0755 "$binary" "$bindir/arc-gateway"
echo "installed $bindir/arc-gateway"

# 2. the configuration directory
install -d -m 0755 "$confdir"

# 3. the configuration: never overwrite the operator's file
if [ -e "$confdir/arc.json" ]; then
  echo "kept existing $confdir/arc.json"
else
  install -m 0644 "$repo/arc.example.json" "$confdir/arc.json"
  echo "installed $confdir/arc.json (from arc.example.json; edit it, then: arc-gateway --config /etc/arc/arc.json --check)"
fi

# 4. the unit (its ExecStart follows --prefix)
install -d -m 0755 "$unitdir"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
sed "s#/usr/local/bin/arc-gateway#$prefix/bin/arc-gateway#g" "$here/arc-gateway.service" >"$tmp"
install -m 0644 "$tmp" "$unitdir/arc-gateway.service"
echo "installed $unitdir/arc-gateway.service"
if [ "$with_xdp" = 1 ]; then
  install -d -m 0755 "$unitdir/arc-gateway.service.d"
  install -m 0644 "$here/arc-gateway-xdp.conf" "$unitdir/arc-gateway.service.d/xdp.conf"
  echo "installed $unitdir/arc-gateway.service.d/xdp.conf"
fi

# 5. systemd
if [ "$enable" = 0 ]; then
  echo "skipping systemctl daemon-reload/enable (--no-enable)"
elif [ -n "$destdir" ]; then
  echo "skipping systemctl daemon-reload/enable: DESTDIR is set ($destdir)"
elif [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
  echo "skipping systemctl daemon-reload/enable: this machine is not running systemd"
else
  systemctl daemon-reload
  systemctl enable arc-gateway
  echo "enabled arc-gateway; start it with: systemctl start arc-gateway"
fi

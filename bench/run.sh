#!/usr/bin/env bash
# Arc benchmark: the BENCHMARK.md matrix, Arc (io_uring and epoll drivers) vs a tuned nginx and
# HAProxy, alternating order, plus the direct (no proxy) ceiling, on a pinned 2-core rig.
#
#   bench/run.sh            default matrix (under 25 minutes)
#   bench/run.sh --quick    reduced set (under 3 minutes)
#   bench/run.sh --full     long runs (10 s warm-up + 30 s measured)
#   bench/run.sh --cases keepalive,latency    only some cases
#
# Installs what is missing (apt: nginx-light haproxy wrk curl openssl python3-matplotlib;
# crates.io: oha into a cache directory), builds arc-gateway in release mode unless ARC_BIN is
# set (the API server emulator for the Kubernetes rows unless ARC_EMULATOR_BIN is set, the TLS
# handshake client unless ARC_TLSLOAD_BIN is set), then runs bench/arcbench.py. Tables go to
# stdout and to bench/results/ with a PNG chart. Duration and size overrides: see
# bench/README.md. Loopback only; every process started is stopped on exit.
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ARC_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arc-bench}
OHA_VERSION=${OHA_VERSION:-1.16.0}
PY=${PYTHON:-/usr/bin/python3}
log() { echo "[bench] $*" >&2; }

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO=sudo

# ---------------------------------------------------------------- apt packages
need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need_apt+=(haproxy)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
[[ -x $PY ]] || need_apt+=(python3)
if [[ -x $PY ]] && ! "$PY" -c 'import matplotlib' 2>/dev/null; then need_apt+=(python3-matplotlib); fi
if ((${#need_apt[@]})); then
  log "installing: ${need_apt[*]}"
  # The Debian packages may start a system nginx/haproxy; policy-rc.d keeps them down.
  REMOVE_POLICY=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    REMOVE_POLICY=1
  fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
  [[ -n $REMOVE_POLICY ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  # Never leave a system service running because of this script.
  if command -v systemctl >/dev/null 2>&1; then
    for svc in nginx haproxy; do
      if systemctl is-active --quiet "$svc" 2>/dev/null; then
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

# ---------------------------------------------------------------- oha (crates.io)
if [[ -z ${OHA:-} ]]; then
  if command -v oha >/dev/null 2>&1; then
    OHA=$(command -v oha)
  elif [[ -x $CACHE/oha/bin/oha ]]; then
    OHA=$CACHE/oha/bin/oha
  else
    log "installing oha $OHA_VERSION into $CACHE/oha (cargo install, a few minutes)"
    mkdir -p "$CACHE"
    if cargo install oha --locked --version "$OHA_VERSION" --root "$CACHE/oha" >"$CACHE/oha-install.log" 2>&1; then
      OHA=$CACHE/oha/bin/oha
    else
      log "oha did not build (see $CACHE/oha-install.log): the latency case is skipped"
      OHA=""
    fi
  fi
fi
export OHA

# ---------------------------------------------------------------- Arc
if [[ -z ${ARC_BIN:-} ]]; then
  log "building arc-gateway (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin arc-gateway)
  ARC_BIN="$ROOT/target/release/arc-gateway"
fi
[[ -x $ARC_BIN ]] || {
  echo "arc-gateway binary not found: $ARC_BIN" >&2
  exit 1
}
export ARC_BIN

# ---------------------------------------------------------------- API server (Kubernetes path)
# Items 5 and 7 also run through Arc's controller, against the in-repo API server emulator.
if [[ -z ${ARC_EMULATOR_BIN:-} ]]; then
  log "building arc-kube-emulator (release)"
  if (cd "$ROOT" && cargo build --release --quiet -p arc-e2e --bin arc-kube-emulator); then
    ARC_EMULATOR_BIN="$ROOT/target/release/arc-kube-emulator"
  else
    log "arc-kube-emulator did not build: the Kubernetes rows are skipped"
    ARC_EMULATOR_BIN=""
  fi
fi
export ARC_EMULATOR_BIN

# ---------------------------------------------------------------- TLS handshake client
# Item 4a's load generator (bench/tools): TLS 1.3 full handshakes with rustls, far cheaper per
# handshake than `openssl s_time`, so the proxy rather than the client sets the rate.
if [[ -z ${ARC_TLSLOAD_BIN:-} ]]; then
  log "building arc-tlsload (release)"
  if (cd "$ROOT" && cargo build --release --quiet -p arc-bench-tools --bin arc-tlsload); then
    ARC_TLSLOAD_BIN="$ROOT/target/release/arc-tlsload"
  else
    log "arc-tlsload did not build: the TLS handshake rows are skipped"
    ARC_TLSLOAD_BIN=""
  fi
fi
export ARC_TLSLOAD_BIN

exec "$PY" "$ROOT/bench/arcbench.py" "$@"

#!/usr/bin/env bash
# Lifecycle soak: steady load (keep-alive and new connections) against Arc while it hot reloads
# (SIGHUP) and upgrades its binary (SIGUSR2) for minutes, then the same load against nginx
# while `nginx -s reload` runs in a loop. Prints requests sent, failed, reset, refused and
# "closed before response" (a reused keep-alive connection closed under a request: a client
# without retry fails it; the load here retries it once and counts it).
#
#   bench/soak.sh                       5 minutes per target: arc-epoll, arc-io_uring, nginx
#   bench/soak.sh --duration 60         1 minute per target
#
# Options: --duration SECS (300), --reload-ms MS (500, time between reloads),
# --upgrade-every N (10: every Nth Arc reload is a binary upgrade; 0 = never),
# --threads N (8 load threads), --targets "arc-epoll arc-io_uring nginx".
# The load, the backend and both proxies run on loopback; the driver is the ignored `soak`
# test of tests/lifecycle.rs (debug build: the figures are about losses, not throughput).
# nginx comes from apt (`apt-get install nginx-light` or `nginx`). Arc's run fails when it
# loses a request; nginx's figures are only reported.
set -euo pipefail

DURATION=300
RELOAD_MS=500
UPGRADE_EVERY=10
THREADS=8
TARGETS="arc-epoll arc-io_uring nginx"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --reload-ms) RELOAD_MS=$2; shift 2 ;;
    --upgrade-every) UPGRADE_EVERY=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    -h | --help)
      sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $1" >&2
      exit 2
      ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { echo "[soak] $*" >&2; }

if [[ " $TARGETS " == *" nginx "* ]] && ! command -v nginx >/dev/null; then
  log "nginx not found; install it (apt-get install nginx-light) or drop it from --targets"
  exit 1
fi

log "building the test driver"
cargo test --test lifecycle --no-run >/dev/null 2>&1 || cargo test --test lifecycle --no-run

results=()
status=0
for target in $TARGETS; do
  log "$target: ${DURATION}s, reload every ${RELOAD_MS}ms, upgrade every ${UPGRADE_EVERY} reloads"
  out=$(ARC_SOAK_TARGET=$target ARC_SOAK_SECS=$DURATION ARC_SOAK_RELOAD_MS=$RELOAD_MS \
    ARC_SOAK_UPGRADE_EVERY=$UPGRADE_EVERY ARC_SOAK_THREADS=$THREADS \
    cargo test --test lifecycle soak -- --ignored --nocapture --exact 2>&1) || status=1
  line=$(grep '^SOAK ' <<<"$out" || true)
  if [[ -z "$line" ]]; then
    log "$target: no result"
    tail -n 30 <<<"$out" >&2
    status=1
    continue
  fi
  results+=("$line")
done

printf '\n%-14s %8s %8s %8s %10s %8s %8s %8s %22s\n' target seconds reloads upgrades sent failed reset refused closed_before_response
for line in "${results[@]}"; do
  get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  printf '%-14s %8s %8s %8s %10s %8s %8s %8s %22s\n' \
    "$(get target)" "$(get seconds)" "$(get reloads)" "$(get upgrades)" "$(get sent)" \
    "$(get failed)" "$(get reset)" "$(get refused)" "$(get retried)"
done
exit $status

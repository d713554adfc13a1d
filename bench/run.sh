#!/usr/bin/env bash
# Arc keep-alive benchmark: Arc vs a tuned nginx proxy, alternating A/B pairs, plus the
# direct (no proxy) baseline, on a 2-core rig (method: BENCHMARK.md).
#
#   bench/run.sh            5 alternating Arc/nginx pairs
#   bench/run.sh --quick    3 alternating pairs
#
# Environment: WARMUP (s, default 2), DURATION (s, default 8), CONNS (default 64),
# BODY_BYTES (default 1024), PAIRS (overrides the pair count), ARC_BIN (skip the build).
# Loopback only. Every process started here is stopped on exit.
set -euo pipefail

PAIRS=${PAIRS:-}
if [[ -z "$PAIRS" ]]; then PAIRS=5; fi
for arg in "$@"; do
  case "$arg" in
    --quick) PAIRS=3 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
BODY_BYTES=${BODY_BYTES:-1024}
LOADGEN_CPU=0
PROXY_CPU=1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HZ=$(getconf CLK_TCK)
log() { echo "[bench] $*" >&2; }

# ---------------------------------------------------------------- dependencies
need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  log "installing: ${need_apt[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  # The Debian package may start a system nginx on port 80; policy-rc.d keeps it down.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    REMOVE_POLICY=1
  fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [[ -n "${REMOVE_POLICY:-}" ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  # Belt and braces: never leave a system nginx running because of this script.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- build
if [[ -z "${ARC_BIN:-}" ]]; then
  log "building arc-gateway (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin arc-gateway)
  ARC_BIN="$ROOT/target/release/arc-gateway"
fi
[[ -x "$ARC_BIN" ]] || {
  echo "arc-gateway binary not found: $ARC_BIN" >&2
  exit 1
}

# ---------------------------------------------------------------- process bookkeeping
TMP=$(mktemp -d /tmp/arc-bench.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# A free loopback TCP port (bind 0 in a throwaway socket).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait (bounded, 10 s) until URL answers 200.
wait_http() {
  local url=$1
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}

# utime+stime (clock ticks) of a process, all its threads, plus its direct children
# (nginx's worker processes).
cpu_ticks() {
  local root=$1 total=0 pid stat rest
  for pid in "$root" $(cat /proc/"$root"/task/*/children 2>/dev/null); do
    stat=$(cat /proc/"$pid"/stat 2>/dev/null) || continue
    rest=${stat##*) }
    # fields after "comm)": state=3 ... utime=14 stime=15 -> offsets 12 and 13 in $rest
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

BACKEND_PORT=$(free_port)
ARC_PORT=$(free_port)
ARC_ADMIN=$(free_port)
NGX_PORT=$(free_port)

body=$(head -c "$BODY_BYTES" /dev/zero | tr '\0' 'a')

# ---------------------------------------------------------------- backend
mkdir -p "$TMP/backend/logs"
cat >"$TMP/backend/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$BACKEND_PORT reuseport backlog=4096;
    location / { default_type text/plain; return 200 "$body"; }
  }
}
EOF
taskset -c "$LOADGEN_CPU" "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" \
  >"$TMP/backend/stdout.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/"

# ---------------------------------------------------------------- proxies
cat >"$TMP/arc.yaml" <<EOF
node: {workers: 1}
io_uring: {enabled: false}
listeners: [{name: http, bind: "127.0.0.1:$ARC_PORT", protocol: http}]
upstreams: [{name: b, addr: "127.0.0.1:$BACKEND_PORT", pool: {max_idle: 128}}]
routes: [{path: /, upstream: b}]
observability: {metrics_bind: "127.0.0.1:$ARC_ADMIN"}
logging: {level: warn}
EOF

mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF

PROXY_PID=""
start_proxy() {
  case "$1" in
    arc)
      taskset -c "$PROXY_CPU" "$ARC_BIN" --config "$TMP/arc.yaml" >"$TMP/arc.log" 2>&1 &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_http "http://127.0.0.1:$ARC_PORT/"
      ;;
    nginx)
      taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        >"$TMP/nginx/stdout.log" 2>&1 &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_http "http://127.0.0.1:$NGX_PORT/"
      ;;
  esac
}

# run_case NAME PORT -> "rps ticks requests errors" on stdout
run_case() {
  local name=$1 port=$2 url out requests rps errs t0=0 t1=0
  url="http://127.0.0.1:$port/"
  # warm-up (not counted)
  timeout $((WARMUP + 20)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null
  [[ -n "$PROXY_PID" ]] && t0=$(cpu_ticks "$PROXY_PID")
  out=$(timeout $((DURATION + 20)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
  [[ -n "$PROXY_PID" ]] && t1=$(cpu_ticks "$PROXY_PID")
  echo "$out" >"$TMP/wrk-$name-$RUN_NO.txt"
  requests=$(awk '/requests in/ {print $1; exit}' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ {print $2; exit}' <<<"$out")
  errs=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/[^0-9 ]/," "); n+=$1+$2+$3+$4} END {print n+0}' <<<"$out")
  echo "$rps $((t1 - t0)) ${requests:-0} $errs"
}

# ---------------------------------------------------------------- measurement
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "pairs=$PAIRS warmup=${WARMUP}s duration=${DURATION}s conns=$CONNS body=${BODY_BYTES}B load=$LOAD_START"
RES="$TMP/results.txt" # lines: pair case rps ticks requests errors
: >"$RES"
RUN_NO=0
for pair in $(seq 1 "$PAIRS"); do
  # alternate which proxy goes first, so drift does not favour one side
  if ((pair % 2)); then order="arc nginx"; else order="nginx arc"; fi
  PROXY_PID=""
  RUN_NO=$((RUN_NO + 1))
  echo "$pair direct $(run_case direct "$BACKEND_PORT")" >>"$RES"
  for p in $order; do
    RUN_NO=$((RUN_NO + 1))
    start_proxy "$p"
    if [[ $p == arc ]]; then port=$ARC_PORT; else port=$NGX_PORT; fi
    echo "$pair $p $(run_case "$p" "$port")" >>"$RES"
    stop_pid "$PROXY_PID"
    PROXY_PID=""
  done
  log "pair $pair: $(grep "^$pair " "$RES" | awk '{printf "%s=%.0f/s ", $2, $3}')"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
awk -v hz="$HZ" -v dur="$DURATION" -v pairs="$PAIRS" -v conns="$CONNS" -v body="$BODY_BYTES" \
  -v warm="$WARMUP" -v l0="$LOAD_START" -v l1="$LOAD_END" -v nproc="$(nproc)" '
function med(a, n,   i, j, t, b) {
  for (i = 1; i <= n; i++) b[i] = a[i]
  for (i = 2; i <= n; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
  return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
}
function mn(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
function mx(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
{
  p = $1; c = $2
  rps[c, p] = $3; req[c, p] = $5; err[c] += $6
  if (c != "direct") {
    cpu[c, p] = ($5 > 0) ? ($4 / hz) / $5 * 1e6 : 0     # µs of proxy CPU per request
    busy[c, p] = ($4 / hz) / dur * 100                 # % of one core
  }
}
END {
  for (i = 1; i <= pairs; i++) {
    d[i] = rps["direct", i]; a[i] = rps["arc", i]; n[i] = rps["nginx", i]
    r[i] = (n[i] > 0) ? a[i] / n[i] : 0
    ac[i] = cpu["arc", i]; nc[i] = cpu["nginx", i]
    rc[i] = (nc[i] > 0) ? ac[i] / nc[i] : 0
    ab[i] = busy["arc", i]; nb[i] = busy["nginx", i]
  }
  printf "Keep-alive %d B body, %d connections, wrk -t1, %d alternating pairs (%ds warm-up + %ds measured), %d CPUs, load average %s (start) / %s (end)\n\n", body, conns, pairs, warm, dur, nproc, l0, l1
  print "| case | direct | Arc | nginx | Arc/nginx (median) | Arc/nginx min–max |"
  print "|---|---:|---:|---:|---:|---:|"
  printf "| requests/s (higher is better) | %.0f | %.0f | %.0f | %.3f | %.3f–%.3f |\n", med(d, pairs), med(a, pairs), med(n, pairs), med(r, pairs), mn(r, pairs), mx(r, pairs)
  printf "| proxy CPU µs/request (lower is better) | — | %.2f | %.2f | %.3f | %.3f–%.3f |\n", med(ac, pairs), med(nc, pairs), med(rc, pairs), mn(rc, pairs), mx(rc, pairs)
  printf "| proxy core busy %% | — | %.0f | %.0f | | |\n", med(ab, pairs), med(nb, pairs)
  printf "| wrk errors (non-2xx + socket), all runs | %d | %d | %d | | |\n", err["direct"], err["arc"], err["nginx"]
  print ""
  print "Per pair (requests/s; proxy CPU µs/request):"
  print ""
  for (i = 1; i <= pairs; i++)
    printf "- pair %d: direct %.0f; Arc %.0f (%.2f µs, %.0f%% busy); nginx %.0f (%.2f µs, %.0f%% busy); ratio %.3f\n", i, d[i], a[i], ac[i], ab[i], n[i], nc[i], nb[i], r[i]
  cb = (med(ab, pairs) < 95 || med(nb, pairs) < 95)
  if (cb) { print ""; print "Note: a proxy core was under 95% busy: client-bound, read the CPU-per-request row." }
}' "$RES"

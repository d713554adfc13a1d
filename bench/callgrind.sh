#!/usr/bin/env bash
# Instructions per proxied request, deterministic: runs arc-gateway (release, 1 worker, access
# log off) under `valgrind --tool=callgrind` in front of a loopback nginx answering 1 KiB, and
# after a warm-up drives N and then 2N keep-alive requests, dumping the counters after each
# (`callgrind_control -d`); prints (Ir(2N) - Ir(N)) / N, which removes whatever a dump costs
# besides the requests. Both io drivers by default.
#
# Usage: bench/callgrind.sh [N]        (N defaults to 3000)
# Env:   ARC_BIN=path   use this binary instead of building
#        DRIVERS="uring epoll"   drivers to measure
#        CONNS=8        client connections (one request in flight on each)
#        BODY_BYTES=1024   response body size the backend answers (64 KiB: 65536)
#        KEEP_TMP=1     keep the temporary directory (configs, callgrind.out files)
set -euo pipefail

N="${1:-3000}"
CONNS="${CONNS:-8}"
DRIVERS="${DRIVERS:-uring epoll}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx is needed (apt-get install nginx-light)" >&2; exit 1; }

if [ -z "${ARC_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin arc-gateway)
    ARC_BIN="$ROOT/target/release/arc-gateway"
fi

TMP="$(mktemp -d /tmp/arc-callgrind.XXXXXX)"
NGINX_PID=""
cleanup() {
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The client: CONNS keep-alive connections, one request in flight on each, a bounded number of
# requests, every response read to its Content-Length end. Exits non-zero on any other status.
cat >"$TMP/client.py" <<'EOF'
import socket, sys, time
port, total, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = (b"GET /b1k HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: arc-callgrind/1\r\n"
       b"Accept: */*\r\n\r\n")
deadline = time.monotonic() + 600
socks = []
for _ in range(conns):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append([s, b""])
def read_one(c):
    s, buf = c
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").split("\r\n")
            if not head[0].startswith("HTTP/1.1 200"):
                sys.exit(f"unexpected status: {head[0]!r}")
            cl = 0
            for line in head[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    cl = int(v.strip())
            if len(buf) >= end + 4 + cl:
                c[1] = buf[end + 4 + cl:]
                return
        if time.monotonic() > deadline:
            sys.exit("client deadline passed")
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed early")
        buf += chunk
done = 0
while done < total:
    batch = socks[: min(conns, total - done)]
    for c in batch:
        c[0].sendall(req)
    for c in batch:
        read_one(c)
    done += len(batch)
for c in socks:
    c[0].close()
EOF

BACKEND_PORT="$(free_port)"
mkdir -p "$TMP/nginx/logs"
head -c "${BODY_BYTES:-1024}" /dev/zero | tr '\0' a >"$TMP/body"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    location = /b1k { default_type text/plain; alias $TMP/body; }
  }
}
EOF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!

wait_port() {
    for _ in $(seq 1 600); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),timeout=1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not open" >&2; return 1
}
wait_port "$BACKEND_PORT"

# Asks callgrind to dump (and zero) its counters. Valgrind reads the request only while the
# process runs, so single requests on fresh connections wake it until the dump is written
# (bounded); their cost lands in every measured dump alike and cancels in the difference.
dump() {
    local pid="$1" port="$2" cc
    callgrind_control -d "$pid" >/dev/null 2>&1 &
    cc=$!
    for _ in $(seq 1 100); do
        kill -0 "$cc" 2>/dev/null || break
        python3 "$TMP/client.py" "$port" 1 1
        sleep 0.2
    done
    wait "$cc"
}

# Instructions per request of one driver: warm-up, dump (discarded), N requests, dump A,
# 2N requests, dump B; prints "A B (B-A)/N".
run_driver() {
    local driver="$1" uring=false port admin cfg out pid files a b
    [ "$driver" = uring ] && uring=true
    port="$(free_port)"
    admin="$(free_port)"
    cfg="$TMP/arc-$driver.json"
    out="$TMP/callgrind.out.$driver"
    cat >"$cfg" <<EOF
{
  "node": { "workers": 1 },
  "io_uring": { "enabled": $uring },
  "listeners": [ { "name": "http", "bind": "127.0.0.1:$port", "protocol": "http" } ],
  "upstreams": [ { "name": "b", "addr": "127.0.0.1:$BACKEND_PORT", "pool": { "max_idle": 128 } } ],
  "routes": [ { "path": "/", "path_type": "Prefix", "upstream": "b" } ],
  "observability": { "metrics_bind": "127.0.0.1:$admin" },
  "logging": { "level": "warn", "format": "text", "access_log": { "enabled": false } },
  "lifecycle": { "drain_timeout": "1s" },
  "limits": { "idle_timeout": "300s" }
}
EOF
    valgrind --tool=callgrind --callgrind-out-file="$out" -q "$ARC_BIN" --config "$cfg" \
        >"$TMP/arc-$driver.log" 2>&1 &
    pid=$!
    wait_port "$port"
    python3 "$TMP/client.py" "$port" 500 "$CONNS"      # warm-up: connections, pool, caches
    dump "$pid" "$port"
    python3 "$TMP/client.py" "$port" "$N" "$CONNS"
    dump "$pid" "$port"
    python3 "$TMP/client.py" "$port" $((2 * N)) "$CONNS"
    dump "$pid" "$port"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    # Dumps are numbered in order: the 2nd holds N requests, the 3rd 2N.
    files=$(ls "$out".* | sort -t. -k3 -n)
    a=$(awk '/^summary:/ { print $2 }' "$(echo "$files" | sed -n 2p)")
    b=$(awk '/^summary:/ { print $2 }' "$(echo "$files" | sed -n 3p)")
    echo "$a $b $(( (b - a) / N ))"
}

printf '%-8s %14s %14s %12s\n' driver "Ir(N=$N)" "Ir(2N)" "Ir/request"
for d in $DRIVERS; do
    read -r a b per < <(run_driver "$d")
    printf '%-8s %14s %14s %12s\n' "$d" "$a" "$b" "$per"
done

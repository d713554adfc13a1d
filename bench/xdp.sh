#!/usr/bin/env bash
# XDP fast path benchmark: packets/s dropped and the CPU it cost, for a bounded SYN flood from a
# denied source over a veth pair between two network namespaces this script creates (and
# deletes), dropped by:
#   xdp-skb     Arc's XDP program, generic (skb) mode   (xdp.deny_cidrs)
#   xdp-native  Arc's XDP program, native veth mode
#   nft-ingress an nftables netdev ingress rule on the veth (earliest nftables hook)
#   nft-input   an nftables inet input rule (the usual firewall place)
#   stack       no filter: the kernel TCP stack answers every SYN (Arc's proxy layer never sees a
#               spoofed SYN, so this is the cost of leaving it to the stack / the proxy)
#
# The generator (bench/xdp-flood.c, AF_PACKET + sendmmsg) is pinned to CPU 0. On a veth the
# receive path (XDP, netfilter, TCP) runs in softirq on the sending CPU, inline in the generator's
# system calls or in ksoftirqd/0; the CPU cost is the generator's own CPU time (user + system,
# which holds the inline softirq time with tick-based accounting) plus ksoftirqd/0's, per packet.
# It does not count other processes, so a busy machine skews it less than wall-clock rates; the
# generator's share is the same for every method, so differences are the drop paths' costs.
# Each method runs ROUNDS times, alternating; the summary gives medians.
#
# usage: sudo bench/xdp.sh            (env: COUNT=2000000 MAX_SECONDS=10 ARC_BIN=... MODES="...")
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-2000000}
MAX_SECONDS=${MAX_SECONDS:-10}
MODES=${MODES:-"xdp-skb xdp-native nft-ingress nft-input stack"}
ROUNDS=${ROUNDS:-3}
ARC_BIN=${ARC_BIN:-target/debug/arc-gateway}

[ "$(id -u)" = 0 ] || { echo "xdp.sh: needs root (namespaces, XDP, nftables)" >&2; exit 1; }
command -v nft >/dev/null || { echo "xdp.sh: nft missing (apt-get install nftables)" >&2; exit 1; }
command -v cc >/dev/null || { echo "xdp.sh: a C compiler is needed for the generator" >&2; exit 1; }
[ -x "$ARC_BIN" ] || cargo build --bin arc-gateway

tmp=$(mktemp -d)
id=$$
S=arcbs$id; C=arcbc$id; VS=vbs$id; VC=vbc$id
arc_pid=""
cleanup() {
  [ -n "$arc_pid" ] && kill "$arc_pid" 2>/dev/null && wait "$arc_pid" 2>/dev/null || true
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cc -O2 -o "$tmp/flood" bench/xdp-flood.c

ip netns add "$S"; ip netns add "$C"
ip link add "$VS" netns "$S" type veth peer name "$VC" netns "$C"
ip -n "$S" addr add 192.0.2.1/24 dev "$VS"
ip -n "$C" addr add 192.0.2.3/24 dev "$VC"
for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set "$VS" up; ip -n "$C" link set "$VC" up
mac() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
DMAC=$(mac "$S" "$VS"); SMAC=$(mac "$C" "$VC")
# Resolve neighbours once so the stack's SYN-ACKs do not wait on ARP.
ip -n "$S" neigh replace 192.0.2.3 lladdr "$SMAC" dev "$VS"

start_arc() { # $1 = xdp enabled (true/false), $2 = mode
  cat >"$tmp/arc.yaml" <<YAML
listeners:
  - { name: http, bind: "0.0.0.0:8080", protocol: http }
routes:
  - { path: /, path_type: Prefix, direct_response: { status: 200, body: "ok" } }
observability: { metrics_bind: "127.0.0.1:9090" }
logging: { level: warn, format: text }
node: { workers: 1 }
xdp: { enabled: $1, interface: $VS, mode: $2, deny_cidrs: ["192.0.2.3/32"] }
YAML
  ip netns exec "$S" "$ARC_BIN" --config "$tmp/arc.yaml" >"$tmp/arc.log" 2>&1 &
  arc_pid=$!
  for _ in $(seq 100); do
    metrics | grep -q '^arc_xdp_enabled' && break
    sleep 0.1
  done
}
stop_arc() { kill "$arc_pid" 2>/dev/null; wait "$arc_pid" 2>/dev/null || true; arc_pid=""; }
metrics() { ip netns exec "$S" curl -s --max-time 2 http://127.0.0.1:9090/metrics || true; }
xdp_denied() { metrics | sed -n 's/^arc_xdp_packets_total{action="denied"} //p'; }
KSOFTIRQD=$(pgrep -x ksoftirqd/0 | head -1)
ksoft_ticks() { awk '{print $14+$15}' "/proc/$KSOFTIRQD/stat"; }
nft_count() { ip netns exec "$S" nft list table "$1" arcbench 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1; }

flood() { # prints "sent seconds cpu_seconds"
  local b a sent secs cpu
  b=$(ksoft_ticks)
  read -r sent secs cpu < <(ip netns exec "$C" taskset -c 0 "$tmp/flood" "$VC" "$DMAC" "$SMAC" \
    192.0.2.3 192.0.2.1 8080 "$COUNT" "$MAX_SECONDS")
  a=$(ksoft_ticks)
  echo "$sent $secs $(awk -v c="$cpu" -v d=$((a - b)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", c + d/hz}')"
}

rows="$tmp/rows"
: >"$rows"
printf '%-12s %10s %8s %12s %10s %12s %10s\n' method sent seconds sent_pps dropped dropped_pps cpu_ns/pkt
report() { # method sent secs cpu dropped
  awk -v m="$1" -v n="$2" -v s="$3" -v c="$4" -v d="$5" 'BEGIN{
    printf "%-12s %10d %8.2f %12.0f %10s %12s %10.0f\n", m, n, s, n/s, d, (d=="-"?"-":sprintf("%.0f", d/s)), c*1e9/n }' | tee -a "$rows"
}

for round in $(seq "$ROUNDS"); do
for mode in $MODES; do
  case $mode in
    xdp-skb|xdp-native)
      start_arc true "${mode#xdp-}"
      [ "$mode" = xdp-native ] && m=native || m=skb
      if ! metrics | grep -q '^arc_xdp_enabled 1'; then
        echo "$mode: XDP not enabled: $(grep -i xdp "$tmp/arc.log" | head -1)"; stop_arc; continue
      fi
      before=$(xdp_denied)
      read -r sent secs cpu < <(flood)
      sleep 1.5 # the counter reader copies every second
      after=$(xdp_denied)
      report "$mode" "$sent" "$secs" "$cpu" $((after - before))
      stop_arc
      ;;
    nft-ingress|nft-input)
      start_arc false skb
      if [ "$mode" = nft-ingress ]; then
        ip netns exec "$S" nft -f - <<NFT
table netdev arcbench {
  chain ingress {
    type filter hook ingress device "$VS" priority 0;
    ip saddr 192.0.2.3 tcp dport 8080 counter drop
  }
}
NFT
        fam=netdev
      else
        ip netns exec "$S" nft -f - <<NFT
table inet arcbench {
  chain input {
    type filter hook input priority 0;
    ip saddr 192.0.2.3 tcp dport 8080 counter drop
  }
}
NFT
        fam=inet
      fi
      read -r sent secs cpu < <(flood)
      report "$mode" "$sent" "$secs" "$cpu" "$(nft_count $fam)"
      ip netns exec "$S" nft delete table $fam arcbench
      stop_arc
      ;;
    stack)
      start_arc false skb
      read -r sent secs cpu < <(flood)
      report "$mode" "$sent" "$secs" "$cpu" -
      stop_arc
      ;;
    *) echo "unknown mode $mode" >&2 ;;
  esac
done
done

echo
echo "medians over $ROUNDS rounds (packets/s dropped, or handled by the stack; CPU-ns per packet incl. the generator):"
median() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'; }
for mode in $MODES; do
  pps=$(awk -v m="$mode" '$1==m {print ($6=="-" ? $4 : $6)}' "$rows" | median)
  ns=$(awk -v m="$mode" '$1==m {print $7}' "$rows" | median)
  if [ -n "$pps" ]; then printf '  %-12s %10s pkt/s %8s ns/pkt\n' "$mode" "$pps" "$ns"; fi
done

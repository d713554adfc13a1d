// SPDX-License-Identifier: Apache-2.0
//
// Arc's XDP fast path: drops TCP packets to Arc's listener ports (a listener port on one of the
// host's addresses Arc listens on) whose source address is in a deny list (LPM tries, IPv4 and IPv6), and optionally limits new TCP SYNs per source with a
// token bucket kept per CPU. Every other packet, and every packet to a port Arc does not serve,
// is passed untouched. Per-CPU counters record what the program decided.
//
// Parsing: Ethernet, at most one VLAN tag (802.1Q or 802.1ad), IPv4 (any header length) or
// IPv6 (up to four extension headers: hop-by-hop, routing, destination options, fragment),
// then TCP. A non-first fragment carries no ports, so it is passed: without its first fragment
// (which is checked) it cannot be reassembled. Malformed or truncated headers are counted as
// parse errors and passed: the kernel's own stack judges them.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ARC_MAX_PORTS 64
#define ARC_MAX_LOCAL 1024
#define ARC_MAX_DENY 65536
#define ARC_SYN_SOURCES 65536
#define ARC_NS_PER_TOKEN 1000000000ULL
#define ARC_MAX_REFILL_NS 1000000000000ULL

// Counter slots; the loader reads them with the same indices.
enum arc_counter {
	ARC_PASSED = 0,
	ARC_DENIED = 1,
	ARC_SYN_LIMITED = 2,
	ARC_PARSE_ERROR = 3,
	ARC_COUNTERS = 4,
};

struct arc_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct arc_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

// SYN limit settings; rate 0 turns the limit off.
struct arc_syn_config {
	__u64 rate;
	__u64 burst;
};

// Token state of one source on one CPU; tokens are in nanoseconds' worth of rate
// (ARC_NS_PER_TOKEN units per token) so refill needs no division.
struct arc_bucket {
	__u64 tokens;
	__u64 last_ns;
};

struct arc_src {
	__u8 addr[16];
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ARC_MAX_PORTS);
	__type(key, __u16); // destination port, network byte order
	__type(value, __u8);
} arc_ports SEC(".maps");

// Destination addresses Arc listens on (the listeners' bind addresses, or every local address
// for a wildcard bind); packets to other hosts (routed or bridged through this interface) are
// never touched.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ARC_MAX_LOCAL);
	__type(key, __u32); // IPv4 address, network byte order
	__type(value, __u8);
} arc_local_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ARC_MAX_LOCAL);
	__type(key, struct arc_src);
	__type(value, __u8);
} arc_local_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ARC_MAX_DENY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct arc_lpm_v4);
	__type(value, __u8);
} arc_deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ARC_MAX_DENY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct arc_lpm_v6);
	__type(value, __u8);
} arc_deny_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct arc_syn_config);
} arc_syn_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, ARC_SYN_SOURCES);
	__type(key, struct arc_src);
	__type(value, struct arc_bucket);
} arc_syn_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ARC_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} arc_counters SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&arc_counters, &slot);
	if (v)
		*v += 1;
}

static __always_inline int verdict_parse_error(void)
{
	count(ARC_PARSE_ERROR);
	return XDP_PASS;
}

// Token bucket for one new SYN from `src`; returns 1 when the SYN may pass.
static __always_inline int syn_allowed(const struct arc_src *src)
{
	__u32 zero = 0;
	struct arc_syn_config *cfg = bpf_map_lookup_elem(&arc_syn_config, &zero);
	if (!cfg || cfg->rate == 0)
		return 1;
	__u64 cap = cfg->burst * ARC_NS_PER_TOKEN;
	__u64 now = bpf_ktime_get_ns();
	struct arc_bucket *b = bpf_map_lookup_elem(&arc_syn_buckets, src);
	if (!b) {
		if (cap < ARC_NS_PER_TOKEN)
			return 0;
		struct arc_bucket fresh = { .tokens = cap - ARC_NS_PER_TOKEN, .last_ns = now };
		bpf_map_update_elem(&arc_syn_buckets, src, &fresh, BPF_ANY);
		return 1;
	}
	__u64 elapsed = now > b->last_ns ? now - b->last_ns : 0;
	if (elapsed > ARC_MAX_REFILL_NS)
		elapsed = ARC_MAX_REFILL_NS;
	__u64 tokens = b->tokens + elapsed * cfg->rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < ARC_NS_PER_TOKEN) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - ARC_NS_PER_TOKEN;
	return 1;
}

// 1 when the segment at `l4` goes to a listener port, 0 when not, -1 when its ports are cut.
static __always_inline int to_listener_port(void *l4, void *data_end)
{
	// The ports are the first four bytes; a first fragment may carry no more than that.
	if (l4 + 4 > data_end)
		return -1;
	__u16 dport = ((__be16 *)l4)[1];
	return bpf_map_lookup_elem(&arc_ports, &dport) != 0;
}

// Decides a segment (or first fragment) to Arc whose TCP header starts at `l4`. `denied` says
// whether the source is in the deny list; `src` keys the SYN bucket.
static __always_inline int tcp_verdict(void *l4, void *data_end, int denied,
				       const struct arc_src *src)
{
	if (denied) {
		count(ARC_DENIED);
		return XDP_DROP;
	}
	struct tcphdr *tcp = l4;
	if ((void *)(tcp + 1) > data_end)
		return verdict_parse_error();
	if (tcp->syn && !tcp->ack && !syn_allowed(src)) {
		count(ARC_SYN_LIMITED);
		return XDP_DROP;
	}
	count(ARC_PASSED);
	return XDP_PASS;
}

static __always_inline int handle_v4(void *l3, void *data_end)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return verdict_parse_error();
	if (ip->version != 4 || ip->ihl < 5)
		return verdict_parse_error();
	if (ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	// Non-first fragment: no ports to check (see the header comment).
	if (ip->frag_off & bpf_htons(0x1FFF))
		return XDP_PASS;
	void *l4 = l3 + ((__u32)ip->ihl & 0xF) * 4;
	if (l4 > data_end)
		return verdict_parse_error();

	int ours = to_listener_port(l4, data_end);
	if (ours < 0)
		return verdict_parse_error();
	__u32 daddr = ip->daddr;
	if (!ours || !bpf_map_lookup_elem(&arc_local_v4, &daddr))
		return XDP_PASS;

	struct arc_lpm_v4 key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &ip->saddr, 4);
	int denied = bpf_map_lookup_elem(&arc_deny_v4, &key) != 0;
	// IPv4 sources are keyed as IPv4-mapped IPv6 addresses in the SYN buckets.
	struct arc_src src = {};
	src.addr[10] = 0xff;
	src.addr[11] = 0xff;
	__builtin_memcpy(&src.addr[12], &ip->saddr, 4);
	return tcp_verdict(l4, data_end, denied, &src);
}

struct ipv6_ext {
	__u8 nexthdr;
	__u8 len;
};

static __always_inline int handle_v6(void *l3, void *data_end)
{
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end)
		return verdict_parse_error();
	if (ip6->version != 6)
		return verdict_parse_error();
	__u8 next = ip6->nexthdr;
	void *cur = ip6 + 1;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (next == IPPROTO_TCP)
			break;
		if (next == IPPROTO_FRAGMENT) {
			if (cur + 8 > data_end)
				return verdict_parse_error();
			__be16 frag = ((__be16 *)cur)[1];
			// Offset in the upper 13 bits; non-zero = no TCP header here.
			if (frag & bpf_htons(0xFFF8))
				return XDP_PASS;
			next = ((struct ipv6_ext *)cur)->nexthdr;
			cur += 8;
			continue;
		}
		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
			struct ipv6_ext *ext = cur;
			if ((void *)(ext + 1) > data_end)
				return verdict_parse_error();
			next = ext->nexthdr;
			cur += ((__u32)ext->len + 1) * 8;
			continue;
		}
		return XDP_PASS;
	}
	if (next != IPPROTO_TCP)
		return XDP_PASS;
	if (cur > data_end)
		return verdict_parse_error();

	int ours = to_listener_port(cur, data_end);
	if (ours < 0)
		return verdict_parse_error();
	struct arc_src dst;
	__builtin_memcpy(dst.addr, &ip6->daddr, 16);
	if (!ours || !bpf_map_lookup_elem(&arc_local_v6, &dst))
		return XDP_PASS;

	struct arc_lpm_v6 key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, &ip6->saddr, 16);
	int denied = bpf_map_lookup_elem(&arc_deny_v6, &key) != 0;
	struct arc_src src;
	__builtin_memcpy(src.addr, &ip6->saddr, 16);
	return tcp_verdict(cur, data_end, denied, &src);
}

SEC("xdp")
int arc_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return verdict_parse_error();
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = l3;
		if ((void *)(tag + 1) > data_end)
			return verdict_parse_error();
		proto = tag->proto;
		l3 = tag + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return handle_v4(l3, data_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_v6(l3, data_end);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

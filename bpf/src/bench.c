/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark entry points around the balancer. BPF_PROG_RUN repeats a program on the same
 * buffer, so after a forwarded packet these undo the encapsulation and the TTL decrement: every
 * repetition then takes the path being measured, not the non-VIP path of an encapsulated packet.
 */
#include "lb.c"

/* How xdp_balance_spread numbers its flows; the benchmark writes it before each case. */
struct spread {
	__u64 flows; /* flow numbers wrap here (the working set); 0: every packet is a new flow */
	__u32 vips;  /* flow n goes to VIP n % vips, the VIPs being 10.64.0.0 + 0 .. vips-1 */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spread);
} spread_settings SEC(".maps");

/* The next flow number, per CPU: CPUs running at once share neither a counter nor a flow. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_flow SEC(".maps");

/* undo returns the frame to what balance received, except for the MACs, which it ignores. */
static __always_inline int undo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct l2 l2 = {};
	int outer_len;
	__be16 proto;

	if (parse_l2(data, data_end, &l2))
		return -1;
	if (l2.proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l2.len;

		if ((void *)(iph + 1) > data_end)
			return -1;
		outer_len = sizeof(*iph) + (iph->protocol == IPPROTO_UDP ? 12 : 0);
		proto = bpf_htons(ETH_P_IP);
	} else {
		struct ipv6hdr *ip6 = data + l2.len;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		outer_len = sizeof(*ip6) + (ip6->nexthdr == IPPROTO_UDP ? 12 : 0);
		proto = bpf_htons(ETH_P_IPV6);
	}
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (write_l2(data, data_end, &l2, proto))
		return -1;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l2.len;

		if ((void *)(iph + 1) > data_end)
			return -1;
		__u32 check = iph->check + bpf_htons(0xfeff);

		iph->check = (check & 0xffff) + (check >> 16);
		iph->ttl++;
	} else {
		struct ipv6hdr *ip6 = data + l2.len;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		ip6->hop_limit++;
	}
	return 0;
}

static __always_inline int balance_and_undo(struct xdp_md *ctx)
{
	int verdict = balance(ctx);

	if ((verdict == XDP_TX || verdict == XDP_REDIRECT) && undo(ctx))
		return XDP_ABORTED;
	return verdict;
}

/* spread_flow writes flow number n of this CPU into an Ethernet + IPv4 + TCP frame: source
 * address and port from n and the CPU, destination VIP n % vips. Checksums are left stale:
 * the balancer does not read them. */
static __always_inline int spread_flow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + ETH_HLEN;
	struct tcphdr *tcp = (void *)(iph + 1);
	__u32 zero = 0;

	if ((void *)(tcp + 1) > data_end)
		return -1;
	struct spread *spread = bpf_map_lookup_elem(&spread_settings, &zero);
	__u64 *counter = bpf_map_lookup_elem(&next_flow, &zero);

	if (!spread || !counter)
		return -1;
	__u64 n = (*counter)++;

	if (spread->flows)
		n %= spread->flows;
	/* 100.0.0.0/8: 14 bits of n in the port, the rest and the CPU in the address */
	tcp->source = bpf_htons(1024 + (n & 0x3fff));
	iph->saddr = bpf_htonl(0x64000000 + (bpf_get_smp_processor_id() << 20) + (__u32)(n >> 14));
	if (spread->vips)
		iph->daddr = bpf_htonl(0x0a400000 + (__u32)(n % spread->vips));
	return 0;
}

/* xdp_balance_spread sends flow after flow as spread_settings says: new flows (LRU miss, ring,
 * insert, encapsulation) or a working set of established ones, to one VIP or many. */
SEC("xdp")
int xdp_balance_spread(struct xdp_md *ctx)
{
	if (spread_flow(ctx))
		return XDP_ABORTED;
	return balance_and_undo(ctx);
}

/* xdp_spread_only is the harness without the balancer: what xdp_balance_spread adds to each
 * figure beyond the undo. */
SEC("xdp")
int xdp_spread_only(struct xdp_md *ctx)
{
	if (spread_flow(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}

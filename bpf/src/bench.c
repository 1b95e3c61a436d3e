/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark entry points around the balancer. BPF_PROG_RUN repeats a program on the same
 * buffer, so after a forwarded packet these undo the encapsulation and the TTL decrement: every
 * repetition then takes the path being measured, not the non-VIP path of an encapsulated packet.
 */
#include "lb.c"

/* undo returns the frame to what balance received, except for the MACs, which it ignores. */
static __always_inline int undo(struct xdp_md *ctx, int next_flow)
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

	__be16 *sport;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l2.len;

		if ((void *)(iph + 1) > data_end)
			return -1;
		__u32 check = iph->check + bpf_htons(0xfeff);

		iph->check = (check & 0xffff) + (check >> 16);
		iph->ttl++;
		sport = (void *)(iph + 1);
	} else {
		struct ipv6hdr *ip6 = data + l2.len;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		ip6->hop_limit++;
		sport = (void *)(ip6 + 1);
	}
	if (next_flow && (void *)(sport + 1) <= data_end)
		*sport = bpf_htons(bpf_ntohs(*sport) + 1);
	return 0;
}

static __always_inline int balance_and_undo(struct xdp_md *ctx, int next_flow)
{
	int verdict = balance(ctx);

	if ((verdict == XDP_TX || verdict == XDP_REDIRECT) && undo(ctx, next_flow))
		return XDP_ABORTED;
	return verdict;
}

/* xdp_balance_same_flow sends the same flow every time: the connection-table hit path. */
SEC("xdp")
int xdp_balance_same_flow(struct xdp_md *ctx)
{
	return balance_and_undo(ctx, 0);
}

/* xdp_balance_new_flows moves to the next source port every time: the miss path (ring lookup
 * and connection-table insert). */
SEC("xdp")
int xdp_balance_new_flows(struct xdp_md *ctx)
{
	return balance_and_undo(ctx, 1);
}

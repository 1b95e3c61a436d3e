/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Traffic generator and sink for the packet-rate benchmark. The generator runs under
 * BPF_PROG_RUN with live frames and transmits with XDP_TX; the sink counts and drops.
 */
#include "common.h"

/* Number of flows: the generator picks the UDP source port among this many. */
volatile const __u32 generated_flows = 1;

/* The frame to send: Ethernet, IPv4 and UDP. Live frames come back from the page pool as the
 * receivers left them (encapsulated, TTL decremented), so every run writes the whole frame. */
#define FRAME_WORDS 8
volatile const __u64 frame_template[FRAME_WORDS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} received SEC(".maps");

/* xdp_generate writes the template into a frame of its size and varies the source port. */
SEC("xdp")
int xdp_generate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *words = data;

	if ((void *)(words + FRAME_WORDS) > data_end)
		return XDP_ABORTED;
#pragma unroll
	for (int i = 0; i < FRAME_WORDS; i++)
		words[i] = frame_template[i];

	struct udphdr *udp = data + ETH_HLEN + sizeof(struct iphdr);

	udp->source = bpf_htons(10000 + bpf_get_prandom_u32() % generated_flows);
	return XDP_TX;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&received, &zero);

	if (count)
		(*count)++;
	return XDP_DROP;
}

/* xdp_pass gives a veth the NAPI context that frames sent to it with XDP need. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Decapsulation for backend nodes: IPIP (4in4, 6in6, and the mixed forms) and GUE addressed
 * to one of the node's addresses lose their outer headers here, so the inner packet reaches
 * the VIP on the node through the stack. No tunnel device is needed. Tunnelled packets whose
 * outer source is not in the allowlist (the load balancers' addresses) are dropped, so the
 * node relays nothing for anyone else. Two entry points share the parsing, the allowlist and
 * the counters: XDP, and TCX ingress for uplinks whose XDP hook holds the load balancer.
 */
#include "common.h"

/* Newer than the system's UAPI headers. */
#define ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#define TCX_VERDICT_NEXT -1 /* let the next program, or the stack, have the packet */
#define TCX_VERDICT_DROP 2

struct local_addr {
	__u32 addr[4]; /* IPv4 in addr[0], network order */
	__u8 family;
	__u8 pad[3];
};

/* An allowlist key: IPv4 prefixes as IPv4-mapped IPv6 (::ffff:a.b.c.d/96+len), so one trie
 * holds both families. */
struct source_prefix {
	__u32 prefixlen;
	__u32 addr[4];
};

struct config {
	__be16 gue_port;
	__u16 pad;
};

volatile const struct config settings = {};

struct stats {
	__u64 ipip;
	__u64 gue;
	__u64 bytes;
	__u64 rejected; /* tunnelled to the node from a source outside the allowlist */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct local_addr);
	__type(value, __u8);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct source_prefix);
	__type(value, __u8);
} allowed_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct stats);
} decap_counters SEC(".maps");

/* What the outer headers say. */
struct outer {
	int len;          /* bytes to strip after the link layer */
	__u8 inner_proto; /* IPPROTO_IPIP or IPPROTO_IPV6 */
	__u8 gue;
	struct source_prefix source; /* the outer source, as a full-length key */
	__u8 inner_version;
};

/* parse_tunnel reads the transport after the outer IP header: the inner packet directly, or
 * UDP to the GUE port with a variant 0 GUE header. */
static __always_inline int parse_tunnel(void *l4, void *data_end, __u8 proto, struct outer *out)
{
	if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6) {
		out->inner_proto = proto;
		return 0;
	}
	if (proto != IPPROTO_UDP)
		return -1;
	struct udphdr *udp = l4;
	struct gue_hdr *gue = (void *)(udp + 1);

	if ((void *)(gue + 1) > data_end || udp->dest != settings.gue_port)
		return -1;
	if ((gue->version_control_hlen & 0xe0) != 0) /* version 0, data message */
		return -1;
	if (gue->proto != IPPROTO_IPIP && gue->proto != IPPROTO_IPV6)
		return -1;
	out->inner_proto = gue->proto;
	out->gue = 1;
	out->len += sizeof(*udp) + sizeof(*gue) + 4 * (gue->version_control_hlen & 0x1f);
	return 0;
}

/* parse_outer reads the outer IP header of a packet to one of the node's addresses. */
static __always_inline int parse_outer(void *l3, void *data_end, __be16 l3_proto, struct outer *out)
{
	struct local_addr dst = {};

	if (l3_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
			return -1;
		if (iph->frag_off & bpf_htons(IPV4_FRAGMENT_MASK)) /* the stack reassembles */
			return -1;
		dst.family = FAMILY_IPV4;
		dst.addr[0] = iph->daddr;
		if (!bpf_map_lookup_elem(&local_addrs, &dst))
			return -1;
		out->source.prefixlen = 128;
		out->source.addr[2] = bpf_htonl(0xffff);
		out->source.addr[3] = iph->saddr;
		out->len = iph->ihl * 4;
		return parse_tunnel(l3 + out->len, data_end, iph->protocol, out);
	}
	if (l3_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return -1;
		dst.family = FAMILY_IPV6;
		__builtin_memcpy(dst.addr, &ip6->daddr, 16);
		if (!bpf_map_lookup_elem(&local_addrs, &dst))
			return -1;
		out->source.prefixlen = 128;
		__builtin_memcpy(out->source.addr, &ip6->saddr, 16);
		out->len = sizeof(*ip6);
		return parse_tunnel(ip6 + 1, data_end, ip6->nexthdr, out);
	}
	return -1;
}

enum decision {
	LEAVE,  /* not tunnelled to the node: untouched */
	REJECT, /* tunnelled to the node from outside the allowlist, counted */
	OPEN,   /* strip out->len bytes after the link layer */
};

/* classify decides what becomes of the packet at l3 (the frame ends at data_end). */
static __always_inline enum decision classify(void *l3, void *data_end, __be16 l3_proto, struct outer *out)
{
	if (parse_outer(l3, data_end, l3_proto, out))
		return LEAVE;
	if (!bpf_map_lookup_elem(&allowed_sources, &out->source)) {
		__u32 zero = 0;
		struct stats *stats = bpf_map_lookup_elem(&decap_counters, &zero);

		if (stats)
			stats->rejected++;
		return REJECT;
	}
	/* Bounded after the helper calls, so that the verifier knows the bound where it is used. */
	if (out->len < 0 || out->len > 256)
		return LEAVE;

	/* The inner header must be there and of the announced family. */
	__u8 *inner = l3 + out->len;

	if ((void *)(inner + 1) > data_end)
		return LEAVE;
	out->inner_version = *inner >> 4;
	if (out->inner_version != (out->inner_proto == IPPROTO_IPIP ? 4 : 6))
		return LEAVE;
	return OPEN;
}

static __always_inline void count_opened(const struct outer *out, __u64 bytes)
{
	__u32 zero = 0;
	struct stats *stats = bpf_map_lookup_elem(&decap_counters, &zero);

	if (!stats)
		return;
	if (out->gue)
		stats->gue++;
	else
		stats->ipip++;
	stats->bytes += bytes;
}

static __always_inline __be16 inner_ethertype(const struct outer *out)
{
	return bpf_htons(out->inner_version == 4 ? ETH_P_IP : ETH_P_IPV6);
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct outer out = {};
	struct l2 l2 = {};

	if (parse_l2(data, data_end, &l2))
		return XDP_PASS;
	switch (classify(data + l2.len, data_end, l2.proto, &out)) {
	case LEAVE:
		return XDP_PASS;
	case REJECT:
		return XDP_DROP;
	case OPEN:
		break;
	}
	if (bpf_xdp_adjust_head(ctx, out.len))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (write_l2(data, data_end, &l2, inner_ethertype(&out)))
		return XDP_DROP; /* cannot happen: the frame only lost bytes behind the link layer */
	count_opened(&out, data_end - data);
	return XDP_PASS;
}

/* The outer headers and the first inner byte fit in this much; the rest may stay paged. */
#define TC_PARSE_LEN 128

/* At TC ingress the stack has already taken a VLAN tag off into the packet's metadata, so the
 * frame starts with a plain Ethernet header; a frame still tagged is left to the stack. */
SEC("tcx/ingress")
int tc_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct outer out = {};
	struct l2 l2 = {};

	if (data_end - data < TC_PARSE_LEN && skb->len > data_end - data) {
		bpf_skb_pull_data(skb, skb->len < TC_PARSE_LEN ? skb->len : TC_PARSE_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (parse_l2(data, data_end, &l2) || l2.len != ETH_HLEN)
		return TCX_VERDICT_NEXT;
	switch (classify(data + ETH_HLEN, data_end, l2.proto, &out)) {
	case LEAVE:
		return TCX_VERDICT_NEXT;
	case REJECT:
		return TCX_VERDICT_DROP;
	case OPEN:
		break;
	}
	/* The packet's protocol becomes the inner family's. A packet GRO merged keeps its segment
	 * size: the payload of each segment is what it was. */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO |
		      (out.inner_version == 4 ? ADJ_ROOM_DECAP_L3_IPV4 : ADJ_ROOM_DECAP_L3_IPV6);

	if (bpf_skb_adjust_room(skb, -out.len, BPF_ADJ_ROOM_MAC, flags))
		return TCX_VERDICT_NEXT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (write_l2(data, data_end, &l2, inner_ethertype(&out)))
		return TCX_VERDICT_DROP; /* cannot happen: the frame only lost bytes behind the link layer */
	count_opened(&out, skb->len);
	return TCX_VERDICT_NEXT;
}

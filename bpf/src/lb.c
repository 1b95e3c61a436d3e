/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * XDP load balancer: a packet to a VIP is steered to a backend, chosen by the connection table
 * (5-tuple → backend) or, for a new flow, by the VIP's Maglev ring, then encapsulated (IPIP or
 * GUE) and sent to the backend's next hop. Everything else passes unchanged.
 */
#include "common.h"

/* Capacities; the loader sets the real ones. */
#define MAX_SERVICES 16384
#define MAX_BACKENDS 65536 /* ids are 16 bits in the rings */
#define MAX_FLOWS 131072

#define ENCAP_TTL 64
#define GUE_SOURCE_PORT_BASE 0xc000 /* flows vary the GUE source port within 49152..65535 */

struct vip_key {
	__u32 addr[4]; /* IPv4 in addr[0], network order */
	__be16 port;   /* 0: all ports */
	__u8 proto;
	__u8 family;
};

enum vip_flags {
	VIP_GUE = 1,            /* encapsulate in GUE instead of IPIP */
	VIP_FRAGMENTS_ONLY = 2, /* entry only steers fragments of port-specific VIPs */
};

struct vip_meta {
	__u64 digest;    /* the loader's fingerprint of the ring inputs; unused here */
	__u32 id;        /* stats slot */
	__u32 ring;      /* slot in rings */
	__u32 ring_size; /* 0: no backend */
	enum vip_flags flags;
};

struct backend {
	__u32 addr[4];
	__u32 generation; /* 0: free id; changes when the id is reused, so stale flows miss */
	__u32 ifindex;    /* cached next hop; 0: ask the FIB */
	__u8 source_mac[ETH_ALEN];
	__u8 next_hop_mac[ETH_ALEN];
	__u8 family; /* of addr, for the loader */
	__u8 pad[3];
};

struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow {
	__u32 backend;
	__u32 generation;
};

enum drop_reason {
	DROP_NO_BACKEND, /* the VIP has no backend, or the backend vanished */
	DROP_NO_ROUTE,   /* no cached next hop and the FIB has none */
	DROP_ENCAP,      /* no room to add the outer headers */
	DROP_TTL,        /* TTL or hop limit would expire: handed to the stack, which answers ICMP */
	DROP_REASONS,
};

struct stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;  /* connection-table misses that start a flow (TCP SYN, UDP) */
	__u64 lru_misses; /* connection-table misses in the middle of a TCP flow */
	__u64 drops[DROP_REASONS];
};

struct config {
	__u32 flow_seed;
	__be16 gue_port;
	__u16 pad;
	/* Outer source addresses: base | (flow hash & mask), so each flow has its own. */
	__u32 source4;
	__u32 source4_mask;
	__u32 source6[4];
	__u32 source6_mask; /* applied to the last word */
};

volatile const struct config settings = {};

/* Array elements take at least 8 bytes, so each element of a ring (a block) packs four 16-bit
 * backend ids, in memory order. */
#define RING_IDS_PER_BLOCK 4

struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* each VIP's ring has its own size */
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u64); /* __u16[RING_IDS_PER_BLOCK] */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_SERVICES); /* services and their fragment entries */
	/* Without preallocation a replaced entry is freed after RCU, so a packet holding it never
	 * sees it reused for another VIP. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2 * MAX_SERVICES); /* two per service: active and spare */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY); /* indexed by backend id; generation 0 marks a free id */
	__uint(max_entries, MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct stats);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct stats);
} global_stats SEC(".maps");

/* What parsing learnt about a packet. */
struct packet {
	struct l2 l2;
	struct flow_key flow;
	__u32 l3_len; /* the IP packet's own length, without link-layer padding */
	__u8 family;
	__u8 ttl;
	__u8 tos;    /* IPv4 TOS or IPv6 traffic class */
	__u8 df;     /* IPv4 don't-fragment */
	__u8 fragment;
	__u8 tcp_syn; /* TCP SYN without ACK: a flow starts */
};

/* A 32-bit murmur3-style hash over 32-bit words read in network order, so nodes of any
 * endianness agree. */
static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 hash_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 flow_hash(const struct flow_key *flow)
{
	const __u32 *words = (const __u32 *)flow;
	__u32 h = settings.flow_seed;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*flow) / 4); i++)
		h = hash_word(h, bpf_ntohl(words[i]));
	h ^= sizeof(*flow);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* parse_l4 reads the ports (and for TCP the flags) of an unfragmented packet. */
static __always_inline int parse_l4(void *l4, void *data_end, struct packet *pkt)
{
	if (pkt->flow.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		pkt->flow.sport = tcp->source;
		pkt->flow.dport = tcp->dest;
		pkt->tcp_syn = tcp->syn && !tcp->ack;
		return 0;
	}
	struct udphdr *udp = l4;

	if ((void *)(udp + 1) > data_end)
		return -1;
	pkt->flow.sport = udp->source;
	pkt->flow.dport = udp->dest;
	return 0;
}

static __always_inline int is_tcp_or_udp(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/* parse returns 0 for a packet the balancer may take, -1 for one it leaves to the stack:
 * not IP, not TCP/UDP, truncated, IPv4 with options, IPv6 with extension headers other
 * than a fragment header. */
static __always_inline int parse(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (parse_l2(data, data_end, &pkt->l2))
		return -1;
	void *l3 = data + pkt->l2.len;

	if (pkt->l2.proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl != 5)
			return -1;
		if (!is_tcp_or_udp(iph->protocol))
			return -1;
		pkt->family = FAMILY_IPV4;
		pkt->flow.src[0] = iph->saddr;
		pkt->flow.dst[0] = iph->daddr;
		pkt->flow.proto = iph->protocol;
		pkt->l3_len = bpf_ntohs(iph->tot_len);
		pkt->ttl = iph->ttl;
		pkt->tos = iph->tos;
		pkt->df = !!(iph->frag_off & bpf_htons(IPV4_DONT_FRAGMENT));
		if (iph->frag_off & bpf_htons(IPV4_FRAGMENT_MASK)) {
			pkt->fragment = 1;
			return 0;
		}
		return parse_l4(iph + 1, data_end, pkt);
	}
	if (pkt->l2.proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return -1;
		pkt->family = FAMILY_IPV6;
		__builtin_memcpy(pkt->flow.src, &ip6->saddr, 16);
		__builtin_memcpy(pkt->flow.dst, &ip6->daddr, 16);
		pkt->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		pkt->ttl = ip6->hop_limit;
		pkt->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		if (ip6->nexthdr == IPV6_NEXTHDR_FRAGMENT) {
			struct frag_hdr {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 identification;
			} *frag = (void *)(ip6 + 1);

			if ((void *)(frag + 1) > data_end || !is_tcp_or_udp(frag->nexthdr))
				return -1;
			pkt->flow.proto = frag->nexthdr;
			pkt->fragment = 1;
			return 0;
		}
		if (!is_tcp_or_udp(ip6->nexthdr))
			return -1;
		pkt->flow.proto = ip6->nexthdr;
		return parse_l4(ip6 + 1, data_end, pkt);
	}
	return -1;
}

/* lookup_vip finds the VIP: the exact port first, then the all-ports entry. Fragments carry
 * no port, so they use the all-ports entry, which for port-specific VIPs the loader fills
 * with a fragments-only copy of one of them. */
static __always_inline struct vip_meta *lookup_vip(struct packet *pkt)
{
	struct vip_key key = {
		.port = pkt->flow.dport,
		.proto = pkt->flow.proto,
		.family = pkt->family,
	};
	struct vip_meta *meta;

	__builtin_memcpy(key.addr, pkt->flow.dst, sizeof(key.addr));
	if (!pkt->fragment) {
		meta = bpf_map_lookup_elem(&vips, &key);
		if (meta)
			return meta;
		key.port = 0;
	}
	meta = bpf_map_lookup_elem(&vips, &key);
	if (meta && (meta->flags & VIP_FRAGMENTS_ONLY) && !pkt->fragment)
		return NULL;
	return meta;
}

/* ring_entry returns the backend id at hash modulo the ring size, or -1. */
static __always_inline __s32 ring_entry(const struct vip_meta *meta, __u32 hash)
{
	void *ring = bpf_map_lookup_elem(&rings, &meta->ring);

	if (!ring)
		return -1;
	__u32 index = hash % meta->ring_size;
	__u32 block_index = index / RING_IDS_PER_BLOCK;
	__u16 *block = bpf_map_lookup_elem(ring, &block_index);

	if (!block)
		return -1;
	return block[index % RING_IDS_PER_BLOCK];
}

/* Out of line: drops are the rare path, and so the reasons reach BTF and the Go bindings. */
static __noinline void count_drop(struct stats *vip, struct stats *global, enum drop_reason reason)
{
	vip->drops[reason]++;
	global->drops[reason]++;
}

/* pick_backend returns the backend of the packet's flow: the connection table's if it still
 * holds, else the ring's, remembered for the flow's next packets. Fragments use the ring on
 * an L3-only hash and bypass the table. */
static __always_inline struct backend *pick_backend(struct packet *pkt, const struct vip_meta *meta, __u32 hash,
						    struct stats *vip, struct stats *global)
{
	struct backend *be;

	if (!pkt->fragment) {
		struct flow *known = bpf_map_lookup_elem(&flows, &pkt->flow);

		if (known) {
			be = bpf_map_lookup_elem(&backends, &known->backend);
			if (be && be->generation && be->generation == known->generation)
				return be;
		}
	}
	if (meta->ring_size == 0)
		return NULL;
	__s32 entry = ring_entry(meta, hash);

	if (entry < 0)
		return NULL;
	__u32 id = entry;

	be = bpf_map_lookup_elem(&backends, &id);
	if (!be || !be->generation)
		return NULL;
	if (pkt->fragment)
		return be;

	struct flow remembered = { .backend = id, .generation = be->generation };

	bpf_map_update_elem(&flows, &pkt->flow, &remembered, BPF_ANY);
	if (pkt->flow.proto == IPPROTO_TCP && !pkt->tcp_syn) {
		vip->lru_misses++;
		global->lru_misses++;
	} else {
		vip->new_flows++;
		global->new_flows++;
	}
	return be;
}

struct next_hop {
	__u32 ifindex;
	__u8 source_mac[ETH_ALEN];
	__u8 mac[ETH_ALEN];
};

/* resolve_next_hop takes the next hop the loader cached for the backend, or asks the FIB. */
static __always_inline int resolve_next_hop(struct xdp_md *ctx, const struct packet *pkt, const struct backend *be,
					    struct next_hop *nh)
{
	if (be->ifindex) {
		nh->ifindex = be->ifindex;
		__builtin_memcpy(nh->source_mac, be->source_mac, ETH_ALEN);
		__builtin_memcpy(nh->mac, be->next_hop_mac, ETH_ALEN);
		return 0;
	}
	struct bpf_fib_lookup fib = {
		.ifindex = ctx->ingress_ifindex,
		.tot_len = pkt->l3_len,
	};

	if (pkt->family == FAMILY_IPV4) {
		fib.family = 2; /* AF_INET */
		fib.ipv4_dst = be->addr[0];
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_dst, be->addr, 16);
	}
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	nh->ifindex = fib.ifindex;
	__builtin_memcpy(nh->source_mac, fib.smac, ETH_ALEN);
	__builtin_memcpy(nh->mac, fib.dmac, ETH_ALEN);
	return 0;
}

/* decrement_ttl lowers the inner TTL or hop limit: the balancer is a routing hop. */
static __always_inline void decrement_ttl(struct xdp_md *ctx, const struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + pkt->l2.len;

	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end)
			return;
		__u32 check = iph->check;

		check += bpf_htons(0x0100);
		iph->check = (__u16)(check + (check >= 0xffff));
		iph->ttl--;
		return;
	}
	struct ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) > data_end)
		return;
	ip6->hop_limit--;
}

/* encapsulate puts the outer IP header (and for GUE the UDP and GUE headers) between the link
 * layer and the packet, addressed to the backend from a per-flow source. */
static __always_inline int encapsulate(struct xdp_md *ctx, struct packet *pkt, const struct backend *be,
				       const struct next_hop *nh, __u32 hash, int gue)
{
	int outer_ip_len = pkt->family == FAMILY_IPV4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	int udp_len = gue ? sizeof(struct udphdr) + sizeof(struct gue_hdr) : 0;
	__u8 inner_proto = pkt->family == FAMILY_IPV4 ? IPPROTO_IPIP : IPPROTO_IPV6;

	if (bpf_xdp_adjust_head(ctx, -(outer_ip_len + udp_len)))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	__builtin_memcpy(pkt->l2.eth.h_dest, nh->mac, ETH_ALEN);
	__builtin_memcpy(pkt->l2.eth.h_source, nh->source_mac, ETH_ALEN);
	void *outer = data + pkt->l2.len;
	void *l4 = outer + outer_ip_len;

	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *iph = outer;

		if (write_l2(data, data_end, &pkt->l2, bpf_htons(ETH_P_IP)) || (void *)(iph + 1) > data_end)
			return -1;
		struct iphdr h = {
			.version = 4,
			.ihl = 5,
			.tos = pkt->tos,
			.tot_len = bpf_htons(sizeof(h) + udp_len + pkt->l3_len),
			.frag_off = pkt->df ? bpf_htons(IPV4_DONT_FRAGMENT) : 0,
			.ttl = ENCAP_TTL,
			.protocol = gue ? IPPROTO_UDP : inner_proto,
			.saddr = settings.source4 | (bpf_htonl(hash) & settings.source4_mask),
			.daddr = be->addr[0],
		};
		h.check = ipv4_header_csum(&h);
		*iph = h;
	} else {
		struct ipv6hdr *ip6 = outer;

		if (write_l2(data, data_end, &pkt->l2, bpf_htons(ETH_P_IPV6)) || (void *)(ip6 + 1) > data_end)
			return -1;
		struct ipv6hdr h = {
			.version = 6,
			.priority = pkt->tos >> 4,
			.flow_lbl = { (pkt->tos << 4) | ((hash >> 16) & 0x0f), hash >> 8, hash },
			.payload_len = bpf_htons(udp_len + pkt->l3_len),
			.nexthdr = gue ? IPPROTO_UDP : inner_proto,
			.hop_limit = ENCAP_TTL,
		};
		__builtin_memcpy(&h.daddr, be->addr, 16);
		h.saddr.in6_u.u6_addr32[0] = settings.source6[0];
		h.saddr.in6_u.u6_addr32[1] = settings.source6[1];
		h.saddr.in6_u.u6_addr32[2] = settings.source6[2];
		h.saddr.in6_u.u6_addr32[3] = settings.source6[3] | (bpf_htonl(hash) & settings.source6_mask);
		*ip6 = h;
	}
	if (!gue)
		return 0;

	struct udphdr *udp = l4;
	struct gue_hdr *guehdr = (void *)(udp + 1);

	if ((void *)(guehdr + 1) > data_end)
		return -1;
	udp->source = bpf_htons(GUE_SOURCE_PORT_BASE | (hash & 0x3fff));
	udp->dest = settings.gue_port;
	udp->len = bpf_htons(udp_len + pkt->l3_len);
	udp->check = 0; /* allowed for tunnels over IPv6 too (RFC 6935); the payload has its own */
	guehdr->version_control_hlen = 0;
	guehdr->proto = inner_proto;
	guehdr->flags = 0;
	return 0;
}

static __always_inline int balance(struct xdp_md *ctx)
{
	struct packet pkt = {};
	__u32 zero = 0;

	if (parse(ctx, &pkt))
		return XDP_PASS;
	struct vip_meta *meta = lookup_vip(&pkt);

	if (!meta)
		return XDP_PASS;
	struct stats *vip = bpf_map_lookup_elem(&vip_stats, &meta->id);
	struct stats *global = bpf_map_lookup_elem(&global_stats, &zero);

	if (!vip || !global)
		return XDP_PASS;
	vip->packets++;
	vip->bytes += ctx->data_end - ctx->data;
	global->packets++;
	global->bytes += ctx->data_end - ctx->data;

	if (pkt.ttl <= 1) {
		count_drop(vip, global, DROP_TTL);
		return XDP_PASS;
	}
	__u32 hash = flow_hash(&pkt.flow);
	struct backend *be = pick_backend(&pkt, meta, hash, vip, global);

	if (!be) {
		count_drop(vip, global, DROP_NO_BACKEND);
		return XDP_DROP;
	}
	struct next_hop nh;

	if (resolve_next_hop(ctx, &pkt, be, &nh)) {
		count_drop(vip, global, DROP_NO_ROUTE);
		return XDP_DROP;
	}
	decrement_ttl(ctx, &pkt);
	if (encapsulate(ctx, &pkt, be, &nh, hash, meta->flags & VIP_GUE)) {
		count_drop(vip, global, DROP_ENCAP);
		return XDP_DROP;
	}
	if (nh.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh.ifindex, 0);
}

SEC("xdp")
int xdp_balance(struct xdp_md *ctx)
{
	return balance(ctx);
}

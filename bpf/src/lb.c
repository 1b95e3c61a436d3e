/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * XDP load balancer: a packet to a VIP is steered to a backend, chosen by the connection table
 * (5-tuple → backend) or, for a new flow, by the VIP's Maglev ring, then encapsulated (IPIP or
 * GUE) and sent to the backend's next hop, or, when the backend is this node, handed to the
 * local stack as it is. A packet the tunnel would make too big for the next hop is answered
 * with ICMP "fragmentation needed" / "packet too big" from the VIP. Addresses of VIPs are never
 * left to the stack, which has no route for them and would send them back where they came
 * from: ICMP errors follow the flow they quote to its backend, echo requests are answered, and
 * other protocols are dropped and counted. Everything else passes unchanged.
 */
#include <linux/icmp.h>
#include <linux/icmpv6.h>

#include "common.h"

/* Capacities; the loader sets the real ones. */
#define MAX_SERVICES 16384
#define MAX_BACKENDS 65536 /* ids are 16 bits in the rings */
#define MAX_FLOWS 131072

#define ENCAP_TTL 64
#define REPLY_TTL 64
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
	__u8 local;  /* the backend is this node: its packets go to the local stack unencapsulated */
	__u16 mtu;   /* of the cached next hop; 0: not checked */
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

/* An address some service uses, whatever its protocol and port. */
struct vip_address {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

enum drop_reason {
	DROP_NO_BACKEND, /* the VIP has no backend, or the backend vanished */
	DROP_NO_ROUTE,   /* no cached next hop and the FIB has none */
	DROP_ENCAP,      /* no room to add the outer headers */
	DROP_TTL,        /* TTL or hop limit would expire: handed to the stack, which answers ICMP */
	DROP_FRAGMENTATION_NEEDED, /* too big once encapsulated: answered with ICMP frag-needed / packet too big */
	DROP_TOO_BIG,              /* too big once encapsulated, not answered: IPv4 without DF, ICMP, too short to quote */
	DROP_PROTOCOL,             /* neither TCP, UDP nor ICMP, to a VIP address */
	DROP_IPV6_HEADERS,         /* more or other IPv6 extension headers than walked, to a VIP address */
	DROP_ICMP,                 /* ICMP to a VIP address that is neither echo nor an error quoting a service's flow */
	DROP_PORT,                 /* TCP or UDP to a VIP address on a port none of its services has */
	DROP_IPV4_OPTIONS,         /* IPv4 with options, to a VIP address */
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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct vip_address);
	__type(value, __u8); /* unused */
} vip_addresses SEC(".maps");

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
	__u16 l4_off; /* from the start of the frame */
	__u8 family;
	__u8 ttl;
	__u8 tos;    /* IPv4 TOS or IPv6 traffic class */
	__u8 df;     /* IPv4 don't-fragment */
	__u8 fragment;
	__u8 tcp_syn; /* TCP SYN without ACK: a flow starts */
	__u8 quoted;  /* flow is the one an ICMP error quotes: looked up, never recorded */
};

/* What parse found. */
enum parsed {
	PARSED_FLOW,          /* TCP or UDP, or a fragment of them: balanced when a service matches */
	PARSED_ICMP,          /* unfragmented ICMP or ICMPv6 */
	PARSED_ICMP_FRAGMENT, /* a fragment of ICMP: neither answered nor forwarded */
	PARSED_PROTOCOL,      /* any other protocol */
	PARSED_IPV6_HEADERS,  /* IPv6 extension headers beyond the walked ones */
	PARSED_IPV4_OPTIONS,  /* an IPv4 header with options */
	PARSED_OTHER,         /* not IP, truncated: left to the stack */
};

/* Extension headers walked before the upper-layer header; a fragment header ends the walk. */
#define IPV6_MAX_EXTENSION_HEADERS 4
#define IPV6_NEXTHDR_HOP 0
#define IPV6_NEXTHDR_ROUTING 43
#define IPV6_NEXTHDR_DEST 60
#define L4_OFFSET_MASK 0x3fff /* above any walked chain; bounds offsets for the verifier */
#define IPV4_FRAGMENT_OFFSET 0x1fff

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

static __always_inline int is_ipv6_extension(__u8 next)
{
	return next == IPV6_NEXTHDR_HOP || next == IPV6_NEXTHDR_ROUTING || next == IPV6_NEXTHDR_DEST ||
	       next == IPV6_NEXTHDR_FRAGMENT;
}

/* classify sorts a packet by its upper-layer protocol and reads the ports of unfragmented
 * TCP and UDP. */
static __always_inline int classify(void *data, void *data_end, struct packet *pkt)
{
	__u8 icmp = pkt->family == FAMILY_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;

	if (is_tcp_or_udp(pkt->flow.proto)) {
		if (pkt->fragment)
			return PARSED_FLOW;
		return parse_l4(data + (pkt->l4_off & L4_OFFSET_MASK), data_end, pkt) ? PARSED_OTHER : PARSED_FLOW;
	}
	if (pkt->flow.proto == icmp)
		return pkt->fragment ? PARSED_ICMP_FRAGMENT : PARSED_ICMP;
	return PARSED_PROTOCOL;
}

/* parse reads the headers up to the ports and returns what it found (enum parsed). IPv6
 * hop-by-hop, routing and destination options headers are walked, at most
 * IPV6_MAX_EXTENSION_HEADERS of them; after a fragment header its next header is the
 * protocol, in every fragment alike. */
static __always_inline int parse(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (parse_l2(data, data_end, &pkt->l2))
		return PARSED_OTHER;
	void *l3 = data + pkt->l2.len;

	if (pkt->l2.proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
			return PARSED_OTHER;
		pkt->family = FAMILY_IPV4;
		pkt->flow.src[0] = iph->saddr;
		pkt->flow.dst[0] = iph->daddr;
		if (iph->ihl != 5)
			return PARSED_IPV4_OPTIONS;
		pkt->flow.proto = iph->protocol;
		pkt->l3_len = bpf_ntohs(iph->tot_len);
		/* A packet longer than the frame is truncated: the stack drops it, never forward it. */
		if (pkt->l3_len < sizeof(*iph) || pkt->l3_len > (__u32)(data_end - l3))
			return PARSED_OTHER;
		pkt->l4_off = pkt->l2.len + sizeof(*iph);
		pkt->ttl = iph->ttl;
		pkt->tos = iph->tos;
		pkt->df = !!(iph->frag_off & bpf_htons(IPV4_DONT_FRAGMENT));
		pkt->fragment = !!(iph->frag_off & bpf_htons(IPV4_FRAGMENT_MASK));
		return classify(data, data_end, pkt);
	}
	if (pkt->l2.proto != bpf_htons(ETH_P_IPV6))
		return PARSED_OTHER;
	struct ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return PARSED_OTHER;
	pkt->family = FAMILY_IPV6;
	__builtin_memcpy(pkt->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(pkt->flow.dst, &ip6->daddr, 16);
	pkt->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if (pkt->l3_len > (__u32)(data_end - l3))
		return PARSED_OTHER;
	pkt->ttl = ip6->hop_limit;
	pkt->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);

	__u8 next = ip6->nexthdr;
	__u32 off = pkt->l2.len + sizeof(*ip6);

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXTENSION_HEADERS && is_ipv6_extension(next) && !pkt->fragment; i++) {
		struct ipv6_opt_hdr *ext = data + (off & L4_OFFSET_MASK);

		if ((void *)(ext + 1) > data_end)
			return PARSED_OTHER;
		if (next == IPV6_NEXTHDR_FRAGMENT) {
			struct frag_hdr {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 identification;
			} *frag = (void *)ext;

			if ((void *)(frag + 1) > data_end)
				return PARSED_OTHER;
			pkt->fragment = 1;
			off += sizeof(*frag);
		} else {
			off += (ext->hdrlen + 1) * 8;
		}
		next = ext->nexthdr;
	}
	if (is_ipv6_extension(next))
		return PARSED_IPV6_HEADERS;
	pkt->flow.proto = next;
	pkt->l4_off = off;
	return classify(data, data_end, pkt);
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

/* Out of line: drops are the rare path, and so the reasons reach BTF and the Go bindings.
 * vip is NULL for packets to a VIP address that match no service. */
static __noinline void count_drop(struct stats *vip, struct stats *global, enum drop_reason reason)
{
	if (vip)
		vip->drops[reason]++;
	global->drops[reason]++;
}

static __always_inline void count_packet(struct stats *stats, struct xdp_md *ctx)
{
	stats->packets++;
	stats->bytes += ctx->data_end - ctx->data;
}

/* pick_backend returns the backend of the packet's flow: the connection table's if it still
 * holds, else the ring's, remembered for the flow's next packets. Fragments use the ring on
 * an L3-only hash and bypass the table; an ICMP error's quoted flow is not remembered. */
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
	if (pkt->fragment || pkt->quoted)
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
	__u32 mtu; /* 0: unknown */
	__u8 source_mac[ETH_ALEN];
	__u8 mac[ETH_ALEN];
};

/* encap_overhead is what encapsulate adds in front of the IP packet. */
static __always_inline __u32 encap_overhead(const struct packet *pkt, int gue)
{
	__u32 ip = pkt->family == FAMILY_IPV4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

	return ip + (gue ? sizeof(struct udphdr) + sizeof(struct gue_hdr) : 0);
}

enum next_hop_result {
	NEXT_HOP_FOUND,
	NEXT_HOP_NONE,
	NEXT_HOP_TOO_BIG, /* the FIB's MTU is in nh->mtu */
};

/* resolve_next_hop takes the next hop the loader cached for the backend, or asks the FIB,
 * which also checks the encapsulated length against the route's MTU. */
static __always_inline int resolve_next_hop(struct xdp_md *ctx, const struct packet *pkt, const struct backend *be,
					    __u32 overhead, struct next_hop *nh)
{
	if (be->ifindex) {
		nh->ifindex = be->ifindex;
		nh->mtu = be->mtu;
		__builtin_memcpy(nh->source_mac, be->source_mac, ETH_ALEN);
		__builtin_memcpy(nh->mac, be->next_hop_mac, ETH_ALEN);
		return NEXT_HOP_FOUND;
	}
	struct bpf_fib_lookup fib = {
		.ifindex = ctx->ingress_ifindex,
		.tot_len = pkt->l3_len + overhead,
	};

	if (pkt->family == FAMILY_IPV4) {
		fib.family = 2; /* AF_INET */
		fib.ipv4_dst = be->addr[0];
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_dst, be->addr, 16);
	}
	long ret = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);

	if (ret == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		nh->mtu = fib.mtu_result;
		return NEXT_HOP_TOO_BIG;
	}
	if (ret != BPF_FIB_LKUP_RET_SUCCESS)
		return NEXT_HOP_NONE;
	nh->ifindex = fib.ifindex;
	nh->mtu = 0; /* checked by the FIB */
	__builtin_memcpy(nh->source_mac, fib.smac, ETH_ALEN);
	__builtin_memcpy(nh->mac, fib.dmac, ETH_ALEN);
	return NEXT_HOP_FOUND;
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

	if (bpf_xdp_adjust_head(ctx, -(int)encap_overhead(pkt, gue)))
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

/* ICMP answers quote the start of the packet they are about: as much as fits in 576 bytes
 * for IPv4 (RFC 1812) and in the IPv6 minimum MTU, 1280 bytes (RFC 4443). Fixed sizes, in
 * multiples of 4 bytes, keep the checksums to a few bpf_csum_diff calls. */
#define ICMP4_QUOTE (576 - sizeof(struct iphdr) - sizeof(struct icmphdr))
#define ICMP6_QUOTE (1280 - sizeof(struct ipv6hdr) - sizeof(struct icmp6hdr))
#define CSUM_CHUNK 512 /* the most bpf_csum_diff sums at once */

/* csum_quote adds the checksum of the quote of len bytes at q, which the caller checked. */
#define csum_quote(q, len, sum)                                                                   \
	({                                                                                        \
		__s64 s_ = (sum);                                                                 \
		_Pragma("unroll") for (int i_ = 0; i_ + CSUM_CHUNK <= (len); i_ += CSUM_CHUNK)     \
			s_ = bpf_csum_diff(NULL, 0, (void *)(q) + i_, CSUM_CHUNK, s_);            \
		if ((len) % CSUM_CHUNK)                                                           \
			s_ = bpf_csum_diff(NULL, 0, (void *)(q) + (len) / CSUM_CHUNK * CSUM_CHUNK,  \
					   (len) % CSUM_CHUNK, s_);                               \
		s_;                                                                               \
	})

/* reply_l2 writes the received link layer back with the MACs swapped. */
static __always_inline int reply_l2(void *data, void *data_end, struct packet *pkt, __be16 proto)
{
	struct l2 back = pkt->l2;

	__builtin_memcpy(back.eth.h_dest, pkt->l2.eth.h_source, ETH_ALEN);
	__builtin_memcpy(back.eth.h_source, pkt->l2.eth.h_dest, ETH_ALEN);
	return write_l2(data, data_end, &back, proto);
}

/* shape_reply trims the frame to the quote and makes room for the IP and ICMP headers of the
 * answer in front of it. */
static __always_inline int shape_reply(struct xdp_md *ctx, const struct packet *pkt, __u32 quote, __u32 headers)
{
	int frame = ctx->data_end - ctx->data;
	int keep = pkt->l2.len + quote;

	if (pkt->l3_len < quote || frame < keep)
		return -1;
	if (frame > keep && bpf_xdp_adjust_tail(ctx, keep - frame))
		return -1;
	return bpf_xdp_adjust_head(ctx, -(int)headers);
}

/* send_too_big turns the packet into ICMP "fragmentation needed" (IPv4) or "packet too big"
 * (IPv6) from the VIP to the client, announcing mtu. */
static __always_inline int send_too_big(struct xdp_md *ctx, struct packet *pkt, __u32 mtu)
{
	void *data, *data_end;

	if (pkt->family == FAMILY_IPV4) {
		if (shape_reply(ctx, pkt, ICMP4_QUOTE, sizeof(struct iphdr) + sizeof(struct icmphdr)))
			return -1;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		struct iphdr *iph = data + pkt->l2.len;
		struct icmphdr *icmp = (void *)(iph + 1);
		void *quote = icmp + 1;

		if (reply_l2(data, data_end, pkt, bpf_htons(ETH_P_IP)) || quote + ICMP4_QUOTE > data_end)
			return -1;
		struct iphdr h = {
			.version = 4,
			.ihl = 5,
			.tot_len = bpf_htons(sizeof(h) + sizeof(*icmp) + ICMP4_QUOTE),
			.ttl = REPLY_TTL,
			.protocol = IPPROTO_ICMP,
			.saddr = pkt->flow.dst[0],
			.daddr = pkt->flow.src[0],
		};
		h.check = ipv4_header_csum(&h);
		*iph = h;
		struct icmphdr answer = { .type = ICMP_DEST_UNREACH, .code = ICMP_FRAG_NEEDED };

		answer.un.frag.mtu = bpf_htons(mtu);
		*icmp = answer;
		icmp->checksum = csum_fold(csum_quote(quote, ICMP4_QUOTE, bpf_csum_diff(NULL, 0, (void *)icmp, sizeof(*icmp), 0)));
		return 0;
	}
	if (shape_reply(ctx, pkt, ICMP6_QUOTE, sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + pkt->l2.len;
	struct icmp6hdr *icmp6 = (void *)(ip6 + 1);
	void *quote = icmp6 + 1;

	if (reply_l2(data, data_end, pkt, bpf_htons(ETH_P_IPV6)) || quote + ICMP6_QUOTE > data_end)
		return -1;
	struct ipv6hdr h = {
		.version = 6,
		.payload_len = bpf_htons(sizeof(*icmp6) + ICMP6_QUOTE),
		.nexthdr = IPPROTO_ICMPV6,
		.hop_limit = REPLY_TTL,
	};
	__builtin_memcpy(&h.saddr, pkt->flow.dst, 16);
	__builtin_memcpy(&h.daddr, pkt->flow.src, 16);
	*ip6 = h;
	struct icmp6hdr answer = { .icmp6_type = ICMPV6_PKT_TOOBIG };

	answer.icmp6_mtu = bpf_htonl(mtu);
	*icmp6 = answer;
	struct {
		__u32 src[4];
		__u32 dst[4];
		__be32 len;
		__u8 zero[3];
		__u8 next;
	} pseudo = { .len = bpf_htonl(sizeof(*icmp6) + ICMP6_QUOTE), .next = IPPROTO_ICMPV6 };

	__builtin_memcpy(pseudo.src, pkt->flow.dst, 16);
	__builtin_memcpy(pseudo.dst, pkt->flow.src, 16);
	__s64 sum = bpf_csum_diff(NULL, 0, (void *)&pseudo, sizeof(pseudo), 0);

	sum = bpf_csum_diff(NULL, 0, (void *)icmp6, sizeof(*icmp6), sum);
	icmp6->icmp6_cksum = csum_fold(csum_quote(quote, ICMP6_QUOTE, sum));
	return 0;
}

/* too_big answers a packet that the tunnel would make bigger than the next hop's MTU, so that
 * the client's path MTU discovery converges; IPv4 without DF and ICMP errors are dropped. */
static __always_inline int too_big(struct xdp_md *ctx, struct packet *pkt, __u32 mtu, __u32 overhead,
				   struct stats *vip, struct stats *global)
{
	if (pkt->quoted || (pkt->family == FAMILY_IPV4 && !pkt->df) || mtu <= overhead ||
	    send_too_big(ctx, pkt, mtu - overhead)) {
		count_drop(vip, global, DROP_TOO_BIG);
		return XDP_DROP;
	}
	count_drop(vip, global, DROP_FRAGMENTATION_NEEDED);
	return XDP_TX;
}

/* steer sends the packet to the backend of pkt->flow, a flow of the service meta. */
static __always_inline int steer(struct xdp_md *ctx, struct packet *pkt, const struct vip_meta *meta)
{
	__u32 zero = 0;
	struct stats *vip = bpf_map_lookup_elem(&vip_stats, &meta->id);
	struct stats *global = bpf_map_lookup_elem(&global_stats, &zero);

	if (!vip || !global)
		return XDP_PASS;
	count_packet(vip, ctx);
	count_packet(global, ctx);

	if (pkt->ttl <= 1) {
		count_drop(vip, global, DROP_TTL);
		return XDP_PASS;
	}
	__u32 hash = flow_hash(&pkt->flow);
	struct backend *be = pick_backend(pkt, meta, hash, vip, global);

	if (!be) {
		count_drop(vip, global, DROP_NO_BACKEND);
		return XDP_DROP;
	}
	if (be->local)
		return XDP_PASS; /* the node's own stack delivers VIP:port to a local endpoint */

	int gue = meta->flags & VIP_GUE;
	__u32 overhead = encap_overhead(pkt, gue);
	struct next_hop nh = {};
	int found = resolve_next_hop(ctx, pkt, be, overhead, &nh);

	if (found == NEXT_HOP_NONE) {
		count_drop(vip, global, DROP_NO_ROUTE);
		return XDP_DROP;
	}
	if (found == NEXT_HOP_TOO_BIG || (nh.mtu && pkt->l3_len + overhead > nh.mtu))
		return too_big(ctx, pkt, nh.mtu, overhead, vip, global);
	decrement_ttl(ctx, pkt);
	if (encapsulate(ctx, pkt, be, &nh, hash, gue)) {
		count_drop(vip, global, DROP_ENCAP);
		return XDP_DROP;
	}
	if (nh.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh.ifindex, 0);
}

/* quoted_flow replaces the packet's flow with the client's flow to the VIP that an ICMP error
 * is about: the error quotes a packet the VIP sent to the client. */
static __always_inline int quoted_flow(void *quote, void *data_end, struct packet *pkt)
{
	struct flow_key flow = {};
	__be16 *ports;

	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *iph = quote;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl != 5 ||
		    (iph->frag_off & bpf_htons(IPV4_FRAGMENT_OFFSET)) || iph->saddr != pkt->flow.dst[0])
			return -1;
		flow.src[0] = iph->daddr;
		flow.dst[0] = iph->saddr;
		flow.proto = iph->protocol;
		ports = (void *)(iph + 1);
	} else {
		struct ipv6hdr *ip6 = quote;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return -1;
		__builtin_memcpy(flow.src, &ip6->daddr, 16);
		__builtin_memcpy(flow.dst, &ip6->saddr, 16);
		if (flow.dst[0] != pkt->flow.dst[0] || flow.dst[1] != pkt->flow.dst[1] ||
		    flow.dst[2] != pkt->flow.dst[2] || flow.dst[3] != pkt->flow.dst[3])
			return -1;
		flow.proto = ip6->nexthdr;
		ports = (void *)(ip6 + 1);
	}
	if (!is_tcp_or_udp(flow.proto) || (void *)(ports + 2) > data_end)
		return -1;
	flow.sport = ports[1];
	flow.dport = ports[0];
	pkt->flow = flow;
	pkt->quoted = 1;
	return 0;
}

/* csum_replace updates an Internet checksum for one 16-bit word changed (RFC 1624). */
static __always_inline __u16 csum_replace(__u16 check, __u16 old, __u16 new)
{
	return csum_fold((__u16)~check + (__u16)~old + new);
}

/* echo_reply turns an echo request in place into the reply from the VIP. */
static __always_inline int echo_reply(struct xdp_md *ctx, struct packet *pkt, __u8 *type, __u8 reply_type)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 *word = (__u16 *)type; /* type and code */
	__u16 *check = word + 1;

	if ((void *)(check + 1) > data_end || reply_l2(data, data_end, pkt, pkt->l2.proto))
		return XDP_DROP;
	__u16 old = *word;

	*type = reply_type;
	*check = csum_replace(*check, old, *word);
	if (pkt->family == FAMILY_IPV4) {
		struct iphdr *iph = data + pkt->l2.len;

		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		iph->daddr = pkt->flow.src[0];
		iph->saddr = pkt->flow.dst[0];
		iph->ttl = REPLY_TTL;
		iph->check = 0;
		iph->check = ipv4_header_csum(iph);
		return XDP_TX;
	}
	struct ipv6hdr *ip6 = data + pkt->l2.len;

	if ((void *)(ip6 + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(&ip6->daddr, pkt->flow.src, 16);
	__builtin_memcpy(&ip6->saddr, pkt->flow.dst, 16);
	ip6->hop_limit = REPLY_TTL;
	return XDP_TX; /* the pseudo-header's sum does not change when the addresses swap */
}

/* icmp_to_vip answers echo requests to a VIP address, forwards errors to the backend of the
 * flow they quote, leaves neighbour discovery to the stack and drops the rest. */
static __always_inline int icmp_to_vip(struct xdp_md *ctx, struct packet *pkt, struct stats *global)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *icmp = data + (pkt->l4_off & L4_OFFSET_MASK);
	void *quote = icmp + sizeof(struct icmphdr); /* both families' headers are 8 bytes */

	if (quote > data_end)
		goto drop;
	__u8 type = icmp[0];
	int error;

	if (pkt->family == FAMILY_IPV4) {
		if (type == ICMP_ECHO) {
			count_packet(global, ctx);
			return echo_reply(ctx, pkt, icmp, ICMP_ECHOREPLY);
		}
		error = type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
	} else {
		if (type == ICMPV6_ECHO_REQUEST) {
			count_packet(global, ctx);
			return echo_reply(ctx, pkt, icmp, ICMPV6_ECHO_REPLY);
		}
		if (type >= 133 && type <= 137) /* router and neighbour discovery, redirect */
			return XDP_PASS;
		error = type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
	}
	if (error && !quoted_flow(quote, data_end, pkt)) {
		struct vip_meta *meta = lookup_vip(pkt);

		if (meta)
			return steer(ctx, pkt, meta);
	}
drop:
	count_packet(global, ctx);
	count_drop(NULL, global, DROP_ICMP);
	return XDP_DROP;
}

static __always_inline int is_vip_address(const struct packet *pkt)
{
	struct vip_address addr = { .family = pkt->family };

	__builtin_memcpy(addr.addr, pkt->flow.dst, sizeof(addr.addr));
	return bpf_map_lookup_elem(&vip_addresses, &addr) != NULL;
}

/* to_vip_address handles what no service takes, sent to a VIP address: it is answered,
 * forwarded or dropped, never handed to the stack, which has no route for the VIP and would
 * send it back to the router it came from. */
static __always_inline int to_vip_address(struct xdp_md *ctx, struct packet *pkt, int parsed)
{
	__u32 zero = 0;
	struct stats *global = bpf_map_lookup_elem(&global_stats, &zero);

	if (!global)
		return XDP_PASS;
	if (parsed == PARSED_ICMP)
		return icmp_to_vip(ctx, pkt, global);
	count_packet(global, ctx);
	if (parsed == PARSED_FLOW)
		count_drop(NULL, global, DROP_PORT);
	else if (parsed == PARSED_IPV6_HEADERS)
		count_drop(NULL, global, DROP_IPV6_HEADERS);
	else if (parsed == PARSED_IPV4_OPTIONS)
		count_drop(NULL, global, DROP_IPV4_OPTIONS);
	else if (parsed == PARSED_ICMP_FRAGMENT)
		count_drop(NULL, global, DROP_ICMP);
	else
		count_drop(NULL, global, DROP_PROTOCOL);
	return XDP_DROP;
}

static __always_inline int balance(struct xdp_md *ctx)
{
	struct packet pkt = {};
	int parsed = parse(ctx, &pkt);

	/* One lookup settles everything not sent to a VIP, the common case. */
	if (parsed == PARSED_OTHER || !is_vip_address(&pkt))
		return XDP_PASS;
	struct vip_meta *meta = parsed == PARSED_FLOW ? lookup_vip(&pkt) : NULL;

	if (!meta)
		return to_vip_address(ctx, &pkt, parsed);
	return steer(ctx, &pkt, meta);
}

SEC("xdp")
int xdp_balance(struct xdp_md *ctx)
{
	return balance(ctx);
}

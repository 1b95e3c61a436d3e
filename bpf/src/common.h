/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Definitions shared by the load balancer and the decapsulation program. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

#define IPV4_DONT_FRAGMENT 0x4000
#define IPV4_FRAGMENT_MASK 0x3fff /* more-fragments flag and offset */
#define IPV6_NEXTHDR_FRAGMENT 44

/* struct vlan_hdr lives in a kernel-internal header; this is the 802.1Q tag after the MACs. */
struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* The link layer of a frame: MACs and, when tagged, one VLAN tag. Kept aside while the
 * headers behind it grow or shrink, then written back in front. */
struct l2 {
	struct ethhdr eth;
	struct vlan_tag vlan;
	__u8 len; /* ETH_HLEN or ETH_HLEN + sizeof(struct vlan_tag); a byte keeps offsets provably small */
	__be16 proto; /* the L3 ethertype */
};

/* GUE variant 0 header (draft-ietf-intarea-gue) without optional fields. */
struct gue_hdr {
	__u8 version_control_hlen; /* version 0, C=0, hlen in 32-bit words */
	__u8 proto;                /* IPPROTO_IPIP or IPPROTO_IPV6 */
	__be16 flags;
};

/* parse_l2 reads Ethernet with at most one 802.1Q/802.1ad tag. */
static __always_inline int parse_l2(void *data, void *data_end, struct l2 *l2)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	l2->eth = *eth;
	l2->len = ETH_HLEN;
	l2->proto = eth->h_proto;
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return -1;
		l2->vlan = *vlan;
		l2->len += sizeof(*vlan);
		l2->proto = vlan->encapsulated_proto;
	}
	return 0;
}

/* write_l2 writes the kept link layer at the start of the frame with proto as the L3 type. */
static __always_inline int write_l2(void *data, void *data_end, const struct l2 *l2, __be16 proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, l2->eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_source, l2->eth.h_source, ETH_ALEN);
	if (l2->len == ETH_HLEN) {
		eth->h_proto = proto;
		return 0;
	}
	struct vlan_tag *vlan = (void *)(eth + 1);

	if ((void *)(vlan + 1) > data_end)
		return -1;
	eth->h_proto = l2->eth.h_proto;
	vlan->tci = l2->vlan.tci;
	vlan->encapsulated_proto = proto;
	return 0;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline __u16 ipv4_header_csum(const struct iphdr *iph)
{
	const __u16 *words = (const __u16 *)iph;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += words[i];
	return csum_fold(sum);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: Apache-2.0

package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// FuzzFor feeds For the objects of arbitrary YAML streams (every kind the model is built
// from): it returns an error or a model, never panics, and a model it returns keeps the
// invariants its users rely on. The samples in configsamples/ seed it.
func FuzzFor(f *testing.F) {
	samples, err := filepath.Glob("../../configsamples/*.yaml")
	if err != nil || len(samples) == 0 {
		f.Fatalf("no configuration samples: %v", err)
	}
	var all [][]byte
	for _, path := range samples {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b)
	}
	f.Add(bytes.Join(all, []byte("\n---\n")))
	f.Fuzz(func(t *testing.T, stream []byte) {
		res := decodeResources(stream)
		before := fmt.Sprintf("%#v", res)
		cfg, err := For(res, DontValidate)
		if after := fmt.Sprintf("%#v", res); after != before {
			t.Fatalf("For changed its input")
		}
		native, nativeErr := For(res, ValidationFor("native"))
		_ = ValidateForWebhook(res, ValidationFor("native"))
		if err != nil {
			if nativeErr == nil {
				t.Fatalf("accepted with the native restrictions, refused without them: %v", err)
			}
			return
		}
		checkModel(t, res, cfg)
		if nativeErr == nil {
			if diff := cmp.Diff(cfg, native, modelComparison); diff != "" {
				t.Fatalf("the native restrictions changed the model:\n%s", diff)
			}
		}
		again, err := For(res, DontValidate)
		if err != nil {
			t.Fatalf("the same resources refused the second time: %v", err)
		}
		if diff := cmp.Diff(cfg, again, modelComparison); diff != "" {
			t.Fatalf("the same resources gave another model:\n%s", diff)
		}
	})
}

// decodeResources reads the objects of the kinds the model is built from out of a YAML
// stream, skipping what does not decode.
func decodeResources(stream []byte) ClusterResources {
	var res ClusterResources
	for _, doc := range bytes.Split(stream, []byte("\n---")) {
		var head struct{ Kind string }
		if yaml.Unmarshal(doc, &head) != nil {
			continue
		}
		var err error
		switch head.Kind {
		case "IPAddressPool":
			res.Pools, err = appendDecoded(res.Pools, doc)
		case "BGPPeer":
			res.Peers, err = appendDecoded(res.Peers, doc)
		case "BFDProfile":
			res.BFDProfiles, err = appendDecoded(res.BFDProfiles, doc)
		case "BGPAdvertisement":
			res.BGPAdvs, err = appendDecoded(res.BGPAdvs, doc)
		case "L2Advertisement":
			res.L2Advs, err = appendDecoded(res.L2Advs, doc)
		case "Community":
			res.Communities, err = appendDecoded(res.Communities, doc)
		case "Node":
			res.Nodes, err = appendDecoded(res.Nodes, doc)
		case "Namespace":
			res.Namespaces, err = appendDecoded(res.Namespaces, doc)
		case "Secret":
			var s corev1.Secret
			if err = yaml.Unmarshal(doc, &s); err == nil {
				for k, v := range s.StringData { // as the API server stores it
					if s.Data == nil {
						s.Data = map[string][]byte{}
					}
					s.Data[k] = []byte(v)
				}
				if res.PasswordSecrets == nil {
					res.PasswordSecrets = map[string]corev1.Secret{}
				}
				res.PasswordSecrets[s.Name] = s
			}
		}
		_ = err // a document that does not decode is not part of the configuration
	}
	return res
}

func appendDecoded[T any](list []T, doc []byte) ([]T, error) {
	var obj T
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return list, err
	}
	return append(list, obj), nil
}

// checkModel fails t when cfg, built from res, breaks an invariant of the model.
func checkModel(t *testing.T, res ClusterResources, cfg *Config) {
	t.Helper()
	if len(cfg.Pools.ByName) != len(res.Pools) {
		t.Fatalf("%d pools in the model, %d resources", len(cfg.Pools.ByName), len(res.Pools))
	}
	owner := map[netip.Prefix]string{}
	for name, pool := range cfg.Pools.ByName {
		if pool.Name != name || len(pool.CIDRs) == 0 {
			t.Fatalf("pool %q: name %q, %d CIDRs", name, pool.Name, len(pool.CIDRs))
		}
		if err := checkShard(pool.Shard); err != nil {
			t.Fatalf("pool %q: %v", name, err)
		}
		for _, cidr := range pool.CIDRs {
			if !cidr.IsValid() || cidr != cidr.Masked() {
				t.Fatalf("pool %q: CIDR %v not valid and masked", name, cidr)
			}
			for other, by := range owner {
				if cidr.Overlaps(other) {
					t.Fatalf("pool %q's %v overlaps pool %q's %v", name, cidr, by, other)
				}
			}
			owner[cidr] = name
		}
		for _, adv := range pool.BGPAdvertisements {
			checkBGPAdvertisement(t, cfg, pool, adv)
		}
	}
	for namespace, names := range cfg.Pools.ByNamespace {
		if !slices.IsSorted(names) {
			t.Fatalf("pools of namespace %q not sorted: %v", namespace, names)
		}
		for _, name := range names {
			pool := cfg.Pools.ByName[name]
			if pool == nil || pool.ServiceAllocation == nil || !pool.ServiceAllocation.Namespaces.Has(namespace) {
				t.Fatalf("namespace %q lists pool %q, which does not serve it", namespace, name)
			}
		}
	}
	if !slices.IsSorted(cfg.Pools.ByServiceSelector) {
		t.Fatalf("pools with service selectors not sorted: %v", cfg.Pools.ByServiceSelector)
	}
	if len(cfg.Peers) != len(res.Peers) {
		t.Fatalf("%d peers in the model, %d resources", len(cfg.Peers), len(res.Peers))
	}
	for name, peer := range cfg.Peers {
		switch {
		case peer.Name != name:
			t.Fatalf("peer %q named %q", name, peer.Name)
		case peer.HoldTime.Truncate(time.Second) != 0 && peer.HoldTime < 3*time.Second || peer.KeepaliveTime < 0 || peer.KeepaliveTime > peer.HoldTime:
			t.Fatalf("peer %q: hold time %v, keepalive %v", name, peer.HoldTime, peer.KeepaliveTime)
		case peer.Addr.IsValid() == (peer.Interface != ""):
			t.Fatalf("peer %q: address %v and interface %q", name, peer.Addr, peer.Interface)
		case (peer.BFDProfile == "") != (peer.BFD == nil) || peer.BFD != nil && peer.BFD != cfg.BFDProfiles[peer.BFDProfile]:
			t.Fatalf("peer %q: profile %q resolved to %+v", name, peer.BFDProfile, peer.BFD)
		case len(peer.NodeSelectors) == 0:
			t.Fatalf("peer %q has no node selector", name)
		}
	}
	for name, profile := range cfg.BFDProfiles {
		if profile.Name != name || profile.ReceiveInterval == 0 || profile.TransmitInterval == 0 || profile.DetectMultiplier == 0 {
			t.Fatalf("BFD profile %q without its defaults: %+v", name, profile)
		}
	}
}

func checkBGPAdvertisement(t *testing.T, cfg *Config, pool *Pool, adv *BGPAdvertisement) {
	t.Helper()
	if !slices.IsSortedFunc(adv.Communities, CompareCommunities) ||
		len(slices.CompactFunc(slices.Clone(adv.Communities), func(a, b Community) bool { return CompareCommunities(a, b) == 0 })) != len(adv.Communities) {
		t.Fatalf("advertisement %q: communities not sorted and unique: %v", adv.Name, adv.Communities)
	}
	// The aggregation length of a family the pool has is no shorter than its widest prefix.
	for _, cidr := range pool.CIDRs {
		length, bits := adv.AggregationLength, 32
		if cidr.Addr().Is6() {
			length, bits = adv.AggregationLengthV6, 128
		}
		if length > bits || length < slices.MinFunc(pool.CIDRs, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() }).Bits() {
			t.Fatalf("advertisement %q of pool %q: aggregation length %d for %v", adv.Name, pool.Name, length, cidr)
		}
	}
}

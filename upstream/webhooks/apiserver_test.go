// SPDX-License-Identifier: Apache-2.0

package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const metallbNamespace = "metallb-system"

func TestCRDsInstall(t *testing.T) {
	env := testenv.Get(t)
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := env.Client.List(context.Background(), &crds); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, crd := range crds.Items {
		if crd.Spec.Group != "metallb.io" {
			continue
		}
		names = append(names, crd.Name)
		established := slices.ContainsFunc(crd.Status.Conditions, func(c apiextensionsv1.CustomResourceDefinitionCondition) bool {
			return c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue
		})
		if !established {
			t.Errorf("CRD %s is not established", crd.Name)
		}
		if crd.Name == "bgppeers.metallb.io" {
			var versions []string
			for _, v := range crd.Spec.Versions {
				if v.Served {
					versions = append(versions, v.Name)
				}
				if v.Storage && v.Name != "v1beta2" {
					t.Errorf("bgppeers storage version is %s, want v1beta2", v.Name)
				}
			}
			if !slices.Equal(versions, []string{"v1beta1", "v1beta2"}) {
				t.Errorf("bgppeers served versions = %v, want v1beta1 and v1beta2", versions)
			}
		}
	}
	slices.Sort(names)
	want := []string{
		"bfdprofiles.metallb.io", "bgpadvertisements.metallb.io", "bgppeers.metallb.io", "communities.metallb.io",
		"configurationstates.metallb.io", "ipaddresspools.metallb.io", "l2advertisements.metallb.io",
		"servicebgpstatuses.metallb.io", "servicel2statuses.metallb.io",
	}
	if !slices.Equal(names, want) {
		t.Errorf("metallb.io CRDs = %v, want %v", names, want)
	}
}

// Every sample applies together, the v1beta1 BGPPeer is converted to v1beta2, and the
// resulting configuration is valid.
func TestConfigSamplesApply(t *testing.T) {
	startComponents(t, metallbNamespace, "")
	t.Cleanup(func() { deleteAll(t, metallbNamespace) })
	samples := filepath.Join(testenv.RepoRoot(), "configsamples")
	if out, err := kubectl(t, "apply", "-f", samples); err != nil {
		t.Fatalf("kubectl apply -f configsamples: %v\n%s", err, out)
	}
	files, err := filepath.Glob(filepath.Join(samples, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}

	var peer metallbv1beta2.BGPPeer
	if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: "tor-legacy"}, &peer); err != nil {
		t.Fatal(err)
	}
	if len(peer.Spec.NodeSelectors) != 1 || peer.Spec.NodeSelectors[0].MatchLabels["kubernetes.io/os"] != "linux" || peer.Spec.ASN != 64501 {
		t.Errorf("v1beta1 peer read as v1beta2 = %+v, want ASN 64501 and its node selector", peer.Spec)
	}
	waitForState(t, metallbNamespace, "controller", metallbv1beta1.ConfigurationResultValid, "")

	var pool maglbv1beta1.IPAddressPool
	if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: "gold"}, &pool); err != nil {
		t.Fatal(err)
	}
	if pool.Spec.Shard != "gold" || pool.Spec.AutoAssign == nil || !*pool.Spec.AutoAssign {
		t.Errorf("pool gold = %+v, want shard gold and autoAssign defaulted to true", pool.Spec)
	}
}

// Every YAML of upstream MetalLB's configsamples passes a server-side dry run, webhooks
// included.
func TestUpstreamSamplesDryRun(t *testing.T) {
	startComponents(t, metallbNamespace, "")
	dir := upstreamModuleDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "configsamples", "*.yaml"))
	if err != nil || len(files) < 15 {
		t.Fatalf("upstream configsamples: %d files, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := kubectl(t, "apply", "--dry-run=server", "-f", f); err != nil {
				t.Errorf("dry run of upstream %s: %v\n%s", filepath.Base(f), err, out)
			}
		})
	}
}

func TestShardRoundTrip(t *testing.T) {
	startComponents(t, metallbNamespace, "")
	t.Cleanup(func() { deleteAll(t, metallbNamespace) })
	c := testenv.Get(t).Client
	ctx := context.Background()

	pool := newPool("sharded", "10.20.0.0/24")
	pool.Spec.Shard = "gold"
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var got maglbv1beta1.IPAddressPool
	if err := c.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Shard != "gold" {
		t.Errorf("shard = %q after a round trip, want gold", got.Spec.Shard)
	}

	bad := newPool("badshard", "10.21.0.0/24")
	bad.Spec.Shard = "Not_A_Label"
	err := c.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "spec.shard") || !strings.Contains(err.Error(), "should match") {
		t.Errorf("creating a pool with shard Not_A_Label: error %v, want a spec.shard pattern rejection", err)
	}
}

// Each invalid object is refused, by the CRD schema or by the webhook, with its message, and
// nothing is stored.
func TestInvalidObjectsRejected(t *testing.T) {
	startComponents(t, metallbNamespace, "")
	t.Cleanup(func() { deleteAll(t, metallbNamespace) })
	ctx := context.Background()
	c := testenv.Get(t).Client
	for _, obj := range []client.Object{
		newPool("existing", "10.30.0.0/24"),
		&metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "inuse", Namespace: metallbNamespace}},
		&metallbv1beta2.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "withbfd", Namespace: metallbNamespace},
			Spec:       metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64512, Address: "10.1.1.1", BFDProfile: "inuse"},
		},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %s: %v", obj.GetName(), err)
		}
	}

	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"pool overlapping an existing one", `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: overlap, namespace: metallb-system}
spec: {addresses: [10.30.0.128/25]}`, `overlaps with already defined CIDR "10.30.0.0/24"`},
		{"pool with a bad CIDR", `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: badcidr, namespace: metallb-system}
spec: {addresses: [10.40.0.0/33]}`, `invalid CIDR "10.40.0.0/33"`},
		{"pool with a reversed range", `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: badrange, namespace: metallb-system}
spec: {addresses: [10.40.0.9-10.40.0.1]}`, `is after the end IP`},
		{"pool outside the MetalLB namespace", `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: elsewhere, namespace: default}
spec: {addresses: [10.41.0.0/24]}`, `resource must be created in metallb-system namespace`},
		{"pool with a bad shard", `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: badshard, namespace: metallb-system}
spec: {addresses: [10.42.0.0/24], shard: Gold_1}`, `spec.shard`},
		{"peer with an invalid address", `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: badaddr, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64512, peerAddress: 10.1.1.300}`, `invalid BGPPeer address "10.1.1.300"`},
		{"peer with hold time below 3s", `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: badhold, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64512, peerAddress: 10.1.1.2, holdTime: 1s}`, `must be 0 or >=3s`},
		{"peer with both peerASN and dynamicASN", `
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: bothasn, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64512, dynamicASN: external, peerAddress: 10.1.1.3}`, `both peer ASN and dynamicASN specified`},
		{"v1beta1 peer with an ASN out of range", `
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata: {name: bigasn, namespace: metallb-system}
spec: {myASN: 4294967296, peerASN: 64512, peerAddress: 10.1.1.4}`, `myASN`},
		{"advertisement with a malformed community", `
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: badcommunity, namespace: metallb-system}
spec: {communities: ["65536:1"]}`, `invalid community "65536:1"`},
		{"advertisement aggregating beyond /32", `
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: badaggr, namespace: metallb-system}
spec: {aggregationLength: 33}`, `aggregationLength`},
		{"advertisement aggregating wider than a pool prefix", `
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: wideaggr, namespace: metallb-system}
spec: {aggregationLength: 16, ipAddressPools: [existing]}`, `invalid aggregation length 16`},
		{"community with a malformed value", `
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: badvalue, namespace: metallb-system}
spec: {communities: [{name: gold, value: "1:2:3"}]}`, `gold`},
		{"BFD profile with an interval out of range", `
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: badinterval, namespace: metallb-system}
spec: {receiveInterval: 5}`, `receiveInterval`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.yaml), &obj.Object); err != nil {
				t.Fatal(err)
			}
			err := c.Create(ctx, obj)
			if err == nil {
				t.Fatalf("created, want an error containing %q", tc.want)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}

	t.Run("deleting a BFD profile a peer uses", func(t *testing.T) {
		profile := &metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "inuse", Namespace: metallbNamespace}}
		err := c.Delete(ctx, profile)
		if err == nil || !strings.Contains(err.Error(), "failed to delete BFDProfile inuse, used by BGPPeer withbfd") {
			t.Errorf("delete: error %v, want the in-use refusal", err)
		}
	})
}

// A configuration that becomes invalid is reported Invalid while the last valid one stays in
// effect, and is reported Valid again once fixed. A speaker reports what its BGP cannot do.
func TestConfigurationStateInvalidThenValid(t *testing.T) {
	const namespace = "maglb-state"
	comps := startComponents(t, namespace, "node1")
	t.Cleanup(func() { deleteAll(t, namespace) })
	ctx := context.Background()
	c := testenv.Get(t).Client
	node := &unstructured.Unstructured{}
	node.SetAPIVersion("v1")
	node.SetKind("Node")
	node.SetName("node1")
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, node) })

	pool := newPool("valid", "10.50.0.0/24")
	pool.Namespace = namespace
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	waitForState(t, namespace, "controller", metallbv1beta1.ConfigurationResultValid, "")
	testenv.EventuallyTrue(t, "the pool in effect", func() bool {
		cfg, _ := comps.applied()
		return cfg != nil && len(cfg.Pools.ByName) == 1
	})
	_, appliedBefore := comps.applied()

	// An unknown community alias passes admission (the Community may come later) but
	// invalidates the configuration.
	adv := &metallbv1beta1.BGPAdvertisement{
		ObjectMeta: metav1.ObjectMeta{Name: "gold", Namespace: namespace},
		Spec:       metallbv1beta1.BGPAdvertisementSpec{Communities: []string{"gold-community"}},
	}
	if err := c.Create(ctx, adv); err != nil {
		t.Fatal(err)
	}
	waitForState(t, namespace, "controller", metallbv1beta1.ConfigurationResultInvalid, "gold-community")
	cfg, appliedAfter := comps.applied()
	if appliedAfter != appliedBefore || len(cfg.Pools.ByName) != 1 {
		t.Errorf("invalid configuration replaced the valid one: applied %d→%d times, %d pools", appliedBefore, appliedAfter, len(cfg.Pools.ByName))
	}

	community := &metallbv1beta1.Community{
		ObjectMeta: metav1.ObjectMeta{Name: "aliases", Namespace: namespace},
		Spec:       metallbv1beta1.CommunitySpec{Communities: []metallbv1beta1.CommunityAlias{{Name: "gold-community", Value: "64512:10"}}},
	}
	if err := c.Create(ctx, community); err != nil {
		t.Fatal(err)
	}
	waitForState(t, namespace, "controller", metallbv1beta1.ConfigurationResultValid, "")
	testenv.EventuallyTrue(t, "the fixed configuration in effect", func() bool {
		_, n := comps.applied()
		return n > appliedAfter
	})

	// The speaker's BGP has BFD without echo mode: the configuration applies, and the
	// speaker reports what it ignores.
	peer := &metallbv1beta2.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "withbfd", Namespace: namespace},
		Spec:       metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64512, Address: "10.1.1.1", BFDProfile: "fast"},
	}
	profile := &metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast", Namespace: namespace}, Spec: metallbv1beta1.BFDProfileSpec{EchoMode: ptr.To(true)}}
	for _, obj := range []client.Object{profile, peer} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	waitForState(t, namespace, "speaker-node1", metallbv1beta1.ConfigurationResultValid, "")
	testenv.Eventually(t, "the speaker reporting echo mode ignored", func() error {
		var state metallbv1beta1.ConfigurationState
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "speaker-node1"}, &state); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(state.Status.Conditions, configstate.ConditionSettingsHonoured)
		const want = "peer 10.1.1.1 has bfd-profile fast with echo-mode set on native bgp mode, ignored"
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Message != want {
			return fmt.Errorf("condition %s: %+v, want False with %q", configstate.ConditionSettingsHonoured, cond, want)
		}
		return nil
	})
	waitForState(t, namespace, "controller", metallbv1beta1.ConfigurationResultValid, "")
}

func newPool(name, cidr string) *maglbv1beta1.IPAddressPool {
	pool := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace}}
	pool.Spec.Addresses = []string{cidr}
	return pool
}

// waitForState waits until ConfigurationState name reports result, with an error summary
// containing summary.
func waitForState(t *testing.T, namespace, name string, result metallbv1beta1.ConfigurationResult, summary string) {
	t.Helper()
	c := testenv.Get(t).Client
	var state metallbv1beta1.ConfigurationState
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &state)
		if err == nil && state.Status.Result == result && strings.Contains(state.Status.ErrorSummary, summary) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigurationState %s/%s: %+v (err %v), want %s with %q", namespace, name, state.Status, err, result, summary)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteAll removes the metallb.io objects of namespace, so the next test starts empty.
func deleteAll(t *testing.T, namespace string) {
	t.Helper()
	// BGPPeers first: a BFD profile in use cannot be deleted.
	for _, kinds := range []string{"bgppeers.metallb.io", "bfdprofiles,bgpadvertisements,l2advertisements,communities,ipaddresspools,configurationstates"} {
		if out, err := kubectl(t, "delete", "-n", namespace, "--all", "--wait=true", kinds); err != nil {
			t.Errorf("cleaning up %s: %v\n%s", kinds, err, out)
		}
	}
}

func upstreamModuleDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-json", "go.universe.tf/metallb").Output()
	if err != nil {
		t.Fatalf("locating the upstream module: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("locating the upstream module: %v (%s)", err, out)
	}
	if _, err := os.Stat(mod.Dir); err != nil {
		t.Fatal(err)
	}
	return mod.Dir
}

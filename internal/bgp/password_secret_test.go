// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/testenv"
)

// A BGPPeer whose TCP MD5 password comes from a Secret (passwordSecret: a
// kubernetes.io/basic-auth Secret's "password", as upstream) that holds the wrong password
// never establishes its session with the router, which has the right one. The speaker says
// so as upstream's native speaker does: "failed to connect to peer" in its log, naming the
// peer, at every attempt, and metallb_bgp_session_up 0. The other peer stays up and carries
// the routes; the Secret fixed, the session comes up.
func TestPasswordSecretWrongThenFixed(t *testing.T) {
	t.Parallel()
	l := newLab(t,
		frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}},
		frrNeighbor{addr: "10.0.0.3", asn: speakerASN, password: "right-secret", families: []string{"ipv4"}})
	speaker := startSpeaker(t, l.speakerNS)
	crs := []metallbv1beta2.BGPPeer{bgpPeerCR("plain", "10.0.0.1", "10.0.0.2", ""), bgpPeerCR("md5", "10.0.0.11", "10.0.0.3", "md5-password")}
	setPeersFromCRs := func(password string) {
		t.Helper()
		secret := corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "md5-password", Namespace: "metallb-system"},
			Type:       corev1.SecretTypeBasicAuth,
			Data:       map[string][]byte{corev1.BasicAuthPasswordKey: []byte(password)},
		}
		cfg, err := config.For(config.ClusterResources{Peers: crs, PasswordSecrets: map[string]corev1.Secret{secret.Name: secret}}, config.ValidationFor("native"))
		if err != nil {
			t.Fatal(err)
		}
		var peers []config.Peer
		for _, p := range cfg.Peers {
			peer := *p
			peer.NodeSelectors = nil // the caller's concern, and no JSON to the child
			peers = append(peers, peer)
		}
		speaker.setPeers(routerID, peers...)
	}
	setPeersFromCRs("wrong-secret")
	speaker.setRoutes(announce.Route{Prefix: netip.MustParsePrefix("192.0.2.40/32")})

	waitForPeers(t, l, "192.0.2.40/32", "10.0.0.2")
	testenv.Eventually(t, "the wrong password's session reported down, twice in the log", func() error {
		if err := sessionsUp(speaker, map[string]bool{"plain": true, "md5": false}); err != nil {
			return err
		}
		failures := 0
		for _, line := range strings.Split(speaker.child.Log(), "\n") {
			if strings.Contains(line, `msg="failed to connect to peer"`) && strings.Contains(line, "10.0.0.11") && strings.Contains(line, "level=error") {
				failures++
			}
		}
		if failures < 2 {
			return fmt.Errorf("%d failed attempts logged for 10.0.0.11", failures)
		}
		return nil
	})
	if state, err := l.sessionState("10.0.0.3"); err != nil || state == "Established" {
		t.Fatalf("router session with the wrong password: %q, %v", state, err)
	}

	setPeersFromCRs("right-secret")
	testenv.Eventually(t, "the session up once the Secret is fixed", func() error {
		if state, err := l.sessionState("10.0.0.3"); err != nil || state != "Established" {
			return fmt.Errorf("router session with 10.0.0.3: %q, %v", state, err)
		}
		return sessionsUp(speaker, map[string]bool{"plain": true, "md5": true})
	})
	waitForPeers(t, l, "192.0.2.40/32", "10.0.0.2", "10.0.0.3")
}

// bgpPeerCR is a BGPPeer of the lab's router at addr from src with short timers, its
// password in the Secret named secret ("" for none).
func bgpPeerCR(name, addr, src, secret string) metallbv1beta2.BGPPeer {
	p := metallbv1beta2.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "metallb-system"},
		Spec: metallbv1beta2.BGPPeerSpec{
			MyASN: speakerASN, ASN: routerASN, Address: addr, SrcAddress: src,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		},
	}
	if secret != "" {
		p.Spec.PasswordSecret = corev1.SecretReference{Name: secret, Namespace: "metallb-system"}
	}
	return p
}

// sessionsUp checks the speaker's view of each named session, and its metric.
func sessionsUp(speaker *speakerProcess, want map[string]bool) error {
	status := speaker.status()
	up := map[string]bool{}
	for _, p := range status.Peers {
		up[p.Name] = p.Up
		metric := fmt.Sprintf("metallb_bgp_session_up{peer=%q}", netip.AddrPortFrom(p.Addr, p.Port).String())
		if got, ok := status.Metrics[metric]; !ok || (got == 1) != p.Up {
			return fmt.Errorf("%s is %v (present: %v) for a session up=%v", metric, got, ok, p.Up)
		}
	}
	for name, wantUp := range want {
		if up[name] != wantUp {
			return fmt.Errorf("Peers(): %+v, want up %v", status.Peers, want)
		}
	}
	return nil
}

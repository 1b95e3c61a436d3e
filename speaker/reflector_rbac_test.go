// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/rbactest"
)

// The reflector, with a token of its ServiceAccount bound to exactly its manifest's RBAC,
// does its job: it reads its configuration (its ToR peer's password from a Secret), peers
// with the ToR, writes its ConfigurationState (its lost labels patched back), and serves
// metrics over HTTPS to a reader the API server authorizes. With MAGLB_RBAC_TABLE=1, the minus-one-verb table (internal/rbactest).
func TestReflectorRBAC(t *testing.T) {
	nodes := map[string]string{"rbac-rr": "172.30.0.9"}
	lab := newBGPLabWith(t, nodes, torSettings{neighbor: []string{"neighbor %[1]s password " + rbacPassword}})
	env := lab.env
	ctx := context.Background()
	ensureNamespace(t, metallbNamespace)
	rbac, _, kubeconfig := rbactest.Grant(t, env, metallbNamespace, "reflector", "config/reflector/rbac.yaml")
	reader, err := env.MetricsReaderToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	labelNode(t, "rbac-rr", map[string]string{"maglb.io/reflector": ""})
	secret := passwordSecret("rr-tor-password", rbacPassword)
	for _, obj := range []client.Object{
		secret,
		pool("rr-gold", "198.51.100.64/26", ""),
		&metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "rr-tor", Namespace: metallbNamespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second},
				PasswordSecret: corev1.SecretReference{Name: secret.Name, Namespace: metallbNamespace},
				NodeSelectors:  []metav1.LabelSelector{{MatchLabels: map[string]string{"maglb.io/reflector": ""}}}}},
		&metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "rr-all", Namespace: metallbNamespace}},
	} {
		create(t, obj)
	}

	job := func(t *testing.T, row rbactest.Row) (string, error) {
		if err := client.IgnoreNotFound(env.Client.Delete(ctx, &metallbv1beta1.ConfigurationState{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "reflector-rbac-rr"}})); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(t.TempDir(), "reflector.log")
		stop := lab.startLogged(t, "rbac-rr", logPath, binary(t), row.Env(), "--role=reflector", "--node-name", "rbac-rr",
			"--kubeconfig", kubeconfig, "--namespace", metallbNamespace, "--log-level", "debug", "--host", nodes["rbac-rr"])
		defer stop()
		steps := rbactest.Steps{LogPath: logPath, Refused: row.Refused, Timeout: 30 * time.Second}
		for what, check := range map[string]func() error{
			"ConfigurationState reflector-rbac-rr": func() error { return stateValid(env.Client, "reflector-rbac-rr") },
			"the session with the ToR": func() error {
				var out map[string]struct {
					State string `json:"bgpState"`
				}
				if err := lab.router.VtyshJSON("show bgp neighbors "+nodes["rbac-rr"]+" json", &out); err != nil {
					return err
				}
				if s := out[nodes["rbac-rr"]].State; s != "Established" {
					return fmt.Errorf("state %q", s)
				}
				return nil
			},
			"metrics over HTTPS": func() error {
				code, err := lab.nodes["rbac-rr"].Run("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer "+reader, "https://"+nodes["rbac-rr"]+":7477/metrics")
				if err != nil || code != "200" {
					return fmt.Errorf("HTTP %q, %v", code, err)
				}
				return nil
			},
		} {
			if err := steps.Wait(what, check); err != nil {
				return rbactest.ReadLog(logPath), err
			}
		}
		err := stateLabelsPatchedBack(t, env.Client, steps, "reflector-rbac-rr")
		return rbactest.ReadLog(logPath), err
	}
	rbactest.Check(t, env.Client, rbac, rbactest.ServiceAccountUser(metallbNamespace, "reflector"), job)
}

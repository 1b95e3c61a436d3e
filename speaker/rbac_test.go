// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/rbactest"
)

// speakerRBAC is what the speaker's manifest grants it.
var speakerRBAC = []string{"config/rbac/service_accounts.yaml", "config/rbac/speaker.yaml"}

const (
	rbacNode = "rbac1"
	rbacAddr = "172.30.0.2"
	rbacVIP  = "198.51.100.10"
	// The ToR's password for the node, which the speaker reads from a Secret.
	rbacPassword = "rbac-md5"
)

// The speaker, with a token of its ServiceAccount bound to exactly the manifest's RBAC, does
// its job: it reads its configuration (the BGP password from a Secret) and announces a
// Service to the ToR (BGP) and on its link (ARP), writes its ConfigurationState (its lost
// labels patched back), ServiceBGPStatus, ServiceL2Status, Lease and events (a repeated one
// patched), serves metrics over HTTPS to a reader the API server authorizes,
// forgets a crashed speaker (its Lease and status objects) and, stopping, removes its own.
// With MAGLB_RBAC_TABLE=1, the minus-one-verb table: without any one (resource, verb) of the
// manifest, the speaker's log shows the API server refusing it.
func TestSpeakerRBAC(t *testing.T) {
	lab := newBGPLabWith(t, map[string]string{rbacNode: rbacAddr}, torSettings{neighbor: []string{"neighbor %[1]s password " + rbacPassword}})
	env := lab.env
	ctx := context.Background()
	ensureNamespace(t, metallbNamespace)
	rbac, _, kubeconfig := rbactest.Grant(t, env, metallbNamespace, "speaker", speakerRBAC...)
	reader, err := env.MetricsReaderToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}

	secret := passwordSecret("tor-password", rbacPassword)
	create(t, secret)
	create(t, pool("rbac", "198.51.100.0/26", ""))
	create(t, &metallbv1beta2.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
		Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second},
			PasswordSecret: corev1.SecretReference{Name: secret.Name, Namespace: metallbNamespace}},
	})
	create(t, &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "rbac", Namespace: metallbNamespace}})
	create(t, &metallbv1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "rbac", Namespace: metallbNamespace}})
	svc := loadBalancer(t, "rbac-web", rbacVIP, "rbac", rbacNode)

	job := func(t *testing.T, row rbactest.Row) (string, error) {
		return speakerJob(t, lab, kubeconfig, reader, svc, row)
	}
	rbactest.Check(t, env.Client, rbac, rbactest.ServiceAccountUser(metallbNamespace, "speaker"), job)
}

// speakerJob runs the speaker once through its job (see TestSpeakerRBAC).
func speakerJob(t *testing.T, lab *bgpLab, kubeconfig, reader string, svc *corev1.Service, row rbactest.Row) (string, error) {
	c := lab.env.Client
	ctx := context.Background()
	resetSpeakerState(t, c, svc)
	ghostLease, ghostStatus := crashedSpeaker(t, "rbac-ghost", svc.Name)

	logPath := filepath.Join(t.TempDir(), "speaker.log")
	stop := lab.startLogged(t, rbacNode, logPath, binary(t), row.Env(),
		"--node-name", rbacNode, "--kubeconfig", kubeconfig, "--namespace", metallbNamespace, "--log-level", "debug", "--host", rbacAddr)
	steps := rbactest.Steps{LogPath: logPath, Refused: row.Refused, Timeout: 30 * time.Second}
	done := func(err error) (string, error) {
		stop()
		return rbactest.ReadLog(logPath), err
	}

	if err := steps.Wait("the route at the ToR", func() error {
		if r := lab.route(t, rbacVIP+"/32"); !sameSet(r.nextHops, []string{rbacAddr}) {
			return fmt.Errorf("next hops %v", r.nextHops)
		}
		return nil
	}); err != nil {
		return done(err)
	}
	for what, check := range map[string]func() error{
		"ConfigurationState speaker-" + rbacNode: func() error { return stateValid(c, "speaker-"+rbacNode) },
		"ServiceBGPStatus":                       func() error { return bgpStatus(c, svc.Name, rbacNode, 1) },
		"ServiceL2Status":                        func() error { return l2Status(c, svc.Name, rbacNode, 1) },
		"nodeAssigned":                           func() error { return eventCount(c, svc, "nodeAssigned", 1) },
		"the speaker's Lease": func() error {
			return c.Get(ctx, client.ObjectKey{Namespace: metallbNamespace, Name: "maglb-speaker-" + rbacNode}, &coordinationv1.Lease{})
		},
		"the crashed speaker forgotten": func() error { return gone(c, ghostLease, ghostStatus) },
		"metrics over HTTPS": func() error {
			code, err := lab.nodes[rbacNode].Run("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer "+reader, "https://"+rbacAddr+":7472/metrics")
			if err != nil || code != "200" {
				return fmt.Errorf("HTTP %q, %v", code, err)
			}
			return nil
		},
	} {
		if err := steps.Wait(what, check); err != nil {
			return done(err)
		}
	}

	if err := stateLabelsPatchedBack(t, c, steps, "speaker-"+rbacNode); err != nil {
		return done(err)
	}

	// Withdrawn and announced again: the status objects go and come back, and the
	// repeated nodeAssigned event is patched (its count raised), as client-go's recorder does.
	slice := &discoveryv1.EndpointSlice{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: svc.Namespace, Name: svc.Name}, slice); err != nil {
		t.Fatal(err)
	}
	setReady(t, c, slice, false)
	if err := steps.Wait("the status objects removed on withdrawal", func() error {
		return errors.Join(bgpStatus(c, svc.Name, rbacNode, 0), l2Status(c, svc.Name, rbacNode, 0))
	}); err != nil {
		return done(err)
	}
	setReady(t, c, slice, true)
	if err := steps.Wait("nodeAssigned again, patched", func() error { return eventCount(c, svc, "nodeAssigned", 2) }); err != nil {
		return done(err)
	}

	// Stopping, the speaker releases its Lease and removes its status objects.
	stop()
	if err := steps.Wait("the speaker's Lease and status objects removed", func() error {
		return gone(c, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "maglb-speaker-" + rbacNode}}, nil,
			client.MatchingLabels{"metallb.io/node": rbacNode})
	}); err != nil {
		return done(err)
	}
	return done(nil)
}

// stateLabelsPatchedBack removes the labels of the ConfigurationState name and waits for its
// writer to patch them back.
func stateLabelsPatchedBack(t *testing.T, c client.Client, steps rbactest.Steps, name string) error {
	ctx := context.Background()
	var state metallbv1beta1.ConfigurationState
	if err := c.Get(ctx, client.ObjectKey{Namespace: metallbNamespace, Name: name}, &state); err != nil {
		t.Fatal(err)
	}
	state.Labels = nil
	if err := c.Update(ctx, &state); err != nil {
		t.Fatal(err)
	}
	return steps.Wait("the labels of ConfigurationState "+name+" patched back", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&state), &state); err != nil {
			return err
		}
		if len(state.Labels) == 0 {
			return errors.New("no labels")
		}
		return nil
	})
}

// resetSpeakerState removes what an earlier run left: the node's ConfigurationState,
// Lease and status objects, the service's events; its endpoint is ready.
func resetSpeakerState(t *testing.T, c client.Client, svc *corev1.Service) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&metallbv1beta1.ConfigurationState{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "speaker-" + rbacNode}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "maglb-speaker-" + rbacNode}},
	} {
		if err := client.IgnoreNotFound(c.Delete(ctx, obj)); err != nil {
			t.Fatal(err)
		}
	}
	for _, obj := range []client.Object{&metallbv1beta1.ServiceBGPStatus{}, &metallbv1beta1.ServiceL2Status{}} {
		if err := c.DeleteAllOf(ctx, obj, client.InNamespace(metallbNamespace), client.MatchingLabels{"metallb.io/node": rbacNode}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteAllOf(ctx, &corev1.Event{}, client.InNamespace(svc.Namespace)); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: svc.Namespace, Name: svc.Name}, slice); err != nil {
		t.Fatal(err)
	}
	setReady(t, c, slice, true)
}

func setReady(t *testing.T, c client.Client, slice *discoveryv1.EndpointSlice, ready bool) {
	t.Helper()
	slice.Endpoints[0].Conditions.Ready = ptr.To(ready)
	if err := c.Update(context.Background(), slice); err != nil {
		t.Fatal(err)
	}
}

func stateValid(c client.Client, name string) error {
	var state metallbv1beta1.ConfigurationState
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: name}, &state); err != nil {
		return err
	}
	if state.Status.Result != metallbv1beta1.ConfigurationResultValid {
		return fmt.Errorf("%+v", state.Status)
	}
	return nil
}

// bgpStatus checks that node has want (0 or 1) ServiceBGPStatus objects of service.
func bgpStatus(c client.Client, service, node string, want int) error {
	var list metallbv1beta1.ServiceBGPStatusList
	if err := c.List(context.Background(), &list, client.InNamespace(metallbNamespace),
		client.MatchingLabels{"metallb.io/service-name": service, "metallb.io/node": node}); err != nil {
		return err
	}
	if len(list.Items) != want || want == 1 && len(list.Items[0].Status.Peers) != 1 {
		return fmt.Errorf("%d objects, want %d: %+v", len(list.Items), want, list.Items)
	}
	return nil
}

// l2Status checks that node has want (0 or 1) ServiceL2Status objects of service.
func l2Status(c client.Client, service, node string, want int) error {
	var list metallbv1beta1.ServiceL2StatusList
	if err := c.List(context.Background(), &list, client.InNamespace(metallbNamespace),
		client.MatchingLabels{"metallb.io/service-name": service, "metallb.io/node": node}); err != nil {
		return err
	}
	if len(list.Items) != want || want == 1 && list.Items[0].Status.Node != node {
		return fmt.Errorf("%d ServiceL2Status objects, want %d: %+v", len(list.Items), want, list.Items)
	}
	return nil
}

// eventCount checks that svc has an event of reason counted at least want times.
func eventCount(c client.Client, svc *corev1.Service, reason string, want int32) error {
	var events corev1.EventList
	if err := c.List(context.Background(), &events, client.InNamespace(svc.Namespace)); err != nil {
		return err
	}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == svc.Name && e.Reason == reason && e.Count >= want {
			return nil
		}
	}
	return fmt.Errorf("no %s event counted %d times among %d events", reason, want, len(events.Items))
}

// gone checks that lease and status are deleted, and no status object matches labels.
func gone(c client.Client, lease *coordinationv1.Lease, status client.Object, labels ...client.ListOption) error {
	ctx := context.Background()
	var errs []error
	for _, obj := range []client.Object{lease, status} {
		if obj == nil {
			continue
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)); err == nil {
			errs = append(errs, fmt.Errorf("%T %s still there", obj, obj.GetName()))
		} else if client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
		}
	}
	if len(labels) > 0 {
		var l2 metallbv1beta1.ServiceL2StatusList
		var bgp metallbv1beta1.ServiceBGPStatusList
		for _, list := range []client.ObjectList{&l2, &bgp} {
			if err := c.List(ctx, list, append(labels, client.InNamespace(metallbNamespace))...); err != nil {
				errs = append(errs, err)
			}
		}
		if n := len(l2.Items) + len(bgp.Items); n > 0 {
			errs = append(errs, fmt.Errorf("%d status objects left", n))
		}
	}
	return errors.Join(errs...)
}

// passwordSecret is a BGPPeer's passwordSecret holding password, as upstream's
// (kubernetes.io/basic-auth, key "password").
func passwordSecret(name, password string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{corev1.BasicAuthPasswordKey: []byte(password)},
	}
}

// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-kit/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/announce"
)

// failingDatapath refuses every Sync.
type failingDatapath struct{ synced []datapath.Service }

func (d *failingDatapath) Sync(_ context.Context, want []datapath.Service) error {
	d.synced = want
	return errors.New("map full")
}
func (d *failingDatapath) Close() error { return nil }

// A VIP the datapath cannot program is withdrawn (host route and ARP/NDP), with an event
// saying why; aggregates and other services stay.
func TestProgramWithdrawsWhatFailed(t *testing.T) {
	vip, other := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: vip.String()}}
	plan := announce.Plan{
		Routes: []announce.Route{
			{Prefix: netip.PrefixFrom(vip, 32), Peers: []string{"tor"}},
			{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Peers: []string{"tor"}},
			{Prefix: netip.PrefixFrom(other, 32), Peers: []string{"tor"}},
		},
		L2:       map[netip.Addr][]string{vip: nil, other: nil},
		Datapath: []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{{Addr: netip.MustParseAddr("10.0.0.9"), Weight: 1}}}},
		Services: map[string]announce.ServiceState{"default/web": {BGPPeers: []string{"tor"}, L2: true}},
	}
	recorder := record.NewFakeRecorder(10)
	dp := &failingDatapath{}
	r := &Reconciler{Recorder: recorder, NodeName: "lb1", Datapath: dp, Mode: announce.EBPF, Logger: log.NewNopLogger()}
	r.program(context.Background(), &plan, map[string]*corev1.Service{"default/web": svc})

	if len(dp.synced) != 1 {
		t.Fatalf("synced %v, want the one service", dp.synced)
	}
	var prefixes []string
	for _, rt := range plan.Routes {
		prefixes = append(prefixes, rt.Prefix.String())
	}
	if strings.Join(prefixes, " ") != "198.51.100.0/24 192.0.2.1/32" {
		t.Errorf("routes left %v, want the aggregate and the other service's", prefixes)
	}
	if _, ok := plan.L2[vip]; ok {
		t.Error("the VIP is still answered for over ARP")
	}
	if _, ok := plan.L2[other]; !ok {
		t.Error("the other VIP is no longer answered for")
	}
	if s := plan.Services["default/web"]; s.L2 || len(s.BGPPeers) != 0 || s.BGPReason != "datapathFailed" {
		t.Errorf("state %+v, want withdrawn with reason datapathFailed", s)
	}
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, "DatapathFailed") || !strings.Contains(e, "map full") {
			t.Errorf("event %q, want DatapathFailed naming the error", e)
		}
	default:
		t.Error("no event")
	}
}

// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/go-kit/log"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/announce"
)

// fakeDatapath answers every Sync with err.
type fakeDatapath struct {
	synced []datapath.Service
	err    error
}

func (d *fakeDatapath) Sync(_ context.Context, want []datapath.Service) error {
	d.synced = want
	return d.err
}
func (d *fakeDatapath) Close() error { return nil }

// program turns the datapath's answer into the failed VIPs that Decide takes: those a
// SyncError names, every VIP for any other error, none for the kube-proxy datapath.
func TestProgramReportsFailedVIPs(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	want := []datapath.Service{{VIP: a, Protocol: datapath.TCP, Port: 80}, {VIP: b, Protocol: datapath.TCP, Port: 80}}
	full := errors.New("no free id")
	for _, tc := range []struct {
		name   string
		mode   announce.DatapathMode
		err    error
		failed []netip.Addr
	}{
		{"programmed", announce.EBPF, nil, nil},
		{"one refused", announce.EBPF, &datapath.SyncError{Services: map[datapath.ServiceKey]error{want[1].Key(): full}}, []netip.Addr{b}},
		{"datapath broken", announce.EBPF, errors.New("closed"), []netip.Addr{a, b}},
		{"kube-proxy", announce.KubeProxy, errors.New("never asked"), nil},
	} {
		dp := &fakeDatapath{err: tc.err}
		r := &Reconciler{Datapath: dp, Mode: tc.mode, Logger: log.NewNopLogger()}
		got := r.program(context.Background(), want)
		if len(got) != len(tc.failed) {
			t.Errorf("%s: failed %v, want %v", tc.name, got, tc.failed)
		}
		for _, ip := range tc.failed {
			if got[ip] == nil {
				t.Errorf("%s: %s not failed", tc.name, ip)
			}
		}
		if tc.mode == announce.EBPF && len(dp.synced) != len(want) {
			t.Errorf("%s: synced %v, want every service", tc.name, dp.synced)
		}
	}
}

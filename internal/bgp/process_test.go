// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/netlab"
)

// GoBGP dials from its own goroutines, and Go cannot keep those in a namespace, so the
// speaker under test runs in a child process started inside the speaker's namespace: this
// test binary again, with speakerProcessEnv set, driven by JSON lines on stdin/stdout.
const speakerProcessEnv = "MAGLB_BGP_SPEAKER_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(speakerProcessEnv) == "1" {
		if err := serveSpeaker(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type request struct {
	Op       string // "peers", "routes", "status", "close"
	Peers    []config.Peer
	RouterID netip.Addr
	Routes   []announce.Route
}

type response struct {
	Error   string
	Peers   []bgp.PeerStatus
	Metrics map[string]float64 // `name{peer="...",...}` → value, for the metallb_bgp_* and metallb_bfd_* metrics
}

func serveSpeaker() error {
	speaker, err := bgp.New(log.NewLogfmtLogger(os.Stderr), bgp.Options{ListenPort: -1})
	if err != nil {
		return err
	}
	ctx := context.Background()
	return netlab.ServeChild(func(req request) (any, bool) {
		var resp response
		var err error
		switch req.Op {
		case "peers":
			err = speaker.SetPeers(ctx, req.Peers, req.RouterID)
		case "routes":
			err = speaker.SetRoutes(ctx, req.Routes)
		case "status":
			resp.Peers = speaker.Peers()
			resp.Metrics, err = gatherMetrics()
		case "close":
			err = speaker.Close(ctx)
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		if err != nil {
			resp.Error = err.Error()
		}
		return resp, req.Op == "close"
	})
}

func gatherMetrics() (map[string]float64, error) {
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	metrics := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "metallb_bgp_") && !strings.HasPrefix(f.GetName(), "metallb_bfd_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			metrics[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return metrics, nil
}

// speakerProcess drives a speaker running in a namespace.
type speakerProcess struct {
	t     *testing.T
	child *netlab.Child
}

// startSpeaker starts a speaker process in ns; it is killed at cleanup, and its log shown if
// the test failed.
func startSpeaker(t *testing.T, ns *netlab.Namespace) *speakerProcess {
	t.Helper()
	return &speakerProcess{t: t, child: netlab.StartChild(t, ns, speakerProcessEnv, "speaker")}
}

func (p *speakerProcess) mustSucceed(req request) response {
	p.t.Helper()
	var resp response
	p.child.Call(req, &resp)
	if resp.Error != "" {
		p.t.Fatalf("speaker %s: %s", req.Op, resp.Error)
	}
	return resp
}

func (p *speakerProcess) setPeers(routerID netip.Addr, peers ...config.Peer) {
	p.t.Helper()
	p.mustSucceed(request{Op: "peers", Peers: peers, RouterID: routerID})
}

func (p *speakerProcess) setRoutes(routes ...announce.Route) {
	p.t.Helper()
	p.mustSucceed(request{Op: "routes", Routes: routes})
}

func (p *speakerProcess) status() response {
	p.t.Helper()
	return p.mustSucceed(request{Op: "status"})
}

// close closes the speaker and waits for its process to exit.
func (p *speakerProcess) close() {
	p.t.Helper()
	p.mustSucceed(request{Op: "close"})
	if err := p.child.Wait(10 * time.Second); err != nil {
		p.t.Fatal(err)
	}
}

func (p *speakerProcess) kill() { p.child.Kill() }

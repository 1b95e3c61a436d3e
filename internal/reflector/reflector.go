// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
)

// State is the cluster as the reflector sees it.
type State struct {
	Config   *config.Config
	Nodes    []announce.Node
	Self     announce.Node // the reflector's node
	Services []announce.Service
}

// Reflector keeps the sessions and paths of a reflector-mode bgp.Speaker those that
// Sessions and Aggregate derive from the State and the routes the clients announce.
type Reflector struct {
	logger  log.Logger
	speaker *bgp.Speaker
	kick    chan struct{}

	mu       sync.Mutex
	state    State
	upstream []string
}

// New returns a Reflector driving speaker, which must run with Options.Reflector.
func New(logger log.Logger, speaker *bgp.Speaker) *Reflector {
	return &Reflector{logger: logger, speaker: speaker, kick: make(chan struct{}, 1)}
}

// SetState applies st: the sessions at once, the paths on Run's next pass.
func (r *Reflector) SetState(ctx context.Context, st State) error {
	upstream, clients := Sessions(st.Config, st.Nodes, st.Self)
	i := slices.IndexFunc(st.Self.Addrs, netip.Addr.Is4)
	if i < 0 {
		return errors.New("the reflector's node has no IPv4 address for a router ID")
	}
	// The clients first: a new upstream peer receives the paths as soon as it is up.
	errs := []error{r.speaker.SetClients(ctx, clients), r.speaker.SetPeers(ctx, upstream, st.Self.Addrs[i])}
	names := make([]string, len(upstream))
	for i, p := range upstream {
		names[i] = p.Name
	}
	r.mu.Lock()
	r.state, r.upstream = st, names
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// Run announces Aggregate's paths after every change of the State or of the received
// routes, until ctx ends.
func (r *Reflector) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-r.speaker.ReceivedChanged():
		}
		r.mu.Lock()
		in := Input{Config: r.state.Config, Services: r.state.Services, Upstream: r.upstream}
		r.mu.Unlock()
		if in.Config == nil {
			continue
		}
		in.Received = r.speaker.Received()
		paths := Aggregate(in)
		if err := r.speaker.SetPaths(ctx, paths); err != nil {
			level.Error(r.logger).Log("op", "announce", "error", err)
		}
		recordPass(in.Received, paths)
	}
}

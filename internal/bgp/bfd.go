// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/maglb/maglb/internal/config"
)

// GoBGP's BFD is RFC 5880 asynchronous mode over single-hop UDP (RFC 5881): no echo
// function, no passive role, no multi-hop sessions (RFC 5883), and it checks no TTL of
// received packets. A BFDProfile maps onto it as FRR, upstream's BFD, reads it: the
// intervals in milliseconds, the detect multiplier. minimumTtl only applies to multi-hop
// sessions in FRR too, so single-hop peers lose nothing by it.

// Ignored returns, in upstream's wording, what the speaker ignores of the configuration's
// peers; everything else of those peers applies.
func Ignored(cfg *config.Config) []string {
	var ignored []string
	for _, name := range slices.Sorted(maps.Keys(cfg.Peers)) {
		ignored = append(ignored, ignoredOf(*cfg.Peers[name])...)
	}
	return ignored
}

func ignoredOf(p config.Peer) []string {
	id := p.Addr.String()
	if !p.Addr.IsValid() {
		id = p.Interface
	}
	var ignored []string
	if p.HoldTime == 0 {
		ignored = append(ignored, fmt.Sprintf("peer %s has holdTime 0 set on native bgp mode, GoBGP cannot send it: the hold time is %ds", id, gobgpDefaultHoldTime))
	}
	if p.BFD == nil {
		return ignored
	}
	if p.EBGPMultiHop {
		return append(ignored, fmt.Sprintf("peer %s has bfd-profile %s set with ebgp-multihop on native bgp mode, which has single-hop bfd only: bfd is off for this peer", id, p.BFD.Name))
	}
	if p.BFD.EchoMode {
		ignored = append(ignored, fmt.Sprintf("peer %s has bfd-profile %s with echo-mode set on native bgp mode, ignored", id, p.BFD.Name))
	}
	if p.BFD.PassiveMode {
		ignored = append(ignored, fmt.Sprintf("peer %s has bfd-profile %s with passive-mode set on native bgp mode, ignored", id, p.BFD.Name))
	}
	return ignored
}

// gobgpDefaultHoldTime is what GoBGP uses when asked for a hold time of 0.
const gobgpDefaultHoldTime = 90

// bfdConfig is GoBGP's BFD configuration for p, nil when the session runs without BFD.
func bfdConfig(p config.Peer) *api.BfdPeerConfig {
	if p.BFD == nil || p.EBGPMultiHop {
		return nil
	}
	return &api.BfdPeerConfig{
		Enabled:                  true,
		DesiredMinimumTxInterval: p.BFD.TransmitInterval * 1000, // microseconds
		RequiredMinimumReceive:   p.BFD.ReceiveInterval * 1000,
		DetectionMultiplier:      p.BFD.DetectMultiplier,
	}
}

// bfdWatchPeriod is how often the BFD session states are read to count their changes,
// which GoBGP does not count: a session down and up again within it counts no event.
const bfdWatchPeriod = 20 * time.Millisecond

// BFDStatus is the state of the BFD session with one peer, by address.
type BFDStatus struct {
	Addr                  string
	Up                    bool
	PacketsIn, PacketsOut uint64
	UpEvents, DownEvents  uint64
}

// bfdWatch counts the up and down transitions of each BFD session.
type bfdWatch struct {
	mu       sync.Mutex
	sessions map[string]*BFDStatus // by peer address
}

// run reads the BFD sessions of server every bfdWatchPeriod until ctx ends.
func (w *bfdWatch) run(ctx context.Context, list func(context.Context, func(string, *api.BfdPeerState))) {
	ticker := time.NewTicker(bfdWatchPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		seen := map[string]bool{}
		w.mu.Lock()
		list(ctx, func(addr string, st *api.BfdPeerState) {
			seen[addr] = true
			s := w.sessions[addr]
			if s == nil {
				s = &BFDStatus{Addr: addr}
				w.sessions[addr] = s
			}
			up := st.SessionState == api.BfdSessionState_BFD_SESSION_STATE_UP
			switch {
			case up && !s.Up:
				s.UpEvents++
			case !up && s.Up:
				s.DownEvents++
			}
			s.Up = up
			if c := st.BfdAsync; c != nil {
				s.PacketsIn, s.PacketsOut = c.ReceivedPackets, c.TransmittedPackets
			}
		})
		// A session GoBGP restarts (a changed profile) may be missing for a moment: it
		// went down, and keeps its counts.
		for addr, s := range w.sessions {
			if !seen[addr] && s.Up {
				s.Up = false
				s.DownEvents++
			}
		}
		w.mu.Unlock()
	}
}

// keep forgets the sessions with peers not in addrs.
func (w *bfdWatch) keep(addrs map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for addr := range w.sessions {
		if !addrs[addr] {
			delete(w.sessions, addr)
		}
	}
}

// statuses returns the BFD sessions, by address.
func (w *bfdWatch) statuses() []BFDStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]BFDStatus, 0, len(w.sessions))
	for _, s := range w.sessions {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b BFDStatus) int { return cmp.Compare(a.Addr, b.Addr) })
	return out
}

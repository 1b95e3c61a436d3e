// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"errors"
	"net/netip"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	api "github.com/osrg/gobgp/v4/api"

	"github.com/maglb/maglb/internal/config"
)

const (
	// gracefulRestartTime is how long a peer keeps our routes while we restart: FRR's default.
	gracefulRestartTime = 120
	// selectionDeferralTime bounds how long a restarted speaker waits for its peers'
	// End-of-RIB before announcing.
	selectionDeferralTime = 30
	// retryTime is the delay between connection attempts, and before reconnecting after a
	// session went down; GoBGP's defaults (120s, 30s) keep a peer down for minutes.
	retryTime   = 5
	defaultPort = 179
	// addPathSendMax is how many paths of a prefix a reflector sends with ADD-PATH: one
	// per LB node of a shard.
	addPathSendMax = 255
)

// session is a configured peer, as GoBGP and the export policy need it.
type session struct {
	peer   *api.Peer // without BFD, which runs only while the session is established
	bfd    *api.BfdPeerConfig
	export exportPeer
}

// newSession checks that p can be honoured and converts it. GoBGP cannot follow the peer's
// ASN (dynamicASN), run unnumbered (interface), in a VRF, or with a local-as override; the
// configuration validator rejects those in native mode already. What it ignores of a BFD
// profile is reported by Ignored.
func newSession(logger log.Logger, p config.Peer) (session, error) {
	switch {
	case p.DynamicASN != "":
		return session{}, errors.New("dynamicASN is not supported")
	case p.Interface != "":
		return session{}, errors.New("interface is not supported")
	case p.VRF != "":
		return session{}, errors.New("vrf is not supported")
	case p.LocalASN != 0:
		return session{}, errors.New("localASN is not supported")
	case !p.Addr.IsValid():
		return session{}, errors.New("no peer address")
	case p.ASN == 0 || p.MyASN == 0:
		return session{}, errors.New("peer ASN and local ASN are required")
	}
	addr := p.Addr.Unmap()
	ibgp := p.MyASN == p.ASN
	families := []*api.Family{familyOf(addr)}
	var crossNextHop netip.Addr
	if p.DualStackAddressFamily {
		nh, err := crossFamilyNextHop(addr, p.SrcAddr.Unmap())
		if err != nil {
			level.Warn(logger).Log("peer", p.Name, "op", "dualStackAddressFamily", "error", err,
				"msg", "announcing only the session's address family")
		} else {
			crossNextHop = nh
			families = append(families, familyOf(nh))
		}
	}
	var afiSafis []*api.AfiSafi
	for _, f := range families {
		afiSafis = append(afiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: p.EnableGracefulRestart}},
		})
	}
	connectRetry := uint64(retryTime)
	if p.ConnectTime > 0 {
		connectRetry = uint64(max(p.ConnectTime/time.Second, 1))
	}
	port := uint32(p.Port)
	if port == 0 {
		port = defaultPort
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: addr.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.MyASN,
			AuthPassword:    p.Password,
			Description:     p.Name,
		},
		Transport: &api.Transport{RemotePort: port},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               uint64(p.HoldTime / time.Second),
			KeepaliveInterval:      uint64(p.KeepaliveTime / time.Second),
			ConnectRetry:           connectRetry,
			IdleHoldTimeAfterReset: retryTime,
		}},
		AfiSafis: afiSafis,
	}
	if p.SrcAddr.IsValid() {
		peer.Transport.LocalAddress = p.SrcAddr.Unmap().String()
	}
	if p.EBGPMultiHop {
		peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if p.EnableGracefulRestart {
		peer.GracefulRestart = &api.GracefulRestart{
			Enabled:      true,
			RestartTime:  gracefulRestartTime,
			DeferralTime: selectionDeferralTime,
			// Every session of a new speaker may follow a restart: announce it (Restart
			// State and Forwarding State bits), so the peer keeps the stale routes until
			// our End-of-RIB rather than dropping them when the new session opens.
			LocalRestarting: true,
		}
	}
	return session{
		peer:   peer,
		bfd:    bfdConfig(p),
		export: exportPeer{name: p.Name, addr: addr, ibgp: ibgp, crossFamilyNextHop: crossNextHop},
	}, nil
}

// carries tells whether the session announces prefixes of prefix's family.
func (s session) carries(prefix netip.Prefix) bool {
	return s.export.addr.Is4() == prefix.Addr().Is4() || s.export.crossFamilyNextHop.IsValid()
}

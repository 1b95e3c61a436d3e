// SPDX-License-Identifier: Apache-2.0

package config

import (
	"net/netip"
	"time"

	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	defaultBGPPort  = 179 // the CRD's default, for objects that did not go through the API server
	defaultHoldTime = 90 * time.Second
)

func peersFor(crs []metallbv1beta2.BGPPeer, secrets map[string]corev1.Secret, bfdProfiles map[string]*BFDProfile) (map[string]*Peer, error) {
	peers := make(map[string]*Peer, len(crs))
	for _, cr := range crs {
		obj := objectRef{"bgppeer", cr.Name}
		peer, err := peerFromCR(obj, cr, secrets)
		if err != nil {
			return nil, err
		}
		if peer.BFDProfile != "" {
			if peer.BFD = bfdProfiles[peer.BFDProfile]; peer.BFD == nil {
				return nil, obj.transientf("spec.bfdProfile", "peer %s referencing non existing bfd profile %s", cr.Name, peer.BFDProfile)
			}
		}
		if _, ok := peers[cr.Name]; ok {
			return nil, obj.errorf("metadata.name", "peer %s already exists", cr.Name)
		}
		peers[cr.Name] = peer
	}
	return peers, nil
}

func peerFromCR(obj objectRef, cr metallbv1beta2.BGPPeer, secrets map[string]corev1.Secret) (*Peer, error) {
	spec := cr.Spec
	switch {
	case spec.MyASN == 0:
		return nil, obj.errorf("spec.myASN", "missing local ASN")
	case spec.ASN == 0 && spec.DynamicASN == "":
		return nil, obj.errorf("spec.peerASN", "missing peer ASN and dynamicASN")
	case spec.ASN != 0 && spec.DynamicASN != "":
		return nil, obj.errorf("spec.dynamicASN", "both peer ASN and dynamicASN specified")
	case spec.DynamicASN != "" && spec.DynamicASN != metallbv1beta2.InternalASNMode && spec.DynamicASN != metallbv1beta2.ExternalASNMode:
		return nil, obj.errorf("spec.dynamicASN", "invalid dynamicASN %s", spec.DynamicASN)
	case spec.ASN == spec.MyASN && spec.EBGPMultiHop:
		return nil, obj.errorf("spec.ebgpMultiHop", "invalid ebgp-multihop parameter set for an ibgp peer")
	case spec.Address == "" && spec.Interface == "":
		return nil, obj.errorf("spec.peerAddress", "peer has no Address or Interface specified")
	case spec.Address != "" && spec.Interface != "":
		return nil, obj.errorf("spec.interface", "peer has both Address and Interface specified")
	}

	peer := &Peer{
		Name:                   cr.Name,
		MyASN:                  spec.MyASN,
		ASN:                    spec.ASN,
		DynamicASN:             spec.DynamicASN,
		LocalASN:               spec.LocalASN,
		Interface:              spec.Interface,
		Port:                   spec.Port,
		BFDProfile:             spec.BFDProfile,
		EnableGracefulRestart:  spec.EnableGracefulRestart,
		EBGPMultiHop:           spec.EBGPMultiHop,
		VRF:                    spec.VRFName,
		DualStackAddressFamily: spec.DualStackAddressFamily,
		DisableMP:              spec.DisableMP,
	}
	if peer.Port == 0 {
		peer.Port = defaultBGPPort
	}
	if spec.ConnectTime != nil {
		peer.ConnectTime = spec.ConnectTime.Duration
	}
	var err error
	if peer.HoldTime, peer.KeepaliveTime, err = peerTimers(obj, spec.HoldTime, spec.KeepaliveTime); err != nil {
		return nil, err
	}

	// Empty optional addresses stay the zero Addr.
	for _, a := range []struct {
		field, format, value string
		dst                  *netip.Addr
	}{
		{"spec.peerAddress", "invalid BGPPeer address %q", spec.Address, &peer.Addr},
		{"spec.routerID", "invalid router ID %q", spec.RouterID, &peer.RouterID},
		{"spec.sourceAddress", "invalid source IP %q", spec.SrcAddress, &peer.SrcAddr},
	} {
		if a.value == "" {
			continue
		}
		addr, ok := parseAddr(a.value)
		if !ok {
			return nil, obj.errorf(a.field, a.format, a.value)
		}
		*a.dst = addr
	}

	if peer.NodeSelectors, err = selectorsFromCR(obj, "spec.nodeSelectors", "node selector", spec.NodeSelectors); err != nil {
		return nil, err
	}
	if len(peer.NodeSelectors) == 0 {
		peer.NodeSelectors = []labels.Selector{labels.Everything()}
	}

	peer.Password = spec.Password
	if spec.PasswordSecret.Name != "" {
		// Checked before looking the secret up, so this stays an error even while the
		// secret is missing.
		if spec.Password != "" {
			return nil, obj.errorf("spec.passwordSecret", "can not have both password and secret ref set in peer config %q/%q", cr.Namespace, cr.Name)
		}
		if peer.Password, err = passwordFromSecret(obj, cr, secrets); err != nil {
			return nil, err
		}
	}
	return peer, nil
}

// peerTimers resolves the hold and keepalive times: each defaults from the other, both
// from a 90s hold time.
func peerTimers(obj objectRef, hold, keepalive *metav1.Duration) (time.Duration, time.Duration, error) {
	holdTime, keepaliveTime, holdField := defaultHoldTime, defaultHoldTime/3, "spec.holdTime"
	switch {
	case hold != nil && keepalive != nil:
		holdTime, keepaliveTime = hold.Duration, keepalive.Duration
	case hold != nil:
		holdTime, keepaliveTime = hold.Duration, hold.Duration/3
	case keepalive != nil:
		holdTime, keepaliveTime, holdField = 3*keepalive.Duration, keepalive.Duration, "spec.keepaliveTime"
	}
	// BGP carries the hold time in whole seconds: 0 turns keepalives off, anything else
	// must be at least 3 (RFC 4271).
	if seconds := holdTime.Truncate(time.Second); seconds != 0 && seconds < 3*time.Second {
		return 0, 0, obj.errorf(holdField, "invalid BGPPeer timers: invalid hold time %q: must be 0 or >=3s", holdTime)
	}
	if keepaliveTime > holdTime {
		return 0, 0, obj.errorf("spec.keepaliveTime", "invalid BGPPeer timers: invalid keepaliveTime %q, must be lower than holdTime %q", keepaliveTime, holdTime)
	}
	return holdTime, keepaliveTime, nil
}

// passwordFromSecret reads the password of the basic-auth secret the peer names. A
// missing secret is transient: it may be created after the peer.
func passwordFromSecret(obj objectRef, cr metallbv1beta2.BGPPeer, secrets map[string]corev1.Secret) (string, error) {
	const field = "spec.passwordSecret"
	secret, ok := secrets[cr.Spec.PasswordSecret.Name]
	if !ok {
		return "", obj.transientf(field, "secret ref not found for peer config %q/%q", cr.Namespace, cr.Name)
	}
	if secret.Type != corev1.SecretTypeBasicAuth {
		return "", obj.errorf(field, "secret type mismatch on %q/%q, type %q is expected", secret.Namespace, secret.Name, corev1.SecretTypeBasicAuth)
	}
	password, ok := secret.Data[corev1.BasicAuthPasswordKey]
	if !ok {
		return "", obj.errorf(field, "password not specified in the secret %q/%q", secret.Namespace, secret.Name)
	}
	return string(password), nil
}

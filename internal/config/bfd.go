// SPDX-License-Identifier: Apache-2.0

package config

import (
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
)

func bfdProfilesFor(crs []metallbv1beta1.BFDProfile) (map[string]*BFDProfile, error) {
	profiles := make(map[string]*BFDProfile, len(crs))
	for _, cr := range crs {
		obj := objectRef{"bfdprofile", cr.Name}
		profile, err := bfdProfileFromCR(obj, cr)
		if err != nil {
			return nil, err
		}
		if _, ok := profiles[cr.Name]; ok {
			return nil, obj.errorf("metadata.name", "found duplicate bfd profile name %s", cr.Name)
		}
		profiles[cr.Name] = profile
	}
	return profiles, nil
}

// bfdProfileFromCR checks the ranges upstream allows and applies the defaults the CRD
// documents; the detect multiplier and minimum TTL default as in FRR, which upstream
// leaves them to.
func bfdProfileFromCR(obj objectRef, cr metallbv1beta1.BFDProfile) (*BFDProfile, error) {
	if cr.Name == "" {
		return nil, obj.errorf("metadata.name", "missing bfd profile name")
	}
	profile := &BFDProfile{Name: cr.Name}
	for _, f := range []struct {
		field, what   string
		value         *uint32
		min, max, def uint32
		dst           *uint32
	}{
		{"spec.detectMultiplier", "detect multiplier", cr.Spec.DetectMultiplier, 2, 255, 3, &profile.DetectMultiplier},
		{"spec.receiveInterval", "receive interval", cr.Spec.ReceiveInterval, 10, 60000, 300, &profile.ReceiveInterval},
		{"spec.transmitInterval", "transmit interval", cr.Spec.TransmitInterval, 10, 60000, 300, &profile.TransmitInterval},
		{"spec.minimumTtl", "minimum ttl", cr.Spec.MinimumTTL, 1, 254, 254, &profile.MinimumTTL},
		{"spec.echoInterval", "echo interval", cr.Spec.EchoInterval, 10, 60000, 50, &profile.EchoInterval},
	} {
		*f.dst = f.def
		if f.value == nil {
			continue
		}
		if *f.value < f.min || *f.value > f.max {
			return nil, obj.errorf(f.field, "invalid %s value: invalid value %d, must be in %d-%d range", f.what, *f.value, f.min, f.max)
		}
		*f.dst = *f.value
	}
	if cr.Spec.EchoMode != nil {
		profile.EchoMode = *cr.Spec.EchoMode
	}
	if cr.Spec.PassiveMode != nil {
		profile.PassiveMode = *cr.Spec.PassiveMode
	}
	return profile, nil
}

// SPDX-License-Identifier: Apache-2.0

package webhookcert

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

func TestServes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	service := Subject{DNSNames: []string{"metallb-webhook-service.metallb-system.svc"}}
	bundle, err := Generate(service, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(bundle.Cert, bundle.Key); err != nil {
		t.Fatalf("serving pair does not load: %v", err)
	}
	other, err := Generate(service, now)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		bundle  Bundle
		subject Subject
		at      time.Time
		want    bool
	}{
		{"fresh, same name", bundle, service, now, true},
		{"another name", bundle, Subject{DNSNames: []string{"other.metallb-system.svc"}}, now, false},
		{"an IP it does not carry", bundle, Subject{IPs: []net.IP{net.ParseIP("127.0.0.1")}}, now, false},
		{"within the renewal margin", bundle, service, now.Add(servingValidity - renewBefore/2), false},
		{"just before the renewal margin", bundle, service, now.Add(servingValidity - renewBefore - time.Hour), true},
		{"signed by another CA", Bundle{CA: other.CA, Cert: bundle.Cert, Key: bundle.Key}, service, now, false},
		{"empty", Bundle{}, service, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.bundle.Serves(tc.subject, tc.at); got != tc.want {
				t.Errorf("Serves = %v, want %v", got, tc.want)
			}
		})
	}

	ipBundle, err := Generate(Subject{IPs: []net.IP{net.ParseIP("127.0.0.1")}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ipBundle.Serves(Subject{IPs: []net.IP{net.ParseIP("127.0.0.1")}}, now) {
		t.Error("a certificate for 127.0.0.1 does not serve 127.0.0.1")
	}
}

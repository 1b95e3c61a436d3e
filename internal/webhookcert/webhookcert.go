// SPDX-License-Identifier: Apache-2.0

// Package webhookcert manages the self-signed TLS the webhook server uses when no certificate
// is passed in: a CA and a serving certificate kept in a Secret, so replicas and restarts share
// them, renewed when they near expiry or no longer name the server.
package webhookcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	caValidity      = 10 * 365 * 24 * time.Hour
	servingValidity = 365 * 24 * time.Hour
	// renewBefore leaves time for every replica to pick up a renewed certificate.
	renewBefore = 30 * 24 * time.Hour

	caCertKey = "ca.crt"
)

// Bundle is a CA and a serving certificate it signed, PEM encoded.
type Bundle struct {
	CA, Cert, Key []byte
}

// Subject names the server a certificate is for.
type Subject struct {
	DNSNames []string
	IPs      []net.IP
}

// Generate creates a new CA and a serving certificate for subject, valid from now.
func Generate(subject Subject, now time.Time) (Bundle, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "maglb-webhook-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return Bundle{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Bundle{}, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	commonName := "maglb-webhook"
	if len(subject.DNSNames) > 0 {
		commonName = subject.DNSNames[0]
	}
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     subject.DNSNames,
		IPAddresses:  subject.IPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(servingValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, caKey)
	if err != nil {
		return Bundle{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Bundle{}, err
	}
	return Bundle{
		CA:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// Serves reports whether b's serving certificate chains to its CA, names every entry of
// subject and stays valid for longer than the renewal margin after now.
func (b Bundle) Serves(subject Subject, now time.Time) bool {
	cert, err := parseCert(b.Cert)
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CA) {
		return false
	}
	opts := x509.VerifyOptions{Roots: pool, CurrentTime: now.Add(renewBefore)}
	if _, err := cert.Verify(opts); err != nil {
		return false
	}
	for _, name := range subject.DNSNames {
		if cert.VerifyHostname(name) != nil {
			return false
		}
	}
	for _, ip := range subject.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// Ensure returns the bundle stored in the Secret key, replacing it with a new one when it does
// not serve subject, and writes the serving pair to certDir as tls.crt and tls.key.
func Ensure(ctx context.Context, c client.Client, key types.NamespacedName, subject Subject, certDir string) (Bundle, error) {
	bundle, err := ensureSecret(ctx, c, key, subject, time.Now())
	if err != nil {
		return Bundle{}, fmt.Errorf("webhook certificate in secret %s: %w", key, err)
	}
	return bundle, WriteServingPair(bundle, certDir)
}

// WriteServingPair writes tls.crt and tls.key, the names controller-runtime's webhook server
// loads, rewriting them only when they changed (its certificate watcher reloads on change).
func WriteServingPair(b Bundle, certDir string) error {
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{corev1.TLSCertKey: b.Cert, corev1.TLSPrivateKeyKey: b.Key} {
		path := filepath.Join(certDir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func ensureSecret(ctx context.Context, c client.Client, key types.NamespacedName, subject Subject, now time.Time) (Bundle, error) {
	var secret corev1.Secret
	err := c.Get(ctx, key, &secret)
	switch {
	case apierrors.IsNotFound(err):
		secret = corev1.Secret{}
		secret.Name, secret.Namespace = key.Name, key.Namespace
	case err != nil:
		return Bundle{}, err
	}
	stored := Bundle{CA: secret.Data[caCertKey], Cert: secret.Data[corev1.TLSCertKey], Key: secret.Data[corev1.TLSPrivateKeyKey]}
	if stored.Serves(subject, now) {
		return stored, nil
	}
	fresh, err := Generate(subject, now)
	if err != nil {
		return Bundle{}, err
	}
	secret.Type = corev1.SecretTypeOpaque
	secret.Data = map[string][]byte{caCertKey: fresh.CA, corev1.TLSCertKey: fresh.Cert, corev1.TLSPrivateKeyKey: fresh.Key}
	if secret.ResourceVersion == "" {
		err = c.Create(ctx, &secret)
	} else {
		err = c.Update(ctx, &secret)
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// Another replica wrote it first: use theirs.
		return ensureSecret(ctx, c, key, subject, now)
	}
	return fresh, err
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

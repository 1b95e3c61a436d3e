#!/usr/bin/env bash
# Builds the helm binary from the Go module proxy into $OUT, for the tests that render the chart
# (charts/) with Helm itself.
#   HELM_VERSION=3.22.0 OUT=<dir> hack/build-helm.sh
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-3.22.0}
OUT=${OUT:?OUT must name the output directory}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
printf '[helm] building helm v%s (a cold build takes a few minutes)\n' "$HELM_VERSION"
# Outside any module, so that go.mod of this repository plays no part.
cd "$(mktemp -d)"
# As helm's release builds: its version, and the Kubernetes version `helm template` assumes is
# that of the client-go it is built with (else v1.20).
GOMOD=$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
K8S_MINOR=$(awk '$1=="k8s.io/client-go"{split($2, v, "."); print v[2]; exit}' "$GOMOD")
GOBIN="$OUT/.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w \
	-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR" \
	"helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
mv -f "$OUT/.tmp/helm" "$OUT/helm"
rmdir "$OUT/.tmp"
"$OUT/helm" version --short

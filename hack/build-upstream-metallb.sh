#!/usr/bin/env bash
# Builds upstream MetalLB's controller and speaker from the go.universe.tf/metallb module into
# $OUT, for the differential tests and benchmarks that run them beside MagLB's. v0.15.2 needs
# github.com/metallb/frr-k8s pinned to v0.0.21, the newest version the module proxy serves.
#   METALLB_VERSION=0.15.2 OUT=<dir> WORK=<dir> hack/build-upstream-metallb.sh
set -euo pipefail
METALLB_VERSION=${METALLB_VERSION:-0.15.2}
OUT=${OUT:?OUT must name the output directory}
WORK=${WORK:-$OUT/../build}
export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
cd "$WORK"

step() { printf '[upstream-metallb] %s\n' "$*"; }

cat >go.mod <<MOD
module maglbupstreammetallb

go 1.26

require go.universe.tf/metallb v$METALLB_VERSION

replace github.com/metallb/frr-k8s => github.com/metallb/frr-k8s v0.0.21
MOD
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
GO
step "resolving go.universe.tf/metallb v$METALLB_VERSION"
go mod tidy
for component in controller speaker; do
	step "building the $component"
	go build -trimpath -ldflags "-s -w" -o "$OUT/metallb-$component" "go.universe.tf/metallb/$component"
	step "built $OUT/metallb-$component"
done

#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, kube-proxy, etcd and etcdctl from the Go module proxy into $OUT.
# Kubernetes' staging modules are pinned through replace directives, so `go install pkg@version`
# refuses them; a throwaway module that requires k8s.io/kubernetes and replaces every staging
# module by its published version builds them instead.
#   K8S_VERSION=1.37.2 OUT=<dir> WORK=<dir> hack/build-k8s-bins.sh
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.37.2}
OUT=${OUT:?OUT must name the output directory}
WORK=${WORK:-$OUT/../build}
STAGING=v0.${K8S_VERSION#1.}
MINOR=$(cut -d. -f2 <<<"$K8S_VERSION")
export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
cd "$WORK"

step() { printf '[k8s-bins] %s\n' "$*"; }

step "resolving k8s.io/kubernetes v$K8S_VERSION"
KUBE_GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
# etcd at the version kubernetes pins for its client, so MVS bumps nothing else.
ETCD_VERSION=$(awk '$1=="go.etcd.io/etcd/client/v3"{print $2; exit}' "$KUBE_GOMOD")

{
	printf 'module maglbk8sbins\n\ngo 1.26\n\nrequire (\n'
	printf '\tk8s.io/kubernetes v%s\n\tgo.etcd.io/etcd/server/v3 %s\n\tgo.etcd.io/etcd/etcdctl/v3 %s\n)\n\nreplace (\n' \
		"$K8S_VERSION" "$ETCD_VERSION" "$ETCD_VERSION"
	sed -n '/^replace (/,/^)/p' "$KUBE_GOMOD" |
		awk -v v="$STAGING" '$2=="=>" && $3 ~ /^\.\/staging\// && $1 !~ /sample-/ {print "\t" $1 " => " $1 " " v}'
	printf ')\n'
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
step "downloading modules (etcd $ETCD_VERSION; the first run fetches ~750 MB)"
go mod tidy

# Stamp the version the way release builds do, so `kubectl version` reports it.
LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LDFLAGS="$LDFLAGS -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
done
# Each binary is written beside its final name and renamed into place, so an interrupted build
# never leaves a truncated binary that looks usable.
build() { # name ldflags package
	go build -trimpath -ldflags "$2" -o "$OUT/.$1.tmp" "$3"
	mv -f "$OUT/.$1.tmp" "$OUT/$1"
}
for target in kube-apiserver kube-controller-manager kubectl kube-proxy; do
	step "building $target (a cold build takes minutes)"
	build "$target" "$LDFLAGS" "k8s.io/kubernetes/cmd/$target"
done
step "building etcd and etcdctl $ETCD_VERSION"
build etcd "-s -w" go.etcd.io/etcd/server/v3
build etcdctl "-s -w" go.etcd.io/etcd/etcdctl/v3
"$OUT/kube-apiserver" --version
"$OUT/etcd" --version | sed -n 1p

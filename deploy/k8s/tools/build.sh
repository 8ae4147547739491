#!/usr/bin/env bash
# Builds the Kubernetes test binaries (kube-apiserver, etcd, kubectl, helm)
# from the Go module proxy into "$KDS_K8S_CACHE_DIR/bin".
#
#   deploy/k8s/tools/build.sh [--check|--print-bin-dir|--versions] [COMPONENT...]
#
# COMPONENT is any of: kube-apiserver kubectl etcd helm (default: all).
#   --check          build nothing; exit 0 if the components are built at the
#                    pinned versions, 3 (listing what is missing) otherwise
#   --print-bin-dir  print the bin dir and exit
#   --versions       print "COMPONENT VERSION" lines for the pinned versions
# Only Go is needed; the builds happen in scratch modules under
# "$KDS_K8S_CACHE_DIR/src", never in the repository's module.
# A binary is skipped when it exists and its stamp file records the pinned
# version (and build recipe), so reruns take a second.  Safe to run
# concurrently: builds are serialised with a lock file (flock, when present).
#
# Environment:
#   KDS_K8S_CACHE_DIR  cache root (default ~/.cache/kds-lease-manager/k8s)
#   KDS_K8S_BUILD_P    value for `go build -p` (default: Go's default)
#
# The last line on stdout is always the bin dir (progress goes to stderr).
set -euo pipefail

# ---- pinned versions: the only place to change them -----------------------
K8S_VERSION=v1.37.2      # k8s.io/kubernetes; staging modules at v0.${minor}.${patch}
ETCD_VERSION=v3.7.3      # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.22.0     # helm.sh/helm/v3
# Bump when the way a binary is built changes, to force a rebuild.
RECIPE=1
# ---------------------------------------------------------------------------

CACHE_DIR="${KDS_K8S_CACHE_DIR:-$HOME/.cache/kds-lease-manager/k8s}"
BIN_DIR="$CACHE_DIR/bin"
SRC_DIR="$CACHE_DIR/src"
LOG_DIR="$CACHE_DIR/logs"

log() { printf '[k8s-tools] %s\n' "$*" >&2; }
die() { printf '[k8s-tools] ERROR: %s\n' "$*" >&2; exit 1; }

print_only=0 check_only=0
components=()
for a in "$@"; do
	case "$a" in
	--print-bin-dir) print_only=1 ;;
	--check) check_only=1 ;;
	--versions)
		printf '%s %s\n' kube-apiserver "$K8S_VERSION" kubectl "$K8S_VERSION" etcd "$ETCD_VERSION" helm "$HELM_VERSION"
		exit 0 ;;
	-h|--help) sed -n '2,23p' "$0"; exit 0 ;;
	kube-apiserver|kubectl|etcd|helm) components+=("$a") ;;
	*) die "unknown argument '$a' (want kube-apiserver, kubectl, etcd, helm or --print-bin-dir)" ;;
	esac
done
if [ "$print_only" = 1 ]; then echo "$BIN_DIR"; exit 0; fi
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver kubectl etcd helm)

stamp_want() { echo "$1 $2 recipe=$RECIPE"; }
is_current() { # name version
	[ -x "$BIN_DIR/$1" ] && [ -f "$BIN_DIR/.$1.stamp" ] &&
		[ "$(cat "$BIN_DIR/.$1.stamp")" = "$(stamp_want "$1" "$2")" ]
}
write_stamp() { stamp_want "$1" "$2" >"$BIN_DIR/.$1.stamp"; }
version_of() {
	case "$1" in
	kube-apiserver|kubectl) echo "$K8S_VERSION" ;;
	etcd) echo "$ETCD_VERSION" ;;
	helm) echo "$HELM_VERSION" ;;
	esac
}

if [ "$check_only" = 1 ]; then
	missing=()
	for c in "${components[@]}"; do
		is_current "$c" "$(version_of "$c")" || missing+=("$c $(version_of "$c")")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		for m in "${missing[@]}"; do echo "not built: $m (in $BIN_DIR)"; done
		exit 3
	fi
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go (1.26+) first"
mkdir -p "$BIN_DIR" "$SRC_DIR" "$LOG_DIR"

# Serialise concurrent runs (e.g. several test binaries starting at once).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$CACHE_DIR/.build.lock"
	if ! flock -n 9; then
		log "another build is running (lock $CACHE_DIR/.build.lock); waiting for it"
		flock 9
	fi
fi

# The scratch modules must not inherit settings meant for the repository.
unset GOWORK GOFLAGS
export GOFLAGS=-mod=mod
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

pflag=()
[ -n "${KDS_K8S_BUILD_P:-}" ] && pflag=(-p "$KDS_K8S_BUILD_P")

# run LOGNAME CMD...: runs a command with its output in a log file; on failure
# shows the tail of the log.
run() {
	local name=$1; shift
	local logf="$LOG_DIR/$name.log"
	if ! "$@" >"$logf" 2>&1; then
		log "FAILED: $*"
		tail -n 40 "$logf" >&2 || true
		die "$name failed (full log: $logf)"
	fi
}

elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# ---- kube-apiserver + kubectl ----------------------------------------------
build_kubernetes() {
	local want=()
	for c in kube-apiserver kubectl; do
		if printf '%s\n' "${components[@]}" | grep -qx "$c" && ! is_current "$c" "$K8S_VERSION"; then
			want+=("$c")
		fi
	done
	[ ${#want[@]} -gt 0 ] || return 0

	local v=${K8S_VERSION#v} major minor patch
	IFS=. read -r major minor patch <<<"$v"
	local staging_version="v0.${minor}.${patch}"
	local t0; t0=$(date +%s)
	local mod="$SRC_DIR/kubernetes-$K8S_VERSION"
	mkdir -p "$mod"

	if [ ! -f "$mod/.ready" ]; then
		log "preparing scratch module for k8s.io/kubernetes $K8S_VERSION (staging modules at $staging_version)"
		rm -f "$mod/go.mod" "$mod/go.sum"
		local gomod
		gomod=$(cd "$mod" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
		[ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
		# Every staging module is required at v0.0.0 and replaced by a local
		# path upstream; point each at its published version instead.
		local staging
		staging=$(awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$2=="v0.0.0"{print $1}' "$gomod")
		[ -n "$staging" ] || die "found no v0.0.0 requirements in $gomod"
		{
			echo "module kds.local/k8sbuild"
			echo
			echo "go 1.26.0"
			echo
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo
			echo "replace ("
			for s in $staging; do echo "	$s => $s $staging_version"; done
			echo ")"
		} >"$mod/go.mod"
		cat >"$mod/tools.go" <<-'EOF'
			//go:build tools

			package tools

			import (
				_ "k8s.io/kubernetes/cmd/kube-apiserver"
				_ "k8s.io/kubernetes/cmd/kubectl"
			)
		EOF
		log "resolving kubernetes dependencies ($(echo "$staging" | wc -l) staging modules replaced)"
		( cd "$mod" && run k8s-mod-tidy go mod tidy )
		touch "$mod/.ready"
	fi

	local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
	local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	local ld="-s -w"
	for p in $pkg $cgo; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean -X $p.buildDate=$date"
	done
	if printf '%s\n' "${want[@]}" | grep -qx kube-apiserver; then
		log "building ${want[*]} $K8S_VERSION (first time ~5-8 min on 2 cores, ~2.5 GB RAM; relink ~10 s)"
	else
		log "building ${want[*]} $K8S_VERSION (first time ~3-5 min)"
	fi
	local pkgs=()
	for c in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	local tmp; tmp=$(mktemp -d "$BIN_DIR/.tmp.XXXXXX")
	( cd "$mod" && CGO_ENABLED=0 run k8s-build go build "${pflag[@]}" -ldflags "$ld" -o "$tmp/" "${pkgs[@]}" )
	for c in "${want[@]}"; do
		mv -f "$tmp/$c" "$BIN_DIR/$c"
		write_stamp "$c" "$K8S_VERSION"
	done
	rmdir "$tmp"
	log "built ${want[*]} $K8S_VERSION in $(elapsed "$t0")"
}

# ---- etcd -------------------------------------------------------------------
build_etcd() {
	printf '%s\n' "${components[@]}" | grep -qx etcd || return 0
	is_current etcd "$ETCD_VERSION" && return 0
	local t0; t0=$(date +%s)
	local mod="$SRC_DIR/etcd-$ETCD_VERSION"
	mkdir -p "$mod"
	if [ ! -f "$mod/.ready" ]; then
		log "preparing scratch module for go.etcd.io/etcd/server/v3 $ETCD_VERSION"
		rm -f "$mod/go.sum"
		cat >"$mod/go.mod" <<-EOF
			module kds.local/etcdbuild

			go 1.26.0

			require go.etcd.io/etcd/server/v3 $ETCD_VERSION
		EOF
		# etcd's own main (module go.etcd.io/etcd/v3) uses local replaces and
		# cannot be built from the proxy; it is just this call.
		cat >"$mod/main.go" <<-'EOF'
			// Command etcd is the etcd server, built from the published module.
			package main

			import (
				"os"

				"go.etcd.io/etcd/server/v3/etcdmain"
			)

			func main() { etcdmain.Main(os.Args) }
		EOF
		( cd "$mod" && run etcd-mod-tidy go mod tidy )
		touch "$mod/.ready"
	fi
	log "building etcd $ETCD_VERSION (first time ~1 min)"
	( cd "$mod" && CGO_ENABLED=0 run etcd-build go build "${pflag[@]}" -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" . )
	mv -f "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
	write_stamp etcd "$ETCD_VERSION"
	log "built etcd $ETCD_VERSION in $(elapsed "$t0")"
}

# ---- helm -------------------------------------------------------------------
build_helm() {
	printf '%s\n' "${components[@]}" | grep -qx helm || return 0
	is_current helm "$HELM_VERSION" && return 0
	local t0; t0=$(date +%s)
	log "building helm $HELM_VERSION (first time ~1.5 min)"
	# `go install` alone leaves helm reporting "v3.22" and `helm template`
	# assuming Kubernetes v1.20; stamp them as helm's Makefile does (it uses
	# the minor of its client-go, v0.37 for helm v3.22, = our cluster's).
	local v=${K8S_VERSION#v} major minor patch
	IFS=. read -r major minor patch <<<"$v"
	local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
	ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
	local tmp; tmp=$(mktemp -d "$BIN_DIR/.tmp.XXXXXX")
	CGO_ENABLED=0 GOBIN="$tmp" run helm-install go install "${pflag[@]}" -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	mv -f "$tmp/helm" "$BIN_DIR/helm"
	rmdir "$tmp"
	write_stamp helm "$HELM_VERSION"
	log "built helm $HELM_VERSION in $(elapsed "$t0")"
}

build_etcd
build_helm
build_kubernetes

for c in "${components[@]}"; do
	[ -x "$BIN_DIR/$c" ] || die "$BIN_DIR/$c missing after build"
done
log "binaries ready in $BIN_DIR"
echo "$BIN_DIR"

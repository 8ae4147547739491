#!/usr/bin/env bash
# Remove the Helm release and its namespace (the workers drain and release on SIGTERM).
set -euo pipefail
MODE=k8s
source "$(dirname "$0")/common.sh"
helm uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 120s 2>/dev/null || echo "release $RELEASE: not installed"
kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=false

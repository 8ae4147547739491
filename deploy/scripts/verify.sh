#!/usr/bin/env bash
# Checks the prerequisites of MODE and says what is missing and how to get it.
set -uo pipefail
MODE=${MODE:-local}
missing=0
need() { # command, why, how
  if command -v "$1" >/dev/null 2>&1; then
    printf '  ok       %-10s %s\n' "$1" "$("$1" ${4:---version} 2>&1 | head -n 1)"
  else
    printf '  MISSING  %-10s needed for %s: %s\n' "$1" "$2" "$3"; missing=1
  fi
}
echo "prerequisites for MODE=$MODE:"
need go "building and testing" "install Go 1.26 (https://go.dev/dl)" version
need make "these targets" "apt-get install make"
if [ "$MODE" = local ]; then
  need node "the local Kinesis/DynamoDB engines" "install Node.js >= 18 (apt-get install nodejs)"
  need npm "installing the engines" "apt-get install npm"
else
  need docker "building the worker image" "install Docker (Minikube's docker-env also works)"
  need minikube "the local cluster" "install Minikube (https://minikube.sigs.k8s.io)" version
  need kubectl "talking to the cluster" "install kubectl, or 'minikube kubectl --'" "version --client"
  need helm "installing the chart" "install Helm 3.14 or later (or 'make k8s-tools' builds one into ~/.cache/kds-lease-manager/k8s/bin)" version
  # --reset-then-reuse-values (scaling, make helm-upgrade) came with Helm 3.14.
  if v=$(helm version --template '{{.Version}}' 2>/dev/null) && [[ $v =~ ^v3\.([0-9]+)\. ]] && ((BASH_REMATCH[1] < 14)); then
    printf '  OLD      %-10s %s: scaling uses helm upgrade --reset-then-reuse-values, which needs Helm 3.14 or later\n' helm "$v"; missing=1
  fi
fi
((missing)) && { echo "some prerequisites are missing (see above)"; exit 1; }
echo "all prerequisites present"

#!/usr/bin/env bash
# One-shot setup on Minikube: start Minikube, build the worker image inside it, install the
# Helm release, wait for the workers. Needs docker, minikube, kubectl and helm
# (`make verify MODE=k8s` checks).
set -euo pipefail
MODE=k8s
source "$(dirname "$0")/common.sh"
IMAGE=${IMAGE:-kds-consumer-test}
TAG=${TAG:-latest}

minikube status >/dev/null 2>&1 || minikube start --cpus="${MINIKUBE_CPUS:-4}" --memory="${MINIKUBE_MEMORY:-6g}"
echo "== building $IMAGE:$TAG inside Minikube's Docker"
eval "$(minikube docker-env)"
docker build -t "$IMAGE:$TAG" "$ROOT"
echo "== installing release $RELEASE into namespace $NAMESPACE"
helm upgrade --install "$RELEASE" "$ROOT/deploy/helm/kds-lease-manager" -n "$NAMESPACE" --create-namespace --set createNamespace=false \
  --set namespace="$NAMESPACE" --set consumer.image.repository="$IMAGE" --set consumer.image.tag="$TAG" \
  ${HELM_ARGS:-}
echo "== waiting for LocalStack, the stream and the workers"
kube rollout status deployment/"$STATEFULSET"-localstack --timeout=300s
kube wait --for=condition=complete job -l app.kubernetes.io/component=init-stream --timeout=300s
kube rollout status statefulset/"$STATEFULSET" --timeout=300s
cat <<MSG

Deployed. Next:
  make port-forward-localstack MODE=k8s   (in another terminal: LocalStack on localhost:4566)
  make monitor MODE=k8s                   live view
  make test-shards N=60 MODE=k8s          scenario 2
  make test-workers N=5 MODE=k8s          scenario 3
MSG

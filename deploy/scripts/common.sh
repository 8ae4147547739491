# Shared by the deployment scripts (sourced): where things run, for MODE=local or k8s.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${MODE:-local}
BIN_DIR=${BIN_DIR:-$ROOT/bin}
NAMESPACE=${NAMESPACE:-kds-test}
RELEASE=${RELEASE:-kds-consumer}
STATEFULSET=${STATEFULSET:-$RELEASE} # the chart names it after the release
case "$MODE" in
  local) source "$ROOT/deploy/local/env.sh" ;;
  k8s)
    export STREAM_NAME=${STREAM_NAME:-test-stream} APP_NAME=${APP_NAME:-kds-consumer-app}
    export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566} AWS_REGION=${AWS_REGION:-us-east-1}
    export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
    ;;
  *) echo "MODE must be local or k8s, not '$MODE'" >&2; exit 2 ;;
esac

kdsctl() { "$BIN_DIR/kdsctl" "$@"; }
kube() { kubectl -n "$NAMESPACE" "$@"; }

worker_count() {
  if [ "$MODE" = k8s ]; then kube get statefulset "$STATEFULSET" -o 'jsonpath={.spec.replicas}'
  else "$ROOT/deploy/local/workers.sh" count; fi
}

scale_workers() {
  # Through the release's values, not kubectl scale: the next helm upgrade would undo that.
  if [ "$MODE" = k8s ]; then helm upgrade "$RELEASE" "$ROOT/deploy/helm/kds-lease-manager" -n "$NAMESPACE" --reset-then-reuse-values --set consumer.replicaCount="$1" >/dev/null
  else "$ROOT/deploy/local/workers.sh" scale "$1"; fi
}

worker_logs() {
  if [ "$MODE" = k8s ]; then kube logs -l app.kubernetes.io/component=consumer --tail=-1 --max-log-requests=100 2>/dev/null
  else cat "$RUN_DIR"/logs/kds-consumer-*.log; fi
}

#!/usr/bin/env bash
# Live view of workers, coordinator and leases: monitor.sh [interval]
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ "$MODE" = k8s ] && ! (exec 3<>/dev/tcp/localhost/4566) 2>/dev/null && [ "$AWS_ENDPOINT_URL" = http://localhost:4566 ]; then
  echo "LocalStack is not reachable on localhost:4566: run 'make port-forward-localstack' in another terminal" >&2
  exit 1
fi
exec "$BIN_DIR/kdsctl" monitor --interval "${1:-10s}"

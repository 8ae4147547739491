# Shared settings for the local deployment scripts (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${RUN_DIR:-$ROOT/.run}
BIN_DIR=${BIN_DIR:-$ROOT/bin}
SHARDS=${SHARDS:-30}
WORKERS=${WORKERS:-3}
EDGE_ADDR=${EDGE_ADDR:-127.0.0.1:4566}
export STREAM_NAME=${STREAM_NAME:-test-stream}
export APP_NAME=${APP_NAME:-kds-consumer-app}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://$EDGE_ADDR}
export AWS_REGION=${AWS_REGION:-us-east-1}
# The local engines accept any credentials; real AWS never sees these.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

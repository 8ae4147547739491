#!/usr/bin/env bash
# The seed's scenarios against a running deployment: MODE=local (`make up`) or MODE=k8s
# (the Helm release; kdsctl reaches LocalStack at AWS_ENDPOINT_URL, by default through
# `make port-forward-localstack`). Each changes one thing, waits for convergence and prints
# PASS or FAIL with expected and observed values.
#   scenario.sh shards N    scale the stream to N open shards
#   scenario.sh workers N   scale to N workers
set -euo pipefail
source "$(dirname "$0")/common.sh"
CAP=${MAX_LEASES_CAP:-80}
TIMEOUT=${TIMEOUT:-180s}

open_shards() { # open shards as the coordinator last published them
  kdsctl -o json metadata 2>/dev/null | grep -o '"shard_count": *[0-9]*' | grep -o '[0-9]*$' | head -1
}

case "${1:-}" in
  shards)
    shards=${2:?usage: scenario.sh shards N}
    workers=$(worker_count)
    ((workers > 0)) || { echo "no worker runs: deploy first ('make up' or 'make deploy MODE=k8s')" >&2; exit 1; }
    echo "== scaling the stream to $shards shards ($workers workers, MODE=$MODE)"
    kdsctl scale-shards "$shards"
    ;;
  workers)
    workers=${2:?usage: scenario.sh workers N}
    shards=$(open_shards)
    [ -n "$shards" ] || { echo "no coordinator item yet at $AWS_ENDPOINT_URL: deploy first (and for MODE=k8s: make port-forward-localstack)" >&2; exit 1; }
    echo "== scaling to $workers workers ($shards shards, MODE=$MODE)"
    scale_workers "$workers"
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac

max=$(((shards + workers - 1) / workers))
((max > CAP)) && max=$CAP
unowned=$((shards - workers * max))
((unowned < 0)) && unowned=0
echo "== expected: max_leases_per_worker = min($CAP, ceil($shards / $workers)) = $max, unowned shards = $unowned"
kdsctl expect --shards "$shards" --workers "$workers" --max-leases "$max" --unowned "$unowned" --timeout "$TIMEOUT"
if ((unowned > 0)); then
  echo
  echo "== the cap is reached; what the system says about it:"
  worker_logs | grep "max leases" | grep -i "unowned" | tail -n 3 || true
  kdsctl metadata | grep -i -B1 "unowned" | head -n 6 || true
fi

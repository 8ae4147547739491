#!/usr/bin/env bash
# Worker management for the local deployment.
#   workers.sh scale N        start or stop (SIGTERM) workers until N run: kds-consumer-0..N-1
#   workers.sh restart W      restart kds-consumer-W (SIGTERM, then start again)
#   workers.sh restart-all    restart every running worker, one after the other
#   workers.sh count          print how many workers run
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/records"

running() { # the indexes of running workers, ascending
  local f
  for f in "$RUN_DIR"/pids/kds-consumer-*.pid; do
    [ -e "$f" ] || continue
    pid_alive "$f" && basename "$f" .pid | sed 's/^kds-consumer-//'
  done | sort -n
}

start_worker() {
  local i=$1 id=kds-consumer-$1
  # The demo processor checkpoints every batch; the worker writes at most one per second
  # per shard (releases flush the rest, so planned moves stay duplicate-free).
  WORKER_ID=$id HEALTH_ADDR=127.0.0.1:$((8080 + i)) RECORD_LOG_DIR="$RUN_DIR/records" \
    CHECKPOINT_INTERVAL="${CHECKPOINT_INTERVAL:-1s}" \
    setsid nohup "$BIN_DIR/kds-consumer" >>"$RUN_DIR/logs/$id.log" 2>&1 &
  echo $! >"$RUN_DIR/pids/$id.pid"
  echo "$id: started"
}

stop_worker() {
  local id=kds-consumer-$1 f="$RUN_DIR/pids/kds-consumer-$1.pid"
  pid_alive "$f" || { rm -f "$f"; return 0; }
  local pid; pid=$(cat "$f")
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "$id: did not stop in 30s; killing"; kill -KILL "$pid"; else echo "$id: stopped (leases released)"; fi
  rm -f "$f"
}

case "${1:-}" in
  count) running | wc -l ;;
  scale)
    n=${2:?usage: workers.sh scale N}
    [[ $n =~ ^[0-9]+$ ]] || { echo "N must be a whole number, got '$n'" >&2; exit 2; }
    for i in $(running); do ((i >= n)) && stop_worker "$i"; done
    for ((i = 0; i < n; i++)); do pid_alive "$RUN_DIR/pids/kds-consumer-$i.pid" || start_worker "$i"; done
    ;;
  restart)
    w=${2:?usage: workers.sh restart W}
    stop_worker "$w"; start_worker "$w" ;;
  restart-all)
    for i in $(running); do stop_worker "$i"; start_worker "$i"; sleep 1; done ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac

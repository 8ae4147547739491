#!/usr/bin/env bash
# Stops what `make up` started: workers first (SIGTERM: they release their leases), then
# the engines. Only processes recorded in the pid files are touched.
set -uo pipefail
source "$(dirname "$0")/env.sh"
shopt -s nullglob
stop() { # pidfile name timeout
  local f=$1 name=$2 t=$3
  if pid_alive "$f"; then
    local pid; pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 $((t * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name: did not stop in ${t}s; killing"; kill -KILL "$pid" 2>/dev/null
    else
      echo "$name: stopped"
    fi
  fi
  rm -f "$f"
}
for f in "$RUN_DIR"/pids/kds-consumer-*.pid; do
  n=$(basename "$f" .pid)
  stop "$f" "$n" 30 &
done
wait
[ -f "$RUN_DIR/pids/engines.pid" ] && stop "$RUN_DIR/pids/engines.pid" engines 15
exit 0

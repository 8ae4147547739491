#!/usr/bin/env bash
# Starts, in the background: the local engines behind the edge endpoint, a stream with
# $SHARDS shards and $WORKERS workers kds-consumer-0..N-1. Idempotent: what already runs
# is kept. `make down` stops everything.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/records"
for b in kds-local kds-consumer kdsctl; do
  [ -x "$BIN_DIR/$b" ] || { echo "missing $BIN_DIR/$b: run 'make build' first" >&2; exit 1; }
done
command -v node >/dev/null || { echo "Node.js is required for the local engines: install Node.js >= 18 and npm" >&2; exit 1; }

edge_up() { (exec 3<>"/dev/tcp/${EDGE_ADDR%:*}/${EDGE_ADDR##*:}") 2>/dev/null; }
if pid_alive "$RUN_DIR/pids/engines.pid"; then
  echo "engines: already running (edge $AWS_ENDPOINT_URL)"
else
  if edge_up; then
    echo "something else listens on $EDGE_ADDR; stop it or set EDGE_ADDR" >&2; exit 1
  fi
  echo "engines: starting kinesis-local and dynalite behind $AWS_ENDPOINT_URL (first run installs them with npm)"
  # setsid: a Ctrl+C in the terminal must not reach the background processes; `make down`
  # stops them in order (workers release their leases while the engines still run).
  setsid nohup "$BIN_DIR/kds-local" up --edge "$EDGE_ADDR" --run-dir "$RUN_DIR/engines" >"$RUN_DIR/logs/engines.log" 2>&1 &
  echo $! >"$RUN_DIR/pids/engines.pid"
  for _ in $(seq 1 240); do
    edge_up && break
    if ! pid_alive "$RUN_DIR/pids/engines.pid"; then
      echo "engines failed to start:" >&2; tail -n 20 "$RUN_DIR/logs/engines.log" >&2; exit 1
    fi
    sleep 0.5
  done
  edge_up || { echo "engines did not answer within 120s; see $RUN_DIR/logs/engines.log" >&2; exit 1; }
fi

"$BIN_DIR/kdsctl" create-stream "$STREAM_NAME" --shards "$SHARDS"

"$ROOT/deploy/local/workers.sh" scale "$WORKERS"
cat <<MSG

Up: stream $STREAM_NAME ($SHARDS shards), $WORKERS workers, app $APP_NAME, endpoint $AWS_ENDPOINT_URL
  make monitor     live view of workers, coordinator and leases
  make metadata    the metadata table once
  make logs        follow the workers' logs
  make down        stop everything
MSG

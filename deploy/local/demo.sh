#!/usr/bin/env bash
# `make up` in the foreground: starts everything, shows the live view until Ctrl+C, then
# stops everything again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
stopped=
stop() { [ -n "$stopped" ] && return; stopped=1; echo; "$ROOT/deploy/local/down.sh"; }
trap stop EXIT
trap 'stop; exit 130' INT TERM
"$ROOT/deploy/local/up.sh"
sleep 2
"$BIN_DIR/kdsctl" monitor --interval "${INTERVAL:-2s}" || true

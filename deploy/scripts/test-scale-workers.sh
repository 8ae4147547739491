#!/usr/bin/env bash
# Scale to N workers and check max leases per worker: test-scale-workers.sh N
exec "$(dirname "$0")/scenario.sh" workers "${1:?usage: test-scale-workers.sh N}"

#!/usr/bin/env bash
# Scale the stream to N shards and check max leases per worker: test-scale-shards.sh N
exec "$(dirname "$0")/scenario.sh" shards "${1:?usage: test-scale-shards.sh N}"

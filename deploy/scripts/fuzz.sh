#!/usr/bin/env bash
# Runs every fuzz target for a fixed number of executions: the item decoders of
# dynamostore, the worker's settings parsing, the library's configuration validation and
# the KPL de-aggregator.
# Budgets are execution counts (-fuzztime=Nx), not durations: a duration budget trips Go's
# fuzz-coordinator race at the deadline (golang/go#75804, "context deadline exceeded" with
# no crasher), which would fail a run for nothing.
#
# A run fails only on a real finding: a target that fails and leaves a new crasher under
# its package's testdata/fuzz/<target>/. A failure that leaves no crasher is retried once
# and then reported as an error of the fuzz engine, not of the code.
#   deploy/scripts/fuzz.sh                 # the default budgets below
#   FUZZ_SCALE=10 deploy/scripts/fuzz.sh   # ten times as many executions per target
set -euo pipefail
cd "$(dirname "$0")/../.."
scale="${FUZZ_SCALE:-1}"
# package, target, executions at scale 1 (sized so that each takes a few seconds here).
targets=(
	"./dynamostore FuzzDecodeItem 20000"
	"./dynamostore FuzzLeaseRoundTrip 20000"
	"./dynamostore FuzzWorkerRoundTrip 20000"
	"./dynamostore FuzzCoordinatorRoundTrip 20000"
	"./cmd/kds-consumer FuzzParseSettings 20000"
	"./cmd/kds-consumer FuzzSettingsAgreeWithLibrary 5000"
	"./consumer FuzzConfigValidate 20000"
	"./kpl FuzzDeaggregate 20000"
)
crashers() { { find "$1/testdata/fuzz/$2" -type f 2>/dev/null || true; } | sort; }
findings=0
for t in "${targets[@]}"; do
	read -r pkg name n <<<"$t"
	execs=$((n * scale))
	for attempt in 1 2; do
		echo "== $pkg $name (${execs} executions)"
		before=$(crashers "$pkg" "$name")
		if go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${execs}x"; then
			break
		fi
		after=$(crashers "$pkg" "$name")
		if [ "$before" != "$after" ]; then
			echo "fuzz: $name found a failing input; it is saved under $pkg/testdata/fuzz/$name/ (rerun: go test $pkg -run '$name/')" >&2
			findings=$((findings + 1))
			break
		fi
		if [ "$attempt" = 2 ]; then
			echo "fuzz: $name failed twice without saving a failing input: the fuzz engine, not the code, failed" >&2
			exit 1
		fi
		echo "fuzz: $name failed without saving a failing input (fuzz engine); retrying once" >&2
	done
done
if [ "$findings" -gt 0 ]; then
	echo "fuzz: $findings target(s) found failing inputs" >&2
	exit 1
fi
echo "fuzz: every target ran its budget with no finding"

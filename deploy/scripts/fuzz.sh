#!/usr/bin/env bash
# Runs every fuzz target for a short while (FUZZTIME, default 10s each): the item
# decoders of dynamostore, the worker's settings parsing and the library's configuration
# validation. A crash leaves its input under the package's testdata/fuzz/ and fails.
#   deploy/scripts/fuzz.sh            # 10 s per target
#   FUZZTIME=2m deploy/scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
fuzztime="${FUZZTIME:-10s}"
targets=(
	"./dynamostore FuzzDecodeItem"
	"./dynamostore FuzzLeaseRoundTrip"
	"./dynamostore FuzzWorkerRoundTrip"
	"./dynamostore FuzzCoordinatorRoundTrip"
	"./cmd/kds-consumer FuzzParseSettings"
	"./cmd/kds-consumer FuzzSettingsAgreeWithLibrary"
	"./consumer FuzzConfigValidate"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "== $pkg $name ($fuzztime)"
	go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime"
done

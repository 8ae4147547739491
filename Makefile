# kds-lease-manager: build, run, operate and test.
# `make help` lists the targets. MODE=local (default: processes on this machine, `make up`)
# or MODE=k8s (the Helm release on Minikube/Kubernetes) says which deployment the operator
# targets act on. Settings: SHARDS, WORKERS, N, W, NAMESPACE, STREAM_NAME, APP_NAME.
SHELL := /bin/bash
.DEFAULT_GOAL := help

MODE    ?= local
SHARDS  ?= 30
WORKERS ?= 3
N       ?=
W       ?= 0
export MODE SHARDS WORKERS

GO      ?= go
BIN     := bin
SCRIPTS := deploy/scripts
# Tests on the real engines share 2 cores with the engines themselves.
TEST_FLAGS ?= -race -count=1 -timeout 20m

ifeq ($(filter $(MODE),local k8s),)
$(error MODE must be local or k8s, not '$(MODE)')
endif

include deploy/local/local.mk
include deploy/k8s/k8s.mk

DURATION ?= 90s

.PHONY: help build test test-all test-browser vet fmt-check k8s-tools docs verify chaos bench cost-check fuzz proto sim sim-scale \
	status logs logs-worker monitor dashboard metadata leases scale-workers test-shards test-workers \
	restart-worker restart-all clean

help: ## list the targets
	@echo "usage: make TARGET [MODE=local|k8s] [N=..] [W=..] [NAMESPACE=kds-test]"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-24s %s\n", $$1, $$2}'

# The build the binaries report (`kds-consumer version`, kds_build_info).
BUILDINFO := github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo
VERSION   := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION  := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X $(BUILDINFO).stampedVersion=$(VERSION) -X $(BUILDINFO).stampedRevision=$(REVISION)

build: ## build kds-consumer, kdsctl and kds-local into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

test: vet fmt-check k8s-tools ## every test: unit, real engines, real kube-apiserver, helm (-race)
	$(GO) test $(TEST_FLAGS) ./...

test-all: vet fmt-check k8s-tools ## `make test` plus the five sizing scenarios and the 30 -> 300 reshard end to end
	$(GO) test $(TEST_FLAGS) -tags scenarios ./...

test-browser: ## the dashboard in headless Chromium on the real engines (about 2 min; needs chromium): screenshots in .run/browser
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$CHROMIUM" ] || \
		{ echo "chromium is missing: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)"; exit 2; }
	set -o pipefail; $(GO) test $(TEST_FLAGS) -tags browser -run '^TestDashboardInBrowser$$' -v ./e2e | grep -v '^{'

PROTOC_GEN_GO_VERSION ?= v1.36.12
proto: ## regenerate kpl/kplpb/kpl.pb.go (needs protoc; installs protoc-gen-go $(PROTOC_GEN_GO_VERSION) from google.golang.org/protobuf)
	@command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler (or see protobuf.dev/installation)"; exit 2; }
	GOBIN=$(CURDIR)/$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd kpl/kplpb && PATH=$(CURDIR)/$(BIN):$$PATH protoc --go_out=. --go_opt=paths=source_relative kpl.proto

fuzz: ## every fuzz target for a fixed execution count (FUZZ_SCALE=10 for ten times more): item decoding, settings, config, KPL de-aggregation
	deploy/scripts/fuzz.sh

chaos: build ## chaos run: kill/stop/cut/pause/throttle workers, shards 30->60->30, workers 3->5->2, prove the invariants (DURATION=90s; long form e.g. DURATION=30m)
	$(BIN)/kds-chaos --duration $(DURATION) --bin $(BIN)

SEEDS ?= 2000
SEED  ?=
START ?= 1
SIZE  ?= full
KIND  ?=
sim: ## virtual-time simulation of real workers under seeded faults: SEEDS=2000 seeds from START=1 (SIZE=full|small); SEED=123 [KIND=exclusive] reruns one seed with the worker logs
	@if [ -n "$(SEED)" ]; then \
		$(GO) test -count=1 -timeout 10m -run '^TestSimulate$$' -v ./internal/sim -sim.seed=$(SEED) -sim.size=$(SIZE) -sim.kind=$(KIND); \
	else \
		set -o pipefail; $(GO) test -count=1 -timeout 120m -run '^TestSimulate$$' -v ./internal/sim -sim.seeds=$(SEEDS) -sim.start=$(START) -sim.size=$(SIZE) \
			| grep -vE '^\s*--- (FAIL|PASS): TestSimulate/seeds/[0-9]+ |^=== |^\s*--- PASS: TestSimulate/seeds '; \
	fi

SCALE         ?= 1000x50
SCALE_ROLLING ?= 0
SCALE_FLAGS   ?=
sim-scale: ## virtual-time scale runs of real workers, DynamoDB cost vs a KCL-style baseline: SCALE=1000x50 (SHARDSxWORKERS, comma-separated; big: 10000x500); SCALE_ROLLING=N restarts at most N; SCALE_FLAGS=-sim.scale.costonly
	@mkdir -p .run; set -o pipefail; $(GO) test -count=1 -timeout 180m -run '^TestScale$$' -v ./internal/sim -sim.scale=$(SCALE) \
		-sim.scale.rolling=$(SCALE_ROLLING) $(SCALE_FLAGS) -sim.scale.out=$(CURDIR)/.run/sim-scale.md | grep -vE '^(=== |\s*--- PASS)'

bench: build ## benchmarks on the real engines, one table (KDS_BENCH_RUNS=3); record it in docs/BENCHMARKS.md
	set -o pipefail; KDS_BENCH_OUT=$${KDS_BENCH_OUT:-$(CURDIR)/.run/bench.md} $(GO) test -tags bench -run TestBenchmarks -count=1 -timeout 60m -v ./e2e | grep -v '^{'

COST_SHARDS  ?= 300
COST_WORKERS ?= 10
COST_WINDOW  ?= 120
cost-check: ## the simulator's DynamoDB cost model against the real engines: COST_WORKERS=10 workers over COST_SHARDS=300 shards, requests by operation and capacity units measured at the edge over COST_WINDOW=120 s must match the simulator's within 10% (table in .run/cost-check.md)
	@mkdir -p .run; set -o pipefail; KDS_COST_SHARDS=$(COST_SHARDS) KDS_COST_WORKERS=$(COST_WORKERS) KDS_COST_WINDOW_SECONDS=$(COST_WINDOW) \
		KDS_COST_OUT=$(CURDIR)/.run/cost-check.md $(GO) test -tags bench -run '^TestCostCheck$$' -count=1 -timeout 30m -v ./e2e | grep -v '^{'

k8s-tools: ## build kube-apiserver, etcd, kubectl and helm for the tests (first time ~7 min, cached)
	deploy/k8s/tools/build.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

docs: ## where the documentation is
	@echo "README.md                    start here"
	@echo "docs/QUICK_REFERENCE.md      command cheat sheet"
	@echo "docs/execution_details.md    tables, coordinator, formula, every phase step by step"
	@echo "docs/FLOW_DIAGRAM.md         Mermaid diagrams of the flows"
	@echo "docs/SUMMARY.md              what the project is and what it measured"
	@echo "docs/BENCHMARKS.md           the benchmark table (make bench)"
	@echo "docs/iam-policy.json         least-privilege IAM policy for a worker"
	@echo "deploy/helm/kds-lease-manager/values.yaml   every chart value, documented"

verify: ## check the prerequisites of MODE (local: go, node, npm; k8s: docker, minikube, kubectl, helm)
	@$(SCRIPTS)/verify.sh

# Operator targets: the same names for both modes.
status: $(MODE)-status ## processes (local) or pods, StatefulSet, jobs (k8s)
logs: $(MODE)-logs ## follow every worker's log
logs-worker: $(MODE)-logs-worker ## follow one worker's log: W=0
restart-worker: $(MODE)-restart-worker ## restart one worker: W=0
restart-all: $(MODE)-restart-all ## restart every worker, one after the other
clean: $(MODE)-clean ## stop and remove the deployment (and bin/ for local)

monitor: build ## live view of workers, coordinator and leases (INTERVAL=10s)
	$(SCRIPTS)/monitor.sh $${INTERVAL:-10s}

dashboard: build ## live web page on http://127.0.0.1:8090/: shards by owner, workers, coordinator, lag, events (ADDR=)
	@source $(SCRIPTS)/common.sh && kdsctl dashboard --addr $${ADDR:-127.0.0.1:8090}

metadata: build ## the metadata table: workers and the coordinator item
	@source $(SCRIPTS)/common.sh && kdsctl metadata

leases: build ## the lease table: one row per shard
	@source $(SCRIPTS)/common.sh && kdsctl leases

scale-workers: build ## start or stop workers until N run: N=5
	@test -n "$(N)" || { echo "usage: make scale-workers N=5"; exit 2; }
	@source $(SCRIPTS)/common.sh && scale_workers $(N)

test-shards: build ## scenario: scale the stream to N shards, PASS/FAIL on max leases: N=60
	@test -n "$(N)" || { echo "usage: make test-shards N=60"; exit 2; }
	$(SCRIPTS)/test-scale-shards.sh $(N)

test-workers: build ## scenario: scale to N workers, PASS/FAIL on max leases: N=5
	@test -n "$(N)" || { echo "usage: make test-workers N=5"; exit 2; }
	$(SCRIPTS)/test-scale-workers.sh $(N)

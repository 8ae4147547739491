# kds-lease-manager: build, run locally, test.
# `make help` lists the targets. Settings: SHARDS, WORKERS, STREAM_NAME, APP_NAME.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SHARDS  ?= 30
WORKERS ?= 3
export SHARDS WORKERS

GO       ?= go
BIN      := bin
LOCAL    := deploy/local
# Tests on the real engines share 2 cores with the engines themselves.
TEST_FLAGS ?= -race -count=1 -timeout 20m

# MODE says which deployment the operator targets act on: local (make up) or k8s.
MODE ?= local
N ?=
W ?= 0

.PHONY: help build up down demo test test-all vet fmt-check monitor metadata leases logs logs-worker \
	status clean k8s-tools test-shards test-workers scale-workers restart-worker restart-all

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## build kds-consumer, kdsctl and kds-local into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

up: build ## start engines, stream (SHARDS=30) and workers (WORKERS=3) in the background
	$(LOCAL)/up.sh

down: ## stop everything `make up` started
	$(LOCAL)/down.sh

demo: build ## `make up` in the foreground with a live view; Ctrl+C stops it all
	$(LOCAL)/demo.sh

test: vet fmt-check k8s-tools ## run every test (unit, real engines, real kube-apiserver) under -race
	$(GO) test $(TEST_FLAGS) ./...

k8s-tools: ## build kube-apiserver, etcd, kubectl and helm into the cache (first time ~7 min)
	deploy/k8s/tools/build.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

monitor: ## live view of workers, coordinator and leases (local deployment)
	@source $(LOCAL)/env.sh && $(BIN)/kdsctl monitor --interval $${INTERVAL:-5s}

metadata: ## print the metadata table
	@source $(LOCAL)/env.sh && $(BIN)/kdsctl metadata

leases: ## print the lease table
	@source $(LOCAL)/env.sh && $(BIN)/kdsctl leases

status: ## which local processes run
	@source $(LOCAL)/env.sh && for f in $$RUN_DIR/pids/*.pid; do \
	  [ -f "$$f" ] || continue; n=$$(basename $$f .pid); \
	  if pid_alive $$f; then echo "$$n: running (pid $$(cat $$f))"; else echo "$$n: stopped"; fi; done

logs: ## follow the workers' logs
	@source $(LOCAL)/env.sh && tail -n 20 -F $$RUN_DIR/logs/kds-consumer-*.log

logs-worker: ## follow one worker's log: W=0
	@source $(LOCAL)/env.sh && tail -n 50 -F $$RUN_DIR/logs/kds-consumer-$(W).log

test-shards: build ## scale the stream to N shards and check the result: N=60
	@test -n "$(N)" || { echo "usage: make test-shards N=60"; exit 2; }
	$(LOCAL)/scenario.sh shards $(N)

test-workers: build ## scale to N workers and check the result: N=5
	@test -n "$(N)" || { echo "usage: make test-workers N=5"; exit 2; }
	$(LOCAL)/scenario.sh workers $(N)

scale-workers: build ## start or stop workers until N run: N=5
	@test -n "$(N)" || { echo "usage: make scale-workers N=5"; exit 2; }
	$(LOCAL)/workers.sh scale $(N)

restart-worker: ## restart one worker: W=0
	$(LOCAL)/workers.sh restart $(W)

restart-all: ## restart every worker, one after the other
	$(LOCAL)/workers.sh restart-all

test-all: vet fmt-check k8s-tools ## every test, plus the seed's five scenarios end to end (long)
	$(GO) test $(TEST_FLAGS) -tags scenarios ./...

clean: down ## stop everything and remove build output and local state
	rm -rf $(BIN) .run

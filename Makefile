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

.PHONY: help build up down demo test vet fmt-check monitor metadata leases logs status clean

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

test: vet fmt-check ## run every test (unit and real-engine integration) under -race
	$(GO) test $(TEST_FLAGS) ./...

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

clean: down ## stop everything and remove build output and local state
	rm -rf $(BIN) .run

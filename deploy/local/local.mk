# Targets of the local deployment (MODE=local): engines, stream and workers as processes
# on this machine, state in .run/.
LOCAL := deploy/local

.PHONY: up down demo local-status local-logs local-logs-worker local-restart-worker \
	local-restart-all local-clean

up: build ## local: engines, stream (SHARDS=30) and workers (WORKERS=3) in the background
	$(LOCAL)/up.sh

down: ## local: stop everything `make up` started
	$(LOCAL)/down.sh

demo: build ## local: `make up` in the foreground with a live view; Ctrl+C stops it all
	$(LOCAL)/demo.sh

local-status:
	@source $(LOCAL)/env.sh && for f in $$RUN_DIR/pids/*.pid; do \
	  [ -f "$$f" ] || continue; n=$$(basename $$f .pid); \
	  if pid_alive $$f; then echo "$$n: running (pid $$(cat $$f))"; else echo "$$n: stopped"; fi; done

local-logs:
	@source $(LOCAL)/env.sh && tail -n 20 -F $$RUN_DIR/logs/kds-consumer-*.log

local-logs-worker:
	@source $(LOCAL)/env.sh && tail -n 50 -F $$RUN_DIR/logs/kds-consumer-$(W).log

local-restart-worker:
	$(LOCAL)/workers.sh restart $(W)

local-restart-all:
	$(LOCAL)/workers.sh restart-all

local-clean: down
	rm -rf $(BIN) .run

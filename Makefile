# mmhub: `make run` starts the hub on embedded servers, `make test` runs the suite.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export LC_ALL := C.UTF-8
export UV_PYTHON_DOWNLOADS := never

.DEFAULT_GOAL := help
.PHONY: help install run test test-tools lint fmt typecheck migrate bench bench-ingest bench-dispatch bench-purge bench-console bench-bitrix24 check soak mutation

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --break-system-packages --user uv

install: $(UV) ## install uv (if missing) and every dependency from uv.lock
	$(UV) sync --locked

# Without ./mmhub.yaml (or MMHUB_CONFIG), run the bundled dev configuration with its local sink.
DEV_DEFAULT := $(if $(or $(MMHUB_CONFIG),$(wildcard mmhub.yaml)),,MMHUB_CONFIG=config/dev.yaml)
DEV_SINK := $(if $(DEV_DEFAULT),--sink,)

run: install ## the hub on embedded PostgreSQL and Valkey (or MMHUB_DATABASE_URL / MMHUB_REDIS_URL)
	$(DEV_DEFAULT) $(UV) run mmhub dev $(DEV_SINK)

# Debian tools the tests drive, as COMMAND=PACKAGE pairs; installed by `make test` when missing.
TEST_APT_TOOLS := promtool=prometheus prometheus=prometheus amtool=prometheus-alertmanager chromium=chromium nginx=nginx

test-tools: ## the system tools the tests drive (apt-get, when missing)
	@bash tests/tools/ensure-apt.sh $(TEST_APT_TOOLS)

test: install test-tools ## the whole suite on real PostgreSQL 16 and a real Redis-compatible server
	@$(UV) run pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; fi; exit $$rc

lint: install ## ruff and black in check mode
	$(UV) run ruff check .
	$(UV) run black --check .

fmt: install ## format and fix what ruff can
	$(UV) run ruff check --fix .
	$(UV) run black .

typecheck: install ## mypy --strict on app/, dispatch/ and cli/
	$(UV) run mypy app dispatch cli

check: lint typecheck test ## everything CI runs

# Not in CI nor in `make test` (~45 min on 2 cores). MUTATION_ARGS="--keep" reuses mutmut's cache,
# MUTATION_ARGS="--report-only" prints the last run's figures; the scope is [tool.mutmut] in pyproject.toml.
MUTATION_ARGS ?=
mutation: install ## mutation testing (mutmut) of parsing, secrets, retry, hold/release, hand-over, admin auth: kill rate per module
	$(UV) run python -m tests.mutation.run $(MUTATION_ARGS)

migrate: install ## apply the database migrations
	$(UV) run mmhub migrate

bench: bench-ingest bench-dispatch bench-purge bench-console bench-bitrix24 ## every benchmark

bench-ingest: install ## durable ingest vs a bare route, same server, same run
	$(UV) run python -m benchmarks.ingest

bench-dispatch: install ## draining a backlog and end-to-end latency vs a plain client
	$(UV) run python -m benchmarks.dispatch

# 1M events by default (3-4 minutes); PURGE_ROWS=10000000 for the full-size case (~20 GB, ~15 min).
PURGE_ROWS ?= 1000000
bench-purge: install ## purge time and ingest latency during a purge, on a loaded table
	$(UV) run python -m benchmarks.purge --rows $(PURGE_ROWS)

bench-console: install ## console pages on 1M deliveries (p95 server time) and the CLI's start time
	$(UV) run python -m benchmarks.console

bench-bitrix24: install ## 10,000 deal saves over 1,000 deals, enriched and coalesced, at the fake portal's real limits
	$(UV) run python -m benchmarks.bitrix24

# 5,000 events at 50/s over 60 subjects by default; SOAK_ARGS="--events 20000 --rate 100" to change.
SOAK_ARGS ?=
soak: install ## the fault run: load while processes are killed and servers restarted
	$(UV) run python -m tests.soak $(SOAK_ARGS)

# The two commands: `make up` runs the whole platform, `make test` the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test gen check-gen release-contract lint fmt bench load chaos clean web

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

gen: $(STAMP)
	$(BIN)/python -m services.stack.gen

# The web app (web/, built into web/dist, which Envoy serves at /): npm ci when the
# lockfile changes, a build when a web source or the OpenAPI document does.
WEB_SOURCES := $(shell find web/src web/index.html web/vite.config.ts web/tsconfig.json -type f ! -name schema.d.ts 2>/dev/null)

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SOURCES) openapi/openapi.json
	cd web && npm run build
	touch $@

web: web/dist/.built

up: gen web
	$(BIN)/gofund up

lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

test: lint web
	$(BIN)/pytest

# Benchmarks print figures and ratios; they assert nothing. BENCH_FLAGS=--quick for a short run.
bench: $(STAMP)
	$(BIN)/python bench/ledger.py $(BENCH_FLAGS)
	$(BIN)/python bench/identity.py $(BENCH_FLAGS)
	$(BIN)/python bench/payments.py $(BENCH_FLAGS)
	$(BIN)/python bench/viral.py $(BENCH_FLAGS)
	$(BIN)/python bench/paystack_sim.py $(BENCH_FLAGS)
	$(BIN)/python bench/edge.py $(BENCH_FLAGS)

# A viral goal through Envoy against a running `make up` (in another terminal): live figures, then a PNG.
# LOAD_FLAGS: --watchers N --rate N --duration-s N --plot PATH --edge URL
load: $(STAMP)
	$(BIN)/python bench/load.py $(LOAD_FLAGS)

# A bounded chaos run (minutes; not in `make test`): crashes under traffic, then reconciliation must be clean.
# CHAOS_FLAGS: --duration-s N --payers N --seed N --settle-timeout-s N --keep-data
chaos: $(STAMP)
	$(BIN)/python -m services.stack.chaos $(CHAOS_FLAGS)

fmt: $(STAMP)
	$(BIN)/ruff check --fix services tests bench
	$(BIN)/ruff format services tests bench

# CI: the committed gen/, descriptor and OpenAPI document must be what `make gen` produces.
check-gen: gen
	git diff --exit-code -- gen envoy/gofund.binpb openapi
	test -z "$$(git status --porcelain -- gen envoy/gofund.binpb openapi)"

# When a landing releases the contracts: the image every later change must not break
# (`buf breaking`, FILE rules, run by tests/integration/test_codegen.py in `make test`).
release-contract: gen
	mkdir -p contracts
	$(BIN)/buf build proto --exclude-source-info -o contracts/released.binpb

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache

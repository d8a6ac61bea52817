# bellhook: two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: install run demo test lint format bench bench-quick bench-growth clean kafka-demo

$(STAMP): pyproject.toml constraints.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "bellhook needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.lock -e '.[dev,kafka,otel]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/bellhook serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Node.js packages the tests run against (Express for the guide's receiver code).
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

test: lint $(NODE_STAMP)
	$(BIN)/pytest

# Kafka in, a signed webhook out: a local broker, bellhook consuming, a receiver (docs/kafka.md).
# A verified delivery within a minute: bellhook, a receiver and events, all on loopback.
demo: install
	$(BIN)/bellhook demo

kafka-demo: install
	$(BIN)/python examples/kafka_demo.py

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis

# --- Benchmarks (bench/, docs/benchmarks.md) ---------------------------------------------
# Everything on 127.0.0.1. `bench` also runs on PostgreSQL when BELLHOOK_BENCH_DATABASE_URL
# is set. The peer (django-outbound-webhooks) and matplotlib live in a bench-only venv.
BENCH_VENV  := bench/.venv-peer
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): bench/requirements-peer.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements-peer.txt
	@touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BIN)/python -m bench.run

bench-quick: install
	$(BIN)/python -m bench.run --quick

# Claim, ingest, the backlog count and a purge beside 10 million finished and 1 million
# pending deliveries, on BELLHOOK_BENCH_DATABASE_URL's PostgreSQL (minutes, several GB).
bench-growth: install
	$(BIN)/python -m bench.growth

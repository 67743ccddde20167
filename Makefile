# Flux: `make run` starts Flux (and a local Kafka broker if KAFKA_BOOTSTRAP_SERVERS is unset);
# `make cluster` starts 3 local brokers and 3 Flux nodes on :3000-3002 in the foreground (Ctrl-C stops all);
# `make test` runs lint, types and the whole test suite against a real broker.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser run cluster test unit lint docs fuzz kafka-start kafka-stop bench bench-ws bench-small bench-auth bench-history bench-replay bench-cluster bench-sources bench-export bench-tracing soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/flux serve

NODES ?= 3
BROKERS ?= 3
CLUSTER_ARGS ?=

# NODES Flux nodes of one app (ports 3000...) on BROKERS local Kafka brokers (unless KAFKA_BOOTSTRAP_SERVERS is
# set), output prefixed per node; Ctrl-C stops the nodes, then the brokers. More options: flux cluster --help.
cluster: install
	$(BIN)/flux cluster --nodes $(NODES) --brokers $(BROKERS) $(CLUSTER_ARGS)

lint: install
	$(BIN)/ruff check flux agents api tests bench
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -q tests/unit tests/api

# The dashboard's browser tests (tests/e2e/test_ui.py) drive the system's chromium through Playwright, which
# downloads no browser of its own: install Debian's package when it is missing (sudo only when not root).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: lint browser
	$(BIN)/python -m pytest -q

# docs/configuration.md is rendered from the settings' field descriptions (tests/unit/test_configuration_doc.py
# fails when it is out of date).
docs: install
	$(BIN)/python -m flux.config_doc > docs/configuration.md

FLUX_URL ?= http://localhost:3000
FUZZ_EXAMPLES ?= 200

# schemathesis over the OpenAPI document of a running Flux (see docs/testing.md).
fuzz: install
	HYPOTHESIS_STORAGE_DIRECTORY=$${TMPDIR:-/tmp}/flux-fuzz-hypothesis $(BIN)/schemathesis \
	  --config-file tests/e2e/schemathesis.toml run $(FLUX_URL)/openapi.json \
	  --max-examples $(FUZZ_EXAMPLES) --workers 1 --phases examples,coverage,fuzzing \
	  --request-timeout 20 --no-color $(if $(FLUX_TOKEN),-H "Authorization: Bearer $(FLUX_TOKEN)",)

kafka-start: install
	$(BIN)/flux kafka start

kafka-stop: install
	$(BIN)/flux kafka stop

bench: install
	$(BIN)/python bench/bench_core.py

bench-ws: install
	$(BIN)/python bench/bench_ws.py

# Issue 17's single-event figures beside their targets and same-run ceilings (needs wrk: apt-get install -y wrk);
# e.g. make bench-small BENCH_SMALL_ARGS="--quick" or "--only post,get --seconds 10".
BENCH_SMALL_ARGS ?=

bench-small: install
	$(BIN)/python bench/bench_small.py $(BENCH_SMALL_ARGS)

bench-history: install
	$(BIN)/python bench/bench_history.py

bench-replay: install
	$(BIN)/python bench/bench_replay.py

bench-cluster: install
	$(BIN)/python bench/bench_cluster.py

bench-sources: install
	$(BIN)/python bench/bench_sources.py

bench-auth: install
	$(BIN)/python bench/bench_auth.py

bench-export: install
	$(BIN)/python bench/bench_export.py

bench-tracing: install
	$(BIN)/python bench/bench_tracing.py

# Issue 18's soak (not in CI): 3 brokers and 3 nodes of its own under a mixed load for 30 minutes, a random kill -9
# every 2-5 minutes, then checks that nothing acknowledged was lost (docs/testing.md, FAULTS.md);
# e.g. make soak SOAK_ARGS="--minutes 5 --seed 7". All options: python -m bench.soak --help.
SOAK_ARGS ?=

soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf .flux $(VENV) .pytest_cache .mypy_cache .ruff_cache

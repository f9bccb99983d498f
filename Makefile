# infersight: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need (a virtualenv in .venv, the Kafka jars, Debian's
# prometheus/alertmanager for the rule and dashboard tests) on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install system-deps kafka-up kafka-down demo test test-unit bench bench-pipeline bench-detectors bench-budget bench-fleet bench-kserve clean

help:
	@echo "make demo             start a local Kafka, the daemon and simulated traffic; watch a drift alert fire"
	@echo "make test             install everything and run the whole test suite (unit + real Kafka/Prometheus)"
	@echo "make test-unit        only the tests that need no broker"
	@echo "make kafka-up/down    local single-node Apache Kafka 4.x (KRaft) on localhost:9092"
	@echo "make bench            all benchmarks: bench-pipeline (throughput per stage) and"
	@echo "                      bench-detectors (detector speed, accuracy, false alarms vs River),"
	@echo "                      bench-budget (each model's total false-alarm rate vs its promise)"
	@echo "make bench-fleet      10, 100, 1000 models end to end on the local broker (starts it if needed)"
	@echo "                      bench-kserve (KServe logger events -> records, vs orjson.loads)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

system-deps:
	@deploy/install-system-deps.sh

kafka-up:
	@deploy/kafka/kafka.sh up

kafka-down:
	@deploy/kafka/kafka.sh down

demo: install
	@deploy/demo.sh

test: install system-deps
	@deploy/run-tests.sh

test-unit: install
	$(BIN)/python -m pytest -m "not kafka and not prometheus"

bench: bench-pipeline bench-detectors bench-budget bench-kserve

bench-pipeline: install
	$(BIN)/python -m bench.pipeline

bench-detectors: install
	$(BIN)/python -m bench.detectors

bench-budget: install
	$(BIN)/python -m bench.budget

bench-fleet: install
	@deploy/kafka/kafka.sh status >/dev/null 2>&1 || deploy/kafka/kafka.sh up
	$(BIN)/python -m bench.fleet

bench-kserve: install
	$(BIN)/python -m bench.kserve

clean:
	rm -rf $(VENV) .kafka .run *.egg-info

# Handshake: every target has a one-line description that `make help` prints.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := deploy/kafka/lib/.fetched
DATA ?= .handshake

.DEFAULT_GOAL := help
.PHONY: help setup up down test test-fast lint schemas bench faults clean kafka-start kafka-stop

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.11" >&2; exit 1; }
	@echo "==> creating $(VENV) and installing the project (pip shows progress)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	@$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[test]'
	@touch $@

$(JARS): deploy/kafka/pom.xml
	@command -v java >/dev/null || { echo "error: java not found; install a JDK 17+ (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found; install Maven (apt-get install maven)" >&2; exit 1; }
	@echo "==> fetching the Apache Kafka broker jars from Maven Central"
	@mvn -B -ntp -f deploy/kafka/pom.xml package
	@touch $@

setup: $(STAMP) $(JARS) ## install what is missing: .venv with the project, the Kafka jars, system tools
	@bash deploy/system-packages.sh

up: setup ## run the whole platform locally with a demo partner feed (Ctrl-C stops it)
	$(BIN)/handshake up --data-dir $(DATA)

down: ## stop a platform started by `make up`
	-$(BIN)/handshake down --data-dir $(DATA)

test: setup lint ## set up, lint, and run the whole test suite against a real Kafka broker
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: ## run the unit tests only (no broker)
	$(BIN)/pytest -q tests/unit

lint: setup ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

schemas: setup ## regenerate schemas/json, schemas/asyncapi.yaml and the map places from their sources
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m services.api.geo

bench: setup ## run every benchmark and rewrite the table in bench/README.md
	$(BIN)/python bench/run_all.py

faults: setup ## run the long reliability scenarios and print their table
	HANDSHAKE_FAULTS_LONG=1 $(BIN)/pytest -q -p no:cacheprovider tests/faults tests/security; $(BIN)/python -m tests.faults.table faults-long.json

kafka-start: setup ## start the native broker on 127.0.0.1:9092
	$(BIN)/handshake kafka start --data-dir $(DATA)/kafka

kafka-stop: ## stop the native broker
	$(BIN)/handshake kafka stop --data-dir $(DATA)/kafka

clean: ## remove the virtualenv, jars and local data
	rm -rf $(VENV) deploy/kafka/lib deploy/kafka/target $(DATA)

# ScrewOps front door. `make demo` runs the main job, `make test` runs every test; both set up
# whatever a fresh machine lacks first (uv, the Python workspace, the stack's servers).
SHELL := /bin/bash
UV ?= uv
RUN := $(UV) run --frozen
STACK := $(RUN) python -m screwops_stack

.DEFAULT_GOAL := help
.PHONY: help setup up down status clean-stack test test-unit chaos lint fmt typecheck demo protos asyncapi schemas \
	compose-secrets bench-gateway bench-fuzz bench-quality

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install uv, the Python workspace and the stack's servers (cached after the first run)
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-packages
	bash deploy/local/install.sh all

up: setup ## start the local stack of real servers and wait until each answers
	$(STACK) up

down: ## stop the processes the stack started
	$(STACK) down

status: ## show each server's pid, memory, readiness, ports and log
	$(STACK) status

clean-stack: setup ## stop the stack and wipe its data (installed servers stay cached)
	$(STACK) clean --yes

lint: ## ruff
	$(RUN) ruff check .
	$(RUN) ruff format --check .

fmt: ## format and fix with ruff
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: ## mypy, strict
	$(RUN) mypy

test: up lint typecheck ## the test command: lint, types, then unit, integration, e2e and chaos tests on the real stack
	$(RUN) pytest

chaos: up ## the chaos scenarios alone (tests/chaos): servers killed under the running pipeline
	$(RUN) pytest tests/chaos

test-unit: setup ## unit tests only (no servers)
	$(RUN) pytest tests/unit

protos: ## regenerate libs/protos from protos/screwops/v1 (never edit the output by hand)
	$(RUN) python protos/generate.py

asyncapi: ## regenerate docs/asyncapi.yaml from the event contracts
	$(RUN) python -m screwops_contracts.asyncapi > docs/asyncapi.yaml

schemas: ## regenerate docs/schemas/ (what outside producers may publish) from the event contracts
	$(RUN) python -m screwops_contracts.schemas docs/schemas

bench-gateway: up ## gateway vs direct Triton: req/s, p50/p99 at concurrency 1/8/32, and ghz's figures
	$(RUN) python benchmarks/bench_gateway.py

bench-fuzz: up ## 10,000 hostile images at the running gateway: statuses, crashes, event-loop lag p99.9
	$(RUN) python benchmarks/fuzz_gateway.py $(ARGS)

bench-quality: up ## each model kind through the pipeline on the MVTec-shaped set, then hold-out AUROC, recall, false rejects
	$(RUN) python benchmarks/bench_quality.py $(ARGS)

compose-secrets: ## docker-compose's production secrets in .env (API tokens, MongoDB's and Grafana's passwords), kept once made
	$(RUN) python -m screwops_stack.compose_secrets --out .env

demo: up ## the main job: the stack, the services, and a whole pipeline run with live progress
	$(STACK) services up
	$(RUN) screwops demo

.PHONY: k8s-validate
k8s-validate: ## validate deploy/k8s with kubeconform (offline schemas) and check the Dockerfiles
	bash deploy/local/install.sh k8s
	$(RUN) pytest -q tests/unit/test_k8s.py tests/unit/test_dockerfiles.py

# Two commands for a new user: `make serve` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# uv (pinned, from PyPI) creates and fills the virtualenvs from the same pinned requirements files pip
# read: a cold install of requirements-dev.txt in ~16 s where pip took minutes, ~2 s with a warm cache.
# It lives in a tiny bootstrap venv of its own (.tools/), so a fresh Debian with python3 (and
# python3-venv, which `make venv` always needed) gets it with no manual step, nothing installed for
# the user or system-wide, and `make clean` removes it. Never a downloaded Python: the interpreter is
# $(PYTHON), as before.
UV_VERSION := 0.13.9
UV_HOME := .tools/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never
PORT ?= 8000
RUN_DIR ?= run
export FORECAST_REGISTRY_DIR ?= registry

.PHONY: serve test mlflow-deps docs docker-test swarm-test kube-play-test kube-deps train lint venv system-deps test-system-deps docker-deps bench bench-smoke bench-deps clean

# `exec`: make itself is the launcher's parent, so the launcher (and its stack) stops when make dies.
serve: venv system-deps  ## train the default model if the registry is empty, then serve on 127.0.0.1:$(PORT)
	$(PY) -m forecast bootstrap
	PORT=$(PORT) exec $(PY) -m launcher --run-dir $(RUN_DIR)

# The tests run in parallel workers (pytest-xdist, one per core): each worker has its own session
# fixtures (stacks on free ports, its own temp folders); a module marked xdist_group runs whole on one
# worker (--dist loadgroup), where its module fixtures are costly. TEST_WORKERS=0: one process.
# Then the tests marked under_load (tests/stack/stacks.py), in one process: they count on deadlines.
TEST_WORKERS ?= auto
test: lint docs system-deps test-system-deps mlflow-deps  ## lint, type-check, build the docs and every test (real nginx + uWSGI + mules)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not under_load"
	$(PY) -m pytest -m under_load

# A real MLflow tracking server for the tests (tests/mlflow/), in a virtualenv of its own: MLflow and its ~90
# packages are never the service's dependencies (docs/mlflow.md). Filled again only when its requirements change.
MLFLOW_VENV := .venv-mlflow
mlflow-deps: $(MLFLOW_VENV)/.installed

$(MLFLOW_VENV)/.installed: tests/mlflow/requirements.txt | $(UV)
	@test -x $(MLFLOW_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(MLFLOW_VENV)
	$(UV) pip install --quiet --python $(MLFLOW_VENV)/bin/python -r tests/mlflow/requirements.txt
	touch $@

# --strict: a broken link, a missing anchor or a docs page left out of mkdocs.yml's nav fails the build.
# NO_MKDOCS_2_WARNING: mkdocs-material's banner about its end of life (May 2027) on every build.
docs: venv  ## build the docs site (docs/, mkdocs.yml) into site/
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The image built from the Dockerfile as it is, on a local stand-in for its base (Docker Hub may be out of
# reach), and run for real: serving, health, logs, docker stop under load, the registry volume, replicas.
docker-test: venv system-deps docker-deps  ## build the Docker image and test it in a real Docker engine (root)
	$(PY) -m pytest tests/docker

# The stack file (deploy/swarm/) on a single-node Docker Swarm of that engine, under load: deploy, a rolling
# image update, a rollback Swarm makes itself, a killed replica, scaling, a promote (docs/swarm.md).
swarm-test: venv system-deps docker-deps  ## deploy the Swarm stack and roll, roll back, kill, scale and promote under load (root)
	$(PY) -m pytest tests/swarm

# The Kubernetes manifests (k8s/) played by podman with the image of that engine (docs/kubernetes.md).
kube-play-test: venv system-deps docker-deps kube-deps  ## play k8s/ with podman: ready, a prediction, a graceful stop (root)
	$(PY) -m pytest tests/kube

train: venv  ## train, evaluate, register and promote a model on the default data
	$(PY) -m forecast train

bench: venv system-deps bench-deps  ## the full benchmark suite (~30 min): benchmarks/REPORT.md
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.check benchmarks/results/latest.json

bench-smoke: venv system-deps bench-deps  ## every scenario for every system, short (a few minutes)
	$(PY) -m benchmarks.run --smoke
	$(PY) -m benchmarks.check benchmarks/results/smoke.json

# Ray Serve in its own venv, autocannon from npm (matplotlib, for the plots, is a dev requirement),
# HAProxy for Ray's high-throughput ingress (the suite leaves those systems out when not root).
# Both installs are skipped when up to date (node_modules newer than its lock file; install.sh checks
# the Ray venv's versions), so `make bench-smoke` after `make bench-deps` reinstalls nothing.
bench-deps: venv benchmarks/load/node_modules/.installed
	UV=$(abspath $(UV)) bash benchmarks/ray_serve/install.sh
	@if ! command -v haproxy >/dev/null && ! test -x /usr/sbin/haproxy; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing haproxy (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	  else \
	    echo "no haproxy and not root: the benchmark leaves out Ray's HAProxy configurations" >&2; \
	  fi; \
	fi

benchmarks/load/node_modules/.installed: benchmarks/load/package-lock.json
	cd benchmarks/load && npm ci --silent --no-audit --no-fund --prefer-offline
	touch $@

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

venv: $(VENV)/.installed app/ui/static/vendor/VERSION

# The planner page's chart library, from its pinned npm package (checked against its published hash).
app/ui/static/vendor/VERSION: app/ui/vendor.py | $(VENV)/.installed
	$(PY) app/ui/vendor.py

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(UV)
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(PY) -r requirements-dev.txt
	touch $@

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet uv==$(UV_VERSION)

# $(call debian,WHO,COMMAND:PACKAGE ...): each PACKAGE whose COMMAND is missing is installed with
# apt-get when we are root; otherwise the message says what WHO needs and how to install it.
define debian
	@missing=""; \
	for need in $(2); do \
	  command -v $${need%%:*} >/dev/null || test -x /usr/sbin/$${need%%:*} || missing="$$missing $${need##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "$(1) needs:$$missing; run 'sudo apt-get install$$missing' (Debian/Ubuntu), then retry." >&2; exit 1; \
	  fi; \
	fi
endef

# nginx, the front of the stack; the linker (binutils) that makes compiled trees a shared library.
system-deps:
	$(call debian,the stack,nginx:nginx ld:binutils)

# What the tests drive besides the stack: a real Prometheus (and promtool), Chromium for /docs, and gdb
# (to stop a process inside a uWSGI lock, tests/stack/test_locks.py).
test-system-deps:
	$(call debian,make test,prometheus:prometheus chromium:chromium gdb:gdb pg_ctlcluster:postgresql)

# A Docker engine (started by the tests when none runs) and debootstrap (the base image's stand-in).
docker-deps:
	$(call debian,make docker-test (as root),dockerd:docker.io debootstrap:debootstrap)

kube-deps:
	$(call debian,make kube-play-test (as root),podman:podman runc:runc catatonit:catatonit)

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) .tools data registry run site test-results .pytest_cache .mypy_cache .ruff_cache app/ui/static/vendor

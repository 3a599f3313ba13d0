# The two set-up commands of the README. Both build .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Three test workers on a two-core machine: most tests wait on hub processes, brokers and
# services rather than compute (the suite took 19.5 min with two workers, 14.8 with three).
TEST_WORKERS ?= 4

.PHONY: quickstart test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Prometheus and promtool for the observability tests, from Debian's package, unpacked into
# .tools/ (no root, no service installed). Where apt is missing, the step says so and goes on:
# the tests that need them then skip on a laptop and fail in CI.
TOOLS := .tools
$(TOOLS)/.prometheus:
	@mkdir -p $(TOOLS)/deb
	@if command -v apt-get >/dev/null; then \
	  (cd $(TOOLS)/deb && (apt-get download prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get download prometheus))) && \
	  dpkg-deb -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/prometheus && rm -rf $(TOOLS)/deb && touch $@; \
	else echo "no apt-get: install prometheus and promtool yourself, or their tests skip"; fi

# PgBouncer (and the c-ares library it needs) for the tests of a PostgreSQL behind a pooler in
# transaction mode, from Debian's packages, unpacked into .tools/ like Prometheus.
$(TOOLS)/.pgbouncer:
	@mkdir -p $(TOOLS)/deb-pgbouncer
	@if command -v apt-get >/dev/null; then \
	  (cd $(TOOLS)/deb-pgbouncer && (apt-get download pgbouncer libc-ares2 >/dev/null 2>&1 || \
	    (apt-get update -qq && apt-get download pgbouncer libc-ares2))) && \
	  for deb in $(TOOLS)/deb-pgbouncer/*.deb; do dpkg-deb -x $$deb $(TOOLS)/pgbouncer || exit 1; done && \
	  rm -rf $(TOOLS)/deb-pgbouncer && touch $@; \
	else echo "no apt-get: install pgbouncer yourself, or the tests of a pooled PostgreSQL skip"; fi

# OpenSSH's sshd (its internal SFTP server) for the sftp adapter's tests, from Debian's package.
$(TOOLS)/.openssh:
	@mkdir -p $(TOOLS)/deb-openssh
	@if command -v apt-get >/dev/null; then \
	  (cd $(TOOLS)/deb-openssh && (apt-get download openssh-server >/dev/null 2>&1 || \
	    (apt-get update -qq && apt-get download openssh-server))) && \
	  for deb in $(TOOLS)/deb-openssh/*.deb; do dpkg-deb -x $$deb $(TOOLS)/openssh || exit 1; done && \
	  rm -rf $(TOOLS)/deb-openssh && touch $@; \
	else echo "no apt-get: install openssh-server yourself, or the sftp adapter's tests skip"; fi

# checkov in a venv of its own (its many pins would fight the project's), for the chart's and the
# Dockerfile's security policies; the CRD models of the Prometheus operator and KEDA from npm,
# to validate the chart's custom resources.
$(TOOLS)/.checkov:
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/pip install --quiet 'checkov==3.3.30'
	touch $@

$(TOOLS)/.crd-models:
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS)/crd-models \
	    '@kubernetes-models/prometheus-operator@6' '@kubernetes-models/keda@2' && touch $@; \
	else echo "no npm: the chart's custom resources cannot be validated here, their tests skip"; fi

# The AsyncAPI Initiative's JSON Schemas of its specification (npm), to validate the hub's own
# AsyncAPI document against the official definition of 3.0.0.
$(TOOLS)/.asyncapi-specs:
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS)/asyncapi '@asyncapi/specs@6' && touch $@; \
	else echo "no npm: the AsyncAPI document cannot be validated here, its test skips"; fi

# Commands from Debian's packages, for tests that drive real programs: $(1) the commands, $(2) the
# packages, $(3) which tests need them. Present: done. Root on Debian: apt-get installs them.
# Otherwise the step says so, and those tests skip on a laptop and fail in CI.
define debian_commands
	@mkdir -p $(TOOLS)
	@if $(foreach c,$(1),command -v $(c) >/dev/null &&) true; then touch $@; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null 2>&1 || \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null)) && touch $@; \
	else echo "no $(1): install Debian's $(2), or $(3) skip"; fi
endef

# Debian's chromium for the console's browser tests (Playwright drives it; its own browser
# download cannot work offline).
$(TOOLS)/.chromium:
	$(call debian_commands,chromium,chromium,the console's browser tests)

# buildah, podman, runc and debootstrap for the image tests (tests/image): the Dockerfile built
# and run without a Docker daemon.
$(TOOLS)/.image-tools:
	$(call debian_commands,buildah podman runc debootstrap,buildah podman runc debootstrap,the image tests)

quickstart: $(VENV)/.installed
	$(BIN)/python examples/quickstart/run.py

# Lint, types, then the suite. pytest exits 5 when it collected nothing; make turns every
# non-zero exit into a failure, so "no tests" can never pass. Four workers on two cores: most
# tests wait on brokers, processes and timers rather than the CPU (each worker starts its own
# embedded broker); the suite took 1,152 s with three and 929 s with four, in the same hour.
# The fault tests, collected first, run one after the other at the head of the first worker's
# share (worksteal steals from a share's tail). Dealing them into two lanes was tried: on this
# 2-core machine the suite was no faster (1,739 s against 1,696) and the flaky-target test, beside
# the rolling restarts, took 763 s and failed its 240 s drain.
test: $(VENV)/.installed $(TOOLS)/.prometheus $(TOOLS)/.pgbouncer $(TOOLS)/.openssh $(TOOLS)/.checkov $(TOOLS)/.crd-models $(TOOLS)/.asyncapi-specs $(TOOLS)/.chromium $(TOOLS)/.image-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/kit $(foreach f,$(wildcard examples/*/run.py),&& $(BIN)/mypy --strict $(f))
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) *.egg-info .pytest_cache

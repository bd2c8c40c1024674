# mail_exporter: `make run` serves on the built-in config, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

# Debian packages the tests drive: real Postfix and Dovecot, Prometheus and Alertmanager
# (with promtool and amtool), Chromium for the status page, systemd for the unit checks,
# dnsmasq for the DNS checks, systemd-journal-remote to write a real journal file, snmpd,
# prometheus-snmp-exporter and rspamd for the paired exporters, podman (with runc,
# podman-compose and mmdebstrap for a base image from the apt mirror) for the image.
TEST_DEBIAN_PACKAGES := postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd prometheus prometheus-alertmanager chromium systemd dnsmasq-base systemd-journal-remote \
	snmpd snmp prometheus-snmp-exporter rspamd podman runc podman-compose mmdebstrap

.PHONY: run test test-packages test-exim test-podman image-test lint check bench clean

# Each stamp installs what its targets need into the one venv: `make run` the package and
# its runtime dependencies only; `make lint` adds the lint extra (ruff, mypy, stubs);
# `make test` (and bench) the test and lint extras, everything the suite needs.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(BIN)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.lint-tools: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[lint]'
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

run: $(BIN)/.runtime
	$(BIN)/mail-exporter $(ARGS)

# Installs only what is missing; Postfix is preseeded so apt asks nothing.
test-packages:
	@missing=$$(for p in $(TEST_DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections; \
		echo 'postfix postfix/mailname string localhost' | debconf-set-selections; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# A real Exim for the queue collector's tests, unpacked from Debian's package into
# $(EXIM_DIR) rather than installed (installing exim4 would remove postfix), with the
# libraries it needs that the system lacks. The binary looks up its compiled-in user.
EXIM_DIR := .cache/exim
EXIM_PACKAGE := exim4-daemon-light

$(EXIM_DIR)/usr/sbin/exim4:
	@echo "unpacking $(EXIM_PACKAGE) into $(EXIM_DIR)"; \
	set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	chown _apt "$$work" 2>/dev/null || true; \
	libraries=$$(apt-cache depends $(EXIM_PACKAGE) | awk '$$1 == "Depends:" && $$2 ~ /^lib/ {print $$2}' \
		| while read p; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	cd "$$work"; \
	apt-get download -qq $(EXIM_PACKAGE) $$libraries 2>/dev/null || { apt-get update -qq && apt-get download -qq $(EXIM_PACKAGE) $$libraries; }; \
	for deb in *.deb; do dpkg -x "$$deb" root; done; \
	missing=$$(LD_LIBRARY_PATH=root/usr/lib/x86_64-linux-gnu ldd root/usr/sbin/exim4 | grep 'not found' || true); \
	if [ -n "$$missing" ]; then echo "exim4 still lacks libraries:"; echo "$$missing"; exit 1; fi; \
	cd - >/dev/null; rm -rf $(EXIM_DIR); mkdir -p $(dir $(EXIM_DIR)); mv "$$work/root" $(EXIM_DIR)

test-exim: $(EXIM_DIR)/usr/sbin/exim4
	@id Debian-exim >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
		--home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim

# What the container tests (tests/test_image.py, tests/test_demo_stack.py,
# tests/test_logs_containers.py) need besides podman, kept under $(PODMAN_DIR) between
# runs. Debian's podman 4.3 names the compose services to each other only with netavark
# and aardvark-dns as its network backend (the CNI backend it defaults to has no DNS
# plugin in Debian): both are unpacked here, not installed, so the system's podman keeps
# its own backend. And a base image, since no container registry is reachable: a minimal
# bookworm from this machine's apt sources, with the apt options that set how it reaches
# the mirror (Acquire::..., not the hooks).
PODMAN_DIR := .cache/podman
NETAVARK_DIR := $(PODMAN_DIR)/netavark
BASE_TARBALL := $(PODMAN_DIR)/bookworm-minbase.tar

$(NETAVARK_DIR)/usr/lib/podman/netavark:
	@echo "unpacking netavark and aardvark-dns into $(NETAVARK_DIR)"; \
	set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	chown _apt "$$work" 2>/dev/null || true; \
	cd "$$work"; \
	apt-get download -qq netavark aardvark-dns 2>/dev/null || { apt-get update -qq && apt-get download -qq netavark aardvark-dns; }; \
	for deb in *.deb; do dpkg -x "$$deb" root; done; \
	cd - >/dev/null; rm -rf $(NETAVARK_DIR); mkdir -p $(PODMAN_DIR); mv "$$work/root" $(NETAVARK_DIR)

$(BASE_TARBALL):
	@echo "making a bookworm base image from this machine's apt sources into $@"; \
	set -e; mkdir -p $(PODMAN_DIR); \
	options=$$(grep -l '^Acquire::' /etc/apt/apt.conf.d/* | xargs grep -L -e '-Invoke' | sed 's/^/--aptopt=/'); \
	cat $$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null) \
		| mmdebstrap --quiet --format=tar --variant=minbase --include=passwd,ca-certificates,debian-archive-keyring \
			$$options bookworm $@.part - ; \
	mv $@.part $@

test-podman: $(NETAVARK_DIR)/usr/lib/podman/netavark $(BASE_TARBALL)

# The image built with podman and run: the exporter's image, then the compose demo stack.
image-test: $(BIN)/.installed test-packages test-podman
	$(BIN)/python -m pytest tests/test_image.py tests/test_demo_stack.py

# The local demo (docs/demo.md): real Postfix and Dovecot, the exporter,
# Prometheus and Alertmanager on loopback, until `make demo-stop` or Ctrl-C. As root.
DEMO_DIR ?= .cache/demo
DEMO := $(BIN)/python -m demo --dir $(DEMO_DIR)

.PHONY: demo demo-stop demo-break-dovecot demo-break-queue demo-repair

demo: $(BIN)/.installed
	$(DEMO) run

demo-stop:
	$(DEMO) stop

demo-break-dovecot:
	$(DEMO) break dovecot

demo-break-queue:
	$(DEMO) break queue

demo-repair:
	$(DEMO) repair

lint: $(BIN)/.lint-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/.installed test-packages test-exim test-podman lint
	$(BIN)/python -m pytest

# The build the container image ships, for the benchmarks that judge the exporter as
# shipped (logs, STARTTLS): Debian's python3.11, built with PGO and LTO as python:3.11-slim's
# interpreter is, with the wheel built as the Dockerfile builds it (MAIL_EXPORTER_COMPILE=1:
# the log parse compiled; build_support/). Needs Debian's python3.11-venv, python3.11-dev and
# gcc. pip rebuilds a local directory on every install, so this follows the checkout.
SHIPPED_PYTHON ?= /usr/bin/python3.11
SHIPPED := .cache/shipped

.PHONY: shipped
shipped:
	test -x $(SHIPPED)/bin/python || $(SHIPPED_PYTHON) -m venv $(SHIPPED)
	rm -rf build
	MAIL_EXPORTER_COMPILE=1 $(SHIPPED)/bin/pip install --quiet .
	rm -rf build

bench: $(BIN)/.installed shipped
	$(BIN)/python bench/scheduled_targets.py
	$(BIN)/python bench/starttls_vs_blackbox.py --python $(SHIPPED)/bin/python
	$(BIN)/python bench/postfix_queue.py
	$(BIN)/python bench/roundtrip.py
	$(BIN)/python bench/host.py
	$(BIN)/python bench/logs.py --python $(SHIPPED)/bin/python
	$(BIN)/python bench/dns_checks.py
	$(BIN)/python bench/hostile_clients.py
	$(BIN)/python bench/mailbox_stats.py
	$(BIN)/python bench/revocation.py
	$(BIN)/python bench/tls_scan.py
	$(BIN)/python bench/oauth2_probe.py
	$(BIN)/python bench/dovecot_collector.py
	$(BIN)/python bench/reports.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .cache

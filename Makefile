# mail_exporter: `make run` serves on the built-in config, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

# Debian packages the integration tests drive: real Postfix and Dovecot, and promtool.
TEST_DEBIAN_PACKAGES := postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd prometheus

.PHONY: run test test-packages lint check bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
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

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/.installed test-packages lint
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/scheduled_targets.py
	$(BIN)/python bench/starttls_vs_blackbox.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

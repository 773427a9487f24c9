# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP_PORT ?= 5000
SANDBOX_PORT ?= 8081
# Sandbox EHR vendor rules for the demo: generic | epic | oracle (sandbox_ehr/personalities/).
PERSONALITY ?= generic
CHROMIUM ?= /usr/bin/chromium
NGINX ?= /usr/sbin/nginx
# pytest-xdist workers: one per core (the suite is written to run in parallel: free ports, a schema per test).
PYTEST_WORKERS ?= auto

.PHONY: venv demo test lint bench clean chromium nginx

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Browser tests use Debian's Chromium (Playwright's own download does not work offline).
chromium:
	@test -x $(CHROMIUM) || (command -v apt-get >/dev/null && (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))) || echo "Chromium not installed: browser tests will be skipped (under CI they fail)"

# The `tls` tests put Debian's nginx in front of the app (TLS termination, X-Forwarded-*); they start it with
# their own config in a temp folder, never the system service.
nginx:
	@test -x $(NGINX) || (command -v apt-get >/dev/null && (apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null || (apt-get update -q >/dev/null && (apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null)))) || echo "nginx not installed: the reverse-proxy tls tests will be skipped (under CI they fail)"

demo: $(STAMP)
	$(BIN)/python -m sandbox_ehr.demo --app-port $(APP_PORT) --sandbox-port $(SANDBOX_PORT) --personality $(PERSONALITY)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) chromium nginx
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) instance .pytest_cache

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
ESPEAK ?= /usr/bin/espeak-ng
# pytest-xdist workers: one per core (the suite is written to run in parallel: free ports, a schema per test).
PYTEST_WORKERS ?= auto

# Hash-pinned locks made from pyproject.toml by `make lock`: runtime.lock (the image), dev.lock (the venv of
# `make test`, `make demo` and CI: runtime + dev + build extras + what builds the wheel), build-system.lock.
LOCKS := requirements
UV := $(BIN)/uv
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" -q \
	$(if $(UPGRADE),--upgrade)

.PHONY: venv demo test test-shuffle test-image lint lock bench clean chromium nginx espeak audio templates

# The venv installs exactly the pinned versions, then the project itself (editable, no dependency resolution);
# `pip check` stops a lock that no longer satisfies pyproject.toml.
$(STAMP): pyproject.toml $(LOCKS)/dev.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r $(LOCKS)/dev.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; echo "$(LOCKS)/*.lock do not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

venv: $(STAMP)

# Regenerate the locks after changing a dependency in pyproject.toml (pins already in a lock are kept);
# `make lock UPGRADE=1` takes the newest releases the caps allow. Commit the three files.
$(UV):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCKS)/dev.lock

lock: $(UV)
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o $(LOCKS)/runtime.lock
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(UV) pip compile - $(LOCK_FLAGS) -c $(LOCKS)/runtime.lock -o $(LOCKS)/build-system.lock
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(UV) pip compile pyproject.toml - --extra dev --extra build $(LOCK_FLAGS) \
			-c $(LOCKS)/runtime.lock -c $(LOCKS)/build-system.lock -o $(LOCKS)/dev.lock

# Browser tests use Debian's Chromium (Playwright's own download does not work offline), with Debian's Noto CJK
# fonts for the Chinese pages and printed card.
chromium:
	@test -x $(CHROMIUM) || (command -v apt-get >/dev/null && (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))) || echo "Chromium not installed: browser tests will be skipped (under CI they fail)"
	@fc-list :lang=zh family 2>/dev/null | grep -q . || (command -v apt-get >/dev/null && (apt-get install -y -q fonts-noto-cjk >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q fonts-noto-cjk >/dev/null))) || echo "No Chinese fonts (fonts-noto-cjk): the Chinese browser tests will be skipped (under CI they fail)"

# The `tls` tests put Debian's nginx in front of the app (TLS termination, X-Forwarded-*); they start it with
# their own config in a temp folder, never the system service.
nginx:
	@test -x $(NGINX) || (command -v apt-get >/dev/null && (apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null || (apt-get update -q >/dev/null && (apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null)))) || echo "nginx not installed: the reverse-proxy tls tests will be skipped (under CI they fail)"

# The clinic tablet's "Listen" audio, made offline by Debian's espeak-ng into smart_app/kiosk/static/audio/ (not in
# git; named by a hash of the exact text, so a changed wording is never read by a stale file).
espeak:
	@test -x $(ESPEAK) || (command -v apt-get >/dev/null && (apt-get install -y -q espeak-ng >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null))) || echo "espeak-ng not installed: the tablet falls back to the browser's speech (under CI the audio tests fail)"

audio: $(STAMP) espeak
	@if test -x $(ESPEAK); then ESPEAK=$(ESPEAK) $(BIN)/python -m smart_app.kiosk; fi

# The page templates compiled ahead into the folder the app reads at start (tuning.template_cache_dir, else
# var/ipv-templates in the venv), as the image's build does: a start loads their code instead of compiling it.
templates: $(STAMP)
	$(BIN)/flask --app smart_app:create_build_app compile-templates

demo: $(STAMP) audio templates
	$(BIN)/python -m sandbox_ehr.demo --app-port $(APP_PORT) --sandbox-port $(SANDBOX_PORT) --personality $(PERSONALITY)

# ruff, then the code shape of the product code (lint/shape.py): no function of cyclomatic complexity 25 or
# more (radon), no class over 250 lines, except what lint/allow.txt names with a reason.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m lint.shape

test: lint chromium nginx audio
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The same suite in a shuffled order (pytest-randomly prints its seed; PYTEST_ARGS="--randomly-seed=N" replays
# one): a test that passes only after another one built something fails here. `make test` keeps the file order
# (-p no:randomly in pyproject.toml's addopts, which this target replaces).
test-shuffle: lint chromium nginx audio
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -o addopts="-ra --strict-markers" -p randomly $(PYTEST_ARGS)

# The image's file system on a Debian base, run as uid 10001 (tests/ops/test_image_filesystem.py; root, minutes):
# the base is made once by debootstrap from Debian's registry and kept in .cache/.
IMAGE_BASE ?= .cache/image-base
$(IMAGE_BASE):
	@command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
	rm -rf $@.tmp && mkdir -p $(@D) && debootstrap --variant=minbase bookworm $(abspath $@.tmp) >/dev/null
	chroot $@.tmp apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates >/dev/null
	ln -s /usr/bin/python3 $@.tmp/usr/local/bin/python && mv $@.tmp $@

test-image: $(STAMP) $(IMAGE_BASE)
	IPV_IMAGE_BASE=$(abspath $(IMAGE_BASE)) $(BIN)/python -m pytest -n 0 -m image $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) instance .pytest_cache

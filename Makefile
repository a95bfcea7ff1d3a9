# Two commands do all the set-up on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medsplit-installed
# The CPU wheel, installed first so that nothing resolves a looser `torch` to a CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test test-fast lint typecheck install clean browser

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@if $(BIN)/python -m pip list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA packages were pulled in; install $(TORCH) (CPU) first" >&2; exit 1; fi
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medsplit demo --preset vertical --ushaped

# The README's test command (CI runs it on a fresh clone): lint, types, then every test, the slow ones included.
test: $(STAMP) browser lint typecheck
	$(BIN)/python -m pytest -q

# The quick loop while working: lint, types and the tests not marked slow.
test-fast: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check medsplit sites data_adapters dashboard benchmarks tests

# Strict on the core; the applications are checked with the defaults.
typecheck: $(STAMP)
	$(BIN)/mypy --strict medsplit
	$(BIN)/mypy sites data_adapters dashboard

# Chromium for the dashboard's browser test (Debian's package; Playwright drives it, nothing is downloaded
# by Playwright). Quiet and idempotent; where apt-get cannot run, that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
		elif [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
		else SUDO=none; fi; \
		if [ "$$SUDO" = none ]; then \
			echo "note: chromium is not installed and apt-get cannot run here; the dashboard browser test will be skipped" >&2; \
		else \
			echo "installing chromium (apt-get) for the dashboard browser test"; \
			( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
				>/dev/null 2>&1 || echo "note: apt-get could not install chromium; the dashboard browser test will be skipped" >&2; \
		fi; }

clean:
	rm -rf $(VENV) .pytest_cache

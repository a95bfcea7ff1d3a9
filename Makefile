# Two commands do all the set-up on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medsplit-installed
# The CPU wheel, installed first so that nothing resolves a looser `torch` to a CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test install clean

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
	$(BIN)/medsplit demo --preset vertical --ushaped --transport local

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

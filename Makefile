# tengine — set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= all,dev
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint docs bench clean postgres-server

install: $(STAMP)

# torch goes in first with its pin: an unpinned torch pulled in by a dependency would be a
# multi-GB CUDA build. The stamp makes a second `make install` a no-op until pyproject changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -c "import torch; print('torch', torch.__version__)" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" \
		--constraint <(echo "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')")
	@touch $(STAMP)

demo: install
	$(BIN)/tengine train configs/quickstart.yaml --run-dir runs/quickstart --resume never

# The control plane's tests start a throwaway PostgreSQL server (tests/pg.py): its server
# binaries are Debian's `postgresql` package, installed here where they are missing.
postgres-server:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ echo "installing PostgreSQL's server binaries (apt-get install postgresql)"; \
		  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q postgresql >/dev/null || \
		  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q >/dev/null && \
		    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q postgresql >/dev/null; }; }

test: install postgres-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check tengine tests bench scripts

docs: install
	$(BIN)/python scripts/gen_config_docs.py

bench: install
	$(BIN)/python bench/engine_overhead.py

clean:
	rm -rf runs .pytest_cache

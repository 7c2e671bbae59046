#!/usr/bin/env bash
# The MoE kernel path's GPU checks (issue 5) as one call on a lent GPU machine, sized to a 15-minute device budget.
#
#   bash bench/gpu_checks.sh                       # all stages, sized for about 7 minutes (not yet run on a GPU)
#   STAGES="tune layer_tuned" bash bench/gpu_checks.sh   # a rerun of the stages that did not finish
#
# Stages (each under its own time limit, so every stage reports even when one overruns):
#   env          the GPU, its driver, torch / triton / transformers versions
#   test         tests/test_moe_triton.py on CUDA (--noconftest: the suite's conftest needs Ray and Redis,
#                which a bare GPU machine lacks; this file needs only torch, triton and transformers)
#   layer        bench/moe_layer.py --json with the untuned heuristic tiles
#   tune         bench/tune_moe.py --space quick --budget-s $TUNE_S --json (tables into experts/moe/configs/)
#   layer_tuned  bench/moe_layer.py --json again, now reading the tuned tables
# Logs, the JSON lines and configs.tar.gz (the tuned tables, to commit) go to $OUT (default /tmp/gpu-checks).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-checks}
PY=${PY:-python3}
STAGES=${STAGES:-env test layer tune layer_tuned}
TEST_S=${TEST_S:-150}
LAYER_S=${LAYER_S:-90}
TUNE_S=${TUNE_S:-120}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks.sh needs a CUDA GPU and $PY with torch and triton on it; this machine has none" >&2
    exit 2
fi

status=0
stage() {  # stage NAME SECONDS COMMAND...: run one stage into $OUT/NAME.log, note how it ended
    local name=$1 limit=$2
    shift 2
    case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name (limit ${limit} s): $*"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: rc=$rc in $((SECONDS - started)) s" | tee -a "$OUT/stages.txt"
    [ "$rc" -eq 0 ] || status=1
}

stage env 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
    $PY -c 'import torch, triton, transformers; print(\"torch\", torch.__version__, \"triton\", triton.__version__, \
\"transformers\", transformers.__version__, torch.cuda.get_device_name())'"
stage test "$TEST_S" "$PY" -m pytest -q -p no:cacheprovider --noconftest tests/test_moe_triton.py
stage layer "$LAYER_S" "$PY" bench/moe_layer.py --json
stage tune $((TUNE_S + 60)) "$PY" bench/tune_moe.py --space quick --budget-s "$TUNE_S" --json
stage layer_tuned "$LAYER_S" "$PY" bench/moe_layer.py --json
case " $STAGES " in *" tune "*) tar -czf "$OUT/configs.tar.gz" experts/moe/configs ;; esac
exit $status

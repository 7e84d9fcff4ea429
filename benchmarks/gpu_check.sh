#!/usr/bin/env bash
# The prepared device check of the fused Triton scan (issue 31), in under 8 minutes on one GPU:
#   1. pytest -m gpu: the triton backend against the reference on CUDA (float64 and float32,
#      values and gradients; tiles of N; the sparse store), the sparse store on CUDA, fla's
#      DeltaNet against our own;
#   2. the speed suite on the GPU (`obs bench speed --full --device cuda`): tokens/s fwd and
#      fwd+bwd and peak memory of OBS (triton, reversible) and fla's DeltaNet, widths 64 and 256,
#      T = 2048, B = 8 and 64, N = 1024, 4096 (dense) and 16384 (sparse store);
#   3. the achieved bytes/s of OBS's row reads as a fraction of the GPU's HBM bandwidth.
# Writes docs/results/speed_gpu.md (+ .json, plots) and copies everything under $OUT.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh          # on the device machine, from the repo root
#
# The machine brings its own torch and Triton; the project runs from the tree (PYTHONPATH=.).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PY:-python3}
CELL_TIMEOUT=${CELL_TIMEOUT:-40}
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

echo "== 1. pytest -m gpu" | tee "$OUT/pytest.txt"
timeout 180 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py tests/test_triton_tiles.py \
  tests/test_triton_sparse.py tests/test_sparse_state.py \
  tests/test_deltanet.py tests/test_baselines.py 2>&1 | tail -40 | tee -a "$OUT/pytest.txt"

echo "== 2. speed suite" | tee "$OUT/speed.txt"
timeout 330 $PY -m onebigstate.cli.main bench speed --full --device cuda --models obs,deltanet_fla \
  --timeout "$CELL_TIMEOUT" --out "$OUT/runs" --docs docs/results 2>&1 | tail -40 | tee -a "$OUT/speed.txt"
if [ ! -f docs/results/speed_gpu.json ]; then
  # a run cut short keeps its finished cells: write the page from them
  $PY -m onebigstate.cli.main bench speed --full --device cuda --models obs,deltanet_fla --report-only \
    --out "$OUT/runs" --docs docs/results 2>&1 | tail -5 | tee -a "$OUT/speed.txt"
fi

echo "== 3. bandwidth" | tee "$OUT/bandwidth.txt"
$PY benchmarks/gpu_bandwidth.py docs/results/speed_gpu.json 2>&1 | tee -a "$OUT/bandwidth.txt"
cp docs/results/speed_gpu* "$OUT/" 2>/dev/null || true
echo "done: results under $OUT"

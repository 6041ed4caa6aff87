#!/usr/bin/env bash
# For the device machine (python3 there has CUDA torch; pydantic and friends travel as wheels in
# .whl/, see the device tool's README): the fast-path tests on CUDA, the GPU benchmarks, then the
# whole engine suite on CUDA (device "auto" picks the GPU). Figures land in $OUT (or bench/results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'

echo "== fast-path tests on CUDA"
python3 -m pytest -q -p no:cacheprovider tests/engine/test_fastpath.py 2>&1 | tail -15

echo "== engine vs hand loop on CUDA"
python3 -m bench.engine --device cuda --batch 64,512 --json "$OUT/engine_gpu.json"

if [ -f bench/sweep.py ]; then
  echo "== vectorized sweep on CUDA"
  python3 -m bench.sweep --device cuda --trials 16,64 --batch 64,512 --json "$OUT/sweep_gpu.json"
fi

echo "== engine suite on CUDA"
python3 -m pytest -q -p no:cacheprovider -x tests/engine 2>&1 | tail -25

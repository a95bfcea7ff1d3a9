#!/usr/bin/env bash
# The runtime benchmark on a machine with a CUDA GPU: each party's segments on the GPU, tensors crossing between
# parties as CPU bytes (in one process, and as a site process and a server process over gloo).
#
#   benchmarks/gpu.sh            (from the repository root, with .venv holding a CUDA build of torch)
#
# `make install` pins the CPU wheel; on a GPU machine install the same torch version's CUDA wheel into .venv
# first (pip's --index-url https://download.pytorch.org/whl/cuXXX), then run this. It says so and stops where
# torch sees no GPU. Results go to benchmarks/results/*_gpu.json; the tables are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh: torch {torch.__version__} sees no CUDA device; this needs a GPU machine and a "
             "CUDA build of torch")
print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
# The GPU tests (skipped on machines without a GPU) first: a server on the GPU trains as on the CPU.
"$PY" -m pytest -q -p no:cacheprovider tests/medsplit/test_device.py
export PYTHONPATH=.
# Every party on the GPU; the unsplit baseline on the GPU too.
"$PY" benchmarks/split_runtime.py --size 256 --steps 20 --rounds 15 --device site=cuda server=cuda \
    --modes local gloo gloo+int8 gloo+pipe2 --json benchmarks/results/split_runtime_gpu.json
# A hospital's site on its CPU, the server on the GPU.
"$PY" benchmarks/split_runtime.py --size 256 --steps 20 --rounds 15 --device server=cuda \
    --modes local gloo gloo+int8 --json benchmarks/results/split_runtime_gpu_server.json

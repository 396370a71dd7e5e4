#!/usr/bin/env bash
# Issue 12's GPU checks (items 3 and 4), about 2 minutes on an H100/H200: compacter++ on quantized T5-base bases
# (torchao int8 / int4, bitsandbytes nf4 / bnb-int8) against the bf16 base (memory, step time, logits, gradients,
# adapters that load onto the unquantized base), accelerate's cpu_offload with execution on the GPU, and a T5
# dispatched over two devices (two GPUs, or the GPU and the CPU on a one-GPU machine) against one GPU.
# Runs from the source tree with no install. torchao and bitsandbytes are needed for the quantized bases: where the
# image lacks them, put their wheels in a folder and pass it as WHEELS=folder (installed with --no-deps).
# Writes OUT_DIR/real_bases.json and real_bases.md; exits non-zero if a check failed (the others still run).
#   bash benchmarks/gpu_real_bases.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-.}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for package in torchao bitsandbytes; do
  if ! python -c "import $package" 2>/dev/null && [ -n "${WHEELS:-}" ]; then
    pip install --no-deps --no-index --find-links "$WHEELS" "$package" >/dev/null
  fi
done
PYTHONPATH=src python benchmarks/gpu_real_bases.py "$out" --steps 10

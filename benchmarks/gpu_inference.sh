#!/usr/bin/env bash
# Issues 13 and 14's GPU checks, about 3 minutes on an H100/H200: inference at the base model's speed
# (a forward pass and generate per method, relative to the bare base, T5-base in bf16) and serving many
# tasks from one base (8 tasks' compacter++ adapters on T5-small and T5-base, 64 requests: a mixed batch
# vs a single-task batch vs one batch per task vs the base alone; PEFT's LoRA mixed batch where peft is
# importable). Runs from the source tree with no install; writes JSON and Markdown tables to OUT_DIR.
#   bash benchmarks/gpu_inference.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-.}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run() { PYTHONPATH=src python -m compacter.cli bench "$@"; }
run --inference --model t5-base --dtype bf16 --batch-size 32 --source-length 128 --new-tokens 32 --steps 10 \
  --methods compacter++,compacter,adapter --json "$out/inference-t5-base-bf16.json"
for model in t5-small t5-base; do
  run --serve --peers --model "$model" --dtype bf16 --source-length 128 --new-tokens 8 --steps 10 \
    --json "$out/serve-$model-bf16.json"
done

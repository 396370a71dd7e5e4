#!/usr/bin/env bash
# Issue 5's GPU check, sized for a 15-minute device session: Table 3's set-up on random T5-base
# (bf16 autocast, batch 64, 128/16 tokens), every method of the paper plus the floor, and the
# peers where importable. Ratios are to full fine-tuning measured in the same run.
#   bash benchmarks/gpu_table3.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-.}}"
pip install -q -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
compacter bench --model t5-base --dtype bf16 --batch-size 64 --source-length 128 --target-length 16 --steps 10 \
  --methods full,layer-norms,adapter,pfeiffer,adapterdrop,adapter-lowrank,bitfit,phm-adapter,compacter,compacter++ \
  --peers --json "$out/t5-base-bf16-b64.json"

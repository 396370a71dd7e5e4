#!/usr/bin/env bash
# Issue 5's GPU check, sized for a 15-minute device session: Table 3's set-up on random T5-base
# (bf16 autocast, batch 64, 128/16 tokens), every adapter method of the paper plus the floor, and
# PEFT / AdapterHub where importable. Ratios are to full fine-tuning measured in the same run.
# Runs from the source tree with no install (the device image has torch, transformers and peft,
# and no network); the JSON and Markdown table are written before the PNG, which needs matplotlib.
#   bash benchmarks/gpu_table3.sh [OUT_DIR [more bench options, e.g. --compile --methods full,compacter++]]
set -euo pipefail
out="${1:-${OUT:-.}}"
shift || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONPATH=src python -m compacter.cli bench --model t5-base --dtype bf16 --batch-size 64 --source-length 128 \
  --target-length 16 --steps 10 --peers --json "$out/t5-base-bf16-b64.json" \
  --methods full,layer-norms,adapter,pfeiffer,adapterdrop,adapter-lowrank,bitfit,phm-adapter,compacter,compacter++ "$@"

#!/usr/bin/env bash
# Issue 21's one GPU command, sized for about 8 minutes on one H100/H200 (each part has its own time limit, and a
# part that fails or runs out of time does not stop the others; the limits are estimates from the parts' earlier
# GPU runs, not yet from a run of this script: resize them after its first run). One JSON + Markdown per part in OUT:
#   table3-t5-base-bf16   Table 3 on random T5-base (bf16 autocast, batch 64, 128/16 tokens): full, compacter++,
#                         compacter and PEFT's LoRA, eager and compiled in the same rounds (each mode's ratios to
#                         full fine-tuning in that mode), memory per method as if alone, kernels per step
#   inference-t5-base     a forward pass and generate (32 new tokens, batch 32) per method vs the base, eager and
#                         compiled (static KV cache, compiled step)
#   serve-t5-base         8 tasks on one base: mixed vs single-task vs one batch per task vs the base, PEFT's LoRA
#   real_bases            compacter++ on bf16 / int8 / int4 / nf4 / bnb-int8 T5-base bases, offloading, two devices
#   scale                 a 7B-shape Llama on an nf4 base with compacter++ (batch 4 x 512, gradient checkpointing),
#                         and T5-3B full fine-tuning vs compacter++, each alone
# torchao and bitsandbytes come from WHEELS (default .whl, made by benchmarks/gpu_wheels.sh) when not importable.
# --smoke: every Python part on the CPU with tiny models and 1 step (what CI runs, so that a GPU minute is never lost
# to a typo). On the device tool, which returns at most 8 files, write elsewhere and pack:
#   bash benchmarks/gpu_all.sh /tmp/gpu; tar czf "$OUT/gpu_all.tgz" -C /tmp gpu
#   bash benchmarks/gpu_all.sh [--smoke] OUT
set -uo pipefail
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out="${1:-${OUT:-.}}"
mkdir -p "$out"
wheels="${WHEELS:-.whl}"
for package in torchao bitsandbytes; do
  if ! python -c "import $package" 2>/dev/null && ls "$wheels"/"$package"-*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-all-site \
      "$wheels"/"$package"-*.whl && export PYTHONPATH="/tmp/gpu-all-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
done
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=()
part() {  # part NAME SECONDS COMMAND...: run it under a time limit (--smoke: 300 s), note a failure, go on
  local name=$1 limit=${smoke_limit:-$2} start=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" || failed+=("$name")
  echo "== $name: $((SECONDS - start)) s"
}
bench=(python -m compacter.cli bench)

if [ "$smoke" = 1 ]; then  # the same commands as on the GPU, with a tiny model and tiny sizes
  model="$(mktemp -d)/tiny-t5"
  python -c "import sys, transformers; transformers.T5Config(vocab_size=128, d_model=128, d_kv=32, d_ff=256,
num_layers=2, num_heads=4, decoder_start_token_id=0).save_pretrained(sys.argv[1])" "$model"
  methods=full,compacter++
  train=(--batch-size 2 --source-length 8 --target-length 4 --steps 1)
  infer=(--batch-size 2 --source-length 8 --new-tokens 2 --steps 1)
  serve=(--source-length 8 --new-tokens 2 --steps 1)
  backend=(--compile-backend eager)  # dynamo alone: the graphs, without inductor's C++ build
  scale=(--smoke)
  smoke_limit=300
else
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  model=t5-base
  methods=full,compacter++,compacter
  train=(--batch-size 64 --source-length 128 --target-length 16 --steps 10)
  infer=(--batch-size 32 --source-length 128 --new-tokens 32 --steps 5)
  serve=(--source-length 128 --new-tokens 8 --steps 5)
  backend=()
  scale=()
fi
part table3 200 "${bench[@]}" --model "$model" --dtype bf16 "${train[@]}" --methods "$methods" --peers --compile both \
  "${backend[@]}" --json "$out/table3-t5-base-bf16.json"
part inference 90 "${bench[@]}" --inference --model "$model" --dtype bf16 "${infer[@]}" --methods compacter++ \
  --compile "${backend[@]}" --json "$out/inference-t5-base.json"
part serve 40 "${bench[@]}" --serve --peers --model "$model" --dtype bf16 "${serve[@]}" --json "$out/serve-t5-base.json"
part real_bases 80 python benchmarks/gpu_real_bases.py "$out" --steps 5 "${scale[@]}"
part scale 90 python benchmarks/gpu_scale.py "$out" "${scale[@]}"

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed or out of time: ${failed[*]}"
  exit 1
fi
echo "all parts done: $out"

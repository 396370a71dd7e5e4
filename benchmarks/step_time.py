"""Training-step time and memory of every method relative to full fine-tuning, in one run.

    python benchmarks/step_time.py                       # random T5-small, CPU, fp32, batch 8, 128/8 tokens
    python benchmarks/step_time.py --model t5-base --dtype bf16 --batch-size 64 --target-length 16   # on a GPU

Ratios, not seconds, are what to compare: all methods run interleaved in the same process.
"""

import argparse

from compacter.bench import markdown_table, run_benchmark
from compacter.methods import METHODS

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="t5-small")
parser.add_argument("--methods", default=",".join(METHODS))
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--source-length", type=int, default=128)
parser.add_argument("--target-length", type=int, default=8)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
args = parser.parse_args()

results = run_benchmark(args.model, args.methods.split(","), batch_size=args.batch_size,
                        source_length=args.source_length, target_length=args.target_length,
                        steps=args.steps, dtype=args.dtype)
print(markdown_table(results))

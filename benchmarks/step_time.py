"""Training-step time and memory of every method relative to full fine-tuning, in one run.

    python benchmarks/step_time.py            # random T5-small, CPU, fp32, batch 8, 128/8 tokens, all methods
    python benchmarks/step_time.py --model t5-base --dtype bf16 --batch-size 64 --target-length 16   # a GPU
    python benchmarks/step_time.py --peers    # + PEFT LoRA / AdapterHub adapters where importable

Ratios, not seconds, are what to compare: all methods run interleaved in the same process.
Any option of `compacter bench` may be given; later options win.
"""

import sys

from compacter.cli import main

defaults = ["bench", "--model", "t5-small", "--methods", "all", "--dtype", "fp32", "--batch-size", "8",
            "--source-length", "128", "--target-length", "8", "--json", "step_time.json"]
sys.exit(main(defaults + sys.argv[1:]))

"""How far a mixed batch's rows are from each task's own outputs (float reassociation, not a bug).

    PYTHONPATH=src:tests python benchmarks/mixed_batch_rounding.py

Two tasks (Compacter and Compacter++, values drawn at a visible scale) on a tiny random BERT, a batch
routed a, b, b, a; each row's logits against the same row run by its own task alone; 5 seeds, fp32.
"""

import torch
from conftest import tiny_bert

import compacter


def main(seeds: int = 5) -> float:
    worst = 0.0
    for seed in range(seeds):
        model = compacter.apply(tiny_bert(seed=seed), "compacter", name="a")
        compacter.apply(model, "compacter++", name="b")
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in ("a", "b"):
                for param in compacter.trainable_parameters(model, name).values():
                    param.add_(torch.randn(param.shape, generator=generator) * 0.1)
            ids = torch.randint(2, 128, (4, 9), generator=generator)
            rows = ["a", "b", "b", "a"]
            with compacter.route(model, rows):
                mixed = model(input_ids=ids).logits
            for i, name in enumerate(rows):
                compacter.set_active(model, name)
                worst = max(worst, (mixed[i: i + 1] - model(input_ids=ids[i: i + 1]).logits).abs().max().item())
    print(f"largest |mixed row - own task| over {seeds} seeds (fp32 logits): {worst:.2g}")
    return worst


if __name__ == "__main__":
    main()

"""How far a routed batch of classifiers with other label counts is from each task's own model (float rounding).

    PYTHONPATH=src:tests python benchmarks/mixed_heads_rounding.py

A 2-label, a 5-label and a regression task (Compacter++, values moved as if trained) on one all-MiniLM-L6-v2
built with 2 labels, a batch of six sentences routed to them; each row's logits at its task's size against
the same row in its own model (the MiniLM with that task's label count); 5 seeds, fp32. Alone (``set_active``)
each task's logits are bit-identical to its own model's (tests/test_heads.py).
"""

import tempfile
from pathlib import Path

import torch
import transformers
from test_heads import PATH, ROWS, TASKS, TEXTS, classifier

import compacter


def trained(name, labels, seed):
    model = compacter.apply(classifier(len(labels) if labels else 1, labels), "compacter++", name=name)
    generator = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, name)))
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, name).values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def main(seeds: int = 5) -> float:
    tokenizer = transformers.AutoTokenizer.from_pretrained(PATH)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    worst = 0.0
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as folder, torch.no_grad():
            own, base = {}, classifier(2)
            for name, labels in TASKS.items():
                own[name] = trained(name, labels, seed)
                compacter.save(own[name], Path(folder) / name, name=name)
                compacter.load(base, Path(folder) / name)
            with compacter.route(base.eval(), ROWS):
                mixed = base(**batch).logits
            for i, name in enumerate(ROWS):
                alone = own[name](**batch).logits[i]
                worst = max(worst, (mixed[i, :alone.shape[0]] - alone).abs().max().item())
    print(f"largest |routed row - own model| over {seeds} seeds (fp32 logits): {worst:.2g}")
    return worst


if __name__ == "__main__":
    main()

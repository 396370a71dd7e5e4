"""Data and tiny "pretrained" folders for the training, sweep and report tests."""

import csv
from pathlib import Path

from conftest import write_tiny_pretrained
from glue_fixtures import WORDS, sentence, write_benchmarks


def sentiment_rows(count: int, offset: int = 0) -> list[dict]:
    """A learnable task: the label is the mood word the sentence contains."""
    moods = {"positive": ["good", "great", "fine"], "negative": ["bad", "awful", "poor"]}
    rows = []
    for i in range(offset, offset + count):
        label = "positive" if i % 2 else "negative"
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(4)]
        words.insert(i % 4, moods[label][i % 3])
        rows.append({"review": " ".join(words), "sentiment": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_splits(folder: Path, train: int, validation: int, test: int) -> Path:
    """A folder of sentiment reviews in train.csv, validation.csv and test.csv (different reviews in each)."""
    for name, count, offset in (("train", train, 0), ("validation", validation, 100), ("test", test, 200)):
        write_csv(folder / f"{name}.csv", sentiment_rows(count, offset=offset))
    return folder


def corpus() -> list[str]:
    texts = [r["review"] for r in sentiment_rows(50)] + [sentence(i) for i in range(3000)]
    labels = "entailment not_entailment positive negative rte review: sentence1: sentence2: sentiment".split()
    return texts + [" ".join(labels)]


def make_workspace(root: Path) -> dict[str, Path]:
    """GLUE fixture files, a user CSV, and tiny T5 / BERT / Llama folders sharing one tokenizer vocabulary."""
    paths = {"glue": write_benchmarks(root / "glue"), "csv": write_csv(root / "reviews.csv", sentiment_rows(160))}
    paths["t5"] = write_tiny_pretrained(root / "tiny-t5", "t5", corpus())
    paths["bert"] = write_tiny_pretrained(root / "tiny-bert", "bert", corpus())
    paths["llama"] = write_tiny_pretrained(root / "tiny-llama", "llama", corpus())
    return paths

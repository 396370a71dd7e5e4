"""`compacter report RUNS_DIR`: the paper's tables and figures from a folder of runs.

Every results.json below RUNS_DIR is one run. For each model, method, task and training size the
learning rate with the best mean validation score over seeds is chosen (the paper's selection; on
a tie the smaller rate: the one rule of training/selection.py, which `--lr auto` uses too); its
test scores give mean ± std over seeds. A `--lr auto` search's own results.json (a summary) is
skipped: its grid runs, in its sub-folders, are runs like any other. Written to RUNS_DIR/report (or --output):

* scores.md / scores.csv: methods × tasks (test score of the chosen learning rate), the average and
  % trained parameters, as the paper's Tables 1, 2 and 9;
* metrics.csv: every metric of every cell, mean and std over seeds;
* selection.csv: the validation score of each learning rate and which one was chosen;
* score_vs_params.png: average score against % trained parameters, marker area ∝ peak memory
  (Figure 2); score_vs_train_size.png: average score against training-set size (Figure 4), when
  the runs have several sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_write  # noqa: E402
from ..training import RESULTS_FILE  # noqa: E402
from ..training.selection import choose_learning_rate  # noqa: E402

CELL = ["model", "method", "train_size", "task"]


def collect(runs_dir: str | Path) -> pd.DataFrame:
    """One row per run: what it was and its validation / test metrics."""
    if not Path(runs_dir).is_dir():
        raise FileNotFoundError(f"{runs_dir} is not a folder; give the folder that holds the runs (a sweep's output_dir).")
    rows = []
    for path in sorted(Path(runs_dir).rglob(RESULTS_FILE)):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(results, dict) and results.get("learning_rate") == "auto":
                continue  # a search's summary: its runs are below it
            config = results["config"]
            row = {"model": Path(results["model"]).name, "method": results["method"], "task": results["task"],
                   "train_size": config["train_size"] or "all", "learning_rate": config["learning_rate"],
                   "seed": config["seed"], "validation": results["validation"]["score"],
                   "test": results["test"]["score"], "percent": results["parameters"]["percent"],
                   "peak_memory_bytes": results["peak_memory_bytes"], "path": str(path.parent)}
            row.update({f"test_{k}": v for k, v in results["test"].items() if k not in ("score", "invalid", "n")})
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # damaged, or not compacter's
            what = f"it lacks {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
            raise ValueError(f"{path} is not a results file of `compacter train` ({what}); a report reads every "
                             f"{RESULTS_FILE} below {runs_dir}, so move that file out of it.") from None
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"No {RESULTS_FILE} below {runs_dir}: run `compacter train` or `compacter sweep` first.")
    return pd.DataFrame(rows)


def select(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of the chosen learning rate per cell, and the selection table."""
    by_lr = runs.groupby(CELL + ["learning_rate"], as_index=False).agg(validation=("validation", "mean"),
                                                                        seeds=("seed", "count"))
    picks = {cell: choose_learning_rate(zip(group["learning_rate"], group["validation"]))
             for cell, group in by_lr.groupby(CELL)}
    by_lr["chosen"] = [picks[tuple(row[c] for c in CELL)] == row["learning_rate"] for _, row in by_lr.iterrows()]
    best = by_lr[by_lr["chosen"]]
    chosen = runs.merge(best[CELL + ["learning_rate"]], on=CELL + ["learning_rate"])
    return chosen, by_lr


def tables(chosen: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores: one row per model/method/size, one "mean ± std" column per task; metrics: long form)."""
    metric_columns = [c for c in chosen.columns if c.startswith("test")]
    metrics = chosen.groupby(CELL)[metric_columns].agg(["mean", "std"]).reset_index()
    metrics.columns = ["_".join(c for c in column if c) for column in metrics.columns]
    cells = chosen.groupby(CELL).agg(mean=("test", "mean"), std=("test", "std"), percent=("percent", "first"),
                                     memory=("peak_memory_bytes", "max")).reset_index()
    cells["text"] = [f"{m:.2f}" if pd.isna(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(cells["mean"], cells["std"])]
    scores = cells.pivot_table(index=["model", "method", "train_size"], columns="task", values="text", aggfunc="first")
    summary = cells.groupby(["model", "method", "train_size"]).agg(average=("mean", "mean"), percent=("percent", "first"),
                                                                     peak_memory_gb=("memory", "max"))
    summary["peak_memory_gb"] = summary["peak_memory_gb"] / 1e9
    scores = scores.join(summary.round({"average": 2, "percent": 4, "peak_memory_gb": 2})).reset_index()
    return scores, metrics


def write_report(runs_dir: str | Path, output: str | Path | None = None) -> Path:
    runs = collect(runs_dir)
    chosen, selection = select(runs)
    scores, metrics = tables(chosen)
    output = Path(output or Path(runs_dir) / "report")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write(output / "scores.md", lambda tmp: Path(tmp).write_text(markdown(scores) + "\n"))
    for name, frame in (("scores", scores), ("metrics", metrics), ("selection", selection)):
        atomic_write(output / f"{name}.csv", lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    _plot_params(scores, output / "score_vs_params.png")
    if scores["train_size"].nunique() > 1:
        _plot_sizes(scores, output / "score_vs_train_size.png")
    return output


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _plot_params(scores: pd.DataFrame, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    full_sizes = scores[scores["train_size"] == "all"] if (scores["train_size"] == "all").any() else scores
    largest = max(full_sizes["peak_memory_gb"].max(), 1e-9)
    for _, row in full_sizes.iterrows():
        axis.scatter(row["percent"], row["average"], s=40 + 400 * row["peak_memory_gb"] / largest, alpha=0.6)
        axis.annotate(row["method"], (row["percent"], row["average"]), fontsize=8)
    axis.set_xscale("log")
    axis.set(xlabel="trained parameters (%)", ylabel="average test score",
             title="Score vs trained parameters (area: peak memory)")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def _plot_sizes(scores: pd.DataFrame, path: Path) -> None:
    sized = scores[scores["train_size"] != "all"].copy()
    sized["train_size"] = sized["train_size"].astype(int)
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, rows in sized.groupby("method"):
        rows = rows.sort_values("train_size")
        axis.plot(rows["train_size"], rows["average"], marker="o", label=method)
    axis.set_xscale("log")
    axis.set(xlabel="training examples", ylabel="average test score", title="Score vs training-set size")
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)

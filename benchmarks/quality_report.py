"""benchmarks/quality.py's tables, plot and summary: means and spreads over seeds, gaps to full fine-tuning.

A cell is one (training-set size, method, learning-rate setting, corpus): the mean and the standard
deviation (n − 1) of its test accuracy over seeds. The gap to full fine-tuning pairs each seed's run with
full fine-tuning's run of the same corpus, size, setting and seed (the same split, the same examples),
and its 95% interval is Student's t over those paired differences. Averaged over corpora, the gap is the
mean of the corpora's mean gaps, with the interval from their pooled variances (a corpus needs two
paired seeds to count towards an interval).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats

from compacter.io import atomic_write
from compacter.training.expectations import recipe_flags
from compacter.training.selection import choose_learning_rate

README_BEGIN, README_END = "<!-- benchmarks/quality.py: begin -->", "<!-- benchmarks/quality.py: end -->"
CONFIDENCE = 0.95


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def _interval(differences_by_corpus: list[list[float]]) -> tuple[float, float] | None:
    """The 95% t-interval of the mean over corpora of each corpus's mean paired difference."""
    usable = [d for d in differences_by_corpus if len(d) > 1]
    if len(usable) != len(differences_by_corpus) or not usable:
        return None
    count = len(usable)
    center = statistics.fmean(statistics.fmean(d) for d in usable)
    error = math.sqrt(sum(statistics.variance(d) / len(d) for d in usable)) / count
    freedom = sum(len(d) - 1 for d in usable)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, freedom) * error
    return center - half, center + half


def _paired(runs: dict[int, dict], full: dict[int, dict]) -> list[float]:
    """Each seed's test accuracy minus full fine-tuning's on the same seed (the same split and examples)."""
    return [runs[seed]["test_accuracy"] - full[seed]["test_accuracy"] for seed in sorted(runs) if seed in full]


def _mean_gap(gaps_by_corpus: list[list[float]]) -> dict | None:
    """The mean over corpora of each corpus's mean paired gap, with its interval; None unless every corpus has one."""
    if not gaps_by_corpus or not all(gaps_by_corpus):
        return None
    return {"mean": statistics.fmean(statistics.fmean(g) for g in gaps_by_corpus),
            "interval": _interval(gaps_by_corpus), "seeds": min(len(g) for g in gaps_by_corpus)}


def build(records: list[dict], *, runs_finished: int, runs_planned: int, corpora: list[str], methods: list[str],
          sizes: dict[str, str], cards: dict, rate_evidence: list[dict] | None = None,
          recipes: dict[str, dict] | None = None, head_factors: dict[str, float] | None = None) -> dict:
    """``sizes``: each training-set size's name → its title (``whole`` → "whole training set, 3 epochs");
    ``recipes``: another recipe's name → its settings: ``base``, the size whose full fine-tuning runs its gap is
    measured against, ``flags``, how `compacter train` sets it, ``head_lr_factor``, the head's rate as a multiple
    of the method's where the recipe sets it, and ``steps_factor``, its optimizer steps as a multiple of its base's;
    ``head_factors``: each method's default multiple."""
    compared_with = {name: recipe["base"] for name, recipe in (recipes or {}).items()}
    # Every cell's mean and spread, and each method's gap to full fine-tuning per corpus and averaged.
    by_cell: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for run in records:
        by_cell[(run["size"], run["method"], run["auto"], run["corpus"])][run["seed"]] = run
    rows = []
    order = {method: index for index, method in enumerate(methods)}
    size_order = list(sizes)
    cells = sorted({key[:3] for key in by_cell}, key=lambda k: (k[2], size_order.index(k[0]), order[k[1]]))
    for size, method, auto in cells:
        row = {"size": size, "method": method, "auto": auto, "corpora": {}}
        gaps, same_recipe_gaps = [], []
        for corpus in corpora:
            runs = by_cell.get((size, method, auto, corpus), {})
            if not runs:
                continue
            paired = _paired(runs, by_cell.get((compared_with.get(size, size), "full", auto, corpus), {}))
            row["corpora"][corpus] = {
                "accuracy": _spread([run["test_accuracy"] for run in runs.values()]),
                "gap": _spread(paired) if paired and method != "full" else None,
                "train_time_s": statistics.median(run["train_time_s"] for run in runs.values()),
                "learning_rates": sorted({run["learning_rate"] for run in runs.values()}),
                "trained_percent": next(iter(runs.values()))["trained_percent"]}
            gaps.append(paired)
            if size in compared_with:  # a recipe full fine-tuning has run too: the same recipe on both sides
                same_recipe_gaps.append(_paired(runs, by_cell.get((size, "full", auto, corpus), {})))
        complete = len(row["corpora"]) == len(corpora)
        row["mean_accuracy"] = (statistics.fmean(c["accuracy"]["mean"] for c in row["corpora"].values())
                                if complete else None)
        row["gap"] = _mean_gap(gaps) if complete and method != "full" else None
        if size in compared_with:
            row["same_recipe_gap"] = _mean_gap(same_recipe_gaps) if complete and method != "full" else None
        rows.append(row)
    evidence = _recipe_evidence([run for run in records if not run["auto"]], recipes or {}, corpora, methods,
                                head_factors or {})
    return {"model": "all-MiniLM-L6-v2", "family": "encoder", "corpora": corpora, "cards": cards, "sizes": size_order,
            "size_titles": sizes,
            "recipes": {name: {key: recipe[key] for key in ("base", "flags", "head_lr_factor", "steps_factor")
                               if key in recipe}
                        for name, recipe in (recipes or {}).items()},
            "runs_finished": runs_finished, "runs_planned": runs_planned, "rows": rows, "runs": records,
            "learning_rates": rate_evidence or [], "recipe_evidence": evidence}


def _recipe_evidence(records: list[dict], recipes: dict[str, dict], corpora: list[str], methods: list[str],
                     head_factors: dict[str, float]) -> list[dict]:
    """Per (recipe, method): the mean validation score over every corpus and the seeds that both the recipe and what
    it is compared with have run on all of them, at the same learning rate: the evidence for making a recipe the
    default (a change of default is chosen on validation, as a learning rate is). Test accuracy beside it, not used.
    A recipe is compared with its base size, or, where it keeps the head at another multiple than the method's
    default (it ran before the default moved), with the base size's recipe at that multiple (``against``), so that
    the one setting it changes is what differs."""
    by_run = {(run["size"], run["method"], run["corpus"], run["seed"]): run for run in records}
    rows = []
    for recipe, settings in recipes.items():
        for method in methods:
            against = _compared_with(recipe, recipes, head_factors.get(method))
            seeds = sorted({seed for (size, m, _, seed) in by_run if (size, m) == (recipe, method)
                            and all((s, method, c, seed) in by_run for s in (recipe, against) for c in corpora)})
            if against is None or not seeds:
                continue
            scores = {size: {key: statistics.fmean(by_run[(size, method, c, seed)][key] for c in corpora for seed in seeds)
                             for key in ("validation", "test_accuracy")} for size in (against, recipe)}
            rows.append({"recipe": recipe, "base": settings["base"], "against": against, "method": method,
                         "seeds": len(seeds), "scores": scores,
                         "change": scores[recipe]["validation"] - scores[against]["validation"]})
    return rows


def _compared_with(recipe: str, recipes: dict[str, dict], head_factor: float | None) -> str | None:
    """What ``recipe`` is compared with for a method whose default head factor is ``head_factor``: its base size,
    or the base size's recipe that sets only the head, at the recipe's factor (None: none of the recipes)."""
    settings = recipes[recipe]
    factor = settings.get("head_lr_factor")
    # a recipe of the head alone, or one at the method's default (or an unknown default) multiple: the base
    if factor is None or head_factor is None or factor == head_factor or not settings.get("flags"):
        return settings["base"]
    return next((name for name, other in recipes.items() if other["base"] == settings["base"]
                 and not other.get("flags") and other.get("head_lr_factor") == factor), None)


def learning_rates(runs: list[dict], defaults: dict[str, float], corpora: list[str]) -> list[dict]:
    """Per (size, method, variant): each rate's mean validation score over every corpus and the seeds that every rate
    has run on all of them, and the rate the library's selection rule picks on it: the evidence a default stands on
    (a partial benchmark compares its rates on the seeds they share). A run's ``variant`` (default none) is the
    flags it trained with beyond its size's, such as another pooling. Test scores are shown beside it, never used to
    choose."""
    by_rate: dict[tuple, dict[tuple[str, int], dict]] = defaultdict(dict)
    for run in runs:
        by_rate[(run.get("variant", ""), run["size"], run["method"], run["learning_rate"])][(run["corpus"],
                                                                                             run["seed"])] = run
    rows = []
    for variant, size, method in sorted({key[:3] for key in by_rate}):
        found = {rate: by_run for (v, s, m, rate), by_run in sorted(by_rate.items()) if (v, s, m) == (variant, size,
                                                                                                      method)}
        complete = {rate: {seed for _, seed in by_run if all((c, seed) in by_run for c in corpora)}
                    for rate, by_run in found.items()}
        seeds = sorted(set.intersection(*complete.values()))
        if len(found) < 2 or not seeds:
            continue
        rates = {rate: {"validation": statistics.fmean(by_run[(c, s)]["validation"] for c in corpora for s in seeds),
                        "test_accuracy": statistics.fmean(by_run[(c, s)]["test_accuracy"] for c in corpora
                                                          for s in seeds)}
                 for rate, by_run in found.items()}
        best = choose_learning_rate((rate, score["validation"]) for rate, score in rates.items())
        rows.append({"size": size, "variant": variant, "method": method, "default": defaults.get(method),
                     "best_on_validation": best, "seeds": len(seeds), "rates": rates})
    rows += [_both_sizes(method, variant, same) for variant, method in sorted({(r["variant"], r["method"]) for r in rows})
             if len(same := [r for r in rows if (r["variant"], r["method"]) == (variant, method)]) > 1
             and all(r["rates"].keys() == same[0]["rates"].keys() for r in same)]
    return sorted(rows, key=lambda row: (row["variant"], row["method"], row["size"] == "both", row["size"]))


def _both_sizes(method: str, variant: str, rows: list[dict]) -> dict:
    """One default serves every data size: each rate's validation score averaged over the sizes (each size's mean
    over corpora and seeds counting once), and the selection rule's pick on it, which the default follows."""
    rates = {rate: {key: statistics.fmean(row["rates"][rate][key] for row in rows)
                    for key in ("validation", "test_accuracy")} for rate in rows[0]["rates"]}
    best = choose_learning_rate((rate, score["validation"]) for rate, score in rates.items())
    return {"size": "both", "variant": variant, "method": method, "default": rows[0]["default"],
            "best_on_validation": best, "seeds": min(row["seeds"] for row in rows), "rates": rates}


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "—"
    accuracy = cell["accuracy"]
    spread = f" ± {accuracy['std']:.1f}" if accuracy["std"] is not None else ""
    return f"{accuracy['mean']:.1f}{spread}" + (f" ({accuracy['n']})" if accuracy["n"] < 3 else "")


def _gap(gap: dict | None) -> str:
    if gap is None:
        return "—"
    interval = gap["interval"]
    return f"{gap['mean']:+.1f}" + (f" [{interval[0]:+.1f}, {interval[1]:+.1f}]" if interval else "")


def markdown(report: dict) -> str:
    corpora = report["corpora"]
    lines = [f"Test accuracy, mean ± standard deviation over seeds (a count in brackets: fewer than 3 seeds so far); "
             f"{report['runs_finished']} of {report['runs_planned']} runs finished. Gap: points against full "
             f"fine-tuning, paired by seed, averaged over the corpora, with its {CONFIDENCE:.0%} interval."]
    for auto in (False, True):
        for size in report["sizes"]:
            rows = [row for row in report["rows"] if row["size"] == size and row["auto"] == auto]
            if not rows:
                continue
            base = _bases(report).get(size)
            same_recipe = any(row.get("same_recipe_gap") for row in rows)
            notes = ([f"gap: against full fine-tuning on the {report['size_titles'][base]}"] if base else []) + (
                ["same recipe: against full fine-tuning trained the same way"] if same_recipe else [])
            against = f" ({'; '.join(notes)})" if notes else ""
            lines += ["", f"**{report['size_titles'][size]}, {'`--lr auto`' if auto else 'default learning rates'}"
                      f"{against}**", "",
                      "| method | % trained | " + " | ".join(corpora) + " | mean | gap to full | "
                      + ("same recipe | " if same_recipe else "") + "median s / run |",
                      "|---|---:|" + "---:|" * (len(corpora) + 3 + same_recipe)]
            for row in rows:
                cells = [row["corpora"].get(corpus) for corpus in corpora]
                present = [c for c in cells if c]
                percent = present[0]["trained_percent"]
                mean = "—" if row["mean_accuracy"] is None else f"{row['mean_accuracy']:.1f}"
                seconds = statistics.median(c["train_time_s"] for c in present)
                same = f" {_gap(row.get('same_recipe_gap'))} |" if same_recipe else ""
                lines.append(f"| {row['method']} | {percent:.3g} | " + " | ".join(_cell(c) for c in cells)
                             + f" | {mean} | {_gap(row['gap'])} |{same} {seconds:.0f} |")
    if report["learning_rates"]:
        lines += ["", "**Learning rates on validation** (mean over every corpus and the seeds every rate has run; the "
                  "pick is the selection rule's, on validation; test accuracy beside it, not used to choose; "
                  "*both*: the two sizes' means averaged, the score one default for every size is chosen on; a size with "
                  "flags: runs trained with them)", "",
                  "| data | method | seeds | default | validation (test) at each rate | best on validation |",
                  "|---|---|---:|---:|---|---:|"]
        for row in report["learning_rates"]:
            scores = ", ".join(f"{rate:g}: {score['validation']:.1f} ({score['test_accuracy']:.1f})"
                               for rate, score in row["rates"].items())
            mark = "" if row["best_on_validation"] == row["default"] else " ←"
            data = f"{row['size']}, {row['variant']}" if row.get("variant") else row["size"]
            lines.append(f"| {data} | {row['method']} | {row['seeds']} | {row['default']:g} | {scores} | "
                         f"{row['best_on_validation']:g}{mark} |")
    if report.get("recipe_evidence"):
        lines += ["", "**Recipes on validation** (each recipe against its base size at the same learning rate; mean "
                  "over every corpus and the seeds both have run; test accuracy beside it, not used to choose: the "
                  "evidence a default is chosen on, as a learning rate is)", "",
                  "| data | recipe | method | seeds | base: validation (test) | recipe: validation (test) | change |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for row in report["recipe_evidence"]:
            base, recipe = (row["scores"][size] for size in (row["against"], row["recipe"]))
            flags = recipe_flags(report["recipes"][row["recipe"]])
            data = row["base"] if row["against"] == row["base"] else (
                f"{row['base']}, {recipe_flags(report['recipes'][row['against']])}")
            lines.append(f"| {data} | {flags} | {row['method']} | {row['seeds']} | "
                         f"{base['validation']:.1f} ({base['test_accuracy']:.1f}) | "
                         f"{recipe['validation']:.1f} ({recipe['test_accuracy']:.1f}) | {row['change']:+.1f} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Accuracy against % trained parameters (log scale), averaged over corpora: the paper's Figure 1, per size. A
    colour per method and a marker per recipe (the legends say which), so that many points stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    compared_with = _bases(report)
    sizes = [size for size in report["sizes"] if size not in compared_with]  # another recipe: on its base's panel
    shown = [row for row in report["rows"] if not row["auto"] and row["mean_accuracy"] is not None]
    colours = {method: plt.cm.tab10(index % 10)
               for index, method in enumerate(dict.fromkeys(row["method"] for row in shown))}
    flags = {size: "defaults" for size in sizes} | {name: recipe_flags(recipe) for name, recipe in report["recipes"].items()}
    markers = {flag: "osD^v<>p*"[index % 9] for index, flag in enumerate(dict.fromkeys(flags.values()))}
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes) + 2.5, 4.5), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        for row in shown:
            if row["size"] != size and compared_with.get(row["size"]) != size:
                continue
            cells = list(row["corpora"].values())
            spread = statistics.fmean(c["accuracy"]["std"] or 0.0 for c in cells)
            axis.errorbar(cells[0]["trained_percent"], row["mean_accuracy"], yerr=spread, capsize=3,
                          fmt=markers[flags[row["size"]]],
                          color=colours[row["method"]])
        axis.set_xscale("log")
        axis.set_xlabel("% of the model's parameters trained")
        axis.set_ylabel(f"test accuracy, mean over {len(report['corpora'])} corpora")
        axis.set_title(report["size_titles"][size])
        axis.grid(alpha=0.3)
    used = {flags[row["size"]] for row in shown}
    handles = [Line2D([], [], color=colour, marker="o", linestyle="", label=method) for method, colour in colours.items()]
    handles += [Line2D([], [], color="black", marker=marker, linestyle="", label=flag)
                for flag, marker in markers.items() if flag in used]
    figure.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    figure.suptitle("all-MiniLM-L6-v2, default learning rates\n(bars: the corpora's mean standard deviation over seeds)",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0, 1 - 2.3 / figure.get_figwidth(), 1))
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def _bases(report: dict) -> dict[str, str]:
    """Each other recipe's name → the size whose full fine-tuning runs its gap is measured against."""
    return {name: recipe["base"] for name, recipe in report["recipes"].items()}


def write(report: dict, folder: Path, readme: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    atomic_write(folder / "quality.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(folder / "quality.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    plot(report, folder / "quality.png")
    if readme:
        text = Path(readme).read_text()
        if README_BEGIN not in text or README_END not in text:
            raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} markers to put the table between.")
        head, rest = text.split(README_BEGIN, 1)
        updated = head + README_BEGIN + "\n" + table + "\n" + README_END + rest.split(README_END, 1)[1]
        atomic_write(Path(readme), lambda tmp: Path(tmp).write_text(updated))


def summary(report: dict) -> dict:
    """What `compacter train` says of a method before it trains: the measured gap to full fine-tuning."""
    entries: dict = {}
    for row in report["rows"]:
        if row["gap"] is None and row["method"] != "full":
            continue
        setting = "auto" if row["auto"] else "default"
        base = _bases(report).get(row["size"], row["size"])
        full = next((r for r in report["rows"] if r["size"] == base and r["auto"] == row["auto"]
                     and r["method"] == "full"), None)
        entries.setdefault(setting, {}).setdefault(row["size"], {})[row["method"]] = {
            "accuracy": row["mean_accuracy"], "full_accuracy": full["mean_accuracy"] if full else None,
            **_summary_gap(row["gap"])}
        if row.get("same_recipe_gap"):
            entries[setting][row["size"]][row["method"]]["same_recipe"] = _summary_gap(row["same_recipe_gap"])
    recipes = {name: {**recipe, "title": report["size_titles"][name]} for name, recipe in report["recipes"].items()}
    return {"model": report["model"], "family": report["family"], "corpora": report["corpora"],
            "source": "benchmarks/quality.py (README, 'Quality over datasets and seeds')", "entries": entries,
            "recipes": recipes}


def _summary_gap(gap: dict | None) -> dict:
    """A gap as the summary keeps it; full fine-tuning's own row has none (0.0)."""
    return {"gap": gap["mean"] if gap else 0.0, "interval": list(gap["interval"]) if gap and gap["interval"] else None,
            "seeds": gap["seeds"] if gap else None}


def write_summary(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(summary(report), indent=2) + "\n"))

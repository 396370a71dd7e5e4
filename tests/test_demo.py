"""`compacter demo`: the real MiniLM on the real BBC News articles (a small stratified sample here)."""

import json

import pandas as pd

from compacter.cli import main
from compacter.demo import TOPICS, bbc_news_articles, write_splits


def test_demo_split_is_stratified_deterministic_and_the_papers_sizes(tmp_path):
    articles = bbc_news_articles()
    assert len(articles) == 2225 and {a["topic"] for a in articles} == set(TOPICS)
    folder = write_splits(tmp_path / "a", seed=42)
    frames = {s: pd.read_csv(folder / f"{s}.csv") for s in ("train", "validation", "test")}
    assert [len(f) for f in frames.values()] == [1446, 222, 557]
    overall = pd.Series([a["topic"] for a in articles]).value_counts(normalize=True)
    for frame in frames.values():
        share = frame["topic"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.01
    assert set(frames["train"]["article"]).isdisjoint(frames["test"]["article"])
    again = write_splits(tmp_path / "b", seed=42)
    assert (again / "test.csv").read_text() == (folder / "test.csv").read_text()


def test_demo_runs_end_to_end_on_a_sample(tmp_path, capsys, monkeypatch):
    import compacter.demo as demo

    original = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda output, **kw: original(output, **kw, limit=120, max_length=32))
    assert main(["demo", "--output-dir", str(tmp_path), "--methods", "compacter++,linear-probe", "--epochs", "1"]) == 0
    table = capsys.readouterr().out
    assert "| compacter++ |" in table and "| linear-probe |" in table
    rows = json.loads((tmp_path / "demo.json").read_text())
    assert [r["method"] for r in rows] == ["compacter++", "linear-probe"]
    assert rows[1]["trained_percent"] < rows[0]["trained_percent"] < 0.1
    assert all(0 <= r["test_accuracy"] <= 100 and r["file_bytes"] < 200_000 for r in rows)

"""Quiet by default: no torchao kernel messages, pytree deprecations or load reports of the heads we supply."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from conftest import write_tiny_pretrained
from safetensors.torch import load_file, save_file
from training_fixtures import corpus, sentiment_rows, write_csv

from compacter.cli import main
from compacter.quiet import only_missing_heads

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
    [str(Path(__file__).parent.parent / "src"), str(Path(__file__).parent)])}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_tiny_pretrained(tmp_path_factory.mktemp("tiny-bert"), "bert", corpus())


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_report(folder) -> str:
    """transformers' own load report of a classifier built on ``folder`` (its head is not in the checkpoint)."""
    capture = Capture()
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(capture)
    try:
        transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    finally:
        logger.removeHandler(capture)
    reports = [message for message in capture.messages if "LOAD REPORT" in message]
    assert len(reports) == 1
    return reports[0]


def test_only_reports_of_missing_heads_are_dropped(bert, tmp_path):
    assert only_missing_heads(load_report(bert))  # classifier.weight and classifier.bias: ours to supply
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in bert.iterdir():
        (damaged / file.name).write_bytes(file.read_bytes())
    weights = load_file(str(damaged / "model.safetensors"))
    lost = next(name for name in weights if "attention.self.query.weight" in name)
    save_file({name: t for name, t in weights.items() if name != lost}, str(damaged / "model.safetensors"),
              metadata={"format": "pt"})
    report = load_report(damaged)
    assert "query.weight" in report and not only_missing_heads(report)  # a body weight missing is kept
    assert not only_missing_heads("a warning that is no load report")


def test_train_prints_no_library_noise_unless_verbose(bert, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    command = ["train", "--model", str(bert), "--task", str(data), "--text-column", "review", "--label-column",
               "sentiment", "--max-steps", "1", "--batch-size", "8", "--lr", "1e-3"]
    # a fresh process: torchao and torch's pytree log once, when transformers first imports torchao
    quiet = subprocess.run([sys.executable, "-m", "compacter.cli", *command, "--output-dir", str(tmp_path / "quiet")],
                           env=ENV, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    for noise in ("Failed to load", "deprecated", "LOAD REPORT", "Loading weights"):
        assert noise not in quiet.stderr, quiet.stderr
    assert "compacter++ trains" in quiet.stderr  # our own log stays
    logger, capture = logging.getLogger("transformers.modeling_utils"), Capture()  # what passes the filters
    logger.addHandler(capture)
    try:
        assert main([*command, "--output-dir", str(tmp_path / "loud"), "-v"]) == 0
        assert any("LOAD REPORT" in m and "classifier.weight" in m for m in capture.messages)
        capture.messages.clear()
        assert main([*command, "--output-dir", str(tmp_path / "again")]) == 0
        assert not any("LOAD REPORT" in m for m in capture.messages)
    finally:
        logger.removeHandler(capture)
    assert not logger.filters  # the command's filters are gone after it

"""`compacter bench`: ratios against full fine-tuning measured in one run (no timing is asserted)."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import tiny_t5

from compacter.bench import SavedTensorMeter, paired_ratio
from compacter.bench_budget import parse_memory
from compacter.cli import main


@pytest.fixture
def tiny_model_dir(tmp_path):
    tiny_t5().config.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_bench_writes_ratios_table_and_plot(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["bench", "--model", tiny_model_dir, "--methods", "compacter,compacter++", "--batch-size", "2",
                 "--source-length", "8", "--target-length", "4", "--steps", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"full", "compacter", "compacter++"}
    assert report["methods"]["full"]["step_time_ratio"] == 1.0 and report["methods"]["full"]["memory_ratio"] == 1.0
    for method in ("compacter", "compacter++"):
        row = report["methods"][method]
        assert row["step_time_ratio"] > 0 and 0 < row["memory_ratio"] < 1  # frozen backbone: no grads, no Adam state
        low, high = row["step_time_ratio_iqr"]
        assert low <= row["step_time_ratio"] <= high
        assert row["percent_trained"] < 10
    settings = report["settings"]
    assert settings["device"] == "cpu" and settings["cpu_threads"] == torch.get_num_threads()
    assert settings["device_name"] and settings["device_name"] != "cuda"
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "| compacter++ |" in out.with_suffix(".md").read_text()
    assert "| full |" in capsys.readouterr().out


def test_memory_budget_picks_the_largest_batch_that_fits(tiny_model_dir, tmp_path):
    out = tmp_path / "budget.json"
    assert main(["bench", "--model", tiny_model_dir, "--methods", "compacter++", "--memory-budget", "60MB",
                 "--source-length", "8", "--target-length", "4", "--steps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["methods"]
    assert rows["compacter++"]["batch_size"] > rows["full"]["batch_size"] >= 1
    assert all(row["peak_memory_bytes"] <= 60 * 2**20 for row in rows.values())


def test_saved_tensor_meter_counts_each_storage_once():
    meter = SavedTensorMeter()
    x = torch.randn(100, 10, requires_grad=True)
    with meter.hooks():
        y = (x * x).sum()  # mul saves x twice: one storage
    y.backward()
    assert meter.bytes == 100 * 10 * 4


def test_bad_bench_input(capsys):
    assert parse_memory("24GB") == 24 * 2**30 and parse_memory("512MiB") == 512 * 2**20
    with pytest.raises(ValueError, match="write it like 24GB"):
        parse_memory("lots")
    assert main(["bench", "--methods", "compactor"]) == 2
    assert main(["bench", "--compile", "both", "--memory-budget", "1GB"]) == 2
    assert "give it --compile or no --compile, not both" in capsys.readouterr().err


def test_paired_ratio_is_the_median_and_quartiles_of_per_round_ratios():
    times, reference = [2.0, 3.0, 9.0, 4.0, 5.0], [4.0, 4.0, 10.0, 4.0, 10.0]
    per_round = np.array(times) / np.array(reference) * 2  # a method at half full's batch: ×2 per example
    ratio, (low, high) = paired_ratio(times, reference, scale=2.0)
    assert ratio == pytest.approx(np.median(per_round))
    assert (low, high) == pytest.approx(tuple(np.percentile(per_round, [25, 75])))
    assert paired_ratio([3.0], [6.0]) == (0.5, (0.5, 0.5))
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_method_settings_apply_to_every_method_but_full(tiny_model_dir, tmp_path, capsys):
    """`--set train_layer_norms=false` is how to compare with libraries that train the adapters alone."""
    from compacter import apply, count_parameters
    from compacter.models import build_model

    out = tmp_path / "out.json"
    assert main(["bench", "--model", tiny_model_dir, "--methods", "compacter++", "--set", "train_layer_norms=false",
                 "--batch-size", "2", "--source-length", "8", "--target-length", "4", "--steps", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"full", "compacter++ (train_layer_norms=False)"}
    assert report["settings"]["method_overrides"] == {"train_layer_norms": False}
    expected = count_parameters(apply(build_model(tiny_model_dir, pretrained=False), "compacter++",
                                      train_layer_norms=False)).percent
    assert report["methods"]["compacter++ (train_layer_norms=False)"]["percent_trained"] == pytest.approx(expected)
    assert report["methods"]["full"]["percent_trained"] == 100.0
    # a setting that leaves a method nothing to train is an error that names the method
    assert main(["bench", "--model", tiny_model_dir, "--methods", "layer-norms", "--set", "train_layer_norms=false",
                 "--steps", "1"]) == 2
    assert "layer-norms" in capsys.readouterr().err


def test_inference_bench_pairs_each_method_with_the_base_model(tiny_model_dir, tmp_path):
    out = tmp_path / "inference.json"
    assert main(["bench", "--inference", "--model", tiny_model_dir, "--methods", "compacter,compacter++",
                 "--batch-size", "2", "--source-length", "8", "--new-tokens", "3", "--steps", "2",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    for kind in ("forward", "generate"):
        assert set(results[kind]) == {"base model", "base model (a second copy)", "compacter", "compacter++"}
        assert results[kind]["base model"]["ratio"] == 1.0
        for method in ("base model (a second copy)", "compacter", "compacter++"):
            low, high = results[kind][method]["ratio_iqr"]
            assert low <= results[kind][method]["ratio"] <= high and results[kind][method]["seconds"] > 0
    assert "| compacter++ |" in out.with_suffix(".md").read_text()


def test_serving_bench_compares_the_four_setups_and_counts_the_adapters_memory(tiny_model_dir):
    from compacter.inference_bench import run_serving_benchmark

    peers = importlib.util.find_spec("peft") is not None  # PEFT's LoRA beside, where it is installed
    results = run_serving_benchmark(tiny_model_dir, tasks=3, requests=6, source_length=8, new_tokens=2, rounds=1,
                                    peers=peers)
    peer_rows = {"(e) PEFT LoRA mixed batch", "(f) PEFT LoRA single-adapter batch"} if peers else set()
    assert set(results["generate"]) == {"(a) mixed batch", "(b) single-task batch", "(c) one batch per task",
                                        "(d) base model alone", *peer_rows}
    assert results["forward"]["(b) single-task batch"].ratio == 1.0
    # three tasks of one method and size: exactly three times one task's file
    assert results["memory"]["tasks"] == 3 and results["memory"]["ratio_to_one_file"] == pytest.approx(3.0)


def test_eager_and_compiled_rows_in_one_run_with_kernels_per_step(tiny_model_dir, tmp_path):
    """The CPU smoke of `bench --compile both` (aot_eager: the graphs without inductor's C++ build)."""
    out = tmp_path / "both.json"
    assert main(["bench", "--model", tiny_model_dir, "--methods", "compacter++", "--batch-size", "2",
                 "--source-length", "8", "--target-length", "4", "--steps", "1", "--compile", "both",
                 "--compile-backend", "aot_eager", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["methods"]
    assert set(rows) == {"full", "compacter++", "full (compiled)", "compacter++ (compiled)"}
    for name, row in rows.items():
        assert row["compiled"] == name.endswith("(compiled)")
        assert row["kernels_per_step"] > 100  # every aten call of a T5 forward and backward, counted by the profiler
    # each mode's ratios are to full fine-tuning in that mode
    assert rows["full"]["step_time_ratio"] == rows["full (compiled)"]["step_time_ratio"] == 1.0
    assert rows["full (compiled)"]["memory_ratio"] == 1.0 and rows["compacter++ (compiled)"]["memory_ratio"] < 1
    assert report["settings"]["memory_measure"].startswith("parameters, gradients, optimizer state")
    assert "aten operator calls" in report["settings"]["kernels_per_step"]
    assert "Rows marked (compiled) are relative to full fine-tuning (compiled)" in out.with_suffix(".md").read_text()


def test_resident_bytes_are_the_weights_optimizer_state_and_batch(tiny_model_dir):
    """What a runner holds between steps: on a GPU, the other methods' share is taken off each method's peak."""
    from compacter.bench import MethodRunner

    runner = MethodRunner(tiny_model_dir, "compacter++", 2, 8, 4, torch.device("cpu"), "fp32")
    runner.step(record=False)
    params = {p.data_ptr(): p.numel() * 4 for p in runner.model.parameters()}  # tied weights once
    trained = [p for p in runner.model.parameters() if p.requires_grad]
    adam = sum(2 * p.numel() * 4 + 4 for p in trained)  # exp_avg, exp_avg_sq and a float32 step
    batch = sum(t.numel() * 8 for t in runner.batch.values())  # int64 ids, mask and labels
    assert runner.resident_bytes() == sum(params.values()) + adam + batch


def test_inference_bench_compiled_rows_are_relative_to_the_compiled_base(tiny_model_dir, tmp_path):
    out = tmp_path / "inference.json"
    assert main(["bench", "--inference", "--model", tiny_model_dir, "--methods", "compacter++", "--batch-size", "2",
                 "--source-length", "8", "--new-tokens", "2", "--steps", "1", "--compile",
                 "--compile-backend", "aot_eager", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    for kind in ("forward", "generate"):
        assert set(results[kind]) == {"base model", "base model (a second copy)", "compacter++", "base model (compiled)",
                                      "base model (a second copy) (compiled)", "compacter++ (compiled)"}
        assert results[kind]["base model"]["ratio"] == results[kind]["base model (compiled)"]["ratio"] == 1.0

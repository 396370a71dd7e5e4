"""`compacter params` against the paper's figures (SPEC §3), offline on the meta device."""

import json

import pytest

from compacter.cli import main

PAPER_T5_BASE = {"adapter": "0.832", "pfeiffer": "0.427", "adapterdrop": "0.494", "adapter-lowrank": "0.073",
                 "bitfit": "0.126", "phm-adapter": "0.179", "compacter": "0.073", "compacter++": "0.047",
                 "prompt-r": "0.034", "prompt-t": "0.034", "intrinsic-said": "0.009"}


def params(capsys, *args):
    assert main(["params", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method,percent", PAPER_T5_BASE.items())
def test_t5_base_percentages_match_the_paper(method, percent, capsys):
    report = params(capsys, "--model", "t5-base", "--method", method)
    assert report["total"] == 222_903_552
    assert f"{report['percent']:.3f}" == percent
    assert report["method"] == method


@pytest.mark.parametrize("dimension,percent", [(500, "0.0002"), (1_250, "0.0006"), (2_500, "0.0011"),
                                               (10_000, "0.0045"), (20_000, "0.0090")])
def test_intrinsic_said_dimensions_match_table_6(dimension, percent, capsys):
    report = params(capsys, "--model", "t5-base", "--method", "intrinsic-said", "--set", f"dimension={dimension}")
    assert report["trainable"] == dimension and f"{report['percent']:.4f}" == percent
    assert report["groups"] == {"intrinsic": dimension}


def test_t5_small_baselines_match_table_9(capsys):
    assert f"{params(capsys, '--model', 't5-small', '--method', 'intrinsic-said')['percent']:.3f}" == "0.033"
    assert f"{params(capsys, '--model', 't5-small', '--method', 'prompt-t')['percent']:.3f}" == "0.085"


def test_compacter_counts_exactly(capsys):
    report = params(capsys, "--model", "t5-base", "--method", "compacter")
    # 48 Compacter layers of 2,376, the 64 shared A, 47,616 layer-norm weights (SPEC §3)
    assert report["trainable"] == 48 * 2_376 + 64 + 47_616 == 161_728
    assert report["groups"] == {"adapters": 48 * 2_376, "shared": 64, "layer_norms": 47_616}


@pytest.mark.parametrize("n,percent", [(8, "0.160"), (12, "0.179")])
def test_phm_adapter_other_n(n, percent, capsys):
    assert f"{params(capsys, '--method', 'phm-adapter', '--n', str(n))['percent']:.3f}" == percent


def test_compacter_n_does_not_change_its_size(capsys):
    sizes = {n: params(capsys, "--method", "compacter", "--n", str(n))["percent"] for n in (4, 8, 12)}
    assert all(f"{p:.3f}" == "0.073" for p in sizes.values())


def test_t5_11b_counts_on_the_meta_device(capsys):
    report = params(capsys, "--model", "t5-11b", "--method", "compacter++")
    assert report["total"] == 11_307_321_344


def test_errors_are_reported_not_raised(capsys):
    assert main(["params", "--method", "compacter", "--n", "5"]) == 2
    assert "n=5 does not divide" in capsys.readouterr().err
    assert main(["params", "--model", "/nonexistent/model", "--method", "adapter"]) == 2
    assert "Could not find a model config" in capsys.readouterr().err


def test_bitfit_counts_the_authors_t5_biases(capsys):
    """Every linear layer, the layer norms inside the blocks and the output layer; not the two final norms."""
    report = params(capsys, "--model", "t5-base", "--method", "bitfit")
    blocks = 12 * (4 * 768 + 3072 + 768 + 2 * 768) + 12 * (2 * 4 * 768 + 3072 + 768 + 3 * 768)  # linears + norms
    assert report["trainable"] == blocks + 32_128 == 280_960

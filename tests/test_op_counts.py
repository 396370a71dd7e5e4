"""The forward path dispatches the adapters' math and nothing else (benchmarks/op_counts.py counts it; here on 2+2
layers): no device sync per call, and per adapter site no more ops than the bottleneck's own plus a few per step."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import op_counts  # noqa: E402

from compacter.opcount import count, python_calls, training_step  # noqa: E402

BOTTLENECK_FORWARD = 4  # down addmm, activation, up addmm, residual add
BOTTLENECK_TRAINING = 12  # those, and backward: 4 mm, 2 bias sums, the activation's backward, one gradient sum


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(2, 512, (1, 12), generator=generator),
            "labels": torch.randint(2, 512, (1, 4), generator=generator)}


def test_a_training_step_dispatches_the_bottleneck_math_and_a_constant(batch):
    models = op_counts.training_models(2)
    for model in models.values():
        training_step(model, batch)
    plain = count(training_step, models[op_counts.TRAIN_REFERENCE], batch).compute
    assert count(training_step, models["layer-norms"], batch).compute == plain  # the copies cost no op in fp32
    extra = count(training_step, models["compacter++"], batch).compute - plain
    sites = op_counts.sites(models["compacter++"])
    # the math per site, plus the banks' build and one cast per bank (a constant per step, not per site)
    assert BOTTLENECK_TRAINING * sites <= extra <= BOTTLENECK_TRAINING * sites + 40, extra


def test_generate_dispatches_only_the_math_and_waits_for_the_device_no_more_than_the_base(batch):
    models = op_counts.generation_models(2)
    ids = batch["input_ids"]
    for model in models.values():
        op_counts.generate(model, ids, tokens=4)
    base = count(op_counts.generate, models[op_counts.GENERATE_REFERENCE], ids, 4)
    adapted = count(op_counts.generate, models["compacter++"], ids, 4)
    assert adapted.syncs == base.syncs
    encoder_sites, decoder_sites = 2, 2  # compacter++: one adapter per block (2 blocks per stack)
    calls = encoder_sites + 4 * decoder_sites  # the encoder once, the decoder at each of 4 steps
    assert adapted.compute - base.compute == BOTTLENECK_FORWARD * calls


def test_python_calls_counts_every_function_run_and_leaves_a_profiler_in_place():
    def leaf(value):
        return value

    def caller(times):
        return [leaf(i) for i in range(times)]  # the comprehension is a function of its own (Python 3.11)

    def profiler(frame, event, arg):
        return None

    sys.setprofile(profiler)
    try:
        assert python_calls(caller, 5) == 1 + 1 + 5
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)


def test_a_decoding_call_runs_little_python_beyond_the_math(batch):
    """The host's work per call (counted, not timed): what compacter++ runs in Python beyond the bottleneck math alone
    is a few calls per site and per layer norm, not a walk over the model or its parameters per call."""
    models = op_counts.generation_models(2)
    ids = batch["input_ids"]
    calls = {}
    for name in (op_counts.MATH_ONLY, "compacter++"):
        op_counts.generate(models[name], ids, tokens=4)
        calls[name] = python_calls(op_counts.generate, models[name], ids, 4)
    model_calls = 1 + 4  # the encoder, then the decoder at each step
    site_calls = 2 + 4 * 2
    norm_calls = (2 * 2 + 1) + 4 * (3 * 2 + 1)  # per block: 2 (encoder) or 3 (decoder), and each stack's final norm
    extra = calls["compacter++"] - calls[op_counts.MATH_ONLY]
    # today 309: ~9 per site (hook, weights lookup, forward), 1 per norm (its wrapper), ~35 per model call (boundary
    # hooks, the prepared tensors' check, the layer-norm swaps)
    assert 0 < extra <= 10 * site_calls + 1 * norm_calls + 50 * model_calls, calls

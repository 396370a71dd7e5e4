"""Settings at their boundary: `--set` text, method configs from Python, TrainConfig fields (methods/settings.py)."""

import dataclasses
import json
import math
import re
import types
import typing

import pytest
import torch
from conftest import tiny_t5
from hypothesis import given, settings
from hypothesis import strategies as st

import compacter
from compacter.cli import main
from compacter.methods import CONFIG_KINDS, get_config
from compacter.methods.settings import check_setting, check_value, field_types, format_text, parse_assignments, parse_text
from compacter.models import load_config
from compacter.training import TrainConfig
from compacter.training.warmup import warmup_steps

SETTINGS_CLASSES = [*CONFIG_KINDS.values(), TrainConfig]
FIELDS = [(cls, name, annotation, bounds) for cls in SETTINGS_CLASSES
          for name, (annotation, bounds) in field_types(cls).items()]


def params(capsys, *arguments):
    """`compacter params` on T5-small's shipped config (built on the meta device: no weights, no network)."""
    code = main(["params", "--model", "t5-small", "--json", *arguments])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err.strip())


@pytest.mark.parametrize("arguments,message", [
    (["--set", "share_A=maybe"], "--set share_A=maybe: share_A must be true or false, got 'maybe'."),
    (["--set", "n=4.0"], "--set n=4.0: n must be a whole number ≥ 1, got '4.0'."),
    (["--set", "rank=1.5"], "--set rank=1.5: rank must be a whole number ≥ 1 or none, got '1.5'."),
    (["--set", "learning_rate=1e-3"], "the learning rate is a setting of the run, not of the method"),
    (["--set", "reduction_factor=inf"], "reduction_factor must be a finite number > 0, got 'inf'."),
    (["--set", "reduction_factor=-32"], "reduction_factor must be a finite number > 0, got '-32'."),
    (["--set", "layers=[0, x]"], "layers must be a list of whole numbers ≥ 0 (e.g. [0, 1]) or none, got '[0, x]'."),
    (["--set", "layers=-1"], "layers must be a list of whole numbers ≥ 0 (e.g. [0, 1]) or none, got '-1'."),
    (["--set", "sublayers=attn"], "sublayers must be a non-empty list of items from 'attention', 'feed_forward'"),
    (["--set", "sublayers="], "sublayers must be a non-empty list"),
    (["--set", "projection=lowrank"], "projection must be one of 'dense', 'low_rank', 'phm', got 'lowrank'."),
    (["--set", "bogus=1"], "--set bogus=1: no method has a setting 'bogus'."),
    (["--set", "shareA=true"], "no method has a setting 'shareA'. Did you mean 'share_A'?"),
    (["--set", "n"], "--set expects KEY=VALUE, e.g. --set share_A=false; got 'n'."),
    (["--set", "=4"], "--set expects KEY=VALUE"),
    (["--set", "n=4", "--set", "n=8"], "--set gives n twice; give it once."),
    (["--set", "n=4", "--n", "8"], "n is given twice, by --n and by --set; give it once."),
    (["--set", "name=adapter"], "'name' is not a setting: it names the method."),
    (["--set", "num_tokens=4"], "Method 'compacter' has no setting(s) ['num_tokens']"),
    (["--n", "0"], "method 'compacter': n must be a whole number ≥ 1, got 0."),  # was a ZeroDivisionError
    (["--n", "-4"], "method 'compacter': n must be a whole number ≥ 1, got -4."),
    (["--n", str(10**30)], f"n={10**30} does not divide"),  # no n³ allocation first
    (["--rank", "0"], "rank must be a whole number ≥ 1 or none, got 0."),
    (["--bottleneck-size", "0"], "bottleneck_size must be a whole number ≥ 1 or none, got 0."),
    (["--reduction-factor", "nan"], "reduction_factor must be a finite number > 0, got nan."),
])
def test_bad_method_settings_are_refused_naming_the_field(arguments, message, capsys):
    code, error = params(capsys, "--method", "compacter", *arguments)
    assert code == 2 and error.startswith("compacter params: error:") and message in error, error


def test_set_values_are_parsed_into_their_fields_type(capsys):
    """The issue's silent case: `False` was a truthy string; every value now has its field's type."""
    _, default = params(capsys, "--method", "compacter")
    _, frozen_norms = params(capsys, "--method", "compacter", "--set", "train_layer_norms=False")
    assert default["groups"]["layer_norms"] > 0 and "layer_norms" not in frozen_norms["groups"]
    expected = compacter.count_parameters(compacter.apply(
        compacter.models.build_model("t5-small", pretrained=False, meta=True), "compacter", train_layer_norms=False))
    assert frozen_norms["trainable"] == expected.trainable
    _, two_blocks = params(capsys, "--method", "compacter", "--set", "layers=0,1", "--set", "sublayers=[feed_forward]")
    _, one_block = params(capsys, "--method", "compacter", "--set", "layers=0", "--set", 'sublayers=["feed_forward"]')
    per_adapter = one_block["groups"]["adapters"] // 2  # one block per stack: encoder and decoder
    assert two_blocks["groups"]["adapters"] == 4 * per_adapter
    _, prompt = params(capsys, "--method", "prompt-r", "--num-tokens", "7")
    assert prompt["trainable"] == 7 * 512  # T5-small's width


@pytest.mark.parametrize("overrides,message", [
    ({"n": "4"}, "method 'compacter': n must be a whole number ≥ 1, got '4' (text)."),
    ({"n": 4.0}, "n must be a whole number ≥ 1, got 4.0 (a number)."),
    ({"n": True}, "n must be a whole number ≥ 1, got True (a boolean)."),
    ({"share_A": "maybe"}, "share_A must be true or false, got 'maybe' (text)."),
    ({"train_layer_norms": "False"}, "train_layer_norms must be true or false, got 'False' (text)."),
    ({"train_layer_norms": 0}, "train_layer_norms must be true or false, got 0 (a whole number)."),
    ({"layers": 3}, "layers must be a list of whole numbers ≥ 0 (e.g. [0, 1]) or none, got 3 (a whole number)."),
    ({"sublayers": "attention"}, "sublayers must be a non-empty list of items from 'attention', 'feed_forward'"),
    ({"reduction_factor": float("inf")}, "reduction_factor must be a finite number > 0, got inf."),
    ({"attention_output": "(unclosed"}, "attention_output must be a regular expression of module names"),
    ({"kind": "x"}, "'kind' is not a setting"),
])
def test_python_settings_are_checked_like_cli_ones_and_leave_the_model_untouched(overrides, message):
    model = tiny_t5()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    with pytest.raises(ValueError, match=_literal(message)):
        compacter.apply(model, "compacter", **overrides)
    assert not hasattr(model, "compacter") and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())


@pytest.mark.parametrize("method,overrides,message", [
    ("prompt-t", {"num_tokens": 0}, "num_tokens must be a whole number ≥ 1, got 0."),
    ("prompt-t", {"init": "zeros"}, "init must be one of 'random', 'vocab', got 'zeros'."),
    ("prompt-t", {"init_range": 0.0}, "init_range must be a finite number > 0, got 0.0."),
    ("prompt-t", {"vocab_ids": [5003, 3]}, "vocab_ids must be [start, stop) with start < stop"),
    ("prompt-t", {"vocab_ids": [3]}, "vocab_ids must be [start, stop) with start < stop"),
    ("intrinsic-said", {"dimension": 0}, "dimension must be a whole number ≥ 1, got 0."),
    ("intrinsic-said", {"seed": -1}, "seed must be a whole number ≥ 0 and ≤ 4294967295, got -1."),
    ("bitfit", {"add_missing_biases": "yes"}, "add_missing_biases must be true or false"),
    ("lora", {"r": 0}, "r must be a whole number ≥ 1, got 0."),
    ("ia3", {"target_modules": []}, "target_modules must be a non-empty list"),
])
def test_every_method_checks_its_own_fields(method, overrides, message):
    with pytest.raises(ValueError, match=_literal(message)):
        get_config(method, **overrides)


def test_float_fields_take_whole_numbers_and_lists_take_tuples():
    config = get_config("compacter", reduction_factor=16, layers=(0, 1))
    assert config.reduction_factor == 16.0 and isinstance(config.reduction_factor, float) and config.layers == [0, 1]
    assert get_config("compacter", share_A=False).share_A is False


def test_fields_of_one_name_have_one_type_across_methods():
    """`--set` parses a setting by its name alone, so every config class must agree on what it holds."""
    seen = {}
    for cls in CONFIG_KINDS.values():
        for name, (annotation, bounds) in field_types(cls).items():
            assert seen.setdefault(name, (annotation, bounds)) == (annotation, bounds), (cls.__name__, name)


@pytest.mark.parametrize("arguments,message", [
    (["--epochs", "0"], "epochs must be a whole number ≥ 1 or none, got 0."),  # was: No such file adapter_model...
    (["--max-source-length", "0"], "max_source_length must be a whole number ≥ 1 or none, got 0."),
    (["--eval-steps", "0"], "eval_steps must be a whole number ≥ 1 or none, got 0."),
    (["--batch-size", "-1"], "batch_size must be a whole number ≥ 1 or none, got -1."),
    (["--gradient-accumulation", "0"], "gradient_accumulation must be a whole number ≥ 1, got 0."),
    (["--lr", "nan"], "learning_rate must be a finite number > 0 or none, got nan."),
    (["--lr=-1e-3"], "learning_rate must be a finite number > 0 or none, got -0.001."),
    (["--head-lr", "inf"], "head_learning_rate must be a finite number > 0 or none, got inf."),
    (["--weight-decay", "-0.1"], "weight_decay must be a finite number ≥ 0, got -0.1."),
    (["--warmup-steps", "-1"], "warmup_steps must be a whole number ≥ 0 or none, got -1."),
    (["--warmup-steps", "5", "--short-warmup"], "warmup_steps=5 and short_warmup both set the warm-up"),
    (["--seed", "-1"], "seed must be a whole number ≥ 0 and ≤ 4294967295, got -1."),
    (["--seed", str(2**32)], "seed must be a whole number ≥ 0 and ≤ 4294967295, got 4294967296."),
    (["--train-size", "0"], "train_size must be a whole number ≥ 1 or none, got 0."),
    (["--precision", "fp8"], "precision must be one of 'fp32', 'bf16', 'fp16', got 'fp8'."),
    (["--device", "tpu"], "device must be cpu, cuda or cuda:N (the index of a GPU), got 'tpu'."),
    (["--device", "cuda:x"], "device must be cpu, cuda or cuda:N"),
    (["--device", "meta"], "device must be cpu, cuda or cuda:N"),
    (["--output-dir", " "], "output_dir must be non-empty text or none"),
    (["--text-column", "review"], "--text-column name(s) the columns of your own data files; rte has its own columns."),
    (["--set", "n=0"], "--set n=0: n must be a whole number ≥ 1, got '0'."),
    (["--method", "compactor"], "Unknown method 'compactor'. Did you mean 'compacter'?"),
    (["--method", "intrinsic-said", "--compile", "--gradient-checkpointing"],
     "--compile and --gradient-checkpointing together are not supported for 'intrinsic-said'"),
])
def test_bad_training_settings_are_refused_before_anything_is_written(arguments, message, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--model", "t5-small", "--task", "rte", "--output-dir", "out/run", *arguments])
    error = capsys.readouterr().err
    assert code == 2 and message in error, error
    assert list(tmp_path.iterdir()) == []  # no output folder, nothing else


def test_cuda_without_a_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["train", "--model", "t5-small", "--task", "rte", "--device", "cuda", "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "--device cuda: torch sees no CUDA GPU here; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("settings_,total,expected", [
    ({"model": "t5-base"}, 8, 7),  # the paper's 500 on GLUE with T5-base, capped so that the last step runs at the peak
    ({"model": "t5-base"}, 10_000, 500),
    ({"model": "t5-small"}, 10_000, 0),  # the paper: no warm-up with T5-small
    ({"model": "t5-base", "task": "boolq"}, 10_000, 0),  # nor on SuperGLUE
    ({"warmup_steps": 0}, 8, 0),
    ({"warmup_steps": 3}, 8, 3),
    ({"warmup_steps": 50}, 8, 7),
    ({"short_warmup": True}, 8, 0),  # min(500, a tenth of the run), the default rule by name
    ({"short_warmup": True}, 2_000, 200),
    ({"short_warmup": True, "model": "t5-base"}, 10_000, 500),
])
def test_warmup_follows_the_paper_on_glue_with_t5(settings_, total, expected):
    config = TrainConfig(**{"model": "t5-small", "task": "rte", "learning_rate": 1e-3, **settings_}).resolved()
    assert warmup_steps(config.with_paper_warmup(load_config(config.model)).warmup_steps, total) == expected


# Property tests of the parsers.

def valid_values(annotation, bounds):
    """A strategy for every value a field of this annotation and these bounds accepts."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return st.one_of(*(valid_values(member, bounds) for member in typing.get_args(annotation)))
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = bounds.get("at_least", bounds["above"] + 1 if "above" in bounds else None)
        return st.integers(min_value=low, max_value=bounds.get("at_most"))
    if annotation is float:
        low = bounds.get("at_least", bounds.get("above"))
        return st.floats(min_value=low, max_value=bounds.get("at_most"), exclude_min="above" in bounds, allow_nan=False,
                         allow_infinity=False)
    if annotation is str:
        if "choices" in bounds:
            return st.sampled_from(bounds["choices"])
        return st.text(min_size=1).filter(str.strip) if bounds.get("non_empty") else st.text()
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return st.lists(valid_values(item, bounds), min_size=1 if bounds.get("non_empty") else 0, max_size=4)
    if typing.get_origin(annotation) is dict:
        return st.dictionaries(st.text(), st.integers(), max_size=3)
    raise AssertionError(annotation)


@pytest.mark.parametrize("cls,name,annotation,bounds", FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _, _ in FIELDS])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_valid_value_round_trips_through_text(cls, name, annotation, bounds, data):
    value = data.draw(valid_values(annotation, bounds))
    assert check_value(name, annotation, bounds, value) == value
    parsed = parse_text(name, annotation, bounds, format_text(value))
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("cls,name,annotation,bounds", FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _, _ in FIELDS])
@settings(max_examples=60, deadline=None)
@given(text=st.one_of(st.text(), st.sampled_from(["nan", "-inf", "1e999", "[1, 2", "[]", "none", "True", " 4 ",
                                                  "4.0", "0x10", "1_000", "[null]", '"x"', "[attention, x]"])))
def test_arbitrary_text_is_parsed_or_refused_with_the_fields_name(cls, name, annotation, bounds, text):
    try:
        value = parse_text(name, annotation, bounds, text)
    except ValueError as error:
        assert str(error).startswith(f"{name} must be ") and repr(text) in str(error)
    else:
        assert check_value(name, annotation, bounds, value) == value  # what parses is valid


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                      st.lists(st.one_of(st.integers(-2, 40), st.text(max_size=8)), max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(sorted(compacter.METHODS)),
       key=st.sampled_from(sorted({n for c, n, _, _ in FIELDS if c is not TrainConfig})),
       value=ANY_VALUE)
def test_any_python_value_gives_a_config_or_a_value_error(method, key, value):
    try:
        config = get_config(method, **{key: value})
    except ValueError as error:
        assert str(error)
    else:  # the field holds the value (as its type: 16 → 16.0), except a low-rank adapter's rank None → 1
        expected = check_setting(type(config), key, value)
        assert getattr(config, key) == expected or (key == "rank" and config.projection == "low_rank")


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)]), value=ANY_VALUE)
def test_any_training_setting_gives_a_config_or_a_value_error(key, value):
    settings_ = {"model": "t5-small", "task": "rte", key: value}
    try:
        TrainConfig(**settings_)
    except (ValueError, FileNotFoundError) as error:
        assert str(error)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.text(max_size=20), max_size=3))
def test_arbitrary_set_arguments_parse_or_raise_a_value_error(pairs):
    try:
        values = parse_assignments(pairs, CONFIG_KINDS.values())
    except ValueError as error:
        assert str(error).startswith("--set ")
    else:
        assert set(values) <= {n for _, n, _, _ in FIELDS} and len(values) == len(pairs)
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in values.values())


def _literal(text: str) -> str:
    return re.escape(text)

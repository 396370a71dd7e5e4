"""Fuzzing the readers of what users hand us (hypothesis): a data file, a predict request file, an adapter's config.
Whatever the input, the reader returns or raises one of compacter's own errors naming the file, never anything
else (no KeyError, TypeError, RecursionError, or an error of pandas or json from deep inside)."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compacter.data.files import load_files
from compacter.data.loading import DataFileError
from compacter.data.tasks import TASKS
from compacter.integrity import seal
from compacter.predict import RequestError, Served, read_requests
from compacter.saving import CONFIG_FILE, read_description

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                            max_size=3), max_leaves=8)
keys = st.sampled_from(["text", "label", "task", "id", "sentence1", "sentence2", "text_pair", "x"])
rows = st.dictionaries(keys, values, max_size=5) | values
deep = st.integers(1, 50_000).map(lambda depth: "[" * depth + "]" * depth)


def as_line(row) -> str:
    return json.dumps(row, allow_nan=True)  # NaN and Infinity too: Python writes them, JSON has neither


json_lines = st.lists(st.one_of(rows.map(as_line), deep, st.text(max_size=20)), min_size=0, max_size=8).map(
    lambda lines: "\n".join(lines))
raw = st.binary(max_size=120)


def written(content, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="compacter-fuzz-"))
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


def refused_in_words(error: Exception, path: Path) -> bool:
    return path.name in str(error) or path.parent.name in str(error)


@FUZZ
@given(content=json_lines | raw, suffix=st.sampled_from([".jsonl", ".csv", ".json"]))
def test_the_data_reader_returns_or_refuses_naming_the_file(content, suffix):
    path = written(content, "train" + suffix)
    try:
        load_files(path, text_column="text", label_column="label")
    except (DataFileError, FileNotFoundError) as error:
        assert refused_in_words(error, path), error
    except UnicodeEncodeError:
        pytest.skip("a surrogate that cannot be written as a file")


@FUZZ
@given(content=json_lines | raw)
def test_the_predict_request_reader_returns_or_refuses_naming_the_file(content):
    path = written(content, "requests.jsonl")
    served = {"rte": Served("rte", TASKS["rte"]), "free": Served("free", None)}
    try:
        read_requests(path, served, default_task="rte")
    except (RequestError, DataFileError) as error:
        assert refused_in_words(error, path), error


@pytest.fixture(scope="module")
def description():
    import torch
    from conftest import tiny_t5

    import compacter

    folder = Path(tempfile.mkdtemp(prefix="compacter-fuzz-"))
    compacter.save(compacter.apply(tiny_t5(), "compacter++"), folder)
    torch.manual_seed(0)
    return json.loads((folder / CONFIG_FILE).read_text())


@FUZZ
@given(key=st.sampled_from(["format", "name", "method", "base_model", "tensors", "base_weights", "num_labels",
                            "metadata", "sha256"]),
       nested=st.none() | st.sampled_from(["name", "n", "rank", "activation", "sublayers", "layers", "kind", "x"]),
       value=values, resealed=st.booleans(), garbage=st.none() | raw)
def test_the_adapter_config_reader_returns_or_refuses_naming_the_file(description, key, nested, value, resealed,
                                                                       garbage):
    edited = json.loads(json.dumps(description))
    if nested is not None and isinstance(edited.get(key), dict):
        edited[key][nested] = value
    else:
        edited[key] = value
    content = garbage if garbage is not None else json.dumps(seal(edited) if resealed else edited, allow_nan=True)
    path = written(content, CONFIG_FILE)
    try:
        read_description(path.parent)
    except (ValueError, FileNotFoundError) as error:
        assert type(error) in (ValueError, FileNotFoundError) and refused_in_words(error, path), error

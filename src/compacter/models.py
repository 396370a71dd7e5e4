"""Finding a model's config and building the model: shipped configs, local folders, the hub."""

from __future__ import annotations

import contextlib
import json
from importlib import resources
from pathlib import Path

import torch
import transformers
from torch import nn

from .model_anatomy import model_family
from .pooling import checkpoint_pooling, reads_pooler, set_pooling

SHIPPED_CONFIGS = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b")


def shipped_config_name(name: str) -> str | None:
    """``t5-base`` and ``google-t5/t5-base`` both name the shipped public config of T5-base."""
    short = name.split("/")[-1]
    if name in SHIPPED_CONFIGS or (name.startswith("google-t5/") and short in SHIPPED_CONFIGS):
        return short
    return None


def load_config(name_or_path: str) -> transformers.PretrainedConfig:
    shipped = shipped_config_name(name_or_path)
    if shipped and not Path(name_or_path).exists():
        text = resources.files("compacter.configs").joinpath(f"{shipped}.json").read_text()
        fields = json.loads(text)
        fields.pop("_name_or_path", None)
        return transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        _check_config_file(folder)
    try:
        return transformers.AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        raise ValueError(
            f"Could not find a model config for {name_or_path!r}: not a shipped config "
            f"({', '.join(SHIPPED_CONFIGS)}), not a local folder with a config.json, and the hub "
            f"could not be reached or has no such model ({error.__class__.__name__})."
        ) from None


def check_source(name: str, option: str) -> None:
    """A name spelled like a path must be an existing folder (else transformers reports a bad hub id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"{option} {name} is a file; give a folder (as written by save_pretrained) or a hub name.")
    if name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"{option} {name}: no such folder. Give a local folder (as written by "
                                "save_pretrained) or a hub name such as t5-base.")


def _check_config_file(folder: Path) -> None:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json, so it is not a model folder (write one with "
                                "model.save_pretrained(folder)).")
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the model folder is damaged or incomplete.") from None


def model_class(config: transformers.PretrainedConfig, num_labels: int | None = None) -> type:
    """The Auto class that fits: seq2seq LM, causal LM, or an encoder with a classification head."""
    if num_labels is not None:
        return transformers.AutoModelForSequenceClassification
    architectures = getattr(config, "architectures", None) or []
    if model_family(config) == "seq2seq":
        return transformers.AutoModelForSeq2SeqLM
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return transformers.AutoModelForCausalLM
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return transformers.AutoModelForSequenceClassification
    return transformers.AutoModel


def build_model(name_or_path: str, *, pretrained: bool = True, num_labels: int | None = None,
                meta: bool = False, pooling: str = "cls") -> nn.Module:
    """The model ``name_or_path`` names: with its pretrained weights, or random from its config.

    ``meta=True`` builds it on the meta device (shapes only, no memory), which is all that
    parameter counting needs: even T5-11B builds in seconds. ``pooling``: how a BERT-style
    classifier pools its tokens (pooling.py).
    """
    if pretrained and not meta:
        config = transformers.AutoConfig.from_pretrained(name_or_path)
        if num_labels is not None:
            config.num_labels = num_labels
        return set_pooling(load_pretrained(model_class(config, num_labels), name_or_path, config=config), pooling)
    config = load_config(name_or_path)
    if num_labels is not None:
        config.num_labels = num_labels
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = model_class(config, num_labels).from_config(config)
    return set_pooling(model, pooling)


def default_pooling(name_or_path: str) -> str:
    """How a classifier on ``name_or_path`` pools its tokens unless told: as the checkpoint was trained to, where
    its folder says so (a sentence-transformers model's ``1_Pooling/config.json``: ``"mean"`` for all-MiniLM-L6-v2)
    and its classifier reads a pooler that mean pooling can replace; else ``"cls"``, the classifier's own."""
    if checkpoint_pooling(name_or_path) != "mean":
        return "cls"
    skeleton = build_model(name_or_path, pretrained=False, meta=True, num_labels=2)  # shapes only: which head it has
    return "mean" if reads_pooler(skeleton) else "cls"


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def load_pretrained(cls: type, name_or_path: str, **kwargs) -> nn.Module:
    """``cls.from_pretrained`` from safetensors files only, every way it fails said in one sentence with the fix."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
        if pickled and not any(folder.glob("*.safetensors")):
            raise ValueError(
                f"{folder} holds its weights only as {pickled[0]}, a pickle, which can run code when it is loaded; "
                "compacter loads safetensors only. Convert it once, where you trust the file: "
                f"transformers.AutoModel.from_pretrained({str(folder)!r}).save_pretrained(NEW_FOLDER) writes "
                "model.safetensors.")
        kwargs.setdefault("use_safetensors", True)
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except Exception as error:  # noqa: BLE001 - transformers, safetensors and huggingface_hub each raise their own
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(f"{name_or_path} could not be loaded as a {getattr(cls, '__name__', cls)} ({reason}). Its "
                         "weight files may be truncated, or not match its config.json; write the folder again with "
                         "model.save_pretrained(folder).") from None


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass (transformers 5 and 4.57 spell it differently).

    Non-reentrant checkpointing: with a frozen embedding the reentrant variant would see no input
    that needs a gradient and drop the adapters' gradients.
    """
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

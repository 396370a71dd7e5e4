"""The method registry: a name → a config with the paper's settings (SPEC §2).

Add a method by writing a MethodConfig subclass and registering a factory here; every part of
compacter (apply, params, save/load, train, bench) then knows it.

Each method's ``learning_rate`` is the paper's, tuned for T5; it is the default on T5-style seq2seq
models. Encoders and decoder-only models get their own defaults where a table in learning_rates.py
has one (measured for encoders); `compacter train` picks the table from the model's config.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .adapters import AdapterConfig
from .base import MethodConfig, TaskModules
from .bitfit import BitFitConfig
from .full import FullConfig
from .intrinsic import IntrinsicSAIDConfig
from .norms import LayerNormsConfig
from .probe import LinearProbeConfig
from .prompt import PromptConfig

METHODS: dict[str, Callable[..., MethodConfig]] = {}
CONFIG_KINDS: dict[str, type[MethodConfig]] = {}


def register_method(name: str, config_class: type[MethodConfig], **defaults: Any) -> None:
    """Make ``name`` available everywhere, as ``config_class(**defaults)``."""
    METHODS[name] = lambda **overrides: config_class(name=name, **{**defaults, **overrides})
    CONFIG_KINDS[config_class.kind] = config_class


register_method("full", FullConfig, learning_rate=3e-4)
register_method("adapter", AdapterConfig, learning_rate=3e-4)
register_method("pfeiffer", AdapterConfig, sublayers=["attention"], learning_rate=3e-4)
register_method("adapterdrop", AdapterConfig, skip_first_layers=5, learning_rate=3e-4)
register_method("adapter-lowrank", AdapterConfig, projection="low_rank", rank=1, learning_rate=3e-3)
register_method("prompt-r", PromptConfig, init="random", learning_rate=3e-2)
register_method("prompt-t", PromptConfig, init="vocab", learning_rate=3e-1)
register_method("intrinsic-said", IntrinsicSAIDConfig, dimension=20_000, learning_rate=3e-2)
register_method("bitfit", BitFitConfig, learning_rate=3e-4)
register_method("phm-adapter", AdapterConfig, projection="phm", n=12, rank=None, share_A=False, learning_rate=3e-3)
register_method("compacter", AdapterConfig, projection="phm", n=4, rank=1, share_A=True, learning_rate=3e-3)
register_method("compacter++", AdapterConfig, projection="phm", n=4, rank=1, share_A=True,
                sublayers=["feed_forward"], learning_rate=3e-3)
# Not a method of the paper: the speed floor for every method that trains inside the model.
register_method("layer-norms", LayerNormsConfig, learning_rate=3e-3)
# Not a method of the paper either: a frozen encoder with a trained classification head.
register_method("linear-probe", LinearProbeConfig, learning_rate=3e-3)


DEFAULT_METHOD = "compacter++"  # the paper's best trade-off: compacter.apply(model) and `compacter train` use it
# One line per method, for `--help` and the README (SPEC §2).
DESCRIPTIONS: dict[str, str] = {
    "full": "full fine-tuning: every parameter of the model trains",
    "adapter": "Houlsby adapters: a bottleneck after attention and after the feed-forward block",
    "pfeiffer": "adapters after attention only (as the paper's Pfeiffer-Adapter)",
    "adapterdrop": "adapters, none in the first 5 layers",
    "adapter-lowrank": "adapters whose projections are rank-1 products",
    "prompt-r": "prompt tuning: trained vectors before the input, random start",
    "prompt-t": "prompt tuning, started from vocabulary embeddings",
    "intrinsic-said": "the whole model moves in a random 20,000-dimensional subspace (Fastfood)",
    "bitfit": "only the biases train (added where the model has none)",
    "phm-adapter": "adapters of hypercomplex (PHM) layers, n=12",
    "compacter": "PHM adapters with shared slow weights and rank-1 fast weights, after attention and feed-forward",
    "compacter++": "Compacter after the feed-forward block only: the paper's best trade-off (the default)",
    "layer-norms": "only the layer norms train (not a method of the paper: the speed floor)",
    "linear-probe": "a frozen encoder under a trained classification head (not a method of the paper)",
}


def method_list() -> str:
    """Every method with its one-line description, one per line (the default marked)."""
    width = max(map(len, METHODS))
    return "\n".join(f"  {name:<{width}}  {DESCRIPTIONS.get(name, '')}" for name in METHODS)


def refuse_reserved(overrides: dict[str, Any]) -> None:
    """``name`` and ``kind`` name a method; they are not settings of it."""
    reserved = sorted({"name", "kind"} & set(overrides))
    if reserved:
        raise ValueError(f"{reserved[0]!r} is not a setting: it names the method. Choose another method instead "
                         f"(known methods: {', '.join(METHODS)}).")


def get_config(method: str | MethodConfig | dict, **overrides: Any) -> MethodConfig:
    """A method's config with the paper's defaults, any field overridden.

    ``method`` is a registered name ("compacter++"), a config object, or a dict written by
    ``MethodConfig.to_dict`` (as saved next to a trained adapter).
    """
    if isinstance(method, MethodConfig):
        if not overrides:
            return method
        return type(method)(**{**{k: v for k, v in method.to_dict().items() if k != "kind"}, **overrides})
    if isinstance(method, dict):
        fields = dict(method)
        kind = fields.pop("kind", None)
        if kind not in CONFIG_KINDS:
            raise ValueError(f"Unknown method kind {kind!r} in a saved config; known kinds: {sorted(CONFIG_KINDS)}.")
        return CONFIG_KINDS[kind](**{**fields, **overrides})
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown method {method!r}.{hint} Known methods: {', '.join(METHODS)}.")
    refuse_reserved(overrides)
    factory = METHODS[method]
    try:
        return factory(**overrides)
    except TypeError as error:
        config_class = type(factory())
        unknown = sorted(set(overrides) - set(config_class.field_names()))
        if unknown:
            raise ValueError(f"Method {method!r} has no setting(s) {unknown}; its settings are "
                             f"{config_class.field_names()}.") from None
        raise error


__all__ = ["DEFAULT_METHOD", "DESCRIPTIONS", "METHODS", "AdapterConfig", "BitFitConfig", "FullConfig",
           "IntrinsicSAIDConfig", "LayerNormsConfig", "LinearProbeConfig", "MethodConfig", "PromptConfig", "TaskModules",
           "get_config", "method_list", "refuse_reserved", "register_method"]

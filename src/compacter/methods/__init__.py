"""The method registry: a name → a config with the paper's settings (SPEC §2).

Add a method by writing a MethodConfig subclass and registering a factory here; every part of
compacter (apply, params, save/load, train, bench) then knows it.

A method's default learning rate is not part of its config (a saved task does not record one):
learning_rates.py holds the table, per method and model family.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .adapters import AdapterConfig
from .base import MethodConfig, TaskModules
from .bitfit import BitFitConfig
from .full import FullConfig
from .ia3 import IA3Config
from .intrinsic import IntrinsicSAIDConfig
from .learning_rates import PAPER_RATES
from .lora import LoraConfig
from .norms import LayerNormsConfig
from .probe import LinearProbeConfig
from .prompt import PromptConfig

METHODS: dict[str, Callable[..., MethodConfig]] = {}
CONFIG_KINDS: dict[str, type[MethodConfig]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_method(name: str, config_class: type[MethodConfig], *, learning_rate: float | None = None,
                    description: str = "", **defaults: Any) -> None:
    """Make ``name`` available everywhere, as ``config_class(**defaults)``.

    ``learning_rate`` is the method's default on T5-style models (learning_rates.py holds it, and the other
    families' defaults); ``description`` is its one line in ``compacter train --help``. The config class's
    declarations are checked here: a contradictory one is refused, naming the field.
    """
    config_class.check_declarations()
    known = CONFIG_KINDS.get(config_class.kind)
    if known is not None and known is not config_class:
        raise ValueError(f"The method kind {config_class.kind!r} is already {known.__name__}'s; give "
                         f"{config_class.__name__} a kind of its own.")
    METHODS[name] = lambda **overrides: config_class(name=name, **{**defaults, **overrides})
    CONFIG_KINDS[config_class.kind] = config_class
    DESCRIPTIONS[name] = description
    if learning_rate is not None:
        PAPER_RATES[name] = learning_rate


register_method("full", FullConfig, learning_rate=3e-4, description="full fine-tuning: every parameter of the model trains")
register_method("adapter", AdapterConfig, learning_rate=3e-4,
                description="Houlsby adapters: a bottleneck after attention and after the feed-forward block")
register_method("pfeiffer", AdapterConfig, sublayers=["attention"], learning_rate=3e-4,
                description="adapters after attention only (as the paper's Pfeiffer-Adapter)")
register_method("adapterdrop", AdapterConfig, skip_first_layers=5, learning_rate=3e-4,
                description="adapters, none in the first 5 layers")
register_method("adapter-lowrank", AdapterConfig, projection="low_rank", rank=1, learning_rate=3e-3,
                description="adapters whose projections are rank-1 products")
register_method("prompt-r", PromptConfig, init="random", learning_rate=3e-2,
                description="prompt tuning: trained vectors before the input, random start")
register_method("prompt-t", PromptConfig, init="vocab", learning_rate=3e-1,
                description="prompt tuning, started from vocabulary embeddings")
register_method("intrinsic-said", IntrinsicSAIDConfig, dimension=20_000, learning_rate=3e-2,
                description="the whole model moves in a random 20,000-dimensional subspace (Fastfood)")
register_method("bitfit", BitFitConfig, learning_rate=3e-4,
                description="only the biases train (added where the model has none)")
register_method("phm-adapter", AdapterConfig, projection="phm", n=12, rank=None, share_A=False, learning_rate=3e-3,
                description="adapters of hypercomplex (PHM) layers, n=12")
register_method("compacter", AdapterConfig, projection="phm", n=4, rank=1, share_A=True, learning_rate=3e-3,
                description="PHM adapters, shared slow weights and rank-1 fast ones, after attention and feed-forward")
register_method("compacter++", AdapterConfig, projection="phm", n=4, rank=1, share_A=True,
                sublayers=["feed_forward"], learning_rate=3e-3,
                description="Compacter after the feed-forward block only: the paper's best trade-off (the default)")
register_method("lora", LoraConfig, learning_rate=3e-4,
                description="LoRA as PEFT defines it: low-rank updates of the attention's q and v (r=8, alpha=16)")
register_method("ia3", IA3Config, learning_rate=3e-3,
                description="(IA)³ as PEFT defines it: learned rescaling of keys, values and the feed-forward input")
# Not a method of the paper: the speed floor for every method that trains inside the model.
register_method("layer-norms", LayerNormsConfig, learning_rate=3e-3,
                description="only the layer norms train (not a method of the paper: the speed floor)")
# Not a method of the paper either: a frozen encoder with a trained classification head.
register_method("linear-probe", LinearProbeConfig, learning_rate=3e-3,
                description="a frozen encoder under a trained classification head (not a method of the paper)")


DEFAULT_METHOD = "compacter++"  # the paper's best trade-off: compacter.apply(model) and `compacter train` use it


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
        fields.pop("learning_rate", None)  # saved by compacter < 0.3: the learning rate is a run's, not the method's
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


__all__ = ["DEFAULT_METHOD", "DESCRIPTIONS", "METHODS", "AdapterConfig", "BitFitConfig", "FullConfig", "IA3Config",
           "IntrinsicSAIDConfig", "LayerNormsConfig", "LinearProbeConfig", "LoraConfig", "MethodConfig", "PromptConfig",
           "TaskModules", "get_config", "method_list", "refuse_reserved", "register_method"]

"""Hugging Face PEFT's LoRA and (IA)^3 adapter folders, read and written without importing peft.

A PEFT folder holds ``adapter_config.json`` (``peft_type`` names the method) and ``adapter_model.safetensors``, whose
keys are ``base_model.model.<module>.lora_A.weight`` and ``.lora_B.weight`` (LoRA), ``base_model.model.<module>.ia3_l``
((IA)^3) and ``base_model.model.<parameter>`` for the modules PEFT saves whole (``modules_to_save``, e.g. a classifier
head); ``<module>`` is the module's name in the un-wrapped transformers model.

What PEFT computes on a targeted layer ``y = W x + b``, and so what a ``PeftAdapter`` means:

- LoRA: ``y = W x + b + scaling * B (A x)``; A is ``(r, in)``, B ``(out, r)``, ``scaling = alpha / r`` (``alpha / sqrt(r)``
  with ``use_rslora``), r and alpha per module through ``rank_pattern`` / ``alpha_pattern``.
- (IA)^3: ``y = (W x + b) * l`` with l of length ``out``; for a feed-forward module ``y = W (x * l) + b`` with l of
  length ``in`` (the input is scaled, the bias is not).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"
KEY_PREFIX = "base_model.model."
METHODS = {"LORA": "lora", "IA3": "ia3"}
TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
LORA_KEY_SUFFIXES = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B"}
IA3_KEY_SUFFIX = ".ia3_l"
# LoRA options that change what the saved tensors mean: a folder that sets one is refused, naming it. (fan_in_fan_out
# and the dropout only matter for merging and training; exclude_modules and layers_to_transform only narrow which
# modules were adapted, which the saved tensors say anyway.)
REFUSED_LORA_OPTIONS = {
    "use_dora": "DoRA rescales each adapted layer by a saved magnitude vector",
    "lora_bias": "it adds a trained bias to lora_B",
    "layer_replication": "it duplicates layers of the base",
    "target_parameters": "it adapts raw parameters (e.g. mixture-of-experts weights), not Linear layers",
    "trainable_token_indices": "it trains single rows of the embedding",
    "alora_invocation_tokens": "activated LoRA applies its delta only after the invocation tokens",
    "use_qalora": "QALoRA pools the input in groups before A",
    "use_bdlora": "BD-LoRA shares block-diagonal factors",
    "arrow_config": "Arrow routes among several LoRA experts",
    "kasa_config": "KaSA adds a singular-value adaptation",
    "monteclora_config": "MonteCLoRA samples its factors",
    "velora_config": "VeLoRA changes the adapted layers",
    "megatron_config": "it adapts Megatron's parallel layers",
}
# Initialisations that rewrite the base weights, so that the saved factors only apply to the rewritten base.
BASE_CHANGING_INITS = ("pissa", "corda", "olora", "loftq", "lora_ga", "mica")


@dataclass
class PeftAdapter:
    """One PEFT adapter in neutral form, keyed by the module and parameter names of the un-wrapped base model.

    ``weights[module]`` is ``{"lora_A": (r, in), "lora_B": (out, r)}`` for LoRA and ``{"ia3_l": (n,)}`` for (IA)^3,
    where n is the layer's ``in`` for the modules in ``feedforward`` (input scaled) and its ``out`` otherwise.
    ``modules_to_save`` holds whole parameters that replace the base's (e.g. ``classifier.weight``).
    """

    method: Literal["lora", "ia3"]
    weights: dict[str, dict[str, torch.Tensor]]
    alpha: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    feedforward: frozenset[str] = frozenset()
    modules_to_save: dict[str, torch.Tensor] = field(default_factory=dict)
    task_type: str | None = None
    base_model_name_or_path: str | None = None

    @property
    def targets(self) -> list[str]:
        return sorted(self.weights)

    @property
    def rank(self) -> dict[str, int]:
        return {module: pair["lora_A"].shape[0] for module, pair in self.weights.items() if "lora_A" in pair}

    @property
    def scaling(self) -> dict[str, float]:
        """LoRA's factor on ``B (A x)`` per module: ``alpha / r``, or ``alpha / sqrt(r)`` with rank-stabilised LoRA."""
        return {module: self.alpha[module] / (math.sqrt(r) if self.use_rslora else r) for module, r in self.rank.items()}


def read_peft_folder(path: str | Path, model: torch.nn.Module | None = None) -> PeftAdapter:
    """Read a PEFT LoRA or (IA)^3 folder; with ``model``, also check that every name and shape fits that base model."""
    folder = Path(path)
    config = _read_config(folder)
    method = METHODS[config["peft_type"]]
    saved_whole = tuple(config.get("modules_to_save") or ())
    weights, modules_to_save = _split_keys(_read_tensors(folder), method, saved_whole)
    targets = config.get("target_modules") or ()
    for module in weights:
        if not _targeted(module, targets):
            raise ValueError(f"{WEIGHTS_FILE} holds weights for {module!r}, which target_modules {targets!r} of "
                             f"{CONFIG_FILE} does not name: PEFT would ignore them. Fix target_modules or the file.")
    common = {"weights": weights, "modules_to_save": modules_to_save, "task_type": config.get("task_type"),
              "base_model_name_or_path": config.get("base_model_name_or_path")}
    if method == "lora":
        adapter = PeftAdapter("lora", alpha=_lora_alphas(config, weights), use_rslora=bool(config.get("use_rslora")),
                              **common)
    else:
        adapter = PeftAdapter("ia3", feedforward=_ia3_feedforward(config, weights), **common)
    if model is not None:
        check_fits(adapter, model)
    return adapter


def write_peft_folder(path: str | Path, adapter: PeftAdapter, base_model_name_or_path: str | None = None,
                      task_type: str | None = None) -> Path:
    """Write ``adapter`` as a folder that ``peft.PeftModel.from_pretrained(base, path)`` loads with equal outputs."""
    task_type = task_type or adapter.task_type
    if task_type is not None and task_type not in TASK_TYPES:
        raise ValueError(f"task_type {task_type!r} is not one of PEFT's task types {TASK_TYPES} (or None).")
    if adapter.method not in METHODS.values():
        raise ValueError(f"method {adapter.method!r}: PEFT folders hold 'lora' or 'ia3' adapters.")
    targets = adapter.targets
    config = {"peft_type": adapter.method.upper(), "task_type": task_type, "inference_mode": True,
              "base_model_name_or_path": base_model_name_or_path or adapter.base_model_name_or_path,
              "target_modules": targets, "fan_in_fan_out": False,
              "modules_to_save": sorted({name.rsplit(".", 1)[0] for name in adapter.modules_to_save}) or None}
    tensors = {f"{KEY_PREFIX}{name}": tensor for name, tensor in adapter.modules_to_save.items()}
    if adapter.method == "lora":
        config.update(_lora_settings(adapter))
        for module, pair in adapter.weights.items():
            for suffix, kind in LORA_KEY_SUFFIXES.items():
                tensors[f"{KEY_PREFIX}{module}{suffix}"] = pair[kind]
    else:
        # PEFT takes a module as feed-forward when its name ends with a listed name: no other target may.
        clashes = [(t, f) for f in adapter.feedforward for t in targets if t != f and t.endswith(f)]
        if clashes:
            raise ValueError(f"PEFT would take {clashes[0][0]!r} as feed-forward because its name ends with "
                             f"{clashes[0][1]!r}; such an adapter cannot be written as a PEFT folder.")
        config["feedforward_modules"] = sorted(adapter.feedforward)
        for module, vector in adapter.weights.items():
            shape = (1, -1) if module in adapter.feedforward else (-1, 1)
            tensors[f"{KEY_PREFIX}{module}{IA3_KEY_SUFFIX}"] = vector["ia3_l"].reshape(shape)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: tensor.detach().cpu().contiguous() for key, tensor in tensors.items()}
    safetensors.torch.save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def check_fits(adapter: PeftAdapter, model: torch.nn.Module) -> None:
    """Refuse, naming the module and the shapes, an adapter whose names or shapes do not fit ``model``."""
    modules = dict(model.named_modules())
    made_for = f" (it was made for {adapter.base_model_name_or_path!r})" if adapter.base_model_name_or_path else ""
    for name in adapter.targets:
        if name not in modules:
            raise ValueError(f"The adapter adapts {name!r}, which this {type(model).__name__} does not have: the folder "
                             f"was made for another architecture{made_for}.")
        in_features, out_features = _linear_features(name, modules[name])
        if adapter.method == "lora":
            expected = {"lora_A": (adapter.rank[name], in_features), "lora_B": (out_features, adapter.rank[name])}
        else:
            expected = {"ia3_l": (in_features if name in adapter.feedforward else out_features,)}
        for kind, shape in expected.items():
            found = tuple(adapter.weights[name][kind].shape)
            if found != shape:
                raise ValueError(f"{kind} of {name!r} has shape {found}, but that layer of this model "
                                 f"({in_features} in, {out_features} out) needs {shape}: the folder was made for a "
                                 f"model of other sizes{made_for}.")
    parameters = dict(model.named_parameters())
    for name, tensor in adapter.modules_to_save.items():
        if name not in parameters:
            raise ValueError(f"The adapter replaces parameter {name!r} (modules_to_save), which this "
                             f"{type(model).__name__} does not have{made_for}.")
        if parameters[name].shape != tensor.shape:
            raise ValueError(f"The adapter's {name!r} has shape {tuple(tensor.shape)}, the model's "
                             f"{tuple(parameters[name].shape)}: build the base with the same head (e.g. num_labels) "
                             f"as the model the adapter was trained on.")


def _read_config(folder: Path) -> dict:
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder at {str(folder)!r}: pass the folder PEFT's save_pretrained wrote.")
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        named = sorted(sub.name for sub in folder.iterdir() if (sub / CONFIG_FILE).is_file())
        hint = f" It holds named adapters in sub-folders {named}: pass one of those." if named else ""
        raise FileNotFoundError(f"{str(folder)!r} holds no {CONFIG_FILE}: it is not a PEFT adapter folder.{hint}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}).") from None
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type is None:
        raise ValueError(f"{config_file} has no 'peft_type', so it was not written by PEFT; a folder saved by "
                         "compacter is read with compacter.load.")
    if peft_type not in METHODS:
        raise ValueError(f"{config_file} holds a PEFT {peft_type!r} adapter; compacter reads PEFT's "
                         f"{' and '.join(METHODS)} adapters only.")
    refused = dict(REFUSED_LORA_OPTIONS) if peft_type == "LORA" else {}
    if peft_type == "LORA":
        refused["bias"] = "it trains the biases of the base layers"
    for option, why in refused.items():
        value = config.get(option)
        if value not in (None, False, "none", {}, []):
            raise ValueError(f"{config_file} sets {option}={value!r}, which compacter cannot reproduce: {why}. "
                             "Train or save the adapter without it.")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS):
        raise ValueError(f"{config_file} sets init_lora_weights={init!r}, which rewrites the base weights, so the "
                         "saved factors only fit that rewritten base. Convert it into a plain LoRA with PEFT first: "
                         "save_pretrained(..., path_initial_model_for_weight_conversion=<the initial adapter>).")
    return config


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        if (folder / PICKLED_WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} holds {PICKLED_WEIGHTS_FILE} but no {WEIGHTS_FILE}: compacter reads safetensors "
                "only, because a .bin file is a pickle that can run code when loaded. Where you trust the file, "
                "convert it: PeftModel.from_pretrained(base, folder).save_pretrained(folder) writes safetensors.")
        raise FileNotFoundError(f"{str(folder)!r} holds no {WEIGHTS_FILE}.")
    return safetensors.torch.load_file(weights_file)


def _split_keys(tensors: dict[str, torch.Tensor], method: str, saved_whole: tuple[str, ...]
                ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Adapter weights by module name and whole-module parameters by parameter name, PEFT's key prefix stripped."""
    suffixes = LORA_KEY_SUFFIXES if method == "lora" else {IA3_KEY_SUFFIX: "ia3_l"}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    modules_to_save = {}
    for key, tensor in sorted(tensors.items()):
        if not key.startswith(KEY_PREFIX):
            raise ValueError(f"{WEIGHTS_FILE} key {key!r} lacks PEFT's {KEY_PREFIX!r} prefix: not a PEFT folder.")
        name = key.removeprefix(KEY_PREFIX)
        suffix = next((suffix for suffix in suffixes if name.endswith(suffix)), None)
        if suffix is not None:
            weights.setdefault(name.removesuffix(suffix), {})[suffixes[suffix]] = tensor
        elif _saved_whole(name, saved_whole):
            modules_to_save[name] = tensor
        elif ".lora_" in name or ".ia3_" in name:
            raise ValueError(f"{WEIGHTS_FILE} key {key!r} is an adapter tensor compacter does not read: it reads "
                             "lora_A / lora_B of Linear layers and ia3_l.")
        else:
            raise ValueError(f"{WEIGHTS_FILE} key {key!r} is neither a {method} weight nor a parameter of "
                             f"modules_to_save {list(saved_whole)}.")
    for module, pair in weights.items():
        missing = sorted(set(suffixes.values()) - pair.keys())
        if missing:
            raise ValueError(f"{WEIGHTS_FILE} has no {' / '.join(missing)} for {module!r}.")
        if any(tensor.dim() != 2 for tensor in pair.values()):
            shapes = {kind: tuple(tensor.shape) for kind, tensor in pair.items()}
            raise ValueError(f"{module!r} has {method} tensors of shapes {shapes}: compacter adapts Linear layers "
                             "only (not convolutions or embeddings).")
    return weights, modules_to_save


def _lora_alphas(config: dict, weights: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    alphas = {}
    for module, pair in weights.items():
        rank = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8))  # PEFT's defaults
        found = (pair["lora_A"].shape[0], pair["lora_B"].shape[1])
        if found != (rank, rank):
            raise ValueError(f"{module!r} has lora_A of shape {tuple(pair['lora_A'].shape)} and lora_B of shape "
                             f"{tuple(pair['lora_B'].shape)}, but {CONFIG_FILE} gives it rank r={rank}.")
        alphas[module] = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    return alphas


def _ia3_feedforward(config: dict, weights: dict[str, dict[str, torch.Tensor]]) -> frozenset[str]:
    listed = config.get("feedforward_modules") or ()
    feedforward = set()
    for module, vector in weights.items():
        shape = tuple(vector["ia3_l"].shape)
        # PEFT's rule: a regex must match the whole name; a listed name need only end it (no dot required).
        is_feedforward = bool(re.fullmatch(listed, module)) if isinstance(listed, str) else module.endswith(tuple(listed))
        if (shape[0] == 1) != is_feedforward or min(shape) != 1:
            role = "a feed-forward module (its input scaled: shape (1, in))" if is_feedforward else \
                "an attention module (its output scaled: shape (out, 1))"
            raise ValueError(f"ia3_l of {module!r} has shape {shape}, but feedforward_modules makes it {role}.")
        vector["ia3_l"] = vector["ia3_l"].reshape(-1)
        if is_feedforward:
            feedforward.add(module)
    return frozenset(feedforward)


def _lora_settings(adapter: PeftAdapter) -> dict:
    """r and lora_alpha as the most common values, the other modules' through exact-name patterns."""
    ranks, alphas = adapter.rank, adapter.alpha
    rank = Counter(ranks.values()).most_common(1)[0][0] if ranks else 8
    alpha = Counter(alphas.values()).most_common(1)[0][0] if alphas else 8.0
    return {"r": rank, "lora_alpha": _json_number(alpha), "use_rslora": adapter.use_rslora, "lora_dropout": 0.0,
            "bias": "none", "init_lora_weights": True,
            "rank_pattern": {re.escape(m): r for m, r in sorted(ranks.items()) if r != rank},
            "alpha_pattern": {re.escape(m): _json_number(a) for m, a in sorted(alphas.items()) if a != alpha}}


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key that matches the end of the name, at a dot."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _targeted(module: str, targets) -> bool:
    if isinstance(targets, str):  # PEFT: a string is a regex over the whole name
        return re.fullmatch(targets, module) is not None
    return module in targets or any(module.endswith(f".{target}") for target in targets)


def _saved_whole(parameter: str, saved_whole: tuple[str, ...]) -> bool:
    owners = [parameter.rsplit(".", depth)[0] for depth in range(1, parameter.count(".") + 1)]
    return any(owner == name or owner.endswith(f".{name}") for owner in owners for name in saved_whole)


def _linear_features(name: str, module: torch.nn.Module) -> tuple[int, int]:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):  # Linear, quantized Linear layers
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nx"):  # transformers' GPT-2 layer: weight is (in, out)
        return module.nx, module.nf
    raise ValueError(f"The adapter adapts {name!r}, a {type(module).__name__}: compacter applies LoRA and (IA)^3 to "
                     "Linear layers only.")


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value

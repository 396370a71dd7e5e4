"""Where a method's modules go in a model: the adapter sites of each block (the family's patterns from
architectures.py, else inferred: site_inference.py) and, for LoRA and (IA)³, target modules by name as PEFT names them."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from torch import nn

from .architectures import ARCHITECTURES, ArchitectureSpec
from .model_anatomy import first_block_linears, input_width, model_type, output_width
from .site_inference import infer_spec


@dataclass(frozen=True)
class Site:
    """One place an adapter goes: a module whose output is a sublayer's output."""

    name: str
    module: nn.Module
    sublayer: str  # "attention" or "feed_forward"
    stack: str  # e.g. "encoder.block", "decoder.block", "bert.encoder.layer"
    layer: int  # the layer position of the module's first call in a forward pass
    width: int  # the hidden size at this site
    calls: int = 1  # how many times the module runs in one forward pass, at positions layer, layer + 1, ...

    @property
    def layers(self) -> range:
        """The layer positions this site serves, one per call."""
        return range(self.layer, self.layer + self.calls)


def resolve_spec(model: nn.Module, attention_output: str | None, feed_forward_output: str | None) -> ArchitectureSpec:
    """The family's spec from the table, else inferred from the module tree; either pattern given overrides it."""
    known = ARCHITECTURES.get(model_type(model))
    if known is None and attention_output and feed_forward_output:
        return ArchitectureSpec(attention_output, feed_forward_output)
    if known is None:
        known = infer_spec(model)
    if known is None:
        raise ValueError(
            f"compacter does not know where the sublayer outputs of a {model_type(model)!r} model are "
            f"(known: {', '.join(sorted(ARCHITECTURES))}), and could not find them in its module tree. "
            "Pass the module names of the attention output and feed-forward output projections as regular "
            "expressions, e.g. compacter.apply(model, 'compacter', attention_output=r'layers\\.\\d+\\.attn\\.out_proj$', "
            "feed_forward_output=r'layers\\.\\d+\\.mlp\\.fc2$'). Linear modules of this model's first "
            f"block: {first_block_linears(model)}"
        )
    return dataclasses.replace(known, attention_output=attention_output or known.attention_output,
                               feed_forward_output=feed_forward_output or known.feed_forward_output)


def _config_hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    return size if isinstance(size, int) else None


def find_sites(model: nn.Module, spec: ArchitectureSpec, sublayers: tuple[str, ...]) -> list[Site]:
    sites = []
    patterns = {"attention": re.compile(spec.attention_output), "feed_forward": re.compile(spec.feed_forward_output)}
    for name, module in model.named_modules():
        if name.split(".")[0] == "compacter":  # the tasks already attached, not the base model
            continue
        for sublayer in sublayers:
            if not patterns[sublayer].search(name):
                continue
            match = re.search(r"\.(\d+)\.", f".{name}.")
            if match is None:
                raise ValueError(
                    f"The module {name!r} ({type(module).__name__}) matched the {sublayer} pattern but an "
                    "adapter site must be inside a numbered block (e.g. 'encoder.layer.3.output.dense'). "
                    "Make the pattern more specific."
                )
            stack = name[: match.start()].rstrip(".") if match.start() else ""
            block = int(match.group(1))
            positions = spec.layer_positions(model.config, block) if spec.layer_positions else range(block, block + 1)
            if positions:
                sites.append(Site(name, module, sublayer, stack, positions.start, _site_width(model, name, module),
                                  len(positions)))
    if not sites:
        raise ValueError(
            f"No module of this {model_type(model)!r} model matched the sublayer patterns "
            f"{spec.attention_output!r} / {spec.feed_forward_output!r}. Pass attention_output= and "
            f"feed_forward_output= that match module names such as {first_block_linears(model)}."
        )
    _check_no_site_inside_another(sites)
    return sites


def _site_width(model: nn.Module, name: str, module: nn.Module) -> int:
    width = output_width(module) or _config_hidden_size(model)
    if width is None:
        raise ValueError(
            f"The module {name!r} ({type(module).__name__}) is not a linear layer, so the width of its output is "
            "taken from the model config's hidden_size, which this model does not have. Make the pattern match "
            "the sublayer's linear output projection instead."
        )
    return width


def _check_no_site_inside_another(sites: list[Site]) -> None:
    """An adapter on a module and another on a module inside it would adapt the same output twice."""
    names = sorted(site.name for site in sites)
    for outer, inner in zip(names, names[1:]):
        if inner == outer or inner.startswith(outer + "."):
            raise ValueError(
                f"The sublayer patterns match both {outer!r} and {inner!r}"
                + (" (as attention and as feed-forward output)" if inner == outer else ", which is inside it")
                + ". Each pattern must match only the module whose output is the sublayer's output: end it with "
                "'$' and name the module in full."
            )


def find_targets(model: nn.Module, names: list[str] | None, pattern: str | None, defaults: dict[str, list[str]],
                 method: str) -> list[tuple[str, nn.Module]]:
    """The linear modules that ``names`` (a module whose name is one of them or ends with ``.<name>``) or ``pattern``
    (a regular expression the whole name must match) select, PEFT's rules; neither given: ``defaults`` for the
    model type."""
    if names is None and pattern is None:
        names = defaults.get(model_type(model))
        if names is None:
            raise ValueError(f"{method} has no default target modules for a {model_type(model)!r} model (known: "
                             f"{', '.join(sorted(defaults))}). Name them: target_modules=[...] (module names or their "
                             f"last parts, e.g. {first_block_linears(model)[:4]}), or target_pattern=<regex>.")
    compiled = re.compile(pattern) if pattern is not None else None
    targets = []
    for name, module in model.named_modules():
        if not name or name.split(".")[0] == "compacter":
            continue
        selected = compiled.fullmatch(name) is not None if compiled is not None else any(
            name == target or name.endswith("." + target) for target in names)
        if selected:
            if input_width(module) is None:
                raise ValueError(f"{method} targets {name!r}, a {type(module).__name__}: only linear layers can be "
                                 "targets. Name the linear layers inside it.")
            targets.append((name, module))
    if not targets:
        wanted = f"target_pattern={pattern!r}" if compiled is not None else f"target_modules={names}"
        raise ValueError(f"{method}: {wanted} matches no module of this {model_type(model)!r} model. Its linear "
                         f"layers are named like {first_block_linears(model)[:6]}.")
    return targets

"""Quantized frozen bases (QLoRA-style): the base's Linear weights in 8 or 4 bits, what trains in fp32.

The base model is frozen, so its large matrices can be stored in 8 or 4 bits: the adapters, the
task's copies of the layer norms and its head are fp32 parameters next to it, and gradients flow
through the quantized matrices to the adapters below them.

``quantize_base(model, kind)`` quantizes, in place, every ``nn.Linear`` of the base model except
those a task may train or that hold a weight shared with another module: a new task head (e.g.
BERT's classifier), the pretrained output layer (T5's ``lm_head``, often tied to the embeddings)
and compacter's own modules. Layer norms and embeddings are not Linear layers and stay as they are.

==========  =====================================================  ==========  ===========================
kind        what                                                    devices     stored per weight
==========  =====================================================  ==========  ===========================
int8        torchao ``Int8WeightOnlyConfig``: per-row int8          CPU, GPU    1 byte (+ a scale per row)
int4        torchao ``IntxWeightOnlyConfig(torch.int4)``, groups    CPU, GPU    1 byte (4-bit values kept
            of 32 (layers whose input size 32 does not divide       unpacked in int8; + a scale per group)
            stay unquantized)
nf4         bitsandbytes ``Linear4bit`` NF4 (QLoRA's)               CUDA        ½ byte (+ a scale per 64)
bnb-int8    bitsandbytes ``Linear8bitLt`` (LLM.int8())              CUDA        1 byte (+ a scale per row)
==========  =====================================================  ==========  ===========================

Quantize before ``compacter.apply`` (bitsandbytes replaces the Linear modules, which would take
their adapter hooks with them). Everything a saved adapter must match describes the logical
shapes (:func:`logical_shape`), so an adapter trained on a quantized base loads onto the
unquantized one and back.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import torch
from torch import nn

from .model_anatomy import head_parameter_names, output_layer_parameter_names

TORCHAO_KINDS = ("int8", "int4")
BITSANDBYTES_KINDS = ("nf4", "bnb-int8")
KINDS = TORCHAO_KINDS + BITSANDBYTES_KINDS
INT4_GROUP_SIZE = 32


def quantize_base(model: nn.Module, kind: str, *, device: torch.device | str | None = None) -> nn.Module:
    """Quantize ``model``'s frozen Linear weights in place (see the module docstring); returns the model.

    ``device``: where the quantized layers compute. bitsandbytes quantizes a weight when it reaches
    a CUDA device (default ``cuda``); torchao quantizes where the weights are (default: there).
    """
    check_quantization(kind, device)
    if getattr(model, "compacter", None) is not None:
        raise ValueError("Quantize the base model before compacter.apply(): the adapters and the tasks' copies are "
                         "attached to the base's modules as they are then.")
    already = next((name for name, p in model.named_parameters() if is_quantized(p)), None)
    if already is not None:
        raise ValueError(f"This {type(model).__name__} is quantized already ({already} is stored in 8 or 4 bits); "
                         "quantize_base takes an unquantized base model. Load it again to quantize it another way.")
    device = torch.device(device) if device is not None else None
    if kind in BITSANDBYTES_KINDS:
        device = device or torch.device("cuda")
    return quantize_linears(model, kind, device)


def quantize_linears(model: nn.Module, kind: str, device: torch.device | None) -> nn.Module:
    """``quantize_base`` without its device check: bitsandbytes also quantizes and computes on the CPU (slowly), which
    lets the tests check nf4 and bnb-int8 bases where no GPU is."""
    _require(kind)
    names = quantizable_linears(model, kind)
    if kind == "int4":
        names = [name for name in names if model.get_submodule(name).in_features % INT4_GROUP_SIZE == 0]
    if not names:
        raise ValueError(f"This {type(model).__name__} has no frozen Linear layer to quantize with {kind}.")
    if kind in TORCHAO_KINDS:
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_

        config = (Int8WeightOnlyConfig() if kind == "int8"
                  else IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP_SIZE)))
        chosen = set(names)
        quantize_(model, config, filter_fn=lambda module, name: name in chosen, device=device)
    else:
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, bitsandbytes_linear(parent._modules[child], kind, device))
    return model


def check_quantization(kind: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown kind, or a bitsandbytes kind without a CUDA GPU to run it on (``device``: where it would)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown quantization {kind!r}; choose one of {', '.join(KINDS)} (int8 and int4 run on CPUs "
                         "and GPUs, nf4 and bnb-int8 need a CUDA GPU).")
    if kind in BITSANDBYTES_KINDS:
        where = torch.device(device) if device is not None else None
        if not torch.cuda.is_available() or (where is not None and where.type != "cuda"):
            reason = "no CUDA GPU is available here" if not torch.cuda.is_available() else f"the device is {where}"
            raise ValueError(f"--quantize {kind} uses bitsandbytes' CUDA kernels and needs a CUDA GPU ({reason}). "
                             "On a CPU, quantize with int8 or int4 (torchao) instead.")


def quantizable_linears(model: nn.Module, kind: str | None = None) -> list[str]:
    """Names of the Linear modules ``quantize_base`` quantizes: the frozen base's, none a task may train.

    With ``kind="nf4"``, also none the model class keeps in full precision (``_keep_in_fp32_modules``, T5's ``wo``):
    T5 casts ``wo``'s input to ``wo.weight.dtype``, which for a packed 4-bit weight is uint8, destroying the
    activations. transformers' own 4-bit loading leaves these modules unquantized for the same reason.
    """
    kept = head_parameter_names(model) | output_layer_parameter_names(model)
    full_precision = set(getattr(model, "_keep_in_fp32_modules", None) or ()) if kind == "nf4" else set()
    holders: dict[int, int] = {}
    for module in model.modules():
        for param in module._parameters.values():
            if param is not None:
                holders[id(param)] = holders.get(id(param), 0) + 1
    names = []
    for name, module in model.named_modules():
        if name == "compacter" or name.startswith("compacter.") or not isinstance(module, nn.Linear):
            continue
        if is_quantized(module.weight):
            continue
        own = [f"{name}.{attribute}" for attribute, p in module._parameters.items() if p is not None]
        if any(param_name in kept for param_name in own) or holders[id(module.weight)] > 1:
            continue
        if full_precision & set(name.split(".")):
            continue
        names.append(name)
    return names


def bitsandbytes_linear(linear: nn.Linear, kind: str, device: torch.device | str) -> nn.Module:
    """A bitsandbytes layer holding ``linear``'s weight, quantized as it reaches ``device``."""
    import bitsandbytes as bnb

    weight = linear.weight.detach().to("cpu")
    has_bias = linear.bias is not None
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, device="meta",
                                  compute_dtype=linear.weight.dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    elif kind == "bnb-int8":
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias, device="meta",
                                    has_fp16_weights=False, threshold=6.0)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        raise ValueError(f"{kind!r} is not a bitsandbytes quantization; choose one of {', '.join(BITSANDBYTES_KINDS)}.")
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    layer.register_forward_pre_hook(_compute_in_the_activations_dtype)
    layer.register_forward_hook(_answer_in_the_activations_dtype)
    return layer.to(device)


def _compute_in_the_activations_dtype(layer: nn.Module, args: tuple) -> None:
    """Linear4bit computes in the dtype it was built with (or the first input's) for ever after: a bf16 model called
    after an fp32 one, or with bf16 autocast off and on, would run in the other dtype. Each call computes in its own:
    the input's, or under autocast the autocast dtype (what a plain Linear would compute in)."""
    if hasattr(layer, "compute_dtype") and args and args[0].is_floating_point():
        device = args[0].device.type
        autocast = torch.is_autocast_enabled(device)
        layer.compute_dtype = torch.get_autocast_dtype(device) if autocast else args[0].dtype
        layer.compute_type_is_set = True


def _answer_in_the_activations_dtype(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """The output in the input's dtype, as a plain Linear's is (Linear8bitLt's is its own choice of dtype).

    Linear8bitLt's first call moves the weight's scales (``SCB``) into the layer's state: they go back on the weight,
    where ``is_quantized`` / ``dequantized`` / ``storage_bytes`` read them (the next call moves them again, a swap).
    """
    state = getattr(layer, "state", None)
    if getattr(state, "SCB", None) is not None and layer.weight.SCB is None:
        layer.weight.CB, layer.weight.SCB = state.CB, state.SCB
    if (args and args[0].is_floating_point() and output.dtype != args[0].dtype
            and not torch.is_autocast_enabled(output.device.type)):
        return output.to(args[0].dtype)
    return None


def _require(kind: str) -> None:
    package = "torchao" if kind in TORCHAO_KINDS else "bitsandbytes"
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"--quantize {kind} needs {package}: pip install 'compacter-adapters[quant]' (or pip install "
                          f"{package}).")


# ---------------------------------------------------------------------- what a quantized weight stands for
def is_quantized(param: torch.Tensor) -> bool:
    """Whether ``param`` stores its values in another form than a plain tensor of its dtype (torchao, bitsandbytes)."""
    data = param.data if isinstance(param, nn.Parameter) else param
    if type(data) is not torch.Tensor:  # a torchao tensor subclass
        return True
    return getattr(param, "quant_state", None) is not None or getattr(param, "SCB", None) is not None


def logical_shape(param: torch.Tensor) -> tuple[int, ...]:
    """The shape of the tensor a parameter stands for: a packed 4-bit weight stands for its unpacked shape.

    torchao's tensor subclasses report their logical shape already; bitsandbytes' 4-bit weights are
    packed bytes of shape (n·k/2, 1), whose logical shape is in their quant_state.
    """
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None and getattr(quant_state, "shape", None) is not None:
        return tuple(quant_state.shape)
    return tuple(param.shape)


def logical_numel(param: torch.Tensor) -> int:
    """Elements of the tensor a parameter stands for."""
    return int(torch.Size(logical_shape(param)).numel())


def dequantized(param: torch.Tensor) -> torch.Tensor:
    """The values ``param`` stands for, as a plain tensor (a task's trainable copy starts from them)."""
    tensor = param.detach()
    if type(tensor) is torch.Tensor and not is_quantized(param):
        return tensor
    if hasattr(tensor, "dequantize") and type(tensor) is not torch.Tensor:  # torchao
        return tensor.dequantize()
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None:  # bitsandbytes 4-bit
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(param.data, quant_state)
    scales = getattr(param, "SCB", None)
    if scales is not None:  # bitsandbytes 8-bit: int8 values and a scale per row
        return param.data.float() * (scales.float().unsqueeze(1) / 127)
    raise ValueError(f"Cannot read the values of a {type(param).__name__} of dtype {param.dtype}.")


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes that hold ``tensor``: its quantized values and their scales, or its plain elements."""
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):  # torchao: the inner tensors
        names, _ = data.__tensor_flatten__()
        return sum(storage_bytes(getattr(data, name)) for name in names if getattr(data, name) is not None)
    total = data.numel() * data.element_size()
    quant_state = getattr(tensor, "quant_state", None)
    if quant_state is not None:  # bitsandbytes 4-bit: one scale per block, themselves quantized (nested)
        total += sum(t.numel() * t.element_size() for t in _quant_state_tensors(quant_state))
    scales = getattr(tensor, "SCB", None)
    if scales is not None:
        total += scales.numel() * scales.element_size()
    return total


def _quant_state_tensors(state) -> Iterator[torch.Tensor]:
    for name in ("absmax", "code"):
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    nested = getattr(state, "state2", None)
    if nested is not None:
        yield from _quant_state_tensors(nested)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the base model's parameters (each tensor once; compacter's own modules left out)."""
    seen, total = set(), 0
    for name, param in model.named_parameters():
        if name.startswith("compacter.") or id(param) in seen:
            continue
        seen.add(id(param))
        total += storage_bytes(param)
    return total

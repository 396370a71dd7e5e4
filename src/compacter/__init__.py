"""compacter: parameter-efficient fine-tuning with hypercomplex adapters (Compacter, NeurIPS 2021).

    import compacter
    compacter.apply(model, "compacter++")          # attach a method, freeze the rest
    compacter.count_parameters(model)              # exact trained-parameter accounting
    compacter.save(model, "out/rte")               # a few hundred kB: only what trained
    compacter.load(base_model, "out/rte")          # bit-identical outputs

    compacter.apply(model, "compacter++", name="mrpc")      # many tasks on one frozen base
    with compacter.route(model, ["rte", "mrpc", "rte"]):    # each row of a batch its own task
        model.generate(**batch)
    compacter.compiled_generate(model, **batch)             # static KV cache, compiled decoding step
"""

__version__ = "0.3.0"

from .api import apply, export, from_pretrained, load, push_to_hub  # noqa: E402
from .attach import delete, unload  # noqa: E402
from .decoding import compiled_generate  # noqa: E402
from .inventory import parameter_groups, trainable_parameters  # noqa: E402
from .methods import METHODS, MethodConfig, get_config, register_method  # noqa: E402
from .params import ParameterReport, count_parameters  # noqa: E402
from .pooling import set_pooling  # noqa: E402
from .quantization import quantize_base  # noqa: E402
from .saving import save  # noqa: E402
from .switching import (  # noqa: E402
    active_task,
    attached_config,
    disabled,
    refresh,
    route,
    set_active,
    split_logits,
    tasks,
)

__all__ = ["METHODS", "MethodConfig", "ParameterReport", "__version__", "active_task", "apply", "attached_config",
           "compiled_generate", "count_parameters", "delete", "disabled", "export", "from_pretrained", "get_config",
           "load", "parameter_groups", "push_to_hub", "quantize_base", "refresh", "register_method", "route", "save",
           "set_active", "set_pooling", "split_logits", "tasks", "trainable_parameters", "unload"]

"""compacter: parameter-efficient fine-tuning with hypercomplex adapters (Compacter, NeurIPS 2021).

    import compacter
    compacter.apply(model, "compacter++")      # attach a method, freeze the rest
    compacter.count_parameters(model)          # exact trained-parameter accounting
    compacter.save(model, "out/rte")           # a few hundred kB: only what trained
    compacter.load(fresh_model, "out/rte")     # bit-identical outputs
"""

__version__ = "0.1.0"

from .attach import apply, attached_config, parameter_groups, trainable_parameters  # noqa: E402
from .methods import METHODS, MethodConfig, get_config, register_method  # noqa: E402
from .params import ParameterReport, count_parameters  # noqa: E402
from .saving import load, save  # noqa: E402

__all__ = ["METHODS", "MethodConfig", "ParameterReport", "__version__", "apply", "attached_config",
           "count_parameters", "get_config", "load", "parameter_groups", "register_method", "save",
           "trainable_parameters"]

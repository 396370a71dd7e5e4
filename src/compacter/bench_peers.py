"""Other libraries' versions of the benchmark's methods (`compacter bench --peers`): PEFT's LoRA and AdapterHub's
Houlsby, Compacter and Compacter++ adapters, attached to the same random model and measured in the same run.
Each is used only when its library is importable."""

from __future__ import annotations

import importlib.util

from torch import nn


def _peft_lora(model: nn.Module) -> nn.Module:
    import peft

    targets = ["q", "v"] if model.config.model_type in ("t5", "mt5") else ["query", "value"]
    return peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets))


def _adapterhub(config_name: str):
    def attach(model: nn.Module) -> nn.Module:
        import adapters

        adapters.init(model)
        model.add_adapter("bench", config=config_name)
        model.train_adapter("bench")
        return model
    return attach


# Other libraries' versions of the same methods, measured in the same run (`--peers`).
PEERS = {
    "peft-lora": ("peft", _peft_lora),
    "adapterhub-houlsby": ("adapters", _adapterhub("double_seq_bn")),
    "adapterhub-compacter": ("adapters", _adapterhub("compacter")),
    "adapterhub-compacter++": ("adapters", _adapterhub("compacter++")),
}


def available_peers() -> list[str]:
    return [name for name, (module, _) in PEERS.items() if importlib.util.find_spec(module) is not None]

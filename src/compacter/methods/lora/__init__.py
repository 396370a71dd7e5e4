"""LoRA (Hu et al., 2021) as PEFT defines it: ``y = W x + (alpha / r) · B A x`` on the targeted linear layers."""

from .config import LoraConfig
from .site import LORA, LoraBank

__all__ = ["LORA", "LoraBank", "LoraConfig"]

"""(IA)³ (Liu et al., 2022) as PEFT defines it: learned vectors that rescale the outputs of the targeted layers
(keys, values) or, for feed-forward layers, their inputs."""

from .config import IA3Config
from .site import IA3_INPUT, IA3_OUTPUT, ScaleBank

__all__ = ["IA3_INPUT", "IA3_OUTPUT", "IA3Config", "ScaleBank"]

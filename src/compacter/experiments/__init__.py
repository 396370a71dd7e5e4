"""Experiments over many runs: sweeps of the paper's grid and the reports made from them."""

from .report import write_report
from .sweep import Sweep, expand, read_sweep, run_sweep

__all__ = ["Sweep", "expand", "read_sweep", "run_sweep", "write_report"]

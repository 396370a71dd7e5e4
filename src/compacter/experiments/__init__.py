"""Experiments over many runs: sweeps of the paper's grid and the reports made from them."""

from .report import write_report
from .sweep import expand, read_sweep, run_sweep, sweep_root

__all__ = ["expand", "read_sweep", "run_sweep", "sweep_root", "write_report"]

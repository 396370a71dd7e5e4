"""What `compacter bench` prints and writes: the machine's name, the Markdown table and the Figure 2 plot."""

from __future__ import annotations

import torch

from .bench import COMPILED, BenchResult


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model: ratios differ between machines, so results record which."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def plot(results: list[BenchResult], path) -> None:
    """The paper's Figure 2 axes: % trained parameters (log) against step time; marker area ∝ memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    biggest = max(r.memory_ratio for r in results)
    for r in results:
        axes.scatter(r.percent_trained, r.step_time_ratio, s=600 * r.memory_ratio / biggest, alpha=0.6)
        axes.annotate(r.method, (r.percent_trained, r.step_time_ratio), fontsize=8, xytext=(4, 4),
                      textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("trained parameters (%)")
    axes.set_ylabel("step time relative to full fine-tuning")
    axes.set_title("Efficiency (marker area: peak memory)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown_table(results: list[BenchResult]) -> str:
    lines = ["| method | % trained | batch | step time (s) | time vs full (IQR over rounds) | peak memory (MiB) "
             "| memory vs full | kernels per step | MNLI epoch (h) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        low, high = r.step_time_ratio_iqr
        lines.append(f"| {r.method} | {r.percent_trained:.3f} | {r.batch_size} | {r.step_time_s:.4f} | "
                     f"{r.step_time_ratio:.2f} ({low:.2f}–{high:.2f}) | "
                     f"{r.peak_memory_bytes / 2**20:.0f} | {r.memory_ratio:.2f} | {r.kernels_per_step} | "
                     f"{r.epoch_time_h:.2f} |")
    if any(r.compiled for r in results):
        lines.append(f"\nRows marked{COMPILED} are relative to full fine-tuning{COMPILED}, measured in the same rounds.")
    return "\n".join(lines)

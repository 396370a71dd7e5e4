"""Issue 21's scale checks, called by benchmarks/gpu_all.sh: what one GPU holds with compacter++.

1. llama-7b-nf4: a Llama-architecture model of 7B shape (random weights from a config: 32 layers, hidden 4096,
   the Llama-2-7B sizes) on an nf4 base with compacter++, bf16, gradient checkpointing, a batch of 4 x 512
   tokens: peak memory and step time, beside what full fine-tuning of it would hold (computed: weights, gradients
   and Adam's two states; activations not counted, so a lower bound). The model is built in bf16 on the GPU and its
   Linear layers quantized one by one (quantize_base), so that the step's peak is the nf4 model's.
2. t5-3b: full fine-tuning vs compacter++ peak memory and step time, each model alone on the GPU (bf16 autocast,
   a batch of 8 x 128/16 tokens), with bench.MethodRunner.

``--smoke``: the same code on the CPU with tiny models (bitsandbytes' CPU path for nf4), 1-2 steps, so that a
GPU minute is never lost to a typo. Writes OUT/scale.json and OUT/scale.md; exits non-zero if a check failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import transformers

import compacter
from compacter.bench import MethodRunner
from compacter.models import enable_activation_checkpointing
from compacter.quantization import quantize_linears, weight_bytes

GB = 1e9
LLAMA_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
LLAMA_TINY = dict(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=128)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_fine_tuning_bytes(parameters: int) -> dict:
    """What full fine-tuning holds before any activation: per parameter its weight, its gradient, Adam's two states."""
    return {"bf16_weights_and_grads_fp32_adam": parameters * (2 + 2 + 4 + 4),
            "fp32_mixed_precision_with_master_weights": parameters * (2 + 2 + 4 + 4 + 4),
            "parameters": parameters}


def llama_nf4(device: torch.device, smoke: bool, steps: int) -> dict:
    config = transformers.LlamaConfig(**(LLAMA_TINY if smoke else LLAMA_7B))
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.to(torch.bfloat16)  # whatever dtype this transformers version built it in
    parameters = sum(p.numel() for p in model.parameters())
    bf16_bytes = weight_bytes(model)
    started = time.perf_counter()
    quantize_linears(model, "nf4", device)
    quantize_seconds = time.perf_counter() - started
    compacter.apply(model, "compacter++")
    enable_activation_checkpointing(model)
    model.to(device).train()
    batch, length = (4, 512) if not smoke else (2, 16)
    ids = torch.randint(2, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    optimizer = torch.optim.AdamW(compacter.trainable_parameters(model).values(), lr=1e-4)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for step in range(steps + 1):  # the first step warms up
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    full = full_fine_tuning_bytes(parameters)
    return {"model": f"Llama, {config.num_hidden_layers} layers, hidden {config.hidden_size} (random weights)",
            "parameters": parameters, "trained_percent": compacter.count_parameters(model).percent,
            "base_bytes_bf16": bf16_bytes, "base_bytes_nf4": weight_bytes(model), "quantize_seconds": quantize_seconds,
            "batch": f"{batch} x {length} tokens, bf16 autocast, gradient checkpointing", "step_time_s":
            statistics.median(times), "peak_memory_bytes": peak, "losses": losses,
            "full_fine_tuning_bytes_without_activations": full,
            "fits_24GB": None if peak is None else peak <= 24 * 2**30}


def t5_full_vs_compacter(device: torch.device, smoke: bool, steps: int, model_name: str) -> dict:
    rows = {}
    batch, source, target = (8, 128, 16) if not smoke else (2, 8, 4)
    for method in ("full", "compacter++"):  # one at a time: each alone on the device
        runner = MethodRunner(model_name, method, batch, source, target, device, "bf16")
        for _ in range(steps + 1):
            runner.step(record=True)
        rows[method] = {"peak_memory_bytes": runner.peak_memory, "step_time_s": statistics.median(runner.times[1:]),
                        "trained_percent": runner.percent}
        runner.release()
    rows["compacter++"]["memory_ratio_to_full"] = rows["compacter++"]["peak_memory_bytes"] / rows["full"][
        "peak_memory_bytes"]
    name = "a tiny T5 (smoke)" if smoke else model_name
    return {"model": f"{name} (random weights)", "batch": f"{batch} x {source}/{target} tokens, bf16 autocast",
            "memory": "each model alone on the device" if device.type == "cuda" else
            "parameters, gradients, optimizer state and saved tensors (CPU)", "methods": rows}


def run_check(results: dict, name: str, function, *args) -> None:
    start = time.perf_counter()
    try:
        results[name] = {"status": "ok", **function(*args)}
    except Exception as error:  # one failing check must not lose the other
        results[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                         "trace": traceback.format_exc()[-3000:]}
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(name, json.dumps({k: v for k, v in results[name].items() if k != "trace"}), flush=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def markdown(results: dict) -> str:
    lines = ["# Scale on one GPU (issue 21)", ""]
    llama = results.get("llama_7b_nf4", {})
    if llama.get("status") == "ok":
        full = llama["full_fine_tuning_bytes_without_activations"]
        peak = llama["peak_memory_bytes"]
        lines += [f"## {llama['model']}, nf4 base, compacter++", "",
                  f"- {llama['parameters'] / 1e9:.2f} B parameters, {llama['trained_percent']:.3f}% trained; "
                  f"{llama['batch']}",
                  f"- base weights: {llama['base_bytes_bf16'] / GB:.2f} GB in bf16, {llama['base_bytes_nf4'] / GB:.2f} GB "
                  "in nf4",
                  f"- peak memory: {'n/a (CPU)' if peak is None else f'{peak / GB:.2f} GB'}; step "
                  f"{llama['step_time_s']:.3f} s",
                  "- full fine-tuning would hold, before activations: "
                  f"{full['bf16_weights_and_grads_fp32_adam'] / GB:.1f} GB (bf16 weights and gradients, fp32 Adam "
                  f"states), {full['fp32_mixed_precision_with_master_weights'] / GB:.1f} GB with fp32 master weights",
                  ""]
    t5 = results.get("t5_3b", {})
    if t5.get("status") == "ok":
        lines += [f"## {t5['model']}: full fine-tuning vs compacter++ ({t5['memory']})", "",
                  "| method | % trained | peak memory (GB) | step (s) |", "|---|---:|---:|---:|"]
        for method, row in t5["methods"].items():
            lines.append(f"| {method} | {row['trained_percent']:.3f} | {row['peak_memory_bytes'] / GB:.2f} | "
                         f"{row['step_time_s']:.3f} |")
        lines += ["", f"compacter++ / full memory: {t5['methods']['compacter++']['memory_ratio_to_full']:.2f}", ""]
    for name, result in results.items():
        if result.get("status") != "ok":
            lines += [f"## {name}: {result.get('status')}", "", f"    {result.get('error')}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, 1 step: the code paths only")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("These checks need a CUDA GPU (or --smoke, on the CPU).")
    device = torch.device("cpu" if args.smoke else "cuda")
    steps = 1 if args.smoke else args.steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        t5 = "t5-3b"
        if args.smoke:  # a tiny T5 config stands in for T5-3B's
            transformers.T5Config(vocab_size=128, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                                  decoder_start_token_id=0).save_pretrained(folder)
            t5 = folder
        run_check(results, "llama_7b_nf4", llama_nf4, device, args.smoke, steps)
        run_check(results, "t5_3b", t5_full_vs_compacter, device, args.smoke, steps, t5)
    results["environment"] = {"status": "ok", "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "transformers": transformers.__version__, "smoke": args.smoke}
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scale.md").write_text(markdown(results) + "\n")
    return 1 if any(r.get("status") == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 12's GPU checks (items 3 and 4), called by benchmarks/gpu_real_bases.sh: quantized bases on a CUDA GPU and
bases spread over devices. Random-weight T5 models from the shipped configs (no download); every check records what
it measured, or why it failed or was skipped, in OUT/real_bases.json (and a Markdown summary).

1. quantized bases: T5-base with compacter++ on a bf16 base, and on int8 / int4 (torchao), nf4 / bnb-int8
   (bitsandbytes) bases: base memory, train-step time (ratio to the bf16 base, alternating on the same batch),
   how far the logits are from the unquantized base's, gradients only on the trained parameters, and an adapter
   saved on the quantized base loaded onto the unquantized one (identical tensors);
2. offloading to the GPU: T5-small under accelerate's cpu_offload with execution on the GPU: logits, gradients
   and beam-search generations equal to the same model on the GPU;
3. two devices: T5-small dispatched over two devices (cuda:0 and cuda:1, or cuda:0 and the CPU on a one-GPU
   machine) with dispatch_model: the same comparisons, and the adapter saved there loads onto one GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import transformers

import compacter
from compacter.models import build_model
from compacter.quantization import KINDS, is_quantized, quantize_base, quantize_linears, weight_bytes

RESULTS: dict[str, dict] = {}


def check(name: str):
    def wrap(function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                RESULTS[name] = {"status": "ok", **function(*args, **kwargs)}
            except SkipCheck as skip:
                RESULTS[name] = {"status": "skipped", "reason": str(skip)}
            except Exception as error:  # one failing check must not lose the others
                RESULTS[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                 "trace": traceback.format_exc()[-3000:]}
            RESULTS[name]["seconds"] = round(time.perf_counter() - start, 1)
            print(name, json.dumps({k: v for k, v in RESULTS[name].items() if k != "trace"}), flush=True)
        return run
    return wrap


class SkipCheck(Exception):
    pass


SIZES = {"t5-base": "t5-base", "t5-small": "t5-small"}  # --smoke: both a tiny T5 config's folder


def t5(size: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SIZES[size], pretrained=False).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SMOKE_BATCH = {"size": 2, "source": 16, "target": 4, "vocab": 128}


def batch(device, size=16, source=128, target=16, vocab=32000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (size, source), generator=generator)
    labels = torch.randint(2, vocab, (size, target), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def with_task(model, seed=1):
    torch.manual_seed(seed)
    compacter.apply(model, "compacter++")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_((torch.randn(param.shape, generator=generator) * 0.05).to(param.device))
    return model


def train_step(model, inputs, optimizer) -> float:
    device = inputs["input_ids"].device
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


def grads_only_on_trained(model, inputs) -> bool:
    model.zero_grad(set_to_none=True)
    with torch.autocast(inputs["input_ids"].device.type, dtype=torch.bfloat16):
        model(**inputs).loss.backward()
    trained = set(compacter.trainable_parameters(model))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return with_grad == trained


@check("quantized_bases")
def quantized_bases(steps: int, device: torch.device) -> dict:
    """On the CPU (--smoke) bitsandbytes' CPU path stands in for its CUDA kernels (quantize_linears: no device check)."""
    inputs = batch(device, **(SMOKE_BATCH if device.type == "cpu" else {}))
    models, rows = {}, {}
    for kind in ("bf16", *KINDS):
        model = t5("t5-base")
        try:
            if kind == "bf16":
                model = model.to(device, torch.bfloat16)
            else:
                model = model.to(device, torch.bfloat16)
                model = (quantize_base(model, kind, device=device) if device.type == "cuda"
                         else quantize_linears(model, kind, device))
        except Exception as error:
            rows[kind] = {"error": f"{type(error).__name__}: {error}"}
            continue
        model = with_task(model).train()
        models[kind] = model
        rows[kind] = {"base_weight_bytes": weight_bytes(model),
                      "quantized_linears": sum(is_quantized(m.weight) for m in model.modules() if hasattr(m, "weight")
                                               and isinstance(m.weight, torch.Tensor)),
                      "grads_only_on_trained": grads_only_on_trained(model, inputs)}
    optimizers = {k: torch.optim.AdamW(compacter.trainable_parameters(m).values(), lr=1e-4) for k, m in models.items()}
    times = {k: [] for k in models}
    for step in range(steps + 2):
        for kind in (list(models) if step % 2 == 0 else list(reversed(models))):
            elapsed = train_step(models[kind], inputs, optimizers[kind])
            if step >= 2:
                times[kind].append(elapsed)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        for model in models.values():
            model.eval()
        logits = {k: m(**inputs).logits.float() for k, m in models.items()}
    reference = logits.get("bf16")
    with tempfile.TemporaryDirectory() as folder:
        for kind, model in models.items():
            rows[kind]["train_step_s"] = statistics.median(times[kind])
            if reference is not None:
                rows[kind]["logits_relative_error"] = ((logits[kind] - reference).norm() / reference.norm()).item()
                rows[kind]["train_step_ratio_to_bf16"] = rows[kind]["train_step_s"] / rows["bf16"]["train_step_s"]
                rows[kind]["memory_ratio_to_bf16"] = rows[kind]["base_weight_bytes"] / rows["bf16"]["base_weight_bytes"]
            if kind != "bf16":  # its adapter onto the unquantized base: identical tensors
                model.save_pretrained(Path(folder) / kind)
                plain = compacter.load(t5("t5-base").to(device, torch.bfloat16), Path(folder) / kind)
                rows[kind]["loads_onto_unquantized_base"] = all(
                    torch.equal(p.cpu(), compacter.trainable_parameters(model)[n].cpu())
                    for n, p in compacter.trainable_parameters(plain).items())
    size, source = inputs["input_ids"].shape
    return {"model": "t5-base (random)" if SIZES["t5-base"] == "t5-base" else "a tiny T5 (smoke)",
            "batch": f"{size} x {source}/{inputs['labels'].shape[1]} tokens, bf16 autocast", "timed_steps": steps,
            "bases": rows}


def compare(model, reference, inputs) -> dict:
    """Logits, gradients of the trained parameters and beam-search generations: model vs reference."""
    result = {}
    with torch.no_grad():
        out, ref = model(**inputs).logits, reference(**inputs).logits
        result["logits_max_abs_difference"] = (out.float().cpu() - ref.float().cpu()).abs().max().item()
        ids = inputs["input_ids"][:4]
        generated = model.generate(input_ids=ids, max_new_tokens=8, num_beams=2, do_sample=False).cpu()
        expected = reference.generate(input_ids=ids.to(reference.device), max_new_tokens=8, num_beams=2,
                                      do_sample=False).cpu()
        result["generations_equal"] = torch.equal(generated, expected)
    for m in (model, reference):
        m.train()
        m.zero_grad(set_to_none=True)
        m(**inputs).loss.backward()  # inputs on cuda:0: accelerate's hooks move them where each block computes
    grads = [{n: p.grad.detach().float().cpu() for n, p in compacter.trainable_parameters(m).items()}
             for m in (model, reference)]
    result["grad_max_abs_difference"] = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[1])
    result["grads_only_on_trained"] = {n for n, p in model.named_parameters() if p.grad is not None} == set(grads[0])
    for m in (model, reference):
        m.eval()
    return result


@check("cpu_offload_to_gpu")
def offload_to_gpu() -> dict:
    from accelerate import cpu_offload

    if not torch.cuda.is_available():
        raise SkipCheck("needs a CUDA GPU")
    device = torch.device("cuda:0")
    reference = with_task(t5("t5-small").to(device))
    model = t5("t5-small")
    cpu_offload(model, execution_device=device)
    with_task(model)
    return {"model": "t5-small (random)", **compare(model, reference, batch(device, size=4, source=32, target=8))}


@check("two_devices")
def two_devices() -> dict:
    from accelerate import dispatch_model

    if not torch.cuda.is_available():
        raise SkipCheck("needs a CUDA GPU")
    second = "cuda:1" if torch.cuda.device_count() >= 2 else "cpu"
    first = torch.device("cuda:0")
    reference = with_task(t5("t5-small").to(first))
    model = t5("t5-small")
    # the encoder and the first decoder block on one device, the rest of the decoder on the other
    device_map = {"shared": 0, "encoder": 0, "decoder.embed_tokens": 0, "decoder.block.0": 0, "decoder.block.1": 0,
                  "decoder.block.2": 0, "decoder.block.3": second, "decoder.block.4": second,
                  "decoder.block.5": second, "decoder.final_layer_norm": second, "lm_head": 0}
    model = dispatch_model(model, device_map, main_device="cuda:0" if second != "cpu" else "cpu")
    with_task(model)
    devices = sorted({str(p.device) for p in model.compacter.parameters()})
    result = compare(model, reference, batch(first, size=4, source=32, target=8))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        single = compacter.load(t5("t5-small").to(first), folder)
        result["adapter_loads_onto_one_gpu"] = all(
            torch.equal(p.cpu(), compacter.trainable_parameters(model)[n].cpu())
            for n, p in compacter.trainable_parameters(single).items())
    return {"model": "t5-small (random)", "devices": ["cuda:0", second], "task_parameter_devices": devices, **result}


def markdown() -> str:
    lines = ["# Issue 12 GPU checks", ""]
    for name, result in RESULTS.items():
        lines.append(f"## {name}: {result['status']} ({result['seconds']} s)")
        if result["status"] != "ok":
            lines += ["", f"    {result.get('reason') or result.get('error')}", ""]
            continue
        if name == "quantized_bases":
            lines += ["", "| base | weights (MiB) | memory / bf16 | step (ms) | step / bf16 | logits rel. error | "
                      "grads only trained | loads onto unquantized |", "|---|---:|---:|---:|---:|---:|---|---|"]
            for kind, row in result["bases"].items():
                if "error" in row:
                    lines.append(f"| {kind} | {row['error']} | | | | | | |")
                    continue
                lines.append(f"| {kind} | {row['base_weight_bytes'] / 2**20:.0f} | {row.get('memory_ratio_to_bf16', 0):.2f}"
                             f" | {row['train_step_s'] * 1e3:.1f} | {row.get('train_step_ratio_to_bf16', 0):.2f} | "
                             f"{row.get('logits_relative_error', 0):.4f} | {row['grads_only_on_trained']} | "
                             f"{row.get('loads_onto_unquantized_base', '-')} |")
            lines.append("")
        else:
            lines += ["", *(f"- {k}: {v}" for k, v in result.items() if k not in ("status", "seconds")), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true",
                        help="the quantized-bases check on the CPU with a tiny T5, 1 step (the GPU checks are skipped)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("These checks need a CUDA GPU (or --smoke, on the CPU).")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        if args.smoke:
            transformers.T5Config(vocab_size=128, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                                  decoder_start_token_id=0).save_pretrained(folder)
            SIZES.update({"t5-base": folder, "t5-small": folder})
        quantized_bases(1 if args.smoke else args.steps, torch.device("cpu" if args.smoke else "cuda"))
        offload_to_gpu()
        two_devices()
    RESULTS["environment"] = {"status": "ok", "seconds": 0,
                              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "gpus": torch.cuda.device_count(), "torch": torch.__version__,
                              "packages": _versions()}
    (out / "real_bases.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    (out / "real_bases.md").write_text(markdown() + "\n")
    return 1 if any(r["status"] == "failed" for r in RESULTS.values()) else 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("transformers", "accelerate", "torchao", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


if __name__ == "__main__":
    raise SystemExit(main())

"""`compacter train`: one run, read top to bottom (nanoGPT style).

Build the model and attach the method, encode the data, then step: AdamW with a linear schedule,
autocast, gradient accumulation, evaluation on validation every epoch (or every N steps), the best
adapter kept by validation score, the test split scored once at the end with it.

Every evaluation also writes the training state (checkpoint.py). Started again with the same
settings, a run resumes from it; a finished run (results.json present) is not run again.

Losses are sums over the examples (classification) or target tokens (text-to-text) divided by
their count in the whole global batch, so that any split of a batch into processes and
accumulation steps gives the same gradient as one process with the whole batch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import __version__
from ..attach import active_task, apply, parameter_groups, trainable_parameters
from ..compiling import compile_model
from ..data import TaskData
from ..io import atomic_write
from ..models import build_model, enable_activation_checkpointing, load_config
from ..params import count_parameters
from ..saving import file_name, read_tensors, save
from . import distributed
from .checkpoint import STATE_FILE, load_state, restore_rng, rng_state, save_state
from .config import TrainConfig
from .inputs import collate, encode, global_batches, load_splits, shard

RESULTS_FILE = "results.json"
PAPER_WARMUP_STEPS = 500
BEST_DIR = "adapter"


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run (or resume, or return the results of a finished) training run; returns the results."""
    config = config.resolved()
    output = Path(config.output_dir)
    if (output / RESULTS_FILE).is_file():
        results = json.loads((output / RESULTS_FILE).read_text())
        _check_same_run(config, results["config"], output / RESULTS_FILE)
        return results
    processes = distributed.start(config.device)
    try:
        return _train(config, output, processes, on_step)
    finally:
        distributed.stop()


def _train(config: TrainConfig, output: Path, processes: distributed.Processes, on_step) -> dict[str, Any]:
    log = _logger(output, processes)
    torch.manual_seed(config.seed)
    data = load_splits(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(config.tokenizer or config.model)
    text_to_text = bool(getattr(load_config(config.model), "is_encoder_decoder", False))
    model = build_model(config.model, pretrained=config.pretrained, num_labels=None if text_to_text else data.num_labels)
    if getattr(model.config, "pad_token_id", None) is None:  # GPT-style models have no padding token
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    apply(model, config.method, **config.method_overrides)
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.to(processes.device)
    if config.fsdp:
        if processes.world == 1:
            raise ValueError("--fsdp shards the model over several processes: launch with torchrun --nproc_per_node N "
                             "(or accelerate launch); with one process leave --fsdp out.")
        distributed.shard_model(model)
    encoded = {split: encode(tokenizer, data.task, examples, text_to_text=text_to_text,
                             source_length=config.max_source_length, target_length=config.max_target_length)
               for split, examples in data.splits.items()}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    trained = trainable_parameters(model)
    groups = parameter_groups(model)
    heads = [p for n, p in trained.items() if groups[n] == "head"]
    rest = [p for n, p in trained.items() if groups[n] != "head"]
    optimizer = torch.optim.AdamW(
        [g for g in ({"params": rest}, {"params": heads, "lr": config.head_learning_rate})
         if g["params"]], lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)
    parts = processes.world * config.gradient_accumulation
    if config.batch_size < parts or len(encoded["train"]) < parts:
        raise ValueError(f"{processes.world} process(es) × {config.gradient_accumulation} accumulation step(s) need "
                         f"a batch size and a training set of at least {parts} examples each (batch size "
                         f"{config.batch_size}, {len(encoded['train'])} training examples). Raise --batch-size or "
                         "use fewer processes / accumulation steps.")
    @functools.lru_cache(maxsize=1)  # an epoch's order is drawn once, not at every step
    def epoch_batches(epoch: int) -> list[list[int]]:
        return global_batches(len(encoded["train"]), config.batch_size, config.seed, epoch, parts)

    steps_per_epoch = len(epoch_batches(0))
    total_steps = steps_per_epoch * config.epochs
    warmup = config.warmup_steps if config.warmup_steps is not None else min(PAPER_WARMUP_STEPS, total_steps // 10)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    scaler = torch.amp.GradScaler(processes.device.type, enabled=config.precision == "fp16")
    autocast = (torch.autocast(processes.device.type, dtype=torch.bfloat16 if config.precision == "bf16" else torch.float16)
                if config.precision != "fp32" else contextlib.nullcontext())
    network = model
    if processes.world > 1 and not config.fsdp:
        network = DistributedDataParallel(model, device_ids=[processes.device.index] if processes.device.type == "cuda"
                                          else None)
    forward = compile_model(network) if config.compile else network

    state = load_state(output)
    step, best, history, elapsed = 0, None, [], 0.0
    if state is not None:
        _check_same_run(config, state["config"], output / STATE_FILE)
        _load_trained(model, trained, state["trained"])
        distributed.load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        step, best, history, elapsed = state["step"], state["best"], state["history"], state["elapsed"]
        log.info("resumed at step %d of %d from %s", step, total_steps, output)
    else:
        parameters = count_parameters(model)
        log.info("%s on %s: %s trains %s of %s parameters (%.4f%%); %d steps, %d process(es)", config.model,
                 data.task.name, config.method, f"{parameters.trainable:,}", f"{parameters.total:,}",
                 parameters.percent, total_steps, processes.world)

    def evaluate(split: str) -> dict:
        predictions = predict(model, encoded[split], data, text_to_text, config, processes, pad_id, tokenizer, autocast)
        return data.score(split, predictions)

    def checkpoint() -> None:
        whole = distributed.full_tensors(trained)  # every process takes part in gathering shards
        optimizer_state = distributed.full_optimizer_state(optimizer)
        if processes.main:
            save_state(output, {"trained": whole, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                                "scaler": scaler.state_dict(), "rng": rng_state(), "step": step, "best": best,
                                "history": history, "elapsed": elapsed, "config": config.to_dict()})
        distributed.barrier(processes)

    eval_every = config.eval_steps or steps_per_epoch
    progress = tqdm(total=total_steps, initial=step, desc="training", disable=not processes.main, dynamic_ncols=True)
    started = time.perf_counter() - elapsed
    if processes.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(processes.device)
    model.train()
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        batch_indices = epoch_batches(epoch)[position]
        mine = shard(batch_indices, processes.world, processes.rank)
        micro = [shard(mine, config.gradient_accumulation, i) for i in range(config.gradient_accumulation)]
        micro = [m for m in micro if m]
        rows = [[encoded["train"][i] for i in m] for m in micro]
        count = distributed.total(sum(_loss_count(r) for r in rows), processes)
        loss_sum = 0.0
        for index, part in enumerate(rows):
            batch = {k: v.to(processes.device) for k, v in collate(part, pad_id).items()}
            sync = index == len(rows) - 1 or processes.world == 1
            if config.fsdp:
                model.set_requires_gradient_sync(sync)
            with (contextlib.nullcontext() if sync or config.fsdp else network.no_sync()), autocast:
                summed = _summed_loss(forward, model, batch, text_to_text)
                # DDP and FSDP average gradients over processes: scale back to the global sum / global count
                scaler.scale(summed * processes.world / count).backward()
            loss_sum += summed.item()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(list(trained.values()), config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = distributed.total(loss_sum, processes) / count
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}")
        if step % eval_every == 0 or step == total_steps:
            elapsed = time.perf_counter() - started
            model.eval()
            metrics = evaluate("validation")
            model.train()
            improved = best is None or metrics["score"] > best["score"]
            if improved:
                best = {"score": metrics["score"], "step": step, "metrics": metrics}
                whole = distributed.full_tensors(trained)
                if processes.main:
                    save(model, output / BEST_DIR, tensors=whole, metadata={
                        "step": step, "validation": metrics, "task": data.task.to_dict(),
                        "max_source_length": config.max_source_length, "max_target_length": config.max_target_length})
            history.append({"step": step, "epoch": step / steps_per_epoch, "loss": loss, "validation": metrics})
            log.info("step %d  loss %.4f  validation score %.2f%s", step, loss, metrics["score"],
                     "  (best so far)" if improved else "")
            checkpoint()
        if on_step is not None:
            on_step(step)
    progress.close()
    elapsed = time.perf_counter() - started

    best_tensors = read_tensors(output / BEST_DIR)
    _load_trained(model, trained, {name: best_tensors[file_name(name, active_task(model))] for name in trained})
    model.eval()
    test = evaluate("test")
    log.info("test score %.2f with the best validation checkpoint (step %d)", test["score"], best["step"])
    results = {
        "task": data.task.name, "model": config.model, "method": config.method,
        "method_config": model.compacter.config.to_dict(), "parameters": count_parameters(model).to_dict(),
        "validation": best["metrics"], "best_step": best["step"], "test": test, "history": history,
        "train_examples": len(encoded["train"]), "train_time_s": elapsed, "peak_memory_bytes": _peak_memory(processes),
        "processes": processes.world, "seed": config.seed, "config": config.to_dict(),
        "versions": {"compacter": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
    }
    if processes.main:
        atomic_write(output / RESULTS_FILE, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
    return results


def _check_same_run(config: TrainConfig, saved: dict, path: Path) -> None:
    """Resuming or reusing a run is only right for the same settings (where it runs may differ)."""
    current = config.to_dict()
    differing = [f"{key}: {saved.get(key)!r} there, {current[key]!r} now" for key in current
                 if key not in ("device", "eval_batch_size") and saved.get(key) != current[key]]
    if differing:
        raise ValueError(f"{path} belongs to a run with other settings ({'; '.join(differing)}). "
                         "Use another --output-dir, or delete that folder to start over.")


def _loss_count(rows: list[dict]) -> int:
    """What the loss averages over: target tokens (text-to-text) or examples."""
    return sum(len(r["labels"]) for r in rows) if isinstance(rows[0]["labels"], list) else len(rows)


def _summed_loss(forward, model, batch: dict, text_to_text: bool) -> torch.Tensor:
    labels = batch.pop("labels")
    if text_to_text:
        batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = forward(**batch).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    logits = forward(**batch).logits.float()
    if logits.shape[-1] == 1:  # a regression head (STS-B)
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")


@torch.no_grad()
def predict(model, rows: list[dict], data: TaskData, text_to_text: bool, config: TrainConfig,
            processes: distributed.Processes, pad_id: int, tokenizer, autocast) -> list[str]:
    """Predictions as strings (label names, scores or generated text), in the split's order."""
    indices = list(range(processes.rank, len(rows), processes.world))
    size, mine = config.eval_batch_size, []
    # A sharded model runs collectives in every forward: all processes run as many batches as the one
    # with the most examples (a short one repeats an example) and generate until all are done.
    sharded = config.fsdp and processes.world > 1
    if sharded:
        model.unshard()  # generate() calls the encoder directly, outside the root unit's forward
    starts = range(0, len(range(0, len(rows), processes.world)) if sharded else len(indices), size)
    for start in tqdm(starts, desc="evaluating", leave=False, disable=not processes.main):
        chosen = indices[start: start + size]
        part = [rows[i] for i in (chosen or indices[-1:] or [0])]
        batch = {k: v.to(processes.device) for k, v in collate(part, pad_id).items() if k != "labels"}
        with autocast:
            if text_to_text:
                generated = model.generate(**batch, max_new_tokens=config.max_target_length, num_beams=1,
                                           do_sample=False, synced_gpus=sharded)
                outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
            else:
                logits = model(**batch).logits.float()
                if logits.shape[-1] == 1:
                    outputs = [f"{v:.4f}" for v in logits.squeeze(-1).tolist()]
                else:
                    outputs = [data.task.labels[i] for i in logits.argmax(-1).tolist()]
        mine += outputs[: len(chosen)]
    if sharded:
        model.reshard()
    ordered: list[str | None] = [None] * len(rows)
    for rank, predictions in enumerate(distributed.gather(mine, processes)):
        for index, prediction in zip(range(rank, len(rows), processes.world), predictions):
            ordered[index] = prediction
    return ordered


def _load_trained(model, trained: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in trained.items():
            distributed.copy_into(param, tensors[name])


def _peak_memory(processes: distributed.Processes) -> int:
    if processes.device.type == "cuda":
        return torch.cuda.max_memory_allocated(processes.device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak resident memory


def _logger(output: Path, processes: distributed.Processes) -> logging.Logger:
    log = logging.getLogger(f"compacter.train.{output}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if processes.main and not log.handlers:
        output.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(output / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    return log

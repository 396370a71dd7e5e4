"""`compacter train`: one run, read top to bottom (nanoGPT style).

``train`` reads and checks the run's inputs, returns the results of the same run when it already
finished, and otherwise steps the ``Trainer`` from the start or from the run's checkpoint:

* set-up: build the model and attach the method, AdamW (model_setup.py), encode the data, a linear
  schedule (warm-up: warmup.py), autocast, DDP / FSDP over processes;
* step: one global batch, split into processes and accumulation steps;
* evaluate and checkpoint: on validation every epoch (or every N steps: predictions.py); the best
  adapter is kept and the training state is saved (checkpoint.py);
* finish: the test split is scored once, with the best adapter, and results.json is written.

Whether a run folder may be resumed or returned is resume.py's; what makes two runs the same is
identity.py's. Losses are sums over the examples (classification) or target tokens (text-to-text)
divided by their count in the whole global batch (loss.py), so that any split of a batch into
processes and accumulation steps gives the same gradient as one process with the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..compiling import compile_model
from ..integrity import SEAL, digest, seal
from ..inventory import trainable_parameters
from ..io import atomic_write
from ..locking import folder_lock
from ..params import count_parameters
from ..provenance import versions
from ..saving import file_name, read_description, record_test_metrics, save
from ..switching import active_task
from . import distributed
from .checkpoint import TrainingState, load_trained, restore_rng, rng_state, save_state
from .config import TrainConfig
from .inputs import RunInputs, collate, encode, global_batches, read_inputs, shard
from .loss import loss_count, summed_loss
from .model_setup import build_optimizer, build_run_model
from .predictions import predict
from .resume import (
    ADAPTER_SEAL_KEY,
    BEST_DIR,
    RESULTS_FILE,
    RUN_KEY,
    best_adapter,
    finished_results,
    resumable_state,
    run_folder,
)
from .tracking import Trackers
from .tracking import metrics as tracked
from .warmup import paper_warmup, warmup_steps, warmup_warning


class TrainingDiverged(ValueError):
    """The loss or the gradients stopped being finite numbers: the learning rate is too high for this run."""


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None, *,
          learning_rate_source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume, or return the results of a finished) training run; returns the results.

    ``learning_rate_source`` says where the learning rate comes from (results.json and the log record it);
    by default :meth:`TrainConfig.learning_rate_choice` says: given, or the default of the model's family.
    """
    if learning_rate_source is None:
        learning_rate_source = config.learning_rate_choice().to_dict()
    config = config.resolved()
    output = Path(config.output_dir)
    processes = distributed.start(config.device)
    try:
        inputs = read_inputs(config)  # everything checked before anything is written
        with folder_lock(output) if processes.main else contextlib.nullcontext():  # one writer per run folder
            finished = finished_results(output, inputs.identity, inputs.config)
            if finished is not None:
                return finished
            state = resumable_state(output, inputs.identity)
            with run_folder(output, processes) as log:
                trainer = Trainer(inputs, processes, output, log, learning_rate_source)
                with trainer.trackers:
                    if state is not None:
                        trainer.restore(state)
                    trainer.start()
                    while trainer.step < trainer.total_steps and not trainer.out_of_patience():
                        loss = trainer.train_step()
                        if trainer.step % trainer.eval_every == 0 or trainer.step == trainer.total_steps:
                            trainer.evaluate_and_checkpoint(loss)
                        if on_step is not None:
                            on_step(trainer.step)
                    return trainer.finish()
    finally:
        distributed.stop()


class Trainer:
    """One run's model, optimiser, schedule and progress; what it holds between steps is what a checkpoint saves."""

    def __init__(self, inputs: RunInputs, processes: distributed.Processes, output: Path, log: logging.Logger,
                 learning_rate_source: dict[str, Any] | None = None):
        config = self.config = inputs.config
        self.learning_rate_source = learning_rate_source or {"value": config.learning_rate, "family": None,
                                                             "source": "given"}
        self.inputs, self.processes, self.output, self.log = inputs, processes, output, log
        torch.manual_seed(config.seed)  # the new head's and the method's initial weights, dropout
        self.data, self.tokenizer, self.text_to_text = inputs.data, inputs.tokenizer, inputs.text_to_text
        self.model = build_run_model(config, self.tokenizer, None if self.text_to_text else self.data.num_labels,
                                     processes)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.encoded = {split: encode(self.tokenizer, self.data.task, examples, text_to_text=self.text_to_text,
                                      source_length=config.max_source_length, target_length=config.max_target_length)
                        for split, examples in self.data.splits.items()}
        self.trained = trainable_parameters(self.model)
        self.optimizer = build_optimizer(self.model, self.trained, config)
        self.parts = processes.world * config.gradient_accumulation  # every process and accumulation step
        if config.batch_size < self.parts or len(self.encoded["train"]) < self.parts:
            raise ValueError(f"{processes.world} process(es) × {config.gradient_accumulation} accumulation step(s) "
                             f"need a batch size and a training set of at least {self.parts} examples each (batch size "
                             f"{config.batch_size}, {len(self.encoded['train'])} training examples). Raise "
                             "--batch-size or use fewer processes / accumulation steps.")
        self._batches: tuple[int, list[list[int]]] = (0, self._draw_batches(0))
        self.steps_per_epoch = len(self._batches[1])
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.warmup_steps = warmup_steps(config.warmup_steps, self.total_steps)
        self.eval_every = config.eval_steps or self.steps_per_epoch
        self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, self.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler(processes.device.type, enabled=config.precision == "fp16")
        self.autocast = (torch.autocast(processes.device.type, dtype=torch.bfloat16 if config.precision == "bf16"
                                        else torch.float16) if config.precision != "fp32" else contextlib.nullcontext())
        self.network = self.model
        if processes.world > 1 and not config.fsdp:
            # Intrinsic-SAID's Fastfood buffers are drawn from a seed on every process: nothing to broadcast
            self.network = DistributedDataParallel(self.model, broadcast_buffers=False, device_ids=[
                processes.device.index] if processes.device.type == "cuda" else None)
        self.forward = compile_model(self.network) if config.compile else self.network
        self.step, self.best, self.history, self.elapsed = 0, None, [], 0.0
        self.trackers = Trackers(config.report_to, output, config.to_dict(), processes.main)
        parameters = count_parameters(self.model)
        log.info("%s on %s: %s trains %s of %s parameters (%.4f%%); %d steps (%d warm-up), %d process(es)",
                 config.model, self.data.task.name, config.method, f"{parameters.trainable:,}",
                 f"{parameters.total:,}", parameters.percent, self.total_steps, self.warmup_steps, processes.world)
        log.info("learning rate %g (%s)", config.learning_rate, self.learning_rate_source["source"])
        if not self.text_to_text:
            log.info("the new head's learning rate %g (%g× the method's)", config.head_learning_rate,
                     config.head_learning_rate / config.learning_rate)
        paper = None if config.is_custom else paper_warmup(config.task, self.model.config)
        warning = warmup_warning(config.warmup_steps, config.warmup_steps != paper, self.total_steps)
        if warning:
            log.warning(warning)

    def _draw_batches(self, epoch: int) -> list[list[int]]:
        return global_batches(len(self.encoded["train"]), self.config.batch_size, self.config.seed, epoch, self.parts)

    def restore(self, state: TrainingState) -> None:
        """Continue from a checkpoint of this run (resume.py checked that it is this run's)."""
        if state.step > self.total_steps:
            raise ValueError(f"The checkpoint in {self.output} is at step {state.step}, past this run's last step "
                             f"({self.total_steps}): it was changed after it was written. To train again, give another "
                             "--output-dir.")
        load_trained(self.model, self.trained, state.trained, f"the checkpoint in {self.output}")
        distributed.load_optimizer_state(self.optimizer, state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
        self.step, self.best, self.history, self.elapsed = state.step, state.best, state.history, state.elapsed
        self.log.info("resumed at step %d of %d from %s", self.step, self.total_steps, self.output)

    def start(self) -> None:
        self.progress = tqdm(total=self.total_steps, initial=self.step, desc="training",
                             disable=not self.processes.main, dynamic_ncols=True)
        self.started = time.perf_counter() - self.elapsed
        self._since = (time.perf_counter(), self.step)  # throughput: time and step of the last evaluation
        if self.processes.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.processes.device)
        self.model.train()

    def train_step(self) -> float:
        """One optimiser step on the next global batch; returns its mean loss."""
        config, processes = self.config, self.processes
        epoch, position = divmod(self.step, self.steps_per_epoch)
        if self._batches[0] != epoch:  # an epoch's order is drawn once, not at every step
            self._batches = (epoch, self._draw_batches(epoch))
        mine = shard(self._batches[1][position], processes.world, processes.rank)
        micro = [part for i in range(config.gradient_accumulation) if (part := shard(mine, config.gradient_accumulation, i))]
        rows = [[self.encoded["train"][i] for i in part] for part in micro]
        count = distributed.total(sum(loss_count(r) for r in rows), processes)
        loss_sum = 0.0
        for index, part in enumerate(rows):
            batch = {k: v.to(processes.device) for k, v in collate(part, self.pad_id).items()}
            sync = index == len(rows) - 1 or processes.world == 1
            if config.fsdp:
                self.model.set_requires_gradient_sync(sync)
            with (contextlib.nullcontext() if sync or config.fsdp else self.network.no_sync()), self.autocast:
                summed = summed_loss(self.forward, self.model, batch, self.text_to_text)
                # DDP and FSDP average gradients over processes: scale back to the global sum / global count
                self.scaler.scale(summed * processes.world / count).backward()
            loss_sum += summed.item()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(list(self.trained.values()), config.max_grad_norm)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
        loss = distributed.total(loss_sum, processes) / count
        # before the step, so that the weights stay finite (fp16's scaler skips such a step and lowers its scale)
        if config.precision != "fp16" and not (math.isfinite(loss) and math.isfinite(norm)):
            raise TrainingDiverged(
                f"Training diverged at step {self.step + 1} of {self.total_steps} (loss {loss:.4g}, gradient norm "
                f"{norm:.4g}) with learning rate {config.learning_rate:g}: lower the learning rate (--lr), or let "
                "--lr auto choose one. The run's last checkpoint, if any, is kept.")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss:.4f}")
        self.trackers.log({"train/loss": loss, "train/learning_rate": self.scheduler.get_last_lr()[0]}, self.step)
        return loss

    def evaluate_and_checkpoint(self, loss: float) -> None:
        """Score validation, keep the adapter if it is the best so far, and save the training state."""
        self.elapsed = time.perf_counter() - self.started
        since, step = self._since
        throughput = (self.step - step) * self.config.batch_size / max(time.perf_counter() - since, 1e-9)
        self.model.eval()
        metrics = self.evaluate("validation")
        self.model.train()
        improved = self.best is None or metrics["score"] > self.best["score"]
        if improved:
            self.best = {"score": metrics["score"], "step": self.step, "metrics": metrics}
            whole = distributed.full_tensors(self.trained)  # every process takes part in gathering shards
            if self.processes.main:
                save(self.model, self.output / BEST_DIR, tensors=whole, metadata={
                    "step": self.step, "validation": metrics, "task": self.data.task.to_dict(),
                    "max_source_length": self.config.max_source_length,
                    "max_target_length": self.config.max_target_length, RUN_KEY: digest(self.inputs.identity)})
                self.best[ADAPTER_SEAL_KEY] = read_description(self.output / BEST_DIR)[SEAL]
        self.history.append({"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss,
                             "validation": metrics})
        self.log.info("step %d  loss %.4f  validation score %.2f%s", self.step, loss, metrics["score"],
                      "  (best so far)" if improved else "")
        self.trackers.log({**tracked("validation", metrics), "train/examples_per_second": throughput}, self.step)
        trained, optimizer = distributed.full_tensors(self.trained), distributed.full_optimizer_state(self.optimizer)
        if self.processes.main:
            save_state(self.output, TrainingState(
                identity=self.inputs.identity, step=self.step, best=self.best, history=self.history,
                elapsed=self.elapsed, trained=trained, optimizer=optimizer, scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), rng=rng_state()))
        distributed.barrier(self.processes)
        self._since = (time.perf_counter(), self.step)

    def out_of_patience(self) -> bool:
        """Early stopping: ``patience`` evaluations in a row without a better validation score than the best."""
        if self.config.patience is None or self.best is None:
            return False
        return sum(entry["step"] > self.best["step"] for entry in self.history) >= self.config.patience

    def evaluate(self, split: str) -> dict:
        predictions = predict(self.model, self.encoded[split], self.data, self.text_to_text, self.config,
                              self.processes, self.pad_id, self.tokenizer, self.autocast)
        return self.data.score(split, predictions)

    def finish(self) -> dict[str, Any]:
        """Score the test split with the best adapter and write results.json."""
        self.progress.close()
        self.elapsed = time.perf_counter() - self.started
        best = best_adapter(self.output, self.best, self.inputs.identity)  # named as in its file
        task = active_task(self.model)
        load_trained(self.model, self.trained, {name: best[file_name(name, task)] for name in self.trained
                                                if file_name(name, task) in best}, f"{self.output / BEST_DIR}")
        self.model.eval()
        test = self.evaluate("test")
        self.trackers.log(tracked("test", test), self.step)
        if self.processes.main:
            record_test_metrics(self.model, self.output / BEST_DIR, test)  # the card shows the test split's scores
        if self.step < self.total_steps:
            self.log.info("stopped early at step %d of %d: %d evaluations without a better validation score "
                          "(--patience %d)", self.step, self.total_steps, self.config.patience, self.config.patience)
        self.log.info("test score %.2f with the best validation checkpoint (step %d)", test["score"], self.best["step"])
        config, processes = self.config, self.processes
        results = {
            "task": self.data.task.name, "model": config.model, "method": config.method,
            "method_config": self.model.compacter.config.to_dict(), "parameters": count_parameters(self.model).to_dict(),
            "validation": self.best["metrics"], "best_step": self.best["step"], "test": test, "history": self.history,
            "train_examples": len(self.encoded["train"]), "train_time_s": self.elapsed,
            "peak_memory_bytes": _peak_memory(processes), "processes": processes.world, "seed": config.seed,
            "schedule": {"total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
                         "warmup_steps": self.warmup_steps},
            "steps_trained": self.step, "stopped_early": self.step < self.total_steps,
            "config": config.to_dict(), "learning_rate_source": self.learning_rate_source,
            "identity": self.inputs.identity, ADAPTER_SEAL_KEY: self.best.get(ADAPTER_SEAL_KEY),
            "versions": versions(),
        }
        results = seal(results)  # an edited score is refused when the run is asked for again
        if processes.main:
            text = json.dumps(results, indent=2)
            atomic_write(self.output / RESULTS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return results


def _peak_memory(processes: distributed.Processes) -> int:
    if processes.device.type == "cuda":
        return torch.cuda.max_memory_allocated(processes.device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak resident memory

"""What a training run is: every setting, with the paper's defaults per task and method (SPEC §2, §4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import get_task
from ..data.files import READERS, is_data_path
from ..methods import DEFAULT_METHOD, get_config
from ..methods.learning_rates import LearningRateChoice, family_default, head_lr_factor, model_family
from ..methods.settings import check_fields, setting
from ..models import check_source, default_pooling, load_config
from ..pooling import POOLINGS
from ..quantization import KINDS as QUANTIZATIONS
from ..quantization import check_quantization
from .tracking import NONE, TRACKERS, check_trackers
from .warmup import paper_warmup

# SPEC §4 / the paper's Appendix A
SOURCE_LENGTHS = {"glue": 128, "super_glue": 256, "record": 512, "custom": 128}
BATCH_SIZES = {"glue": 100, "super_glue": 32, "record": 16, "custom": 32}
SMALL_TASK_EPOCHS, LARGE_TASK_EPOCHS = 20, 3
SMALL_TASKS = ("mrpc", "cola", "stsb", "rte", "boolq", "cb", "copa", "wic")
LOW_RESOURCE_EPOCHS = {100: 1000, 500: 200, 1000: 100, 2000: 50, 4000: 25}  # §5.6
LOW_RESOURCE_BATCH, LOW_RESOURCE_EVAL_STEPS = 40, 250
TARGET_LENGTHS = {"record": 32}
DEFAULT_TARGET_LENGTH = 16
MAX_SEED = 2**32 - 1  # numpy's RandomState draws the data splits
COLUMN_FIELDS = ("text_column", "text_pair_column", "label_column", "source_column", "target_column")
DEVICE_TYPES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    """Every setting of a run; each is checked against its type and bounds when the config is made (settings.py)."""

    model: str = setting(non_empty=True)  # a hub name or a local folder
    task: str = setting(non_empty=True)  # a GLUE/SuperGLUE task name, or your own CSV / JSON-lines / parquet file or folder
    method: str = setting(DEFAULT_METHOD, non_empty=True)
    output_dir: str | None = setting(None, non_empty=True)  # default: runs/<model>-<task>-<method>-lr<lr>-seed<seed>
    method_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = setting(None, non_empty=True)  # GLUE/SuperGLUE original files or an export; None: the hub
    learning_rate: float | None = setting(None, above=0)  # None: the method's for the model's family (learning_rates.py)
    # a new task head; None: the method's multiple of lr for the model's family, set when its config is read
    head_learning_rate: float | None = setting(None, above=0)
    epochs: int | None = setting(None, at_least=1)  # None: 20 for the small tasks, 3 for the large ones; §5.6 low resource
    max_steps: int | None = setting(None, at_least=1)  # train this many steps (epochs are then as many as it takes)
    patience: int | None = setting(None, at_least=1)  # stop after this many evaluations without a better validation score
    batch_size: int | None = setting(None, at_least=1)  # the global batch, over all processes and accumulation steps
    gradient_accumulation: int = setting(1, at_least=1)
    max_source_length: int | None = setting(None, at_least=1)
    max_target_length: int | None = setting(None, at_least=1)
    # None: a tenth of the run at most 500, or the paper's protocol when the run reproduces it (warmup.py)
    warmup_steps: int | None = setting(None, at_least=0)
    short_warmup: bool = False  # deprecated (--short-warmup): a tenth of the run at most 500, the default rule
    weight_decay: float = setting(0.0, at_least=0)
    max_grad_norm: float = setting(1.0, above=0)
    seed: int = setting(42, at_least=0, at_most=MAX_SEED)
    train_size: int | None = setting(None, at_least=1)  # low resource: the first N of one seeded order (nested)
    eval_steps: int | None = setting(None, at_least=1)  # None: evaluate (and checkpoint) at the end of every epoch
    eval_batch_size: int | None = setting(None, at_least=1)
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))  # autocast to bf16 / fp16
    gradient_checkpointing: bool = False
    # store the frozen base's Linear weights in 8 / 4 bits (quantization.py): int8, int4 (torchao), nf4, bnb-int8 (CUDA)
    quantize: str | None = setting(None, choices=QUANTIZATIONS)
    compile: bool = False  # torch.compile the training forward; falls back to eager if compiling fails
    fsdp: bool = False  # shard the model over the processes (FSDP2) instead of replicating it (DDP)
    pretrained: bool = True  # False: random weights from the model's config (tests, benchmarks)
    tokenizer: str | None = setting(None, non_empty=True)  # default: the model's
    # a BERT-style classifier: its [CLS] pooler, or the tokens' mean; None: as the checkpoint was trained (pooling.py)
    pooling: str | None = setting(None, choices=POOLINGS)
    text_column: str | None = setting(None, non_empty=True)
    text_pair_column: str | None = setting(None, non_empty=True)
    label_column: str | None = setting(None, non_empty=True)
    source_column: str | None = setting(None, non_empty=True)
    target_column: str | None = setting(None, non_empty=True)
    device: str | None = setting(None, non_empty=True)  # cpu, cuda or cuda:N; default: this process's GPU when there is one
    report_to: list[str] = setting(factory=list, choices=(*TRACKERS, NONE))  # experiment trackers (tracking.py)

    def __post_init__(self) -> None:
        if isinstance(self.learning_rate, str) and self.learning_rate.strip().lower() == "auto":
            raise ValueError("learning_rate='auto' is a search over several runs, not a setting of one run: leave "
                             "learning_rate unset and call compacter.training.train_with_lr_search(config) (or "
                             "`compacter train --lr auto`).")
        if self.patience == 0:
            raise ValueError("patience=0 (--patience 0) would stop the run at its first evaluation. Give the number of "
                             "evaluations without a better validation score after which to stop (e.g. --patience 3), "
                             "or leave it out to train all steps.")
        check_fields(self)
        if self.warmup_steps is not None and self.short_warmup:
            raise ValueError(f"warmup_steps={self.warmup_steps} and short_warmup both set the warm-up: give one of them.")
        check_trackers(self.report_to)
        if self.device is not None:
            _check_device(self.device)
        method = get_config(self.method, **self.method_overrides)  # unknown methods and settings fail here, early
        if self.quantize is not None:
            if method.trains_base_in_place:
                raise ValueError(f"--quantize {self.quantize} freezes the base model in 8 or 4 bits, but the method "
                                 f"{self.method!r} trains the base model's own parameters. Leave --quantize out, or "
                                 "train adapters (compacter++, compacter, adapter, ...).")
            check_quantization(self.quantize, self.device)
            if self.fsdp:
                raise ValueError(f"--quantize {self.quantize} and --fsdp: sharding a quantized base is not supported. "
                                 "A quantized base is small enough to replicate: leave --fsdp out (DDP).")
        if self.compile and self.gradient_checkpointing and method.builds_weights:
            # under torch.compile the weights built inside a checkpointed block are not rebuilt the same way when
            # the block is recomputed, and torch.utils.checkpoint stops the backward pass with a CheckpointError
            raise ValueError(f"--compile and --gradient-checkpointing together are not supported for {self.method!r}, "
                             "whose weights are built at each call. Give one of them: --gradient-checkpointing to "
                             "save memory, or --compile for speed.")
        if self.pooling == "mean":
            try:
                family = self.model_family()
            except (ValueError, FileNotFoundError):
                family = None  # said where the model is loaded
            if family in ("seq2seq", "decoder"):
                raise ValueError(f"--pooling mean replaces the [CLS] pooler of a BERT-style classifier, and "
                                 f"{self.model} is a {family} model, which has none. Leave --pooling out.")
        columns = [f"--{name.replace('_', '-')}" for name in COLUMN_FIELDS if getattr(self, name) is not None]
        if not self.is_custom:
            if Path(self.task).is_file():
                raise ValueError(f"{self.task}: unknown file type {Path(self.task).suffix!r}; your data must be one of "
                                 f"{', '.join(READERS)}.")
            if "/" in self.task or "." in self.task:
                raise FileNotFoundError(f"{self.task!r} is not an existing CSV / JSON-lines / parquet file or folder, "
                                        "nor a GLUE/SuperGLUE task name.")
            task = get_task(self.task)
            if columns:
                raise ValueError(f"{', '.join(columns)} name(s) the columns of your own data files; {task.name} has its "
                                 "own columns. Leave them out, or give your file or folder as --task.")
        elif self.data_dir is not None:
            raise ValueError(f"--data-dir is for GLUE/SuperGLUE tasks; your data is {self.task} (--task). Leave --data-dir "
                             "out.")

    @property
    def is_custom(self) -> bool:
        return is_data_path(self.task)

    @property
    def _family(self) -> str:
        if self.is_custom:
            return "custom"
        task = get_task(self.task)
        return "record" if task.name == "record" else task.benchmark

    def resolved(self) -> TrainConfig:
        """A copy with every None default filled in as the paper sets it."""
        values = dataclasses.asdict(self)
        task_name = None if self.is_custom else get_task(self.task).name
        low_resource = self.train_size in LOW_RESOURCE_EPOCHS
        if values["learning_rate"] is None:
            values["learning_rate"] = self.learning_rate_choice().value
        if values["epochs"] is None:
            if low_resource:
                values["epochs"] = LOW_RESOURCE_EPOCHS[self.train_size]
            else:
                values["epochs"] = SMALL_TASK_EPOCHS if task_name in SMALL_TASKS or self.is_custom else LARGE_TASK_EPOCHS
        if values["batch_size"] is None:
            values["batch_size"] = LOW_RESOURCE_BATCH if low_resource else BATCH_SIZES[self._family]
        if values["eval_steps"] is None and low_resource:
            values["eval_steps"] = LOW_RESOURCE_EVAL_STEPS
        if values["max_source_length"] is None:
            values["max_source_length"] = SOURCE_LENGTHS[self._family]
        if values["max_target_length"] is None:
            values["max_target_length"] = TARGET_LENGTHS.get(task_name, DEFAULT_TARGET_LENGTH)
        if values["pooling"] is None:
            values["pooling"] = self.pooling_choice()
        if values["eval_batch_size"] is None:
            values["eval_batch_size"] = values["batch_size"]
        if values["output_dir"] is None:
            values["output_dir"] = self.default_output_dir(f"{values['learning_rate']:g}")
        return TrainConfig(**values)

    def default_output_dir(self, learning_rate: str) -> str:
        """runs/<model>-<task>-<method>-lr<learning_rate>-seed<seed>."""
        model = self.model.rstrip("/").split("/")[-1]
        task = get_task(self.task).name if not self.is_custom else self.task.rstrip("/").split("/")[-1].split(".")[0]
        return f"runs/{model}-{task}-{self.method}-lr{learning_rate}-seed{self.seed}"

    def learning_rate_choice(self) -> LearningRateChoice:
        """The learning rate this run trains with, and why: the one given, else the method's default for the model's
        family (methods/learning_rates.py; the model's config is read only then)."""
        if self.learning_rate is not None:
            return LearningRateChoice(self.learning_rate, None, "given (--lr / learning_rate)")
        return family_default(self.method, self.model_family())

    def with_head_learning_rate(self, model_config: Any) -> TrainConfig:
        """This (resolved) config with the new head's rate written in, when none is given: the method's multiple of
        the learning rate for the model's family (methods/learning_rates.py), read from ``model_config``."""
        if self.head_learning_rate is not None:
            return self
        factor = head_lr_factor(self.method, model_family(model_config))
        return dataclasses.replace(self, head_learning_rate=factor * self.learning_rate)

    def pooling_choice(self) -> str:
        """The pooling given, else the checkpoint's: ``"mean"`` for a sentence-transformers folder trained to mean-pool
        whose classifier reads a BERT-style pooler (all-MiniLM-L6-v2), ``"cls"`` (the classifier's own) otherwise."""
        if self.pooling is not None:
            return self.pooling
        try:
            return default_pooling(self.model)
        except (ValueError, OSError):
            return "cls"  # an unreadable model is said where it is loaded

    def model_family(self) -> str:
        """seq2seq, encoder or decoder: which table of default learning rates fits the model."""
        check_source(self.model, "--model")  # a missing folder is said as such, not as an unreadable config
        try:
            config = load_config(self.model)
        except (ValueError, OSError) as error:
            raise ValueError(f"The default learning rate depends on the model's family (seq2seq like T5, encoder, "
                             f"decoder-only), and the config of {self.model!r} cannot be read: {error} Give the "
                             "learning rate (--lr), or a model whose config.json can be read.") from None
        return model_family(config)

    def with_paper_warmup(self, model_config: Any) -> TrainConfig:
        """This (resolved) config with the paper's warm-up written in when the run reproduces the paper (warmup.py):
        a GLUE/SuperGLUE task on T5 with no warm-up given; else unchanged (None: a tenth of the run)."""
        if self.warmup_steps is not None or self.short_warmup or self.is_custom:
            return self
        return dataclasses.replace(self, warmup_steps=paper_warmup(self.task, model_config))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_device(device: str) -> None:
    try:
        chosen = torch.device(device)
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type not in DEVICE_TYPES:
        raise ValueError(f"device must be cpu, cuda or cuda:N (the index of a GPU), got {device!r}.")

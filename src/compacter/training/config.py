"""What a training run is: every setting, with the paper's defaults per task and method (SPEC §2, §4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..data import get_task
from ..data.files import is_data_path
from ..methods import get_config

# SPEC §4 / the paper's Appendix A
SOURCE_LENGTHS = {"glue": 128, "super_glue": 256, "record": 512, "custom": 128}
BATCH_SIZES = {"glue": 100, "super_glue": 32, "record": 16, "custom": 32}
SMALL_TASK_EPOCHS, LARGE_TASK_EPOCHS = 20, 3
SMALL_TASKS = ("mrpc", "cola", "stsb", "rte", "boolq", "cb", "copa", "wic")
LOW_RESOURCE_EPOCHS = {100: 1000, 500: 200, 1000: 100, 2000: 50, 4000: 25}  # §5.6
LOW_RESOURCE_BATCH, LOW_RESOURCE_EVAL_STEPS = 40, 250
TARGET_LENGTHS = {"record": 32}
# A new classification head starts from random weights, while the method's learning rate was chosen
# for pretrained ones (and adapters that start as the identity): the head learns 10× faster.
HEAD_LR_FACTOR = 10.0
DEFAULT_TARGET_LENGTH = 16


@dataclass
class TrainConfig:
    model: str
    task: str  # a GLUE/SuperGLUE task name, or your own CSV / JSON-lines / parquet file or folder
    method: str = "compacter++"
    output_dir: str | None = None  # default: runs/<model>-<task>-<method>-lr<lr>-seed<seed>
    method_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None  # GLUE/SuperGLUE original files or an export; None: the hub
    learning_rate: float | None = None  # None: the method's (SPEC §2)
    head_learning_rate: float | None = None  # a new task head (encoders); None: HEAD_LR_FACTOR × learning_rate
    epochs: int | None = None  # None: 20 for the small tasks, 3 for the large ones; §5.6 for low resource
    batch_size: int | None = None  # the global batch, over all processes and accumulation steps
    gradient_accumulation: int = 1
    max_source_length: int | None = None
    max_target_length: int | None = None
    warmup_steps: int | None = None  # None: the paper's 500, but at most a tenth of a short run
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    train_size: int | None = None  # low resource: the first N of one seeded order (nested)
    eval_steps: int | None = None  # None: evaluate (and checkpoint) at the end of every epoch
    eval_batch_size: int | None = None
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the training forward; falls back to eager if compiling fails
    fsdp: bool = False  # shard the model over the processes (FSDP2) instead of replicating it (DDP)
    pretrained: bool = True  # False: random weights from the model's config (tests, benchmarks)
    tokenizer: str | None = None  # default: the model's
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    source_column: str | None = None
    target_column: str | None = None
    device: str | None = None  # default: this process's GPU when there is one

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}.")
        if self.gradient_accumulation < 1:
            raise ValueError("gradient_accumulation must be at least 1.")
        get_config(self.method, **self.method_overrides)  # unknown methods and settings fail here, early
        if not self.is_custom:
            if "/" in self.task or "." in self.task:
                raise FileNotFoundError(f"{self.task!r} is not an existing CSV / JSON-lines / parquet file or folder, "
                                        "nor a GLUE/SuperGLUE task name.")
            get_task(self.task)

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
            values["learning_rate"] = get_config(self.method, **self.method_overrides).learning_rate
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
        if values["head_learning_rate"] is None:
            values["head_learning_rate"] = HEAD_LR_FACTOR * values["learning_rate"]
        if values["eval_batch_size"] is None:
            values["eval_batch_size"] = values["batch_size"]
        if values["output_dir"] is None:
            model = self.model.rstrip("/").split("/")[-1]
            task = task_name or self.task.rstrip("/").split("/")[-1].split(".")[0]
            values["output_dir"] = f"runs/{model}-{task}-{self.method}-lr{values['learning_rate']:g}-seed{self.seed}"
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

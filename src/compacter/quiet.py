"""Quiet by default: the command line hides other libraries' messages that say nothing about your run.

* torchao, which transformers imports whenever it is installed (to know its quantizer), logs "Failed to
  load ... _C_mxfp8 / _C_cutlass_90a" for optional GPU kernels, and its Enum registrations make torch
  log a pytree deprecation warning each; neither concerns a run, quantized or not;
* transformers logs a "LOAD REPORT" table when a model's new task head (``classifier``, ``score``, ...)
  is not in the checkpoint: compacter supplies and trains that head (or loads it from the adapter),
  so a report that lists only head weights as missing is dropped; any other report is kept;
* transformers' "Loading weights" progress bar.

`compacter -v` (or ``--verbose`` after any command) shows them all again. The library itself leaves
logging as it finds it: the command line runs each command inside :func:`quiet`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

NOISE = {  # logger → a text that marks the message as noise
    "torchao": "Failed to load",
    "torch.utils._pytree": "is an Enum subclass and is now natively supported",
}
LOAD_REPORTS = "transformers.modeling_utils"
HEAD_PREFIXES = ("classifier.", "score.", "classification_head.", "qa_outputs.")  # task heads we supply
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


class _Drop(logging.Filter):
    """Drops the records whose message ``is_noise`` says is noise."""

    def __init__(self, is_noise):
        super().__init__()
        self.is_noise = is_noise

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.is_noise(record.getMessage())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide the messages above while the block runs (a command), and show them again after it."""
    import transformers

    filters = [(logging.getLogger(name), _Drop(lambda message, text=text: text in message)) for name, text in NOISE.items()]
    filters.append((logging.getLogger(LOAD_REPORTS), _Drop(only_missing_heads)))
    for logger, drop in filters:
        logger.addFilter(drop)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
        if bars:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def head_reports_hidden() -> Iterator[None]:
    """Hide transformers' report of a new task head left MISSING while the block loads a base model whose head
    the adapter supplies (``compacter.from_pretrained``): it asks to train what was trained."""
    logger, drop = logging.getLogger(LOAD_REPORTS), _Drop(only_missing_heads)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def only_missing_heads(message: str) -> bool:
    """Whether ``message`` is a transformers load report whose every entry is a task head's weight left MISSING."""
    if "LOAD REPORT" not in message:
        return False
    entries = []
    for line in _COLOURS.sub("", message).splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 2 or cells[0] in ("", "Key") or set(cells[0]) <= set("-+"):
            continue
        entries.append((cells[0], cells[1]))
    return bool(entries) and all(status == "MISSING" and key.startswith(HEAD_PREFIXES) for key, status in entries)

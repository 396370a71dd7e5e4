"""How many steps a run warms its learning rate up for: a tenth of the run, or the paper's own protocol.

* By default a run warms up for a tenth of its steps, at most ``PAPER_WARMUP_STEPS`` (500): long
  runs get the paper's 500 steps, short ones are not all warm-up.
* A run that reproduces the paper follows its appendix: a GLUE or SuperGLUE task (by its name)
  trained text-to-text on a T5 model (``model_type == "t5"``). The GLUE tables with T5-base (and
  larger T5) warm up for 500 steps; SuperGLUE, and every task on T5-small (d_model 512, 6 layers),
  for none, which the paper found better for all methods.
* ``--warmup-steps N`` always wins. Whichever number applies, the warm-up ends before the last step,
  so that the run reaches its peak learning rate; a warm-up over half the run is warned about.

``read_inputs`` writes the paper's number into the run's ``warmup_steps`` (``TrainConfig.with_paper_warmup``,
once the model's config is read); ``None`` there means the tenth-of-the-run rule. The deprecated
``short_warmup`` (``--short-warmup``) asks for that rule by name.
"""

from __future__ import annotations

from typing import Any

from ..data import get_task

PAPER_WARMUP_STEPS = 500  # the GLUE tables with T5-base
DEFAULT_FRACTION = 10  # by default: a tenth of the run, at most PAPER_WARMUP_STEPS
DEFAULT_RULE = f"a tenth of the run, at most {PAPER_WARMUP_STEPS} steps"
T5_SMALL = {"d_model": 512, "num_layers": 6}


def paper_warmup(task: str, model_config: Any) -> int | None:
    """The paper's warm-up for a run that reproduces it (a GLUE/SuperGLUE task on T5), else None."""
    if getattr(model_config, "model_type", None) != "t5":
        return None
    benchmark = get_task(task).benchmark
    small = all(getattr(model_config, key, None) == value for key, value in T5_SMALL.items())
    return 0 if benchmark == "super_glue" or small else PAPER_WARMUP_STEPS


def warmup_steps(planned: int | None, total_steps: int) -> int:
    """The warm-up of a run of ``total_steps``: ``planned`` steps (given or the paper's) or, when None, a tenth of
    the run at most 500; never so many that the last step stays below the peak learning rate."""
    if planned is None:
        return min(PAPER_WARMUP_STEPS, total_steps // DEFAULT_FRACTION)
    return max(0, min(planned, total_steps - 1))


def warmup_warning(planned: int | None, given: bool, total_steps: int) -> str | None:
    """Why a warm-up that covers more than half of the run is likely a mistake, or None when it does not."""
    if planned is None or 2 * planned <= total_steps:
        return None
    whole = " (the whole run)" if planned >= total_steps - 1 else ""
    shorter = total_steps // DEFAULT_FRACTION
    if given:
        origin, fix = f"--warmup-steps {planned}", f"give a smaller --warmup-steps (e.g. {shorter}) or leave it out"
    else:
        origin, fix = f"the paper's {planned} warm-up steps", f"give a smaller --warmup-steps (e.g. {shorter})"
    return (f"warning: {origin} cover more than half of this run's {total_steps} steps{whole}: the learning rate "
            f"reaches its peak only at step {warmup_steps(planned, total_steps)}. The default warm-up is "
            f"{DEFAULT_RULE}; {fix}.")

"""`bash benchmarks/gpu_all.sh --smoke OUT`: every Python part of the GPU command on the CPU with tiny models, so that
a GPU minute is never lost to a typo. No figure is asserted: the parts ran and wrote their JSON and Markdown."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_the_gpu_command_runs_every_part_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "WHEELS": str(tmp_path / "no-wheels")}
    done = subprocess.run(["bash", "benchmarks/gpu_all.sh", "--smoke", str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    for part in ("table3-t5-base-bf16", "inference-t5-base", "serve-t5-base", "real_bases", "scale"):
        assert json.loads((out / f"{part}.json").read_text()) and (out / f"{part}.md").read_text().strip()
    table3 = json.loads((out / "table3-t5-base-bf16.json").read_text())["methods"]
    assert {"full", "compacter++", "full (compiled)", "compacter++ (compiled)"} <= set(table3)
    bases = json.loads((out / "real_bases.json").read_text())["quantized_bases"]
    assert bases["status"] == "ok" and set(bases["bases"]) == {"bf16", "int8", "int4", "nf4", "bnb-int8"}
    assert all("error" not in row and row["grads_only_on_trained"] for row in bases["bases"].values())
    scale = json.loads((out / "scale.json").read_text())
    assert scale["llama_7b_nf4"]["status"] == "ok" and scale["t5_3b"]["status"] == "ok"
    losses = scale["llama_7b_nf4"]["losses"]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)

"""Compiled training pays off only in one graph: no graph breaks, no recompiles after each mode's first step.

Every adapter method trains 5 steps under torch.compile on a single-task batch, then 5 on a routed batch
(compacter.route: two tasks, rows interleaved), counting with dynamo's counters. The "eager" backend runs
dynamo alone (breaks and recompiles are dynamo's), without AOT autograd or inductor's C++ build."""

import pytest
import torch
from conftest import tiny_t5
from torch._dynamo.utils import counters

import compacter

SETTINGS = {"adapter": {}, "pfeiffer": {}, "compacter": {}, "compacter++": {}, "phm-adapter": {"n": 4},
            "adapter-lowrank": {}, "adapterdrop": {"skip_first_layers": 1}}


def dynamo_counts() -> dict:
    return {"graph_breaks": sum(counters["graph_break"].values()), "graphs": counters["stats"]["unique_graphs"],
            "break_reasons": sorted(counters["graph_break"])}


@pytest.mark.parametrize("method", list(SETTINGS))
def test_every_adapter_method_trains_compiled_in_one_graph_single_task_and_routed(method):
    model = tiny_t5(num_layers=2 if method == "adapterdrop" else 1, num_decoder_layers=2 if method == "adapterdrop"
                    else 1)
    for name in ("rte", "mrpc"):
        compacter.apply(model, method, name=name, **SETTINGS[method])
    model.train()
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(2, 128, (4, 8), generator=generator),
             "labels": torch.randint(2, 128, (4, 4), generator=generator)}
    trained = compacter.trainable_parameters(model)
    before = {name: p.detach().clone() for name, p in trained.items()}
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-3)
    forward = torch.compile(model, backend="eager")
    torch._dynamo.reset()
    counters.clear()
    seen = {}
    for mode, routing in (("single task", None), ("routed", ["rte", "mrpc", "mrpc", "rte"])):
        for _ in range(5):
            if routing is None:
                compacter.set_active(model, "rte")
                loss = forward(**batch).loss
            else:
                with compacter.route(model, routing):
                    loss = forward(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seen[mode] = dynamo_counts()
    # one graph for the single-task steps, one more for the routed ones; nothing broken, nothing recompiled
    assert seen["single task"] == {"graph_breaks": 0, "graphs": 1, "break_reasons": []}
    assert seen["routed"] == {"graph_breaks": 0, "graphs": 2, "break_reasons": []}
    assert all(not torch.equal(before[name], p) for name, p in trained.items() if ".mrpc." in name or ".rte." in name)

"""Hand-built backward graphs of the exact shapes the partitioner produces for a recomputed random op, in both layouts
(torch/_functorch/partitioners.py):

* CPU, or CUDA with ``fallback_random``: ``run_with_rng_state(rng_state, op, *args)``, the state a tensor the forward
  saved (``run_and_save_rng_state`` in the forward);
* CUDA graph-safe RNG functionalization: ``graphsafe_run_with_rng_state(op, *args, rng_state=bwd_rng_state_N)``, the
  state a generator-valued backward input the partitioner adds (``bwd_rng_state_N``), not a saved tensor.

The analysis and the invariants must read both without firing falsely, and still fire on a state from elsewhere."""

from __future__ import annotations

import types

import pytest
import torch
import torch.fx as fx

from harness.core import analysis, invariants
from harness.core.analysis import Analysis

aten = torch.ops.aten
HOP = torch.ops.higher_order


def _ph(g: fx.Graph, name: str, val) -> fx.Node:
    n = g.placeholder(name)
    n.meta["val"] = val
    return n


def _joint() -> fx.GraphModule:
    g = fx.Graph()
    x = _ph(g, "primals_1", torch.empty(4, 4))
    d = g.call_function(aten.native_dropout.default, (x, 0.5, True))
    d.meta["val"] = (torch.empty(4, 4), torch.empty(4, 4, dtype=torch.bool))
    g.output((d,))
    return fx.GraphModule(torch.nn.Module(), g)


def _bw(layout: str, state_source: str = "saved") -> fx.GraphModule:
    g = fx.Graph()
    x = _ph(g, "primals_1", torch.empty(4, 4))
    if layout == "cpu":
        state = _ph(g, "getitem_2", torch.empty(5056, dtype=torch.uint8))
        if state_source == "elsewhere":
            state = g.call_function(aten.clone.default, (state,))
        replay = g.call_function(HOP.run_with_rng_state, (state, aten.native_dropout.default, x, 0.5, True))
    else:
        gen = _ph(g, "bwd_rng_state_0", torch.Generator())
        if state_source == "elsewhere":
            gen = _ph(g, "some_generator", torch.Generator())
        replay = g.call_function(HOP.graphsafe_run_with_rng_state, (aten.native_dropout.default, x, 0.5, True),
                                 {"rng_state": gen})
    replay.meta["val"] = (torch.empty(4, 4), torch.empty(4, 4, dtype=torch.bool))
    tangent = _ph(g, "tangents_1", torch.empty(4, 4))
    mask = g.call_function(__import__("operator").getitem, (replay, 1))
    grad = g.call_function(aten.native_dropout_backward.default, (tangent, mask, 2.0))
    grad.meta["val"] = torch.empty(4, 4)
    g.output((grad,))
    return fx.GraphModule(torch.nn.Module(), g)


def _run(bw: fx.GraphModule):
    cell = types.SimpleNamespace(id=f"hand-built-{bw.graph.find_nodes(op='placeholder')[1].name}",
                                 axes=types.SimpleNamespace(partitioner="min_cut", budget=None),
                                 case=types.SimpleNamespace(runner="standard"))
    return types.SimpleNamespace(cell=cell, analysis=Analysis([analysis.analyse_graphs(_joint(), None, bw)]))


@pytest.mark.parametrize("layout", ["cpu", "cuda-graphsafe"])
def test_both_replay_layouts_are_read_as_replays_of_the_wrapped_op(layout):
    bw = _bw(layout)
    replay = next(n for n in bw.graph.nodes if analysis.is_rng_replay(n))
    assert analysis.op_name(replay) == "aten.native_dropout.default", analysis.op_name(replay)
    state = analysis.rng_state_of(replay)
    assert state is not None and state.op == "placeholder", f"{layout}: expected the state placeholder, saw {state}"
    run = _run(bw)
    kinds = {s.name: s.kind for s in run.analysis.saved}
    want = {"primals_1": "input", "getitem_2": "rng_state"} if layout == "cpu" else {"primals_1": "input"}
    assert kinds == want, f"{layout}: expected saved tensors {want} (a generator input is no saved tensor), saw {kinds}"
    assert invariants.random_ops_replayed(run) == 1, f"{layout}: the replay should be counted and accepted"


@pytest.mark.parametrize("layout", ["cpu", "cuda-graphsafe"])
def test_a_replay_state_not_from_the_forward_fires(layout):
    run = _run(_bw(layout, state_source="elsewhere"))
    with pytest.raises(AssertionError, match="takes its state from .*expected a state the forward saved"):
        invariants.random_ops_replayed(run)

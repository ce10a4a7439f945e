"""Area "kwargs": what Dynamo passes into tag_activation_checkpoint: user keyword arguments forwarded through
``checkpoint`` and, under dynamic shapes, the symbolic sizes (CATALOGUE.md items 17, 18)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch._higher_order_ops.wrap import tag_activation_checkpoint

from harness.core.case import REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, AxesSpec, BuildContext, Partitioner, Case, Checkpoint, CompileSpec, Expect, Numerics, Program
from harness.core.checks import expect_equal
from harness.rows.cases import FORMER_CUSTOM


def _mm_maybe_z(x, y, z=None):
    a = torch.matmul(x, y)
    if z is not None:
        return torch.matmul(a, z)
    return a


def user_kwarg(ctx: BuildContext) -> Program:
    def fn(x, y, z):
        return torch.cos(ctx.checkpoint(_mm_maybe_z, x, y, use_reentrant=False, z=z))

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4), ctx.randn(4, 4)))


def first_tag_node(gm: fx.GraphModule) -> fx.Node:
    for n in gm.graph.nodes:
        if n.target is tag_activation_checkpoint:
            return n
    raise AssertionError(f"expected a tag_activation_checkpoint node in the Dynamo graph, saw none:\n{gm.code}")


def _call_count(gm: fx.GraphModule) -> int:
    return sum("call" in n.op for n in gm.graph.nodes)


def _kwarg_reaches_the_hop(run) -> None:
    gm = run.graphs["dynamo"][0]
    node = first_tag_node(gm)
    expect_equal(f"{run.cell.id}: arguments of tag_activation_checkpoint (body, x, y and the kwarg z)", len(node.args), 4)
    body = getattr(gm, node.args[0].name)
    expect_equal(f"{run.cell.id}: call nodes in the checkpointed body (matmul, matmul)", _call_count(body), 2)


def _dropout_mm(x, y):
    return torch.matmul(x, torch.nn.functional.dropout(y, 0.5))


def symints_location(ctx: BuildContext) -> Program:
    """One compiled function called on 4x4 then 5x5 inputs: the second call recompiles with symbolic sizes."""
    def fn(x, y):
        return ctx.checkpoint(_dropout_mm, x, y, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)), calls=((ctx.randn(5, 5), ctx.randn(5, 5)),))


def _recompiled_with_symints(run) -> None:
    counters = run.counters
    expect_equal(f"{run.cell.id}: Dynamo graphs compiled for the 4x4 and 5x5 calls", counters["graphs"], 2)
    expect_equal(f"{run.cell.id}: recompiles of the one frame (the 5x5 call)", counters.get("recompiles"), 1)
    expect_equal(f"{run.cell.id}: frames Dynamo converted successfully (its frames['ok'])", counters["frames_ok"], 2)
    expect_equal(f"{run.cell.id}: output shapes of the two calls", [tuple(o.shape) for o in run.compiled.outputs],
                 [(4, 4), (5, 5)])
    node = first_tag_node(run.graphs["dynamo"][0])
    expect_equal(f"{run.cell.id}: arguments of the first graph's tag_activation_checkpoint (body, x, y)", len(node.args), 3)
    second = first_tag_node(run.graphs["dynamo"][1])
    symbolic = [a.name for a in second.args[1:] if isinstance(a, fx.Node)
                and isinstance(a.meta.get("example_value"), torch.SymInt)]
    if not symbolic:
        raise AssertionError(f"{run.cell.id}: expected the recompiled (5x5) graph to pass symbolic sizes into "
                             f"tag_activation_checkpoint, saw args {[str(a) for a in second.args]}")


CASES = [
    # Compositions (issue 27 item 1, nightly); the user kwarg: not the reentrant checkpoint, which takes none.
    Case("kwargs_user_kwarg_forwarded", user_kwarg, catalogue=(17,),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(fullgraph=False),  # as upstream; Dynamo counts frames["ok"] only outside fullgraph mode
         expect=Expect(counters={"graphs": 1, "frames": 1, "frames_ok": 1, "graph_breaks": 0, "recompiles": 0},
                       check=_kwarg_reaches_the_hop)),
    Case("kwargs_symints_location", symints_location, catalogue=(18,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=REENTRANT_COMPOSITIONS),
         expect=Expect(check=_recompiled_with_symints), goldens=("dynamo", "joint", "fw", "bw"),
         compile=CompileSpec(fullgraph=False),
         numerics=Numerics.shape_only("dropout makes values stream-dependent; upstream asserts only shapes and counters"),
         selection=FORMER_CUSTOM),
]

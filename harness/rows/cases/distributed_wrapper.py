"""Area "distributed_wrapper": torch.distributed's ``checkpoint_wrapper`` / ``CheckpointWrapper`` under torch.compile
(CATALOGUE.md items 37, 38).

The wrapper (non-reentrant by default) must trace into one ``tag_activation_checkpoint`` region in one graph, and its
``__getattr__`` forwarding to the wrapped module must not become a frame of its own.  Upstream checks forward outputs
only; these cases also backpropagate and compare input and parameter gradients with eager with and without the wrapper.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.core.case import BuildContext, Case, Checkpoint, CompileSpec, Decompositions, Expect, Program, Requires

TAG = "higher_order.tag_activation_checkpoint"


def _wrap(ctx: BuildContext, module: nn.Module, *, factory: bool) -> nn.Module:
    """The module under torch.distributed's wrapper (AC runs), or the bare module (the no-AC reference)."""
    if not ctx.ac:
        return module
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, checkpoint_wrapper

    return checkpoint_wrapper(module) if factory else CheckpointWrapper(module)


class _SinLinearCos(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.c = 2

    def forward(self, x):
        return torch.cos(self.linear(torch.sin(x))) * self.c


def wrapper_function(ctx: BuildContext) -> Program:
    inner = ctx.module(_SinLinearCos())
    mod = _wrap(ctx, inner, factory=True)
    return Program(lambda x: mod(x), (ctx.randn(4, 4),), module=inner)


def getattr_through_wrapper(ctx: BuildContext) -> Program:
    lin = nn.Linear(1, 1)
    inner = ctx.module(nn.Sequential(lin, lin))  # the same Linear twice
    mod = _wrap(ctx, inner, factory=False)
    inner.a = torch.ones(1, 1, device=ctx.device, dtype=ctx.dtype)

    def fn(x):
        return mod(x) * mod.a  # with the wrapper, `a` is found through CheckpointWrapper.__getattr__

    return Program(fn, (ctx.randn(1, 1),), module=inner)


ONE_REGION = {"dynamo": {TAG: 1}}
ONE_GRAPH = {"graphs": 1, "unique_graphs": 1, "graph_breaks": 0}  # compile counters

CASES = [
    Case("distributed_utils_checkpoint_wrapper", wrapper_function, catalogue=(37,),
         checkpoint=Checkpoint.CHECKPOINT_WRAPPER, compile=CompileSpec(decompositions=Decompositions.INDUCTOR),
         requires=Requires.distributed("imports torch.distributed.algorithms._checkpoint.checkpoint_wrapper"),
         # The whole body is the region: backward recomputes the linear (addmm) instead of saving its output.
         expect=Expect({**ONE_REGION, "fw": {"aten.sin.default": 1, "aten.cos.default": 1},
                        "bw": {"aten.addmm.default": 1}}, counters=ONE_GRAPH)),
    Case("dynamo_does_not_trace_getattr_as_top_frame", getattr_through_wrapper, catalogue=(38,),
         checkpoint=Checkpoint.CHECKPOINT_WRAPPER,
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR,
                             config={"dynamo": {"inline_inbuilt_nn_modules": True}}),
         requires=Requires.distributed("imports torch.distributed.algorithms._checkpoint.checkpoint_wrapper"),
         expect=Expect(ONE_REGION, counters=ONE_GRAPH)),
]

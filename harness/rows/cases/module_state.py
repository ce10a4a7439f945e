"""Area "module_state": state a step leaves in the module besides outputs and gradients (issue 31): BatchNorm's running
statistics in training mode and a module that counts its calls, checkpointed, compared after the step between eager
without AC, eager with AC and compiled with AC (harness/core/oracles.py ``assert_state``), in every composition of
compile and checkpoint (issue 27).

Eager checkpointing re-invokes the region's forward in backward, so a region that updates running statistics or
counts its calls does it twice (``oracles.RECOMPUTE_RULE``); the cells say so with the rule, and where compiled
checkpointing leaves another state than eager checkpointing, that disagreement is named apart (known_failures.toml).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.core.case import (NON_REENTRANT_COMPOSITIONS, AxesSpec, Backend, BuildContext, Case, CompileSpec,
                               Partitioner, Program, Selection)


class BatchNormBlock(nn.Module):
    """Linear -> BatchNorm1d (training mode: running_mean, running_var, num_batches_tracked updated) -> relu."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x):
        return torch.relu(self.bn(self.lin(x)))


class CountingBlock(nn.Module):
    """A block that counts its forward calls in a plain attribute (a Python side effect on the module)."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.sin(self.lin(x))


def checkpointed(block_class):
    def build(ctx: BuildContext) -> Program:
        model = ctx.module(nn.ModuleDict({"block": block_class(), "head": nn.Linear(8, 8)}))

        def fn(x):
            return model["head"](ctx.checkpoint(model["block"], x, use_reentrant=False))

        return Program(fn, (ctx.randn(4, 8),), module=model)

    return build


# compile(checkpoint(f)) on aot_eager and the Dynamo-only eager backend, in every composition; make test runs each
# case's compile(checkpoint(f)) cell and BatchNorm's checkpoint(compile(f)), the rest nightly.
AXES = AxesSpec(partitioners=Partitioner.MIN_CUT, backends=(Backend.AOT_EAGER, Backend.EAGER), devices="cpu",
                compositions=NON_REENTRANT_COMPOSITIONS)
FAST = Selection(fast_axes=("min_cut-aot_eager-cpu-float32-checkpoint_of_compile",))

CASES = [
    # goldens=(): the cells are about the state a step leaves, their graphs are tags_*'s
    Case("state_batchnorm_training", checkpointed(BatchNormBlock), axes=AXES, selection=FAST, goldens=(),
         notes="BatchNorm in training mode inside a checkpointed block"),
    Case("state_call_counter", checkpointed(CountingBlock), axes=AXES, goldens=(),
         # fullgraph off: Dynamo refuses an attribute mutation inside the checkpoint HOP ("Non-nullified side
         # effect") and runs that checkpoint eagerly, as a user's model would
         compile=CompileSpec(fullgraph=False), notes="a block counting its calls in a module attribute"),
]

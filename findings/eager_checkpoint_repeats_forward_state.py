"""Eager checkpointing changes the state a training step leaves: a checkpointed BatchNorm (training mode) updates its
running statistics twice and a checkpointed block that counts its calls counts two (torch 2.13.0, CPU).

Documented, not a defect of the compile stack: checkpoint's docstring says "the unsaved tensors are recomputed by
re-invoking :attr:`function` in the backward pass", so every buffer update and attribute change of the region's
forward happens again (non-reentrant stops once it has recomputed what it needs, early_stop=True).  Upstream asks
eager checkpoint to stop updating BatchNorm statistics twice: pytorch/pytorch#96136 (open).  The suites carry it as the
``state:eager_ac`` verdict of the module_state cells (harness/core/oracles.py assert_state).

Run: python findings/eager_checkpoint_repeats_forward_state.py   Exits 1 while eager AC changes the state.
"""

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def batches_tracked(ac: bool) -> int:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    x = torch.randn(4, 8, requires_grad=True)
    out = checkpoint(block, x, use_reentrant=False) if ac else block(x)
    out.sum().backward()
    return int(block[1].num_batches_tracked)


with_ac, without = batches_tracked(True), batches_tracked(False)
print(f"num_batches_tracked after one step: {without} without AC, {with_ac} with eager checkpointing")
raise SystemExit(0 if with_ac == without else 1)

"""A non-reentrant checkpoint of a torch.compile'd module does not replay the module's Python side effects in its
recompute, where the same checkpoint of the eager module does (torch 2.13.0, CPU).

The block counts its calls (``self.calls += 1`` before any tensor op).  Eager checkpointing re-invokes it in backward:
calls == 2.  Compiled, Dynamo moves the attribute mutation after the graph (side effects are replayed when the frame
returns), and non-reentrant checkpoint stops the recompute as soon as the last tensor it needs is recomputed
(early_stop=True, the default: ``_StopRecomputationError``), i.e. inside the graph, before the replay: calls == 1.
With early_stop=False both give 2; reentrant checkpoint (no early stop) gives 2.  Related: pytorch/pytorch#124866
(side effects in HOPs).

Run: python findings/checkpoint_of_compiled_skips_side_effects.py   Exits 1 while eager and compiled disagree.
"""

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.sin(self.lin(x))


def calls(compiled: bool) -> int:
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = Counting()
    block = torch.compile(m, backend="aot_eager") if compiled else m
    checkpoint(block, torch.randn(4, 8, requires_grad=True), use_reentrant=False).sum().backward()
    return m.calls


eager, compiled = calls(False), calls(True)
print(f"calls after forward+backward: checkpoint(module) {eager}, checkpoint(torch.compile(module)) {compiled}")
raise SystemExit(0 if eager == compiled else 1)

"""Compiled and eager checkpointing leave BatchNorm's running statistics in different states (torch 2.13.0, CPU).

A BatchNorm1d in training mode inside a non-reentrant checkpoint: eager checkpointing re-invokes the region's forward
in backward, so the running statistics are updated twice (num_batches_tracked 2; pytorch/pytorch#96136, open since
2023, asks eager to stop doing that).  The same program under torch.compile (aot_eager, fullgraph) updates them once,
as the program without AC does: the checkpoint HOP's buffer mutation is functionalized into the forward and the
backward's recompute does not mutate again.  The two AC pipelines disagree about the state after the step.

Run: python findings/compiled_checkpoint_updates_batchnorm_once.py   Exits 1 while eager and compiled AC disagree.
"""

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def batches_tracked(compiled: bool) -> int:
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    fn = lambda x: checkpoint(block, x, use_reentrant=False)  # noqa: E731
    if compiled:
        fn = torch.compile(fn, backend="aot_eager", fullgraph=True)
    fn(torch.randn(4, 8, requires_grad=True)).sum().backward()
    return int(block[1].num_batches_tracked)


eager, compiled = batches_tracked(False), batches_tracked(True)
print(f"num_batches_tracked after one step: eager checkpoint {eager}, compiled checkpoint {compiled} (without AC: 1)")
raise SystemExit(0 if eager == compiled else 1)

"""torch.compile(backend="eager") ignores activation checkpointing (torch < 2.12): pytorch/pytorch#160773.

Dynamo turns ``torch.utils.checkpoint.checkpoint`` into the ``tag_activation_checkpoint`` higher-order op and relies on
AOTAutograd to checkpoint it; the Dynamo-only ``eager`` backend runs the op's body plainly, so nothing is recomputed in
the backward and every activation is kept: the program trains as if it had no checkpoint.  Fixed for 2.12 by
pytorch/pytorch#160883 (fall back to eager AC when backend=eager).  Counted here with a dispatch mode around the
backward: a checkpointed region must re-run its forward ops (torch/utils/checkpoint.py: "the unsaved tensors are
recomputed by re-invoking function in the backward pass").
Run: python findings/eager_backend_ignores_ac.py
Exits 1 while the compiled backward runs no more ops with the checkpoint than without it, 0 once it recomputes.
"""
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def body(x):
    return torch.sin(torch.cos(x)).exp()


def backward_ops(ac: bool) -> int:
    fn = torch.compile((lambda x: checkpoint(body, x, use_reentrant=False)) if ac else body, backend="eager")
    x = torch.randn(16, requires_grad=True)
    out = fn(x).sum()
    with Count() as c:
        out.backward()
    return c.n


def main() -> int:
    torch._dynamo.reset()
    with_ac, without = backward_ops(True), backward_ops(False)
    print(f"backward ops under backend='eager': {with_ac} with checkpoint, {without} without")
    if with_ac <= without:
        print("BUG: the checkpointed region was not recomputed: backend='eager' ignored the checkpoint (#160773)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""torch.export.export(strict=True) of a module with a plain (no context_fn) checkpoint fails (torch 2.13.0, CPU).

Dynamo captures the checkpoint as tag_activation_checkpoint; export's AOT tracing then runs the HOP's
implementation, which reads the body's ``meta["_checkpoint_context_fn"]`` that only a selective checkpoint (context_fn)
sets: "RuntimeError: _checkpoint_context_fn ... While executing %tag_activation_checkpoint".  The same module with a
SAC context_fn exports and differentiates like eager, and non-strict export traces the plain checkpoint through.
Related: pytorch/pytorch#161479 (AC HOP in pre-dispatch export).  Issue 27 item 5; no suite cell carries it yet.

Run: python findings/export_strict_plain_checkpoint_fails.py   Exits 1 while strict export fails.
"""

import torch
from torch.utils.checkpoint import checkpoint


def body(a, w):
    return torch.sigmoid(torch.sin(a) @ w)


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return checkpoint(body, x, self.w, use_reentrant=False).cos()


try:
    torch.export.export(M(), (torch.randn(4, 4, requires_grad=True),), strict=True)
except RuntimeError as e:
    print(f"strict export failed: {str(e).splitlines()[0][:160]}")
    raise SystemExit(1) from None
print("strict export succeeded")

"""torch.export.export(strict=False) of a module with a reentrant checkpoint exports a program that does not
differentiate (torch 2.13.0, CPU).

Non-strict export traces reentrant checkpoint through CheckpointFunction.forward, which runs the body under no_grad;
the exported module's output has no grad_fn, so ``backward`` raises "element 0 of tensors does not require grad and
does not have a grad_fn", where eager (with or without the checkpoint) differentiates.  The non-reentrant and SAC
checkpoints export and differentiate like eager.  Upstream: pytorch/pytorch#185140 ("Preserve reentrant checkpoint in
non-strict export", closed upstream; 2.13.0 still reproduces).  Issue 27 item 5: cells
exported_*_reentrant-non_strict_export.

Run: python findings/export_non_strict_reentrant_checkpoint_not_differentiable.py   Exits 1 while it reproduces.
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
        return checkpoint(body, x, self.w, use_reentrant=True).cos()


x = torch.randn(4, 4, requires_grad=True)
ep = torch.export.export(M(), (x,), strict=False)
out = ep.module()(x.detach().requires_grad_())
print(f"exported output requires grad: {out.requires_grad} (eager: True)")
raise SystemExit(0 if out.requires_grad else 1)

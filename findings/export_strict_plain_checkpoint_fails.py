"""torch.export.export(strict=True) of a module with a plain (no context_fn) checkpoint fails, non-reentrant and
reentrant alike (torch 2.13.0, CPU).

Dynamo captures either checkpoint as tag_activation_checkpoint; export's pre-dispatch tracing then runs the HOP's
ProxyTorchDispatchMode rule (torch/_higher_order_ops/wrap.py ``proxy_mode_key``), which copies the body's
``meta["_checkpoint_context_fn"]`` that only a selective checkpoint (context_fn) sets: "RuntimeError:
_checkpoint_context_fn ... While executing %tag_activation_checkpoint".  The same module with a SAC context_fn exports
and differentiates like eager, and non-strict export traces the plain checkpoint through.  Related:
pytorch/pytorch#161479 (AC HOP in pre-dispatch export, which added that rule).  Issue 27 item 5: cells
exported_*_{non_reentrant,reentrant}-strict_export.

Run: python findings/export_strict_plain_checkpoint_fails.py   Exits 1 while strict export fails.
"""

import torch
from torch.utils.checkpoint import checkpoint


def body(a, w):
    return torch.sigmoid(torch.sin(a) @ w)


class M(torch.nn.Module):
    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.w = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return checkpoint(body, x, self.w, use_reentrant=self.use_reentrant).cos()


failed = []
for use_reentrant in (False, True):
    try:
        torch.export.export(M(use_reentrant), (torch.randn(4, 4, requires_grad=True),), strict=True)
    except RuntimeError as e:
        print(f"use_reentrant={use_reentrant}: strict export failed: {str(e).splitlines()[0][:160]}")
        failed.append(use_reentrant)
    else:
        print(f"use_reentrant={use_reentrant}: strict export succeeded")
raise SystemExit(1 if failed else 0)

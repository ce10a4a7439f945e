"""torch.export.export(strict=True) of a module with a selective checkpoint (context_fn) around dropout exports a program
whose module, run eagerly, gives wrong gradients (torch 2.13.0, CPU).

Strict export keeps the checkpoint as a ``tag_activation_checkpoint`` HOP (the SAC context_fn on the body's meta);
``ep.module()`` runs the HOP's eager implementation, which calls torch.utils.checkpoint with
``preserve_rng_state=False`` (torch/_higher_order_ops/wrap.py tag_activation_checkpoint_impl: RNG is left to
inductor's functionalization, which an eager run of the exported module never does).  The recompute in backward draws
another dropout mask, so the gradients are taken through another mask than the forward's.  Eager checkpointing (which
preserves the RNG state by default) and the same module exported without the checkpoint, or exported non-strict, give
the gradients of the program without AC.  The root cause is the one of findings/eager_backend_checkpoint_dropout_rng.py
(backend="eager"); upstream pytorch/pytorch#161479 ("[export] Support AC HOP in pre-dispatch", closed) says "the
exported module also can't be ran in eager because the AC HOP relies on partitioner to embed RNG state
saving/restoring"; no issue found about the wrong gradients.  Issue 27 item 5: cell exported_dropout_sac-strict_export.

Run: python findings/export_strict_sac_dropout_wrong_gradient.py   Exits 1 while the gradients differ.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


def policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


def context_fn():
    return create_selective_checkpoint_contexts(policy)


def body(a, w):
    return F.dropout(torch.sin(a) @ w, p=0.5, training=True).sigmoid()


class M(torch.nn.Module):
    def __init__(self, ac: bool):
        super().__init__()
        self.ac = ac
        self.w = torch.nn.Parameter(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        if not self.ac:
            return body(x, self.w).cos()
        return checkpoint(body, x, self.w, use_reentrant=False, context_fn=context_fn).cos()


def grad(module):
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
    torch.manual_seed(2)
    module(x).sum().backward()
    return x.grad


x = torch.randn(8, 8, requires_grad=True)
plain, eager_ac = grad(M(ac=False)), grad(M(ac=True))
exported = grad(torch.export.export(M(ac=True), (x,), strict=True).module())
print(f"eager with AC == without AC: {torch.allclose(eager_ac, plain)}; strict-exported module == without AC: "
      f"{torch.allclose(exported, plain)} (max abs error {(exported - plain).abs().max().item():.3g})")
raise SystemExit(0 if torch.allclose(exported, plain) else 1)

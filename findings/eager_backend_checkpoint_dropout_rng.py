"""torch.compile(backend="eager") of a checkpointed region with dropout gives wrong gradients (torch 2.13.0, CPU).

With the Dynamo-only backend nothing functionalizes the RNG: the tag_activation_checkpoint HOP runs
torch.utils.checkpoint itself with ``preserve_rng_state=False`` (torch/_higher_order_ops/wrap.py
tag_activation_checkpoint_impl: "we will always preserve RNG state regardless of this flag (by doing RNG
functionalization via replace_random_passes in Inductor ...)", which an eager backend never runs), so the recompute
draws a new dropout mask and the gradient is taken through another mask than the forward's.  Eager checkpointing
(preserve_rng_state=True by default) and aot_eager give the gradient of the program without AC.

Run: python findings/eager_backend_checkpoint_dropout_rng.py   Exits 1 while the gradients differ.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def body(x):
    return F.dropout(torch.sin(x), p=0.5, training=True).cos()


def grad(fn):
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    torch.manual_seed(1)
    fn(x).sum().backward()
    return x.grad


plain = grad(body)
eager_ac = grad(lambda x: checkpoint(body, x, use_reentrant=False))
dynamo_only = grad(torch.compile(lambda x: checkpoint(body, x, use_reentrant=False), backend="eager", fullgraph=True))
print(f"eager checkpoint matches no AC: {torch.allclose(plain, eager_ac)}; "
      f"backend=eager matches no AC: {torch.allclose(plain, dynamo_only)}")
raise SystemExit(0 if torch.allclose(plain, dynamo_only) else 1)

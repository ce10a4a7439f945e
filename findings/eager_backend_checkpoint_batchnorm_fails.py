"""torch.compile(backend="eager") of a checkpointed BatchNorm (training mode) fails in backward (torch 2.13.0, CPU).

With the Dynamo-only backend the tag_activation_checkpoint HOP runs torch.utils.checkpoint itself
(torch/_higher_order_ops/wrap.py tag_activation_checkpoint_impl), with an fx Interpreter over the captured body.  The
recompute updates num_batches_tracked in place a second time, and backward fails: "one of the variables needed for
gradient computation has been modified by an inplace operation: [torch.LongTensor []] is at version 2".  Eager
checkpointing of the same program and aot_eager both run.

Run: python findings/eager_backend_checkpoint_batchnorm_fails.py   Exits 1 while backward fails.
"""

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

torch.manual_seed(0)
block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
fn = torch.compile(lambda x: checkpoint(block, x, use_reentrant=False), backend="eager", fullgraph=True)
try:
    fn(torch.randn(4, 8, requires_grad=True)).sum().backward()
except RuntimeError as e:
    print(f"backend=eager: backward failed: {str(e)[:160]}")
    raise SystemExit(1) from None
print("backend=eager: backward ran")

"""Compiled autograd (fullgraph) cannot take the backward of an eager checkpoint around compiled code (torch 2.13.0).

checkpoint(torch.compile(f), use_reentrant=False): the backward holds checkpoint's saved-tensor unpack hook, which
compiled autograd calls through Dynamo (``call_hook``); torch/utils is in Dynamo's skip list, so a fullgraph compile
of the backward fails: "Attempted to call function marked as skipped ... _checkpoint_hook.__init__.<locals>.unpack_hook"
(Dynamo: "Hint: Please file an issue to PyTorch").  compile(checkpoint(f)) under compiled autograd runs (the
checkpoint is a HOP, no hook reaches the backward).

Run: python findings/compiled_autograd_eager_checkpoint_unsupported.py   Exits 1 while the backward fails.
"""

import functools

import torch
from torch.utils.checkpoint import checkpoint

body = torch.compile(lambda x: torch.sigmoid(x @ x), backend="aot_eager", fullgraph=True)
x = torch.randn(4, 4, requires_grad=True)
compiler = functools.partial(torch.compile, backend="aot_eager", fullgraph=True)
try:
    with torch._dynamo.compiled_autograd._enable(compiler):
        checkpoint(body, torch.sin(x), use_reentrant=False).sum().backward()
except Exception as e:  # noqa: BLE001 - torch._dynamo.exc.Unsupported
    print(f"compiled autograd: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    raise SystemExit(1) from None
print("compiled autograd took the backward")

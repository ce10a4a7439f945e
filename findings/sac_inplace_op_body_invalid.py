"""CATALOGUE item 29 (test_compile_selective_checkpoint_inplace_op, always skipped upstream).

Its body, sigmoid(selu_(mm(mm(x, y), y))).relu_(), cannot be differentiated even in plain eager: relu_ overwrites
sigmoid's output, which sigmoid's backward saved.  So the test cannot pass as written, whatever SAC + torch.compile
support for in-place ops becomes.  A second observation: selu_ on an mm output that the policy caches (MUST_SAVE)
is rejected by eager SAC ("Tensor cached during selective activation checkpoint has been mutated") but accepted
by torch.compile (functionalization removes the mutation).  Run: python findings/sac_inplace_op_body_invalid.py
Exits 1 while upstream's body is invalid even without checkpointing (eager without AC raises), 0 otherwise.
"""
import sys

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten


def policy(ctx, func, *args, **kwargs):
    saved = (aten.mm.default, aten.sigmoid.default)
    return CheckpointPolicy.MUST_SAVE if func in saved else CheckpointPolicy.PREFER_RECOMPUTE


def context_fn():
    return create_selective_checkpoint_contexts(policy)


def upstream_body(x, y):
    return torch.sigmoid(torch.selu_(torch.matmul(torch.matmul(x, y), y))).relu_()


def mutates_cached_mm(x, y):
    return torch.sigmoid(torch.selu_(torch.matmul(torch.matmul(x, y), y))).relu()


def attempt(label, f) -> bool:
    x, y = torch.randn(4, 4, requires_grad=True), torch.randn(4, 4, requires_grad=True)
    try:
        f(x, y).sum().backward()
        print(f"{label}: ok")
        return True
    except Exception as e:
        print(f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return False



for body in (upstream_body, mutates_cached_mm):
    def sac(x, y, body=body):
        return checkpoint(body, x, y, use_reentrant=False, context_fn=context_fn)

    torch._dynamo.reset()
    plain_ok = attempt(f"{body.__name__}, eager without AC", body)
    if body is upstream_body and plain_ok:
        print("upstream's body differentiates without AC now: the item-29 entry no longer holds")
        sys.exit(0)
    attempt(f"{body.__name__}, eager SAC", sac)
    attempt(f"{body.__name__}, compiled SAC", torch.compile(sac, backend="aot_eager", fullgraph=True))
sys.exit(1)  # upstream's body raised without AC: the test cannot pass as written

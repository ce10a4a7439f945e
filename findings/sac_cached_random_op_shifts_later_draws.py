"""Eager selective checkpointing: a random op the policy caches (MUST_SAVE) shifts the draws of every later random op
of the region when it is recomputed, so the backward uses other dropout masks than the forward: silently wrong
gradients, without torch.compile.

Found on torch 2.13.0 (CPU) by the fuzzer (harness/tools/fuzz, seed 11; findings/fuzz/7144c61e6a.py, signature
"numerics-random:aot_eager:eager with AC vs eager without AC"), reduced by hand to two ops.

checkpoint's docstring promises that "checkpointing includes logic to juggle the RNG state such that checkpointed
passes making use of RNG (through dropout for example) have deterministic output as compared to non-checkpointed
passes".  With a SAC policy that caches bernoulli, the recompute restores the RNG state at the region's start, then
takes bernoulli's output from the cache without drawing, so the dropout after it draws from where bernoulli started:
another mask.  Outputs match (the forward ran normally); the gradient of x does not.  With a policy that caches no
random op the gradients are equal.

Upstream: searched pytorch/pytorch issues and PRs (selective checkpoint + random op + cached/MUST_SAVE + RNG state +
recompute); nothing found for the eager case.  The compiled-side relatives are pytorch/pytorch#190717 (budget 0
recomputes dropout without its RNG state) and #190759.  Checked on 2.13.0 only.

Run: python findings/sac_cached_random_op_shifts_later_draws.py  -> exit 1 while the gradients differ, 0 once fixed.
"""
import functools
import sys

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


def policy(ctx, op, *args, **kwargs):
    cached = op == torch.ops.aten.bernoulli.default
    return CheckpointPolicy.MUST_SAVE if cached else CheckpointPolicy.PREFER_RECOMPUTE


def region(x):
    mask = torch.bernoulli(torch.full_like(x, 0.5))
    return torch.nn.functional.dropout(x * mask, 0.5, training=True)


def main() -> int:
    print(f"torch {torch.__version__}")
    x = torch.randn(64, requires_grad=True)
    torch.manual_seed(0)
    plain = region(x)
    (g_plain,) = torch.autograd.grad(plain.sum(), x)
    torch.manual_seed(0)
    ckpt = checkpoint(region, x, use_reentrant=False,
                      context_fn=functools.partial(create_selective_checkpoint_contexts, policy))
    (g_ckpt,) = torch.autograd.grad(ckpt.sum(), x)
    outputs_equal, grads_equal = torch.equal(plain, ckpt), torch.equal(g_plain, g_ckpt)
    print(f"outputs equal: {outputs_equal}; gradients equal: {grads_equal} "
          f"({int((g_plain != g_ckpt).sum())} of {g_plain.numel()} elements differ)")
    if outputs_equal and not grads_equal:
        print("REPRODUCES: the recompute under SAC drew other dropout masks than the forward")
        return 1
    print("OK: checkpointed gradients equal the plain ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())

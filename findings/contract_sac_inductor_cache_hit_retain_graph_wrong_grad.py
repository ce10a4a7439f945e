"""Inductor + selective activation checkpointing + a compile-cache hit: backward(retain_graph=True) twice returns a
silently wrong gradient.

Found on torch 2.13.0 (CPU) by the checkpoint contract (clause sac.backward_twice, docs/contract.md).

A SAC region (policy: save the custom op's output) is compiled with inductor and backpropagated once (this fills
the FX-graph / AOTAutograd caches).  After torch._dynamo.reset() the same program compiles again from the caches
(as a second training process would).  Its compiled backward donates a saved buffer, yet backward(retain_graph=True)
is accepted and the second backward returns a wrong gradient.  Controls, same script: the same program without
SAC raises "This backward function was compiled with non-empty donated buffers which requires ...
retain_graph=False" on the cache hit (a clear error), and a fresh compile (cold cache) accumulates correctly.
Eager SAC raises "Trying to backward an extra time"; aot_eager accumulates correctly.

Upstream: no matching issue found; related: https://github.com/pytorch/pytorch/issues/141790 (donated buffers vs
retain_graph when the backward is compiled ahead of time), https://github.com/pytorch/pytorch/pull/194658 (open,
AOTAutogradCache stale artifacts for checkpoint bodies).  Not filed.

Run: python findings/contract_sac_inductor_cache_hit_retain_graph_wrong_grad.py  -> exit 1 while the second
backward silently returns a wrong gradient, 0 once it is correct or refused with an error.
"""
import functools
import os
import sys
import tempfile

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sac_donated_")  # a cold cache for this run

import torch  # noqa: E402
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts  # noqa: E402


@torch.library.custom_op("repro_donated::csin", mutates_args=())
def csin(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


@csin.register_fake
def _(x):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


csin.register_autograd(lambda ctx, g: g * torch.cos(ctx.saved_tensors[0]), setup_context=_setup)
CONTEXT = functools.partial(create_selective_checkpoint_contexts, [torch.ops.repro_donated.csin.default])


def sac(x):
    return checkpoint(lambda t: csin(csin(t)), x, use_reentrant=False, context_fn=CONTEXT)


def twice(fn, warm: bool) -> str:
    torch._dynamo.reset()
    x = torch.randn(4, requires_grad=True)
    want = 2 * torch.cos(torch.sin(x.detach())) * torch.cos(x.detach())
    if warm:
        torch.compile(fn, backend="inductor", fullgraph=True)(x).sum().backward()
        x.grad = None
        torch._dynamo.reset()
    out = torch.compile(fn, backend="inductor", fullgraph=True)(x)
    try:
        out.sum().backward(retain_graph=True)
        out.sum().backward()
    except RuntimeError as e:
        return f"refused: {str(e).splitlines()[0][:90]}"
    err = (x.grad - want).abs().max().item()
    return "correct" if err < 1e-5 else f"WRONG gradient (max abs error {err:.3g})"


def main() -> int:
    print(f"torch {torch.__version__}")
    plain = lambda x: csin(csin(x))  # noqa: E731
    # order matters: each scenario's compiles land in the same cache directory
    results = {
        "SAC, cache hit": twice(sac, warm=True),
        "no SAC, cache hit": twice(plain, warm=True),
    }
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sac_donated_fresh_")
    results["SAC, fresh compile (cold cache)"] = twice(sac, warm=False)
    for k, v in results.items():
        print(f"{k}: {v}")
    if results["SAC, cache hit"].startswith("WRONG"):
        print("DEFECT REPRODUCES: the cache-hit SAC backward accepts retain_graph and returns a wrong gradient")
        return 1
    print("fixed: the second backward is correct or refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())

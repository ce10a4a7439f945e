"""Inductor's FX-graph cache serves a backward compiled with donated buffers to a backward compiled without them:
backward(retain_graph=True) twice returns a silently wrong gradient.  No checkpointing involved.

AOTAutograd marks the backward's saved activations as donated buffers (inductor may reuse their memory) and clears
that list when the backward is compiled lazily under retain_graph=True (runtime_wrappers.py: ``if not
saved_tensors_use_once: fw_metadata.bw_donated_idxs = []``).  Inductor reads the list in its lowering
(graph.py ``bw_donated_idxs`` -> ``DonatedBuffer``), but the FX-graph cache key (codecache.py) does not contain it.
So once a backward has been compiled with donated buffers (a plain backward()), a later compile of the same program
whose backward runs under retain_graph=True -- a new process, or after torch._dynamo.reset(), with the AOTAutograd
cache off or bypassed -- hits that cache entry: its kernel overwrites a saved activation, and the second backward
reads the clobbered value.

The program: a custom op (sin, opaque to the partitioner, so its output is a saved activation and not recomputed)
applied twice.  Controls, same script: a cold cache, and torch._functorch.config.donated_buffer=False, both give the
right gradient.  Found by the checkpoint contract (clause sac.backward_twice, inductor): with SAC the AOTAutograd
cache bypasses, which exposes this; without SAC an AOTAutograd cache hit restores the backward compiled with donated
buffers, which refuses retain_graph with a clear error.

Upstream: none found (searched pytorch/pytorch issues and PRs for donated buffers + FX graph cache key + retain_graph);
the concern was raised in review of https://github.com/pytorch/pytorch/pull/130580 (the runtime reset of
bw_donated_idxs may not reach the caches); related https://github.com/pytorch/pytorch/issues/141790.  Not filed.

Run: python findings/inductor_fx_cache_ignores_donated_buffers.py  -> exit 1 while the warm-cache second backward
returns a wrong gradient, 0 once it is right or refused with an error.
"""
import os
import sys
import tempfile

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="donated_")  # a cold FX-graph cache for this run

import torch  # noqa: E402
import torch._functorch.config  # noqa: E402


@torch.library.custom_op("repro_donated::csin", mutates_args=())
def csin(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


@csin.register_fake
def _(x):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


csin.register_autograd(lambda ctx, g: g * torch.cos(ctx.saved_tensors[0]), setup_context=_setup)


def f(x):
    return csin(csin(x))


def backward_twice(warm: bool, **config) -> str:
    x = torch.randn(4, requires_grad=True)
    want = 2 * torch.cos(torch.sin(x.detach())) * torch.cos(x.detach())
    with torch._functorch.config.patch(enable_autograd_cache=False, **config):
        if warm:  # a first compile whose backward runs without retain_graph: compiled with donated buffers, cached
            torch._dynamo.reset()
            torch.compile(f, backend="inductor", fullgraph=True)(x).sum().backward()
            x.grad = None
        torch._dynamo.reset()
        out = torch.compile(f, backend="inductor", fullgraph=True)(x)
        try:
            out.sum().backward(retain_graph=True)
            out.sum().backward()
        except RuntimeError as e:
            return f"refused: {str(e).splitlines()[0][:90]}"
    err = (x.grad - want).abs().max().item()
    return "correct" if err < 1e-5 else f"WRONG gradient (max abs error {err:.3g})"


def main() -> int:
    print(f"torch {torch.__version__}")
    results = {"warm FX-graph cache": backward_twice(warm=True)}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="donated_cold_")
    results["cold cache"] = backward_twice(warm=False)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="donated_off_")
    results["warm cache, donated_buffer=False"] = backward_twice(warm=True, donated_buffer=False)
    for k, v in results.items():
        print(f"{k}: {v}")
    if results["warm FX-graph cache"].startswith("WRONG"):
        print("DEFECT REPRODUCES: the cached backward, compiled with donated buffers, serves a retain_graph backward")
        return 1
    print("fixed: the second backward is right or refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())

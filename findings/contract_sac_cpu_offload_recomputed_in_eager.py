"""Eager selective activation checkpointing recomputes ops whose policy is {MUST,PREFER}_CPU_OFFLOAD.

Found on torch 2.13.0 (CPU) by the checkpoint contract (clause sac.policy.cpu_offload, docs/contract.md).

CheckpointPolicy's docstring: "``{MUST,PREFER}_CPU_OFFLOAD``: The operation's output will be saved during the
forward pass, offloaded to CPU, and reloaded to GPU during the backward pass".  Eager SAC
(_CachingTorchDispatchMode) caches only MUST_SAVE / PREFER_SAVE outputs and stores every other decision as
"recompute", so an offload-tagged op is re-executed in backward.  torch.compile follows the docstring (the op is
saved, not recomputed), so eager and compile disagree.  Upstream: eager CPU offload for SAC is the subject of
https://github.com/pytorch/pytorch/pull/185015 (open) and https://github.com/pytorch/pytorch/pull/180874 (closed);
no issue for the eager behaviour was found.

Run: python findings/contract_sac_cpu_offload_recomputed_in_eager.py  -> exit 1 while eager recomputes the op,
0 once it is saved as documented.
"""
import functools
import sys

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

CALLS = {"n": 0}


@torch.library.custom_op("repro_offload::counted_sin", mutates_args=())
def counted_sin(x: torch.Tensor) -> torch.Tensor:
    CALLS["n"] += 1
    return torch.sin(x)


@counted_sin.register_fake
def _(x):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


counted_sin.register_autograd(lambda ctx, g: g * torch.cos(ctx.saved_tensors[0]), setup_context=_setup)
OP = torch.ops.repro_offload.counted_sin.default


def main() -> int:
    print(f"torch {torch.__version__}")
    bad = []
    for decision in (CheckpointPolicy.MUST_CPU_OFFLOAD, CheckpointPolicy.PREFER_CPU_OFFLOAD):
        def policy(ctx, func, *args, decision=decision, **kwargs):
            return decision if func is OP else CheckpointPolicy.PREFER_RECOMPUTE

        x = torch.randn(4, requires_grad=True)
        out = checkpoint(lambda t: counted_sin(counted_sin(t)), x, use_reentrant=False,
                         context_fn=functools.partial(create_selective_checkpoint_contexts, policy))
        CALLS["n"] = 0
        out.sum().backward()
        print(f"{decision.name}: op executed {CALLS['n']} time(s) during backward (documented: 0, saved/offloaded)")
        if CALLS["n"]:
            bad.append(decision.name)
    if bad:
        print(f"DEFECT REPRODUCES: eager recomputes {', '.join(bad)} ops instead of saving them")
        return 1
    print("fixed: offload-tagged ops are saved, not recomputed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

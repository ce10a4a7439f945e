"""torch.compile ignores use_reentrant=True: the compiled checkpoint behaves like the non-reentrant one.

Found on torch 2.13.0 (CPU) by the checkpoint contract (clauses ckpt.requires_grad_inputs, ckpt.kwargs,
ckpt.grad_api, ckpt.reentrant.rejects_context_fn_debug; docs/contract.md), with the aot_eager backend under both
partitioners and with inductor.

Dynamo traces checkpoint(..., use_reentrant=True) into the same tag_activation_checkpoint higher-order op as
use_reentrant=False.  Eager is the reference, and the reentrant variant's documented behaviour disappears under
compile:

1. "At least one input and output must have requires_grad=True for the reentrant variant. If this condition is
   unmet, the checkpointed part of the model will not have gradients."  Compiled: the output requires grad and
   the Linear's parameters get gradients.
2. kwargs: eager raises "Unexpected keyword arguments: scale"; compiled accepts them.
3. torch.autograd.grad: eager raises "...torch.utils.checkpoint is incompatible with .grad()..."; compiled works.
4. context_fn: eager raises "Passing `context_fn` or `debug` is only supported when use_reentrant=False.";
   compiled accepts it.

Upstream: no matching issue found (searched for torch.compile + use_reentrant=True semantics, inputs without
requires_grad, kwargs); not filed.

Run: python findings/contract_compile_ignores_use_reentrant.py  -> exit 1 while any symptom reproduces, 0 once
compile matches eager (or rejects the call with a clear error).
"""
import functools
import sys
import warnings

import torch
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts


def compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


def outcome(thunk):
    try:
        return "ok", thunk()
    except Exception as e:  # noqa: BLE001
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"


def main() -> int:
    print(f"torch {torch.__version__}")
    warnings.simplefilter("ignore")
    differ = []
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)  # does not require grad

    def no_grad_inputs(run):
        lin.weight.grad = None
        out = run(lambda x: checkpoint(lin, x, use_reentrant=True))(x)
        if out.requires_grad:
            out.sum().backward()
        return out.requires_grad, lin.weight.grad is not None

    def kwargs(run):
        return outcome(lambda: run(lambda x: checkpoint(lambda t, *, scale: t * scale, x, use_reentrant=True,
                                                        scale=2.0))(torch.randn(3, requires_grad=True)))[0]

    def grad_api(run):
        xr = torch.randn(3, requires_grad=True)
        out = run(lambda x: checkpoint(lambda t: t.sin().exp(), x, use_reentrant=True))(xr)
        return outcome(lambda: torch.autograd.grad(out.sum(), xr))[0]

    def context_fn(run):
        ctx = functools.partial(create_selective_checkpoint_contexts, [torch.ops.aten.sin.default])
        return outcome(lambda: run(lambda x: checkpoint(torch.sin, x, use_reentrant=True, context_fn=ctx))(
            torch.randn(3, requires_grad=True)))[0]

    for name, probe in (("inputs without requires_grad: (output requires grad, params get grads)", no_grad_inputs),
                        ("kwargs", kwargs), ("torch.autograd.grad", grad_api), ("context_fn", context_fn)):
        e, c = probe(lambda f: f), probe(compiled)
        print(f"{name}: eager {e}, compiled {c}")
        if e != c:
            differ.append(name)
    if differ:
        print(f"DEFECT REPRODUCES: compiled use_reentrant=True differs from eager in: {'; '.join(differ)}")
        return 1
    print("fixed: compiled use_reentrant=True matches eager")
    return 0


if __name__ == "__main__":
    sys.exit(main())

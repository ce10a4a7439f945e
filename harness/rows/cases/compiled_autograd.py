"""Area "compiled_autograd": checkpointing under inductor with compiled autograd (CATALOGUE.md item 15).

A tensor inside a checkpointed region that gets a backward hook must be saved, not recomputed: the hook has to see the
very tensor the forward produced.  The model runs as two variants (without and with a forward hook that registers an
identity backward hook on the checkpointed submodule's output), each compiled with inductor while compiled autograd
compiles the backward (``CompileSpec.compiled_autograd``).  The recorded forward graph's outputs that are not primals
are the saved tensors, and the hook must add exactly the ``mul`` (z = y * y) to them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.core.case import AxesSpec, Backend, BuildContext, Case, CompileSpec, Expect, Partitioner, Program
from harness.core.checks import expect_equal


class _Submod(nn.Module):
    def forward(self, x):
        y = torch.matmul(x, x)
        return y * y


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.submod = _Submod()
        self.norm = nn.LayerNorm(4)


def build(ctx: BuildContext) -> Program:
    """The model, variant "with_hook": with a forward hook that registers an identity backward hook on the
    checkpointed submodule's output; the run's state is how often that hook was called."""
    model = ctx.module(_Model())
    calls = []
    if ctx.variant == "with_hook":
        def backward_hook_fn(grad):
            calls.append(1)
            return grad

        def post_forward_hook(submod, args, output):
            output.register_hook(backward_hook_fn)
            return output

        model.submod.register_forward_hook(post_forward_hook)

    def fn(x):
        return model.norm(ctx.checkpoint(model.submod, x, use_reentrant=False))

    return Program(fn, (ctx.randn(4, 4),), module=model, state=lambda: len(calls))


def saved_outputs(run) -> set[str]:
    """The forward graph's returned values that are not primals: the tensors it saves for the backward."""
    out = run.graphs["fw"][0].graph.output_node()
    return {str(v) for v in out.args[0] if not str(v).startswith("primals_")}


def _hook_forces_save(run) -> None:
    no_hook, with_hook = saved_outputs(run.parts["no_hook"]), saved_outputs(run.parts["with_hook"])
    if not no_hook or not with_hook:
        raise AssertionError(f"{run.cell.id}: the forward graphs save nothing "
                             f"(without hook: {sorted(no_hook)}, with hook: {sorted(with_hook)})")
    hooked = run.parts["with_hook"]
    expect_equal(f"{run.cell.id}: backward hook calls (eager, compiled autograd)",
                 {"eager": hooked.eager.state, "compiled": hooked.compiled.state}, {"eager": 1, "compiled": 1})
    expect_equal(f"{run.cell.id}: saved tensors added by the backward hook (non-primal forward outputs with hook "
                 f"{sorted(with_hook)} minus without {sorted(no_hook)})", with_hook - no_hook, {"mul"})


CASES = [
    Case("must_save_tensor_that_has_backward_hook", build, catalogue=(15,), variants=("no_hook", "with_hook"),
         axes=AxesSpec(backends=Backend.INDUCTOR, partitioners=Partitioner.MIN_CUT),
         expect=Expect(check=_hook_forces_save), goldens=("fw_no_hook", "fw_with_hook"),
         compile=CompileSpec(compiled_autograd=True,
                             config={"functorch": {"recompute_views": True}, "inductor": {"fx_graph_cache": False}})),
]

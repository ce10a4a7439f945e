"""Area "compiled_autograd": checkpointing under inductor with compiled autograd (CATALOGUE.md item 15).

A tensor inside a checkpointed region that gets a backward hook must be saved, not recomputed: the hook has to see the
very tensor the forward produced.  The model runs twice (without and with a forward hook that registers an identity
backward hook on the checkpointed submodule's output), each time compiled with inductor while compiled autograd compiles
the backward.  An inductor post-grad pass collects the forward graph's outputs; the outputs that are not primals are the
saved tensors, and the hook must add exactly the ``mul`` (z = y * y) to them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from harness.core.case import AxesSpec, Backend, BuildContext, Case, CompileSpec, Expect, Partitioner, Program
from harness.core.checks import expect_equal
from harness.core.normalize import graph_text
from harness.core.pipeline import BUILD_SEED, RUN_SEED, CustomRun, cotangent_loss, flat_tensors, fresh_state


class _Submod(nn.Module):
    def forward(self, x):
        y = torch.matmul(x, x)
        return y * y


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.submod = _Submod()
        self.norm = nn.LayerNorm(4)


def build(ctx: BuildContext, backward_hook: bool = False, hook_calls: list | None = None) -> Program:
    model = ctx.module(_Model())
    if backward_hook:
        def backward_hook_fn(grad):
            hook_calls.append(1)
            return grad

        def post_forward_hook(submod, args, output):
            output.register_hook(backward_hook_fn)
            return output

        model.submod.register_forward_hook(post_forward_hook)

    def fn(x):
        return model.norm(ctx.checkpoint(model.submod, x, use_reentrant=False))

    return Program(fn, (ctx.randn(4, 4),), module=model)


def _collect_forward_outputs(graph: torch.fx.Graph, *, outputs: set, texts: list) -> None:
    """Inductor post-grad pre-pass: the forward graph's returned values (skipped for compiled autograd's graph)."""
    if torch._dynamo.compiled_autograd.in_compiled_autograd_region:
        return
    output = list(graph.nodes)[-1]
    if output.op != "output":
        raise AssertionError(f"post-grad graph: expected the last node to be the output, saw {output.op} {output.name}")
    outputs.update(str(v) for v in output.args[0])
    texts.append(graph_text(graph, annotate=True))


def _outcome(prog: Program, fn) -> tuple[list, dict]:
    torch.manual_seed(RUN_SEED)
    outputs = flat_tensors(fn(*prog.inputs))
    cotangent_loss(outputs).backward()
    grads = {f"input[{i}]": t.grad for i, t in enumerate(prog.inputs)}
    grads.update({f"param {n}": p.grad for n, p in prog.named_params().items()})
    return [o.detach() for o in outputs], grads


def _variant(ctx: BuildContext, hook: bool):
    """Eager and compiled (inductor + compiled autograd) runs of one variant: comparisons, saved outputs, graph text."""
    label = "with backward hook" if hook else "without backward hook"
    eager_calls, compiled_calls = [], []
    torch.manual_seed(BUILD_SEED)
    eager = _outcome(eager_prog := build(ctx, hook, eager_calls), eager_prog.fn)
    torch.manual_seed(BUILD_SEED)
    prog = build(ctx, hook, compiled_calls)
    fresh_state()
    outputs, texts = set(), []
    compiler = functools.partial(torch.compile, fullgraph=True, backend="inductor")
    with torch._inductor.config.patch(
            post_grad_custom_pre_pass=functools.partial(_collect_forward_outputs, outputs=outputs, texts=texts)):
        with torch._dynamo.compiled_autograd._enable(compiler):
            compiled = _outcome(prog, compiler(prog.fn))
    comparisons = [(f"{label}: compiled vs eager output[{i}]", a, e) for i, (a, e) in enumerate(zip(compiled[0], eager[0]))]
    comparisons += [(f"{label}: compiled vs eager grad of {n}", compiled[1][n], eager[1][n]) for n in sorted(eager[1])]
    hooks = {"eager": len(eager_calls), "compiled": len(compiled_calls)}
    return comparisons, {p for p in outputs if not p.startswith("primals_")}, texts, hooks


def hooked_tensor_is_saved(ctx: BuildContext, axes) -> CustomRun:
    plain_cmp, plain_saved, plain_texts, _ = _variant(ctx, hook=False)
    hook_cmp, hook_saved, hook_texts, hook_calls = _variant(ctx, hook=True)
    graphs = {"fw_no_hook": "".join(plain_texts), "fw_with_hook": "".join(hook_texts)}
    return CustomRun(graphs=graphs, comparisons=plain_cmp + hook_cmp,
                     info={"saved_no_hook": plain_saved, "saved_with_hook": hook_saved, "hook_calls": hook_calls})


def _hook_forces_save(run) -> None:
    no_hook, with_hook = run.info["saved_no_hook"], run.info["saved_with_hook"]
    if not no_hook or not with_hook:
        raise AssertionError(f"{run.cell.id}: the post-grad pass saw no forward graph outputs "
                             f"(without hook: {sorted(no_hook)}, with hook: {sorted(with_hook)})")
    expect_equal(f"{run.cell.id}: backward hook calls (eager, compiled autograd)", run.info["hook_calls"],
                 {"eager": 1, "compiled": 1})
    expect_equal(f"{run.cell.id}: saved tensors added by the backward hook (non-primal forward outputs with hook "
                 f"{sorted(with_hook)} minus without {sorted(no_hook)})", with_hook - no_hook, {"mul"})


CASES = [
    Case("must_save_tensor_that_has_backward_hook", build, catalogue=(15,),
         axes=AxesSpec(backends=Backend.INDUCTOR, partitioners=Partitioner.MIN_CUT), custom=hooked_tensor_is_saved,
         expect=Expect(check=_hook_forces_save),
         compile=CompileSpec(config={"functorch": {"recompute_views": True}, "inductor": {"fx_graph_cache": False}})),
]

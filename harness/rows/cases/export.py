"""Area "export": the export path of upstream's ``_compare_orig_and_checkpointed_fns`` (CATALOGUE.md "Class-level setup",
items 21, 22, 24-28, 30), and torch.export's exported programs of checkpointed modules (issue 27 item 5).

Every row runs on ``Runner.EXPORT`` (harness/core/runners.py): the checkpointed function, wrapped in a module, is
traced with ``torch.export._trace._export_to_torch_ir`` (the Dynamo-level torch IR, where the checkpoint is a
``tag_activation_checkpoint`` HOP and the SAC ``context_fn`` rides on the body's meta), then compiled like upstream's
``aot_eager_decomp_partition`` (inductor's decomposition table plus the cell's partitioner) and run forward and backward.
The uncheckpointed function goes through the same path, and both must give equal outputs and input gradients
(upstream's fact); ours also compares with plain eager without AC, and holds the export-path graphs to the item's
forward/backward op counts, so a SAC policy lost on the way through export shows.

The ``exported_*`` rows run on ``Runner.EXPORTED_PROGRAM``: a module with a parameter whose forward checkpoints a
region (non-reentrant, reentrant, selective), exported by ``torch.export.export`` strict and non-strict (the cells'
``ExportMode`` axis), and the exported program's module run eagerly forward and backward: its outputs and its input
and parameter gradients must equal eager with AC and eager without AC: ``export`` "produces a traced graph representing
only the Tensor computation of the function" (torch/export/__init__.py), ``ep.module()`` "Returns a self contained
GraphModule with all the parameters/buffers inlined" (torch/export/exported_program.py), and autograd differentiates
that module like any other, so its gradients are the function's.  The same module without AC is exported and run the
same way, so a failure it shares is export's, not AC's.  The "exported" golden shows what the export kept of the
checkpoint: strict keeps a ``tag_activation_checkpoint`` HOP, non-strict traces through checkpoint and keeps none.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core.case import (EXPORT_MODES, BuildContext, Case, Checkpoint, CompileSpec, Decompositions, Expect,
                               Program, Runner, Selection)
from harness.core.checks import count_of, expect_equal
from harness.rows.cases.sac_policy import counting_bool_policy_context, custom_rule_body

MM, SIGMOID, CAT, DROPOUT = "aten.mm.default", "aten.sigmoid.default", "aten.cat.default", "aten.native_dropout.default"


def _policy(no_recompute=()):
    def policy(ctx, func, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if func in no_recompute else CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _no_recompute_context(*ops):
    # A named function defined outside the traced code: Dynamo accepts it as context_fn (a lambda made inside would not be).
    def context_fn():
        return create_selective_checkpoint_contexts(_policy(ops))

    return context_fn


def _gemm(x, y):
    return torch.sigmoid(torch.matmul(torch.matmul(x, y), y)) * y


def sac_program(body, context_fn, n_inputs=2, inputs=None, **ckpt_kwargs):
    """``body`` checkpointed non-reentrantly with ``context_fn`` (the plain body when ``ctx.ac`` is False)."""

    def build(ctx: BuildContext) -> Program:
        def fn(*args):
            return ctx.checkpoint(body, *args, use_reentrant=False, context_fn=context_fn, **ckpt_kwargs)

        return Program(fn, inputs(ctx) if inputs else tuple(ctx.randn(4, 4) for _ in range(n_inputs)))

    return build


def _two_tensor_inputs(ctx: BuildContext):
    from torch.testing._internal.two_tensor import TwoTensor

    r = ctx.randn(4, 4)
    return TwoTensor(r, r.clone()), TwoTensor(r.clone(), r.clone())


def _context_from_list(no_recompute_list):
    return create_selective_checkpoint_contexts(_policy(tuple(no_recompute_list)))


def _outplace_body(x, y):
    return torch.sigmoid(torch.selu(torch.matmul(torch.matmul(x, y), y))).relu()


def _list_body(x, y):
    return torch.cat([x, y]).sin()


def _random_body(x):
    return torch.sigmoid(torch.dropout(torch.sigmoid(x), p=0.5, train=True))


def _region_survived_export(run) -> None:
    """Every forward aten op of the exported region reaches the partitioner tagged with a policy and an ac_graph_id."""
    forward_ops = [n for gm in run.graphs.get("joint", []) for n in gm.graph.nodes
                   if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                   and "is_forward" in n.meta.get("partitioner_tag", "")]
    if not forward_ops:
        raise AssertionError(f"{run.cell.id}: expected forward aten ops in the joint graph of the exported program, "
                             f"saw none:\n{run.texts.get('joint', '(no joint graph recorded)')}")
    untagged = [n.name for n in forward_ops if "recompute" not in n.meta or "ac_graph_id" not in n.meta]
    expect_equal(f"{run.cell.id}: forward ops of the exported checkpoint region without recompute/ac_graph_id tags",
                 untagged, [])


def _mm_must_save(run) -> None:
    _region_survived_export(run)
    policies = [f"{n.name}: {getattr(n.meta.get('recompute'), 'name', None)}" for gm in run.graphs["joint"]
                for n in gm.graph.nodes if n.target == torch.ops.aten.mm.default
                and "is_forward" in n.meta.get("partitioner_tag", "")]
    expect_equal(f"{run.cell.id}: recompute policy of the forward mm nodes after export (the SAC policy saves mm)",
                 policies, ["mm: MUST_SAVE", "mm_1: MUST_SAVE"])
    expect_equal(f"{run.cell.id}: aten.mm.default in the bw graph (both MUST_SAVE mm saved, not recomputed)",
                 count_of(run, "bw", "aten.mm.default"), 4)


def export_case(name: str, build, catalogue: tuple[int, ...], expect: Expect = Expect(),
                compile: CompileSpec = CompileSpec(), notes: str = "") -> Case:
    """A SAC case run through export (inductor decompositions); its check defaults to the region surviving export."""
    return Case(name, build, catalogue=catalogue, checkpoint=Checkpoint.SAC, runner=Runner.EXPORT,
                compile=dataclasses.replace(compile, decompositions=Decompositions.INDUCTOR),
                expect=expect if expect.check else dataclasses.replace(expect, check=_region_survived_export),
                notes=notes)


_MM_ONLY = _no_recompute_context(torch.ops.aten.mm.default)

# Op counts: upstream asserts them on the direct compile (the "sac" area); here the forward counts, which do not depend on
# the SAC policy, hold on the export path too.  The backward counts that need MUST_SAVE do not: compiling the exported
# graph drops the policy (findings/export_compile_drops_sac_policy.py), which export_keeps_sac_policy pins down.
CASES = [
    export_case("export_sac_must_not_recompute_gemm", sac_program(_gemm, _MM_ONLY), (21,),
                expect=Expect({"fw": {MM: 2}})),
    export_case("export_keeps_sac_policy", sac_program(_gemm, _MM_ONLY), (21,),
                expect=Expect({"fw": {MM: 2}}, check=_mm_must_save),
                notes="the item's SAC facts (bw mm = 4: both mm saved) on the export path"),
    export_case("export_sac_must_not_recompute_gemm_no_functionalization", sac_program(_gemm, _MM_ONLY), (22,),
                compile=CompileSpec(disable_functionalization=True),
                expect=Expect({"fw": {SIGMOID: 1}, "bw": {SIGMOID: 1}})),
    export_case("export_sac_tensor_subclass", sac_program(_gemm, _MM_ONLY, inputs=_two_tensor_inputs), (24,),
                expect=Expect({"fw": {MM: 4}})),
    export_case("export_sac_custom_rule", sac_program(custom_rule_body, counting_bool_policy_context), (25,),
                expect=Expect({"fw": {MM: 2}}, at_least={"bw": {MM: 4}})),
    export_case("export_sac_partial_ctx_fn",
                sac_program(_gemm, functools.partial(_context_from_list, [torch.ops.aten.mm.default])), (26,),
                expect=Expect({"fw": {MM: 2}})),
    export_case("export_sac_outplace_op",
                sac_program(_outplace_body, _no_recompute_context(torch.ops.aten.mm.default,
                                                                  torch.ops.aten.sigmoid.default)),
                (27,), expect=Expect({"fw": {MM: 2, SIGMOID: 1}})),
    export_case("export_sac_list_ops", sac_program(_list_body, _no_recompute_context()), (28,),
                expect=Expect({"fw": {CAT: 1}, "bw": {CAT: 1}})),
    *[export_case(f"export_sac_random_op_preserve_rng_{flag}".lower(),
                  sac_program(_random_body, _no_recompute_context(torch.ops.aten.sigmoid.default), n_inputs=1,
                              preserve_rng_state=flag),
                  (30,), compile=CompileSpec(config={"inductor": {"fallback_random": True}}),
                  expect=Expect({"fw": {SIGMOID: 2, DROPOUT: 1}, "bw": {DROPOUT: 1}}))
      for flag in (True, False)],
]


# --- torch.export.export of checkpointed modules (Runner.EXPORTED_PROGRAM) -----------------------------------------

# The checkpoint arguments of each kind of checkpoint the exported rows cross with both export modes.
EXPORT_CHECKPOINTS = {Checkpoint.NON_REENTRANT: {"use_reentrant": False},
                      Checkpoint.REENTRANT: {"use_reentrant": True},
                      Checkpoint.SAC: {"use_reentrant": False, "context_fn": _MM_ONLY}}


def _sin_mm_sigmoid(a, w):
    return torch.sigmoid(torch.sin(a) @ w)


def _sin_mm_dropout(a, w):
    return F.dropout(torch.sin(a) @ w, p=0.5, training=True).sigmoid()


class _Checkpointed(torch.nn.Module):
    """``checkpoint(body, x, w, **ckpt).cos()`` with ``checkpoint`` the build context's (a pass-through without AC)."""

    def __init__(self, checkpoint, body, ckpt: dict):
        super().__init__()
        self.checkpoint, self.body, self.ckpt = checkpoint, body, ckpt
        self.w = torch.nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return self.checkpoint(self.body, x, self.w, **self.ckpt).cos()


def exported_program(body, ckpt: dict):
    """A module with one parameter ``w`` whose forward checkpoints ``body(x, w)`` with ``ckpt``."""

    def build(ctx: BuildContext) -> Program:
        module = ctx.module(_Checkpointed(ctx.checkpoint, body, ckpt))
        return Program(module, (ctx.randn(8, 8),), module=module)

    return build


# make test runs these cells (one strict, one non-strict, one known failure); the rest are the nightly's.
_FAST_EXPORTED = {"exported_gemm_sac": "strict_export-cpu-float32",
                  "exported_gemm_non_reentrant": "non_strict_export-cpu-float32",
                  "exported_gemm_reentrant": "non_strict_export-cpu-float32"}

CASES += [
    Case(f"exported_{name}_{kind}", exported_program(body, ckpt), checkpoint=kind, runner=Runner.EXPORTED_PROGRAM,
         axes=EXPORT_MODES, goldens=("exported",),
         selection=Selection(fast_axes=_FAST_EXPORTED.get(f"exported_{name}_{kind}", ())),
         notes=f"torch.export.export of a module whose forward checkpoints {what} ({kind}), strict and non-strict; "
               "the exported program's module differentiated against eager with and without AC")
    for name, body, what in (("gemm", _sin_mm_sigmoid, "sin, mm, sigmoid"),
                             ("dropout", _sin_mm_dropout, "sin, mm, dropout, sigmoid (its mask must be replayed)"))
    for kind, ckpt in EXPORT_CHECKPOINTS.items()
]

"""Area "tags": Dynamo wraps checkpointed regions in tag_activation_checkpoint and AOTAutograd tags each node of
the joint graph with a recompute policy and an ac_graph_id (CATALOGUE.md items 1-11)."""

from __future__ import annotations

import functools
import re

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core.case import (NON_REENTRANT_COMPOSITIONS, REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, STANDARD_BACKENDS, MIN_CUT_ONLY, AmbientState, Partitioner, Selection, AxesSpec, Backend, BuildContext, Case, Checkpoint, CompileSpec, Decompositions,
                          Expect, Program)
from harness.core.checks import expect_equal

MM, SIGMOID, COS, ERF = "aten.mm.default", "aten.sigmoid.default", "aten.cos.default", "aten.erf.default"


def _sigmoid_mm(x, y):
    return torch.sigmoid(torch.matmul(x, y))


def tags_function(use_reentrant: bool, **ckpt_kwargs):
    def build(ctx: BuildContext) -> Program:
        def fn(x, y):
            return ctx.checkpoint(_sigmoid_mm, torch.sin(x), y, use_reentrant=use_reentrant, **ckpt_kwargs)

        return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))

    return build


def via_global_checkpoint(ctx: BuildContext) -> Program:
    # The directly imported name goes through Dynamo's VariableBuilder rather than an attribute lookup.
    from torch.utils.checkpoint import checkpoint

    ckpt = checkpoint if ctx.ac else ctx.checkpoint

    def fn(x, y):
        return ckpt(_sigmoid_mm, torch.sin(x), y, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


class _MatMul(torch.autograd.Function):
    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.t(), x.t() @ grad


def custom_function(sac: bool):
    def build(ctx: BuildContext) -> Program:
        kwargs = {}
        if sac:
            kwargs["context_fn"] = functools.partial(
                create_selective_checkpoint_contexts, lambda c, op, *a, **k: CheckpointPolicy.PREFER_RECOMPUTE)

        def fn(x, w):
            return ctx.checkpoint(_MatMul.apply, x, w, use_reentrant=False, **kwargs)

        return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))

    return build


def _forward_mm_nodes_are_tagged(run) -> None:
    joint = run.graphs["joint"][0]
    mms = [n for n in joint.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.mm.default
           and n.meta.get("partitioner_tag") == "is_forward"]
    if not mms:
        raise AssertionError(f"{run.cell.id}: expected forward mm nodes in the joint graph, saw none:\n{run.texts['joint']}")
    untagged = [n.name for n in mms if "recompute" not in n.meta or "ac_graph_id" not in n.meta]
    expect_equal(f"{run.cell.id}: forward mm nodes missing recompute/ac_graph_id meta", untagged, [])


def _tlparse_shows_tags(run) -> None:
    text = run.graphs["joint"][0].print_readable(print_output=False)
    if not re.search(r"# ac_graph_id: \d+ - PREFER_RECOMPUTE", text):
        raise AssertionError(f"{run.cell.id}: expected '# ac_graph_id: <n> - PREFER_RECOMPUTE' in the joint graph's "
                             f"print_readable, saw:\n{text}")


def _tangents_tagged_backward(run) -> None:
    wrong = []
    for n in run.graphs["joint"][0].graph.nodes:
        if n.op != "placeholder":
            continue
        tag = n.meta.get("partitioner_tag", "")
        want = "is_backward" if "tangents" in n.name else "is_forward"
        if want not in tag:
            wrong.append(f"{n.name}: partitioner_tag {tag!r}, expected {want!r}")
    expect_equal(f"{run.cell.id}: placeholders with the wrong partitioner_tag", wrong, [])


def sequential_layers(ctx: BuildContext) -> Program:
    def body(x):
        x = torch.cos(x)
        for _ in range(3):
            x = torch.mm(x, x)
        return torch.cos(x)

    # Upstream passes no use_reentrant; torch 2.13's default is reentrant (with a warning), so say so explicitly.
    def fn(x):
        x = ctx.checkpoint(body, x, use_reentrant=True)
        return ctx.checkpoint(body, x, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4),))


def multiple_checkpoints(ctx: BuildContext) -> Program:
    def fn(x, y):
        x = torch.sin(x)
        z = ctx.checkpoint(_sigmoid_mm, x, y, use_reentrant=True)
        x = torch.sin(z)
        return ctx.checkpoint(_sigmoid_mm, x, y, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


class _LinearAct(torch.nn.Module):
    def __init__(self, act: torch.nn.Module):
        super().__init__()
        self.linear = torch.nn.Linear(10, 10)
        self.act = act

    def forward(self, x):
        return self.act(self.linear(x))


def checkpointed_module(act: type[torch.nn.Module]):
    def build(ctx: BuildContext) -> Program:
        mod = ctx.module(_LinearAct(act()))

        def fn(x):
            return ctx.checkpoint(mod, torch.sin(x), use_reentrant=True)

        return Program(fn, (ctx.randn(10, 10),), module=mod)

    return build


FW_BW_MM = {"fw": {MM: 1}, "bw": {MM: 3}}

CASES = [
    # Cases whose program is a function calling ctx.checkpoint declare the compositions it supports (issue 27 item
    # 1): a reentrant checkpoint the ones that keep it reentrant, a non-reentrant one all, a selective one all but
    # reentrant; nightly (slow).
    Case("tags_function", tags_function(True), catalogue=(1,), checkpoint=Checkpoint.REENTRANT, expect=Expect(FW_BW_MM),
         axes=AxesSpec(backends=STANDARD_BACKENDS, compositions=REENTRANT_COMPOSITIONS)),
    Case("tags_function_via_global_checkpoint", via_global_checkpoint, catalogue=(2,), checkpoint=Checkpoint.REENTRANT,
         expect=Expect(FW_BW_MM)),
    # Every composition of compile and checkpoint (issue 27), also with compiled autograd taking the backward: two in
    # make test, the product nightly.
    Case("tags_function_with_kwargs", tags_function(False), catalogue=(3,), expect=Expect(FW_BW_MM),
         axes=AxesSpec(compositions=NON_REENTRANT_COMPOSITIONS, compiled_autograd=(False, True)),
         selection=Selection(fast_axes=("min_cut-aot_eager-cpu-float32-checkpoint_of_compile",
                                        "min_cut-aot_eager-cpu-float32-compiled_model_eager_blocks"))),
    Case("checkpoint_shows_tags_in_tlparse", tags_function(True, preserve_rng_state=False), catalogue=(4,),
         checkpoint=Checkpoint.REENTRANT, axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=REENTRANT_COMPOSITIONS),
         expect=Expect(FW_BW_MM, check=_tlparse_shows_tags)),
    Case("ac_tags_through_custom_autograd_function", custom_function(sac=False), catalogue=(5,),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=NON_REENTRANT_COMPOSITIONS),
         expect=Expect(check=_forward_mm_nodes_are_tagged)),
    Case("sac_tags_through_custom_autograd_function", custom_function(sac=True), catalogue=(6,),
         checkpoint=Checkpoint.SAC, axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=SAC_COMPOSITIONS),
         expect=Expect(check=_forward_mm_nodes_are_tagged)),
    # no compositions: the program of tags_function_with_kwargs, which declares them
    Case("tangent_placeholders_have_is_backward_tag", tags_function(False), catalogue=(7,), axes=MIN_CUT_ONLY,
         expect=Expect(check=_tangents_tagged_backward)),
    Case("tags_sequential_layers", sequential_layers, catalogue=(8,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(compositions=REENTRANT_COMPOSITIONS),
         expect=Expect({"fw": {MM: 6}, "bw": {COS: 2, MM: 18}})),
    Case("tags_multiple_checkpoints", multiple_checkpoints, catalogue=(9,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(compositions=REENTRANT_COMPOSITIONS),
         expect=Expect({"fw": {MM: 2}, "bw": {MM: 6}})),
    # A checkpointed module (compiled once per block where a composition compiles blocks), also under every ambient
    # state (issue 27 item 4): the reentrant side of sac_must_recompute_mm's product.
    Case("tags_module", checkpointed_module(torch.nn.Sigmoid), catalogue=(10,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(compositions=REENTRANT_COMPOSITIONS, ambients=tuple(AmbientState)),
         selection=Selection(fast_axes=("min_cut-aot_eager-cpu-float32-checkpoint_of_compile_reentrant-no_grad",
                                        "min_cut-aot_eager-cpu-float32-autocast_bf16_inside")),
         expect=Expect({"fw": {SIGMOID: 1}, "bw": {SIGMOID: 1}})),
    Case("tags_decomps", checkpointed_module(torch.nn.GELU), catalogue=(11,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(compositions=REENTRANT_COMPOSITIONS),
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR), expect=Expect({"fw": {ERF: 1}, "bw": {ERF: 1}})),
]

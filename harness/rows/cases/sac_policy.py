"""Area "sac_policy": selective activation checkpointing (SAC) under torch.compile: which ops a policy saves or
recomputes, seen as op counts in the partitioned forward/backward graphs and as the recompute policy AOTAutograd
annotates on each node of the joint graph (CATALOGUE.md items 19-22, 25-29, 32, 45-47).

``custom_policy`` / ``sac_context_fn`` are the reusable policy factory other areas import."""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core import analysis
from harness.core.case import (MIN_CUT_ONLY, SAC_COMPOSITIONS, AmbientState, Partitioner, AxesSpec, BuildContext, Case, Checkpoint, CompileSpec,
                               Decompositions, Expect, Program, Selection)
from harness.core.checks import expect_equal
from harness.rows.cases import FORMER_CUSTOM

aten = torch.ops.aten
MM, SIGMOID, CAT, MUL = "aten.mm.default", "aten.sigmoid.default", "aten.cat.default", "aten.mul.Tensor"


def custom_policy(no_recompute_list=None, must_recompute_list=None):
    """A SAC policy: MUST_SAVE for ops in ``no_recompute_list``, MUST_RECOMPUTE for ops in ``must_recompute_list``,
    PREFER_RECOMPUTE for every other op."""
    save, recompute = list(no_recompute_list or ()), list(must_recompute_list or ())

    def policy(ctx, func, *args, **kwargs):
        if func in save:
            return CheckpointPolicy.MUST_SAVE
        if func in recompute:
            return CheckpointPolicy.MUST_RECOMPUTE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def sac_context_fn(no_recompute_list=None, must_recompute_list=None):
    """A zero-argument ``context_fn`` for ``checkpoint`` built on :func:`custom_policy`."""
    return lambda: create_selective_checkpoint_contexts(custom_policy(no_recompute_list, must_recompute_list))


def sac_program(body, n_inputs: int, context_fn, **ckpt_kwargs):
    """Builder: ``checkpoint(body, *inputs, use_reentrant=False, context_fn=context_fn)`` on 4x4 inputs."""
    def build(ctx: BuildContext) -> Program:
        def fn(*args):
            return ctx.checkpoint(body, *args, use_reentrant=False, context_fn=context_fn, **ckpt_kwargs)

        return Program(fn, tuple(ctx.randn(4, 4) for _ in range(n_inputs)))

    return build


def _mm_chain(x):
    return torch.cos(torch.sin(torch.matmul(x, x) @ x))


def _gemm_sigmoid(x, y):
    return torch.sigmoid(torch.matmul(torch.matmul(x, y), y)) * y


def _outplace(x, y):
    return torch.sigmoid(torch.selu(torch.matmul(torch.matmul(x, y), y))).relu()


def _inplace(x, y):
    return torch.sigmoid(torch.selu_(torch.matmul(torch.matmul(x, y), y))).relu_()


def _inplace_valid(x, y):
    # In-place ops on tensors no backward formula saves and no policy caches (upstream's body is invalid, see CASES).
    return torch.sigmoid(torch.selu_(torch.matmul(torch.matmul(x, y), y) + 1)).mul(2).relu_()


def _list_op(x, y):
    return torch.cat([x, y]).sin()


class _CallablePolicy:
    """A policy given as a callable object; its signature has an extra positional after ctx (it always saves)."""

    def __call__(self, ctx, out, func, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE


def counting_bool_policy_context():
    """Legacy boolean policy with per-context state: save every mm except the second one of each mode.

    Upstream's test keys its counter on ``f"{mode}_mm_count"``, written when ``mode`` was the string "forward" or
    "recompute"; it is now a fresh ``SelectiveCheckpointContext`` per call, whose str holds its address, so the count
    restarted at every call -- except when the allocator reused a freed context's address, which made the second
    mm's tag depend on the process's history (the golden drifted with the test order).  Key on the mode itself."""
    meta: dict[str, int] = {}

    def policy(mode, func, *args, **kwargs):
        recompute = getattr(mode, "is_recompute", mode == "recompute")
        key = f"{'recompute' if recompute else 'forward'}_mm_count"
        meta.setdefault(key, 0)
        if func == aten.mm.default:
            meta[key] += 1
        return func == aten.mm.default and meta[key] != 2

    return create_selective_checkpoint_contexts(policy)


def custom_rule_body(x, y):
    return torch.sigmoid(torch.sigmoid(torch.matmul(torch.matmul(x, y) * y, y) * y))


def _partial_ctx_fn(no_recompute_list):
    return create_selective_checkpoint_contexts(custom_policy(no_recompute_list))


def parametrized_mlp(ctx: BuildContext) -> Program:
    """Every parameter of an MLP is reparametrized as sigmoid(W*W), computed under SAC."""
    def policy(c, func, *args, **kwargs):
        recompute = func in (aten.mul.Tensor, aten.sigmoid.default)
        return CheckpointPolicy.MUST_RECOMPUTE if recompute else CheckpointPolicy.MUST_SAVE

    def context_fn():  # defined outside the compiled code: Dynamo rejects a context_fn closure created inside it
        return create_selective_checkpoint_contexts(policy)

    class Parametrization(torch.nn.Module):
        def parametrization(self, x):
            return torch.sigmoid(torch.mul(x, x))

        def forward(self, x):
            return ctx.checkpoint(self.parametrization, x, use_reentrant=False, context_fn=context_fn)

    torch.manual_seed(5)  # upstream seeds the MLP's construction with 5
    model = torch.nn.Sequential(torch.nn.Linear(16, 16, bias=False))
    for mod in list(model.modules()):
        for name, p in dict(mod.named_parameters(recurse=False)).items():
            mod.register_parameter(name, torch.nn.Parameter(p))
            torch.nn.utils.parametrize.register_parametrization(mod, name, Parametrization(), unsafe=True)
    model = ctx.module(model)
    return Program(model, (ctx.randn(8, 16),), module=model)


# --- SAC annotations of the joint graph (items 45-47) ---------------------------------------------------------

def sac_annotations(checkpointed_fn, policy):
    """Builder: ``checkpoint(checkpointed_fn, x, context_fn=<policy>)`` on a 1-D input of size 4; the case snapshots
    the policy the joint graph carries on each node before min-cut partitions it (the "annotations" golden)."""
    def build(ctx: BuildContext) -> Program:
        def fn(x):
            return ctx.checkpoint(checkpointed_fn, x, use_reentrant=False,
                                  context_fn=functools.partial(create_selective_checkpoint_contexts, policy))

        return Program(fn, (ctx.randn(4),))

    return build


def expect_annotations(expected: list[str]):
    def check(run) -> None:
        expect_equal(f"{run.cell.id}: SAC annotations of the joint graph (node: target -> policy)",
                     analysis.policy_lines(run.graphs.get("joint", [])), expected)
    return check


def annotations_case(name: str, build, catalogue: tuple[int, ...], expected: list[str],
                     decompositions: Decompositions | None = None) -> Case:
    """A SAC case compiled not fullgraph (upstream's nop compilers: the recording aot_eager backend), min-cut."""
    return Case(name, build, catalogue=catalogue, checkpoint=Checkpoint.SAC, axes=MIN_CUT_ONLY,
                compile=CompileSpec(fullgraph=False, decompositions=decompositions), goldens=("annotations",),
                expect=Expect(check=expect_annotations(expected)), selection=FORMER_CUSTOM)


def _save_only(*ops):
    def policy(ctx, func, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if func in ops else CheckpointPolicy.PREFER_RECOMPUTE
    return policy


@torch._dynamo.allow_in_graph
def _sin_detach_add_cos(x):
    a = torch.sin(x)
    return torch.cos(a.detach() + a)


def _sin_silu_cos(x):
    return torch.cos(torch.nn.functional.silu(torch.sin(x)))


def _sin_topk_cos(x):
    return torch.cos(torch.topk(torch.sin(x), 2).values.sum())


CASES = [
    Case("sac_must_recompute_mm", sac_program(_mm_chain, 1, sac_context_fn(must_recompute_list=[aten.mm.default])),
         catalogue=(19,), checkpoint=Checkpoint.SAC, expect=Expect({"fw": {MM: 2}, "bw": {MM: 6}}),
         # every composition a SAC program supports, each also under save_on_cpu and under bf16 autocast (issue 27 items 1, 4)
         axes=AxesSpec(compositions=SAC_COMPOSITIONS, ambients=tuple(AmbientState)),
         selection=Selection(fast_axes=("min_cut-aot_eager-cpu-float32-sac_around_compiled",
                                        "min_cut-aot_eager-cpu-float32-checkpoint_of_compile-save_on_cpu")),
         notes="bw: 2 recomputed mm + 2 gradient mm per forward mm"),
    # The other SAC programs declare every composition a SAC program supports (issue 27 item 1), nightly.
    Case("sac_no_recompute_mm", sac_program(_mm_chain, 1, sac_context_fn(no_recompute_list=[aten.mm.default])),
         catalogue=(19,), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS), expect=Expect({"fw": {MM: 2}, "bw": {MM: 4}})),
    Case("sac_callable_object_policy_in_partial",
         sac_program(_gemm_sigmoid, 2, functools.partial(create_selective_checkpoint_contexts, _CallablePolicy())),
         catalogue=(20,), checkpoint=Checkpoint.SAC, axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR),
         notes="upstream compiles with aot_eager_decomp_partition (min-cut, inductor decompositions)"),
    Case("sac_must_not_recompute_gemm",
         sac_program(_gemm_sigmoid, 2, sac_context_fn(no_recompute_list=[aten.mm.default])), catalogue=(21,),
         checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS), expect=Expect({"fw": {MM: 2}, "bw": {MM: 4}}),
         notes="bw would have 6 mm without SAC (2 recomputed + 4 gradient mm)"),
    Case("sac_must_not_recompute_gemm_no_functionalization",
         sac_program(_gemm_sigmoid, 2, sac_context_fn(no_recompute_list=[aten.mm.default])), catalogue=(22,),
         checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS), compile=CompileSpec(disable_functionalization=True),
         expect=Expect({"fw": {SIGMOID: 1}, "bw": {SIGMOID: 1}}),
         notes="sigmoid is recomputed in bw (beside sigmoid_backward)"),
    Case("sac_custom_bool_stateful_rule", sac_program(custom_rule_body, 2, counting_bool_policy_context),
         catalogue=(25,), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS), expect=Expect({"fw": {MM: 2}}, at_least={"bw": {MM: 4}}),
         notes="whether the 2nd mm is recomputed is up to the partitioner, hence bw mm >= 4"),
    Case("sac_partial_context_fn", sac_program(_gemm_sigmoid, 2, functools.partial(_partial_ctx_fn, [aten.mm.default])),
         catalogue=(26,), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS), expect=Expect({"fw": {MM: 2}, "bw": {MM: 4}})),
    Case("sac_outplace_op",
         sac_program(_outplace, 2, sac_context_fn(no_recompute_list=[aten.mm.default, aten.sigmoid.default])),
         catalogue=(27,), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         expect=Expect({"fw": {MM: 2, SIGMOID: 1}, "bw": {MM: 4, SIGMOID: 0}})),
    Case("sac_list_ops", sac_program(_list_op, 2, sac_context_fn(no_recompute_list=[])), catalogue=(28,),
         checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         expect=Expect({"fw": {CAT: 1}, "bw": {CAT: 1}})),
    Case("sac_inplace_op",
         sac_program(_inplace, 2, sac_context_fn(no_recompute_list=[aten.mm.default, aten.sigmoid.default])),
         catalogue=(29,), checkpoint=Checkpoint.SAC,
         expect=Expect({"fw": {MM: 2, SIGMOID: 1}, "bw": {MM: 4, SIGMOID: 0}}),
         notes="upstream always skips this test; its body is invalid for autograd even without checkpointing "
               "(relu_ overwrites the sigmoid output sigmoid's backward saved): see known_failures.toml"),
    Case("sac_inplace_op_valid",
         sac_program(_inplace_valid, 2, sac_context_fn(no_recompute_list=[aten.mm.default, aten.sigmoid.default])),
         catalogue=(29,), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         expect=Expect({"fw": {MM: 2, SIGMOID: 1}, "bw": {MM: 4, SIGMOID: 0}}),
         notes="item 29's idea (in-place selu_/relu_ inside a SAC region) on tensors nothing saved"),
    Case("sac_parametrization", parametrized_mlp, catalogue=(32,), checkpoint=Checkpoint.SAC,
         axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         notes="upstream patches inline_inbuilt_nn_modules=True, always on (and deprecated) in torch 2.13",
         expect=Expect(lambda axes: {"fw": {MUL: 1, SIGMOID: 1},
                                     # 1 recomputed mul + 1 from mul's backward; default_partition does no CSE: one
                                     # extra mul
                                     "bw": {MUL: 3 if axes.partitioner == "default" else 2, SIGMOID: 1}})),
    annotations_case("sac_annotations_pre_mode_decomp_ignored_ops",
                     sac_annotations(_sin_detach_add_cos, _save_only(aten.sin.default, aten.add.Tensor,
                                                                     aten.cos.default)), (45,), [
                         "sin: aten.sin.default -> MUST_SAVE",
                         "detach_1: aten.detach.default -> PREFER_RECOMPUTE",
                         "add: aten.add.Tensor -> MUST_SAVE",
                         "cos: aten.cos.default -> MUST_SAVE",
                     ]),
    annotations_case("sac_annotations_post_mode_decomp", sac_annotations(_sin_silu_cos, _save_only(aten.silu.default)),
                     (46,), [
                         "sin: aten.sin.default -> PREFER_RECOMPUTE",
                         "neg: aten.neg.default -> MUST_SAVE",
                         "exp: aten.exp.default -> MUST_SAVE",
                         "add: aten.add.Tensor -> MUST_SAVE",
                         "div: aten.div.Tensor -> MUST_SAVE",
                         "cos: aten.cos.default -> PREFER_RECOMPUTE",
                     ], decompositions=Decompositions.INDUCTOR),
    annotations_case("sac_annotations_multi_output_op", sac_annotations(_sin_topk_cos, _save_only(aten.topk.default)),
                     (47,), [
                         "sin: aten.sin.default -> PREFER_RECOMPUTE",
                         "topk: aten.topk.default -> MUST_SAVE",
                         "getitem: <built-in function getitem> -> MUST_SAVE",
                         "getitem_1: <built-in function getitem> -> MUST_SAVE",
                         "sum_1: aten.sum.default -> PREFER_RECOMPUTE",
                         "cos: aten.cos.default -> PREFER_RECOMPUTE",
                     ]),
]

"""Area "remat": one forward+loss+backward graph (the program computes its own gradients, traced with
``trace_autograd_ops=True``) and the pass that rematerializes checkpointed nodes into its backward region
(``torch._functorch.config.remat_using_tags_for_fwd_loss_bwd_graph``), plus inductor's joint-graph passes on such
a graph (CATALOGUE.md items 56-61, 63-66).

Each cell compiles the program twice, with the remat pass on and off (``Runner.REMAT``), through an ``aot_autograd``
backend whose forward compiler captures the single graph (there is no partition: the graph already holds the
backward), and snapshots both graphs.  Both compiled runs are compared with eager with and without checkpointing.
The joint-graph-pass rows (``Runner.JOINT_PASSES``) snapshot the graph before and after inductor's passes."""

from __future__ import annotations

import functools
import re

import torch
import torch.fx as fx
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core.case import (AxesSpec, Backend, BuildContext, Case, Checkpoint, Expect, Partitioner, Program, Requires,
                               Runner)
from harness.core.checks import count_of, expect_equal, first_missing_in_order
from harness.core.torch_api import REMAT_FINDS_BACKWARD_REGION, REMAT_SEVERAL_BACKWARD_REGIONS

aten = torch.ops.aten
MM, SIGMOID, RELU, ADDMM, GELU = ("aten.mm.default", "aten.sigmoid.default", "aten.relu.default",
                                  "aten.addmm.default", "aten.gelu.default")
VIEW, PERMUTE = "aten.view.default", "aten.permute.default"


def _grad(outputs, inputs):
    return torch.autograd.grad(outputs, inputs)


# --- graph facts -----------------------------------------------------------------------------------------------

def node_names(run, kind: str) -> list[str]:
    return [n.name for gm in run.graphs[kind] for n in gm.graph.nodes]


def recomputed_names(run, kind: str = "with_remat") -> list[str]:
    return [n for n in node_names(run, kind) if "_recomputed" in n]


def expect_nodes_in_order(run, kind: str, expected: list[str]) -> None:
    """``expected`` node names occur in the graph in this order (other nodes may sit between them)."""
    __tracebackhide__ = True
    names = node_names(run, kind)
    i = first_missing_in_order(names, expected)
    if i is not None:
        raise AssertionError(f"{run.cell.id}: expected node {expected[i]!r} in the {kind} graph after "
                             f"{expected[:i]!r} (in order {expected!r}), saw nodes {names!r}")


def node(run, kind: str, name: str) -> fx.Node:
    for gm in run.graphs[kind]:
        for n in gm.graph.nodes:
            if n.name == name:
                return n
    raise AssertionError(f"{run.cell.id}: expected a node named {name!r} in the {kind} graph, saw {node_names(run, kind)!r}")


def expect_node(run, kind: str, name: str, target, args_names: list[str] | None = None) -> None:
    __tracebackhide__ = True
    n = node(run, kind, name)
    expect_equal(f"{run.cell.id}: target of node {name} in the {kind} graph", n.target, target)
    if args_names is not None:
        seen = [a.name if isinstance(a, fx.Node) else a for a in n.args]
        expect_equal(f"{run.cell.id}: arguments of node {name} in the {kind} graph", seen, args_names)


def expect_returns(run, kind: str, names: list[str]) -> None:
    __tracebackhide__ = True
    out = [n for gm in run.graphs[kind] for n in gm.graph.nodes if n.op == "output"][0]
    seen = [a.name if isinstance(a, fx.Node) else a for a in out.args[0]]
    expect_equal(f"{run.cell.id}: values returned by the {kind} graph", seen, names)


# --- item 56: sigmoid(x @ y) ------------------------------------------------------------------------------------

def _sigmoid_mm_grads(ctx: BuildContext) -> Program:
    def fn(x, y):
        out = ctx.checkpoint(lambda a, b: torch.sigmoid(torch.matmul(a, b)), x, y, use_reentrant=False)
        gx, gy = _grad(out.sum(), (x, y))
        return gx.detach(), gy.detach()

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


def _simple_golden_facts(run) -> None:
    expect_nodes_in_order(run, "with_remat", ["mm", "sigmoid", "sum_1", "ones_like", "expand", "mm_recomputed",
                                              "sigmoid_recomputed", "detach_2_recomputed", "detach_4",
                                              "sigmoid_backward", "t", "mm_2", "t_1", "mm_3", "detach_5", "detach_6"])
    expect_node(run, "with_remat", "expand", aten.expand.default, ["ones_like", [4, 4]])
    expect_node(run, "with_remat", "mm_recomputed", aten.mm.default)
    expect_node(run, "with_remat", "sigmoid_recomputed", aten.sigmoid.default, ["mm_recomputed"])
    expect_node(run, "with_remat", "t", aten.t.default, ["arg0_1"])  # x^T
    expect_node(run, "with_remat", "t_1", aten.t.default, ["arg1_1"])  # y^T
    expect_node(run, "with_remat", "mm_2", aten.mm.default, ["t", "sigmoid_backward"])  # grad of y
    expect_node(run, "with_remat", "mm_3", aten.mm.default, ["sigmoid_backward", "t_1"])  # grad of x
    expect_node(run, "with_remat", "detach_5", aten.detach.default, ["mm_3"])
    expect_node(run, "with_remat", "detach_6", aten.detach.default, ["mm_2"])
    expect_returns(run, "with_remat", ["detach_5", "detach_6"])
    expect_equal(f"{run.cell.id}: _recomputed nodes of the graph without remat", recomputed_names(run, "without_remat"), [])


# --- item 57 / 58: an RNG op and a plain op in the region -------------------------------------------------------

def _rand_in_region(ctx: BuildContext) -> Program:
    def fn(x):
        out = ctx.checkpoint(lambda a: torch.sigmoid(a + torch.rand_like(a)), x, use_reentrant=False)
        return _grad(out.sum(), (x,))[0].detach()

    return Program(fn, (ctx.randn(4, 4),))


def _add_sigmoid(ctx: BuildContext) -> Program:
    def fn(x):
        out = ctx.checkpoint(lambda a: torch.sigmoid(a + 4), x, use_reentrant=False)
        return _grad(out.sum(), (x,))[0].detach()

    return Program(fn, (ctx.randn(4, 4),))


def _sigmoid_recomputed(run) -> None:
    names = recomputed_names(run)
    if not any(n.startswith("sigmoid") for n in names):
        raise AssertionError(f"{run.cell.id}: expected a sigmoid_recomputed node in the with_remat graph, saw _recomputed nodes {names!r}")


# --- item 59: SAC policy saves addmm ----------------------------------------------------------------------------

def _save_addmm_policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func is aten.addmm.default else CheckpointPolicy.PREFER_RECOMPUTE


def _sac_linear_relu(ctx: BuildContext) -> Program:
    def fn(x, w1, b1):
        out = ctx.checkpoint(lambda a, w, b: torch.relu(torch.nn.functional.linear(a, w, b)), x, w1, b1,
                             use_reentrant=False,
                             context_fn=functools.partial(create_selective_checkpoint_contexts, _save_addmm_policy))
        return tuple(g.detach() for g in _grad(out.sum(), (x, w1, b1)))

    return Program(fn, (ctx.randn(4, 128), ctx.randn(128, 128), ctx.randn(128)))


def _addmm_saved_relu_recomputed(run) -> None:
    for op in (ADDMM,):
        expect_equal(f"{run.cell.id}: {op} count with remat (the policy saves it) vs without",
                     count_of(run, "with_remat", op), count_of(run, "without_remat", op))
    expect_equal(f"{run.cell.id}: relu count with remat (one recomputed)",
                 count_of(run, "with_remat", RELU), count_of(run, "without_remat", RELU) + 1)
    names = recomputed_names(run)
    if "addmm_recomputed" in names:
        raise AssertionError(f"{run.cell.id}: expected no addmm_recomputed (addmm is MUST_SAVE), saw _recomputed nodes {names!r}")
    if not any("relu" in n for n in names):
        raise AssertionError(f"{run.cell.id}: expected relu_recomputed, saw _recomputed nodes {names!r}")


# --- items 60 / 61: inductor's joint-graph passes ---------------------------------------------------------------

def _round_trip(kind: str):
    def body(a):
        if kind == "view":
            a = a.view(16).view(4, 4)
        else:
            a = a.permute(1, 0).permute(1, 0)
        return torch.sigmoid(a)

    def build(ctx: BuildContext) -> Program:
        def fn(x):
            out = ctx.checkpoint(body, x, use_reentrant=False)
            return _grad(out.sum(), (x,))[0].detach()

        return Program(fn, (ctx.randn(4, 4),))

    return build


def _joint_passes_golden_facts(run) -> None:
    expect_nodes_in_order(run, "after_passes", ["sigmoid", "sum_1", "ones_like", "expand", "sigmoid_recomputed",
                                                "detach_3_recomputed", "detach_5", "sigmoid_backward", "detach_6"])
    expect_node(run, "after_passes", "expand", aten.expand.default, ["ones_like", [4, 4]])
    expect_returns(run, "after_passes", ["detach_6"])


# --- item 63 / 64: user phase annotations -----------------------------------------------------------------------

def _two_annotated_regions(ctx: BuildContext) -> Program:
    from torch.fx.traceback import annotate

    def fn(x, y):
        out = ctx.checkpoint(lambda a, b: torch.sin(a @ b), x, y, use_reentrant=False)
        with annotate({"phase": "backward"}):
            gx, gy = _grad(out.sum(), (x, y))
        mid = gx + gy  # outside any annotated region
        with annotate({"phase": "backward"}):
            doubled = out * 2
        return mid.detach(), doubled.detach()

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


def _annotated_and_plain_grad(ctx: BuildContext) -> Program:
    from torch.fx.traceback import annotate

    def fn(x, w1, w2):
        a = ctx.checkpoint(lambda i, w: torch.sin(i @ w), x, w1, use_reentrant=False)
        b = ctx.checkpoint(lambda i, w: torch.sigmoid(i @ w), x, w2, use_reentrant=False)
        loss_a, loss_b = a.sum(), b.sum()
        with annotate({"phase": "backward"}):
            g1 = _grad(loss_a, (w1,))[0]
        g2 = _grad(loss_b, (w2,))[0]
        return (g1 + g2).detach()

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4), ctx.randn(4, 4)))


def _only_annotated_region_rematerialized(run) -> None:
    expect_nodes_in_order(run, "with_remat", ["sigmoid", "detach_4", "mm_recomputed", "cos", "mul", "mm_3",
                                              "detach_5", "sigmoid_backward", "mm_4", "add", "detach_6"])
    expect_node(run, "with_remat", "detach_4", aten.detach.default, ["sigmoid"])  # the saved sigmoid
    expect_node(run, "with_remat", "cos", aten.cos.default, ["mm_recomputed"])
    expect_node(run, "with_remat", "detach_5", aten.detach.default, ["detach_4"])
    expect_node(run, "with_remat", "sigmoid_backward", aten.sigmoid_backward.default)
    expect_node(run, "with_remat", "add", aten.add.Tensor, ["mm_3", "mm_4"])
    expect_node(run, "with_remat", "detach_6", aten.detach.default, ["add"])
    expect_returns(run, "with_remat", ["detach_6"])
    expect_equal(f"{run.cell.id}: _recomputed nodes (only the annotated region's mm)",
                 recomputed_names(run), ["mm_recomputed"])


# --- items 65 / 66: chunked loss, two backward regions ----------------------------------------------------------

class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 32, bias=False)
        self.act = torch.nn.GELU(approximate="tanh")
        self.fc2 = torch.nn.Linear(32, 32, bias=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _chunked_loss(ctx: BuildContext) -> Program:
    block, head = _Block(), torch.nn.Linear(32, 32)
    mod = ctx.module(torch.nn.ModuleDict({"block": block, "head": head}))

    def fn(x, y):
        h = ctx.checkpoint(block, x, use_reentrant=False)
        detached = h.detach().requires_grad_()
        total = torch.zeros((), device=x.device, dtype=x.dtype)
        for i in range(3):
            rows = slice(4 * i, 4 * i + 4)
            loss = torch.nn.functional.mse_loss(head(detached[rows]), y[rows], reduction="sum") / 12
            loss.backward()
            total = total + loss.detach()
        h.backward(detached.grad)
        return total

    return Program(fn, (ctx.randn(12, 32), ctx.randn(12, 32, requires_grad=False)), module=mod)


def _two_remat_regions(ctx: BuildContext) -> Program:
    b1, b2 = _Block(), _Block()
    mod = ctx.module(torch.nn.ModuleList([b1, b2]))

    def fn(x):
        h1 = ctx.checkpoint(b1, x, use_reentrant=False)
        h2 = ctx.checkpoint(b2, h1, use_reentrant=False)
        h2.sum().backward(retain_graph=True)
        h1.sum().backward()
        return h2.detach()

    return Program(fn, (ctx.randn(8, 32),), module=mod)


def _gelu_recomputed(run) -> None:
    names = recomputed_names(run)
    if not any(n.startswith("gelu") for n in names):
        raise AssertionError(f"{run.cell.id}: expected a gelu_recomputed node in the with_remat graph, saw _recomputed nodes {names!r}")


def _since(d) -> Requires:
    return Requires.release_of(d)


# Every remat case needs the pass to find the traced backward region itself (torch 2.11.0's pass only knows the
# legacy remat_pass_tag annotation and leaves the graph alone); the chunked-loss and two-region cases also need
# several backward regions accepted (2.12.1 rejects them all).  Older releases skip them as "cannot run".
REMAT_REQUIRES = (_since(REMAT_FINDS_BACKWARD_REGION),)
SEVERAL_REGIONS_REQUIRES = REMAT_REQUIRES + (_since(REMAT_SEVERAL_BACKWARD_REGIONS),)


def remat_case(name: str, build, catalogue: tuple[int, ...], runner: Runner = Runner.REMAT, **kwargs) -> Case:
    kwargs.setdefault("requires", REMAT_REQUIRES)
    return Case(name, build, catalogue=catalogue, runner=runner,
                axes=AxesSpec(partitioners=Partitioner.MIN_CUT, backends=Backend.AOT_EAGER), **kwargs)


_NOTE_FLAG = "compiled twice: remat_using_tags_for_fwd_loss_bwd_graph on (with_remat) and off (without_remat)"
_BCF = torch._dynamo.exc.BackendCompilerFailed

CASES = [
    remat_case("remat_simple_forward_backward", _sigmoid_mm_grads, (56,),
               expect=Expect({"with_remat": {MM: 4, SIGMOID: 2}, "without_remat": {MM: 3, SIGMOID: 1}},
                             check=_simple_golden_facts),
               notes=_NOTE_FLAG + "; upstream gates it on a GPU but uses CPU tensors"),
    remat_case("remat_rng_op_in_region_raises", _rand_in_region, (57,),
               expect=Expect(raises=(_BCF, re.escape("Activation checkpoint rematerialization in "
                                                     "`forward-loss-backward` graph does not support RNG ops in "
                                                     "recompute regions.")))),
    remat_case("remat_without_annotations", _add_sigmoid, (58,),
               expect=Expect({"with_remat": {SIGMOID: 2}, "without_remat": {SIGMOID: 1}}, check=_sigmoid_recomputed),
               notes="autograd_backward tagging of traced torch.autograd.grad is automatic: no phase annotation"),
    remat_case("remat_selective_checkpoint_policy", _sac_linear_relu, (59,), checkpoint=Checkpoint.SAC,
               expect=Expect(check=_addmm_saved_relu_recomputed)),
    remat_case("joint_graph_passes_view_optimization", _round_trip("view"), (60,), runner=Runner.JOINT_PASSES,
               expect=Expect({"before_passes": {VIEW: 6}, "after_passes": {VIEW: 0}},
                             check=_joint_passes_golden_facts)),
    remat_case("joint_graph_passes_permute_optimization", _round_trip("permute"), (61,), runner=Runner.JOINT_PASSES,
               expect=Expect({"before_passes": {PERMUTE: 6}, "after_passes": {PERMUTE: 0}},
                             check=_joint_passes_golden_facts)),
    remat_case("remat_multiple_user_phase_annotations_raises", _two_annotated_regions, (63,),
               expect=Expect(raises=(_BCF, r"Detected 2 disjoint backward regions annotated with phase: \"backward\"")),
               notes="upstream asserts RuntimeError (BackendCompilerFailed is one); gated on CUDA there, CPU tensors"),
    remat_case("remat_user_phase_annotation_with_extra_autograd_grad", _annotated_and_plain_grad, (64,),
               expect=Expect(check=_only_annotated_region_rematerialized),
               notes="only the phase-annotated grad is rematerialized; the plain one uses the saved sigmoid"),
    remat_case("remat_chunked_loss", _chunked_loss, (65,), requires=SEVERAL_REGIONS_REQUIRES,
               expect=Expect({"with_remat": {GELU: 2}, "without_remat": {GELU: 1}}, check=_gelu_recomputed)),
    remat_case("remat_two_backward_regions_raises", _two_remat_regions, (66,),
               requires=SEVERAL_REGIONS_REQUIRES,
               expect=Expect(raises=(_BCF, "Detected 2 disjoint backward regions that require recomputation"))),
]

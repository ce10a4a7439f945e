"""Area "non_strict": ``make_fx`` tracing a train step straight through *eager* activation checkpointing under
``torch.compiler._non_strict_tracing_context()`` (with ``_patch_autograd_grad`` / ``_patch_engine_backward`` and
``preserve_node_meta``): the traced graph holds the forward, the recomputation and the backward, and backward nodes
carry ``autograd_backward`` meta that must not leak onto later forward ops (CATALOGUE.md items 67, 70-75).

Every row runs on ``Runner.TRACE`` (harness/core/runners.py) with its ``Trace`` spec.  The traced graph is snapshotted
("traced") and, where the program is deterministic, run on the inputs and compared with the eager train step with and
without checkpointing."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.nn.utils import stateless
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core.case import (AxesSpec, Backend, BuildContext, Case, Checkpoint, Expect, Numerics, Partitioner, Patch,
                               Program, Requires, Runner, Trace)
from harness.core.checks import count_of, expect_equal, first_missing_in_order
from harness.core.torch_api import NON_STRICT_PATCH_APIS, traced_detach


def _d(name: str) -> str:
    return traced_detach(name)[0]

aten = torch.ops.aten
NEG = "aten.neg.default"


# --- the tracing pipeline ---------------------------------------------------------------------------------------

def train_step(mod: torch.nn.Module):
    """A function of (*params, x) returning the gradients of ``mod(x).sum()`` w.r.t. the params."""
    names = [n for n, _ in mod.named_parameters()]

    def step(*args):
        *params, x = args
        # The backward (and so the recomputation) runs inside the reparametrization: outside it, the recompute
        # would read the module's own parameters (traced as constants) instead of the traced ones.
        with stateless._reparametrize_module(mod, dict(zip(names, params))):
            loss = mod(x).sum()
            return torch.autograd.grad(loss, params)  # looked up at call time: _patch_autograd_grad replaces it

    return step


def module_step(make_module, *x_shape):
    """Builder: the train step of ``make_module(ctx)`` on a randn input (no grad) of ``x_shape``."""
    def build(ctx: BuildContext) -> Program:
        mod = ctx.module(make_module(ctx))
        params = tuple(p.detach().requires_grad_() for p in mod.parameters())
        return Program(train_step(mod), (*params, ctx.randn(*x_shape, requires_grad=False)))

    return build


# --- graph facts --------------------------------------------------------------------------------------------------

def _nodes(run) -> list[fx.Node]:
    return list(run.graphs["traced"][0].graph.nodes)


def backward_region_count(gm: fx.GraphModule) -> int:
    """Maximal contiguous runs of nodes whose ``autograd_backward`` meta is truthy."""
    count, inside = 0, False
    for n in gm.graph.nodes:
        bwd = bool(n.meta.get("autograd_backward"))
        count += bwd and not inside
        inside = bwd
    return count


def expect_sequence(run, expected: list[tuple[str, object]]) -> None:
    """(node name, target) pairs occur in the traced graph in this order, other nodes possibly between them."""
    __tracebackhide__ = True
    i = first_missing_in_order([(n.name, n.target) for n in _nodes(run)], expected)
    if i is not None:
        raise AssertionError(f"{run.cell.id}: expected node {expected[i][0]} = {expected[i][1]} in the traced graph "
                             f"after {[w[0] for w in expected[:i]]} (in order {[w[0] for w in expected]}), "
                             f"saw:\n{run.texts['traced']}")


def node(run, name: str) -> fx.Node:
    for n in _nodes(run):
        if n.name == name:
            return n
    raise AssertionError(f"{run.cell.id}: expected a node named {name!r} in the traced graph, saw:\n{run.texts['traced']}")


def args_of(run, name: str) -> list:
    return [a.name if isinstance(a, fx.Node) else a for a in node(run, name).args]


def expect_returns(run, names: list[str]) -> None:
    __tracebackhide__ = True
    out = [n for n in _nodes(run) if n.op == "output"][0]
    expect_equal(f"{run.cell.id}: values returned by the traced graph",
                 [a.name if isinstance(a, fx.Node) else a for a in out.args[0]], names)


# --- the sin(x @ W) model (items 67, 73-75) -----------------------------------------------------------------------

class _SinMM(torch.nn.Module):
    def __init__(self, checkpoint, body=None, **ckpt_kwargs):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(4, 4))
        self.checkpoint, self.body, self.ckpt_kwargs = checkpoint, body or (lambda h: h), ckpt_kwargs

    def forward(self, x):
        return self.checkpoint(lambda x: self.body(torch.sin(x @ self.W)), x, use_reentrant=False, **self.ckpt_kwargs)


def _mm_prefer_recompute_else_save(ctx, func, *args, **kwargs):
    return CheckpointPolicy.PREFER_RECOMPUTE if func is aten.mm.default else CheckpointPolicy.MUST_SAVE


def _sac_context():
    return create_selective_checkpoint_contexts(_mm_prefer_recompute_else_save)


sin_mm = module_step(lambda ctx: _SinMM(ctx.checkpoint), 2, 4)
sac_sin_mm = module_step(lambda ctx: _SinMM(ctx.checkpoint, context_fn=_sac_context), 2, 4)
dropout_sin_mm = module_step(lambda ctx: _SinMM(ctx.checkpoint, body=lambda h: torch.nn.functional.dropout(h, p=0.5),
                                                preserve_rng_state=True), 2, 4)


def seq_nr_shared_by_forward_and_backward(backward_flag):
    """Check: the seq_nr values of backward call_function nodes (``backward_flag(node)`` truthy) equal those of the
    forward ones, and neither set is empty."""
    def check(run) -> None:
        fwd, bwd = set(), set()
        for n in _nodes(run):
            if n.op == "call_function" and "seq_nr" in n.meta:
                (bwd if backward_flag(n) else fwd).add(n.meta["seq_nr"])
        if not fwd or not bwd:
            raise AssertionError(f"{run.cell.id}: expected seq_nr on forward and on backward nodes, saw forward "
                                 f"{sorted(fwd)}, backward {sorted(bwd)}:\n{run.texts['traced']}")
        expect_equal(f"{run.cell.id}: seq_nr values of backward nodes (must be those of the forward nodes)", bwd, fwd)

    return check


def _everything_recomputed(run) -> None:
    expect_sequence(run, [("mm", aten.mm.default), ("sin", aten.sin.default), ("sum_1", aten.sum.default),
                          ("ones_like", aten.ones_like.default), ("expand", aten.expand.default),
                          ("mm_1", aten.mm.default), traced_detach("detach"), traced_detach("detach_1"),
                          ("cos", aten.cos.default), ("mul", aten.mul.Tensor), ("t", aten.t.default),
                          ("mm_2", aten.mm.default)])
    expect_equal(f"{run.cell.id}: arguments of mm (x @ W)", args_of(run, "mm"), ["arg1_1", "arg0_1"])
    expect_equal(f"{run.cell.id}: arguments of expand", args_of(run, "expand"), ["ones_like", [2, 4]])
    expect_equal(f"{run.cell.id}: arguments of the recomputed mm_1", args_of(run, "mm_1"), ["arg1_1", "arg0_1"])
    expect_equal(f"{run.cell.id}: arguments of t (x transposed)", args_of(run, "t"), ["arg1_1"])
    expect_equal(f"{run.cell.id}: count of aten.mm.default", count_of(run, "traced", "aten.mm.default"), 3)
    expect_returns(run, ["mm_2"])


def _sin_saved_mm_recomputed(run) -> None:
    expect_sequence(run, [("mm", aten.mm.default), ("sin", aten.sin.default), traced_detach("detach"),
                          ("sum_1", aten.sum.default), ("mm_1", aten.mm.default), traced_detach("detach_1"),
                          traced_detach("detach_2"), ("cos", aten.cos.default), ("mul", aten.mul.Tensor),
                          ("t", aten.t.default), ("mm_2", aten.mm.default)])
    nodes = _nodes(run)
    sin = node(run, "sin")
    expect_equal(f"{run.cell.id}: the node right after sin (the MUST_SAVE save of sin)",
                 (nodes[nodes.index(sin) + 1].name, args_of(run, _d("detach"))), (_d("detach"), ["sin"]))
    expect_equal(f"{run.cell.id}: users of the saved detach(sin) (its result is discarded)", len(node(run, _d("detach")).users), 0)
    expect_equal(f"{run.cell.id}: count of aten.sin.default (sin is saved, not recomputed)",
                 count_of(run, "traced", "aten.sin.default"), 1)
    expect_returns(run, ["mm_2"])


def _two_independent_dropout_masks(run) -> None:
    expect_sequence(run, [("mm", aten.mm.default), ("sin", aten.sin.default), ("empty_like", aten.empty_like.default),
                          ("bernoulli_", aten.bernoulli_.float), ("div_", aten.div_.Scalar), ("mul", aten.mul.Tensor),
                          ("mm_1", aten.mm.default), ("empty_like_1", aten.empty_like.default),
                          ("bernoulli__1", aten.bernoulli_.float), ("div__1", aten.div_.Scalar),
                          ("mul_1", aten.mul.Tensor), ("cos", aten.cos.default), ("mul_2", aten.mul.Tensor),
                          ("mm_2", aten.mm.default)])
    for name in ("div_", "div__1"):
        expect_equal(f"{run.cell.id}: the scalar of {name} (keep probability)", args_of(run, name)[1], 0.5)
    expect_equal(f"{run.cell.id}: arguments of bernoulli_ and bernoulli__1 (each draws its own mask)",
                 (args_of(run, "bernoulli_")[0], args_of(run, "bernoulli__1")[0]), ("empty_like", "empty_like_1"))
    expect_equal(f"{run.cell.id}: count of aten.bernoulli_.float (forward + independent recompute)",
                 count_of(run, "traced", "aten.bernoulli_.float"), 2)
    expect_equal(f"{run.cell.id}: arguments of mul_1 (the gradient through the recomputed mask)",
                 args_of(run, "mul_1")[1], "div__1")
    expect_equal(f"{run.cell.id}: the chain from the recomputed mm to the cos of mul_2",
                 [args_of(run, n) for n in ("mul_2", "cos", _d("detach_1"), _d("detach"))],
                 [["mul_1", "cos"], [_d("detach_1")], [_d("detach")], ["mm_1"]])
    expect_equal(f"{run.cell.id}: arguments of mm_2 (x^T @ grad)", args_of(run, "mm_2"), ["t", "mul_2"])
    expect_returns(run, ["mm_2"])


# --- backward-tag leakage (items 70, 71) and the MLP (item 72) ----------------------------------------------------

def _grad_then_neg(backward: str):
    def build(ctx: BuildContext) -> Program:
        def fn(x):
            with fx.traceback.annotate({"ac_region_id": 0}):
                y = torch.sin(x)
                if backward == "grad":
                    (g,) = torch.autograd.grad(y.sum(), (x,))
                else:
                    y.sum().backward()
                return torch.neg(y)

        return Program(fn, (ctx.randn(4, 4),))

    return build


def _neg_has_no_backward_tag(run) -> None:
    nodes = _nodes(run)
    tagged = [n.name for n in nodes if n.meta.get("autograd_backward")]
    if not tagged:
        raise AssertionError(f"{run.cell.id}: expected nodes with autograd_backward meta, saw none:\n{run.texts['traced']}")
    negs = [n for n in nodes if n.target is aten.neg.default]
    expect_equal(f"{run.cell.id}: number of aten.neg.default nodes", len(negs), 1)
    expect_equal(f"{run.cell.id}: autograd_backward meta of the neg after the backward call",
                 negs[0].meta.get("autograd_backward", False), False)
    expect_equal(f"{run.cell.id}: custom meta of the neg", negs[0].meta.get("custom"), {"ac_region_id": 0})


class _ResidualMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)) for _ in range(6))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def _single_backward_region(run) -> None:
    expect_equal(f"{run.cell.id}: contiguous backward regions (runs of autograd_backward nodes)",
                 backward_region_count(run.graphs["traced"][0]), 1)


# The non-strict tracing APIs are missing on older torch (2.11.0 has none, 2.12.1 lacks _patch_engine_backward):
# declared, so those releases skip the cases as "cannot run" instead of failing with AttributeError.
NON_STRICT_APIS = tuple(Requires.api(name, "non-strict tracing and its autograd patches (torch 2.13 has them)")
                        for name in NON_STRICT_PATCH_APIS.name.split(","))


def non_strict_case(name: str, build, catalogue: tuple[int, ...], **kwargs) -> Case:
    kwargs.setdefault("requires", NON_STRICT_APIS)
    return Case(name, build, catalogue=catalogue, runner=Runner.TRACE,
                axes=AxesSpec(partitioners=Partitioner.MIN_CUT, backends=Backend.AOT_EAGER), **kwargs)


TRACED_ONLY = Numerics.none("the case reads the traced graph's meta only (as upstream's test does)")


CASES = [
    non_strict_case("non_strict_backward_nodes_have_seq_nr", sin_mm, (67,),
                    expect=Expect(check=seq_nr_shared_by_forward_and_backward(
                        lambda n: n.meta.get("autograd_backward"))),
                    notes="backward nodes read by meta['autograd_backward'], where torch 2.13 records it"),
    non_strict_case("non_strict_backward_nodes_have_seq_nr_custom_meta", sin_mm, (67,),
                    expect=Expect(check=seq_nr_shared_by_forward_and_backward(
                        lambda n: (n.meta.get("custom") or {}).get("autograd_backward"))),
                    notes="as upstream reads it: meta['custom']['autograd_backward'], newer than torch 2.13 "
                          "(see known_failures.toml)"),
    non_strict_case("non_strict_patch_autograd_grad_does_not_leak_backward_tag", _grad_then_neg("grad"), (70,),
                    numerics=TRACED_ONLY, expect=Expect({"traced": {NEG: 1}}, check=_neg_has_no_backward_tag)),
    non_strict_case("non_strict_patch_engine_backward_does_not_leak_backward_tag", _grad_then_neg("backward"), (71,),
                    trace=Trace(patch=Patch.ENGINE_BACKWARD), numerics=TRACED_ONLY,
                    expect=Expect({"traced": {NEG: 1}}, check=_neg_has_no_backward_tag)),
    non_strict_case("non_strict_mlp_single_contiguous_backward_region",
                    module_step(lambda ctx: _ResidualMLP(), 4, 16, 32), (72,),
                    expect=Expect(check=_single_backward_region), checkpoint=Checkpoint.NONE),
    non_strict_case("non_strict_checkpoint_traces_through_eager_ac", sin_mm, (73,),
                    expect=Expect(check=_everything_recomputed)),
    non_strict_case("non_strict_sac_traces_through_eager_ac", sac_sin_mm, (74,), checkpoint=Checkpoint.SAC,
                    expect=Expect(check=_sin_saved_mm_recomputed)),
    non_strict_case("non_strict_checkpoint_with_rng_op", dropout_sin_mm, (75,),
                    trace=Trace(patch=None, node_meta=False, seed=42), expect=Expect(check=_two_independent_dropout_masks),
                    numerics=Numerics.none("make_fx drops get/set_rng_state, so the recompute draws a second, different "
                                           "mask and the traced graph is not equivalent to eager (a known limitation "
                                           "upstream records)")),
]

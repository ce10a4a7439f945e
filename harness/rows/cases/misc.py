"""Area "misc": checkpointing corner cases (CATALOGUE.md items 16, 35, 39, 43, 44, 62).

Graph breaks inside a checkpointed function (16), list inputs and outputs (35), a body returning the same tensor twice
(39), frozen-dataclass pytree inputs and outputs (43), ``record_function`` inside a region (44), and compiled submodules
under an eager checkpoint wrapper, which must not run into the recompile limit (62).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import torch
import torch.nn as nn
import torch.utils._pytree as pytree

from harness.core.case import (MIN_CUT_ONLY, NON_REENTRANT_COMPOSITIONS, REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, AxesSpec, BuildContext, Case, Checkpoint, CompileSpec, Composition,
                              Decompositions, Expect, Partitioner, Program)
from harness.core.checks import expect_equal, op_counts
from harness.rows.cases import FORMER_CUSTOM

TAG = "higher_order.tag_activation_checkpoint"


# --- 16: graph breaks inside the checkpointed function --------------------------------------------------------------

def _graph_break_body(x, y):
    torch._dynamo.graph_break()
    a = torch.sigmoid(torch.matmul(x, y))
    torch._dynamo.graph_break()
    return torch.cos(a)


def graph_breaks_inside(ctx: BuildContext) -> Program:
    def fn(x, y):
        return torch.cos(ctx.checkpoint(_graph_break_body, torch.sin(x), y, use_reentrant=False))

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


def _call_ops(gms) -> int:
    """Upstream's CompileCounter op_count: nodes whose op is call_function / call_method / call_module."""
    return sum(1 for gm in gms for n in gm.graph.nodes if "call" in n.op)


def _two_frames_sin_and_cos(run) -> None:
    # Dynamo falls back to eager for the checkpoint call: the outer frame's sin and its resume function's cos are the graphs.
    expect_equal(f"{run.cell.id}: call ops over all Dynamo graphs (CompileCounter.op_count)",
                 _call_ops(run.graphs["dynamo"]), 2)
    expect_equal(f"{run.cell.id}: top-level op of each Dynamo graph",
                 [sorted(op_counts([gm])) for gm in run.graphs["dynamo"]], [["torch.sin"], ["torch.cos"]])


# --- 35: list inputs and outputs -------------------------------------------------------------------------------------

class _ListModule(nn.Module):
    def forward(self, x, ys):
        a = torch.sin(x)  # noqa: F841 (unused on purpose, as upstream)
        return x, [torch.cos(ys[0]), torch.cos(ys[1])]


def list_inputs(ctx: BuildContext) -> Program:
    mod = _ListModule()

    def fn(x, ys):
        return ctx.checkpoint(mod, x, ys, use_reentrant=True)

    # No gradients, as upstream: reentrant checkpoint does not see tensors inside a list argument.
    return Program(fn, (ctx.randn(4, 4, requires_grad=False),
                        [ctx.randn(4, 4, requires_grad=False), ctx.randn(4, 4, requires_grad=False)]))


# --- 39: the same tensor returned twice ----------------------------------------------------------------------------

def _sin_twice(x):
    y = torch.sin(x)
    return y, y


def same_element_twice(ctx: BuildContext) -> Program:
    return Program(lambda x: ctx.checkpoint(_sin_twice, x, use_reentrant=True), (ctx.randn(4, 4),))


def _one_hop_output(run) -> None:
    gm = run.graphs["dynamo"][0]
    (hop,) = [n for n in gm.graph.nodes if n.target is torch.ops.higher_order.tag_activation_checkpoint]
    body = getattr(gm, hop.args[0].target)
    body_ops = [(n.name, str(getattr(n.target, "__name__", n.target))) for n in body.graph.nodes if n.op == "call_function"]
    expect_equal(f"{run.cell.id}: call_function nodes of the checkpoint body", body_ops, [("y", "sin")])
    expect_equal(f"{run.cell.id}: values the checkpoint body returns", [a.name for a in body.graph.output_node().args[0]], ["y"])
    expect_equal(f"{run.cell.id}: hop kwargs", dict(hop.kwargs), {"use_reentrant": True})
    getitems = [(n.name, n.args[1]) for n in gm.graph.nodes if n.op == "call_function" and n.args and n.args[0] is hop]
    expect_equal(f"{run.cell.id}: getitems of the checkpoint output (the duplicate is de-duplicated)", getitems,
                 [("getitem", 0)])
    expect_equal(f"{run.cell.id}: top-level return", [a.name for a in gm.graph.output_node().args[0]], ["getitem"])


# --- 43: frozen dataclass pytree input and output ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataIn:
    x: torch.Tensor


@dataclasses.dataclass(frozen=True)
class DataOut:
    y: torch.Tensor


class _DataclassMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 4))

    def forward(self, inp: DataIn) -> DataOut:
        return DataOut(y=self.net(inp.x))


def dataclass_io(ctx: BuildContext) -> Program:
    mod = ctx.module(_DataclassMLP())

    def fn(inp):
        return ctx.checkpoint(mod.forward, inp, use_reentrant=False, preserve_rng_state=True)

    return Program(fn, (DataIn(x=ctx.randn(2, 4)),), module=mod)


# Registered once, for the process: every run of the case (eager, compiled, its baselines) needs DataIn and DataOut as
# pytree nodes, and nothing else uses these two classes.
pytree.register_dataclass(DataIn)
pytree.register_dataclass(DataOut)


def _returns_dataout(run) -> None:
    if not isinstance(run.compiled.raw, DataOut):
        raise AssertionError(f"{run.cell.id}: expected the compiled function to return a DataOut, "
                             f"saw {type(run.compiled.raw).__name__}")


# --- 44: record_function inside the region -------------------------------------------------------------------------

def _profiled_body(x, y):
    with torch.profiler.record_function("matmul_region"):
        return torch.sigmoid(torch.matmul(x, y))


def record_function_inside(ctx: BuildContext) -> Program:
    def fn(x, y):
        return ctx.checkpoint(_profiled_body, torch.sin(x), y, use_reentrant=False)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


# --- 62: compiled submodules under an eager checkpoint wrapper ------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """Three residual sublayers, each RMSNorm -> Linear without bias."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.norm1, self.proj1 = RMSNorm(dim), nn.Linear(dim, dim, bias=False)
        self.norm2, self.proj2 = RMSNorm(dim), nn.Linear(dim, dim, bias=False)
        self.norm3, self.proj3 = RMSNorm(dim), nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        x = x + self.proj1(self.norm1(x))
        x = x + self.proj2(self.norm2(x))
        return x + self.proj3(self.norm3(x))


class EagerCheckpointWrapper(nn.Module):
    def __init__(self, block: nn.Module, checkpoint):
        super().__init__()
        self.block, self.checkpoint = block, checkpoint

    def forward(self, x):
        return self.checkpoint(self.block, x, use_reentrant=False)


RECOMPILE_LIMIT = 2


def _compiled_class(gm: torch.fx.GraphModule) -> str:
    """Which child class a Dynamo graph belongs to (RMSNorm computes an rsqrt, Linear calls linear)."""
    names = {getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function"}
    return "RMSNorm" if "rsqrt" in names else "Linear" if "linear" in names else f"other {sorted(names)}"


def compiled_submodules_in_eager_checkpoint(ctx: BuildContext) -> Program:
    """The block's children each compiled (``module.compile()``, through ``ctx.compile``) under an eager checkpoint
    of the whole block: compiled blocks in an eager, checkpointed model."""
    block = ctx.module(Block())
    for child in block.children():
        ctx.compile(child)
    model = EagerCheckpointWrapper(block, ctx.checkpoint)
    return Program(model, (ctx.randn(4, 32),), module=model)


def _compiles(run) -> dict[str, int]:
    return dict(sorted(Counter(_compiled_class(g) for g in run.graphs.get("dynamo", [])).items()))


def _no_recompile(run) -> None:
    # Forward and the recompute in backward (and the three instances of a class) share one compile per class:
    # any recompile here is what drives real models into the recompile limit.
    compiles = _compiles(run)
    if compiles.get("RMSNorm") != 1 or any(v != 1 for v in compiles.values()):
        raise AssertionError(f"{run.cell.id}: expected each compiled child class to compile exactly once "
                             f"(RMSNorm at least), saw compiles per class {compiles}")


def _every_child_class_compiled(run) -> None:
    expect_equal(f"{run.cell.id}: compiles per child class of the block", _compiles(run),
                 {"Linear": 1, "RMSNorm": 1})


CASES = [
    # Compositions (issue 27 item 1, nightly): where the region's arguments are a list or a dataclass, not the
    # reentrant checkpoint (it does not see tensors in nested structures: its docstring).
    Case("graph_breaks_inside_checkpoint", graph_breaks_inside, catalogue=(16,), compile=CompileSpec(fullgraph=False),
         axes=AxesSpec(compositions=NON_REENTRANT_COMPOSITIONS),
         expect=Expect({"dynamo": {TAG: 0, "torch.sin": 1, "torch.cos": 1}}, counters={"graphs": 2},
                       check=_two_frames_sin_and_cos)),
    Case("list_inputs", list_inputs, catalogue=(35,), checkpoint=Checkpoint.REENTRANT,
         compile=CompileSpec(backward=False, decompositions=Decompositions.INDUCTOR),
         expect=Expect({"dynamo": {TAG: 1}, "inference": {"aten.cos.default": 2}})),
    Case("return_same_element_twice", same_element_twice, catalogue=(39,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(compositions=REENTRANT_COMPOSITIONS),
         expect=Expect({"dynamo": {TAG: 1, "operator.getitem": 1, "torch.sin": 1}}, check=_one_hop_output)),
    Case("frozen_dataclass_pytree_output", dataclass_io, catalogue=(43,), axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR),
         expect=Expect({"dynamo": {TAG: 1}}, check=_returns_dataout),
         # in make test besides: a dataclass input through a compiled block and the run-time probes
         selection=dataclasses.replace(FORMER_CUSTOM, fast_axes=("min_cut-aot_eager-cpu-float32-checkpoint_of_compile",))),
    Case("checkpoint_with_record_function", record_function_inside, catalogue=(44,),
         axes=AxesSpec(partitioners=Partitioner.DEFAULT, compositions=NON_REENTRANT_COMPOSITIONS),
         compile=CompileSpec(config={"dynamo": {"capture_profiler_record_function": True}}),
         expect=Expect({"fw": {"profiler._record_function_enter_new.default": 1}})),
    *[Case(name, compiled_submodules_in_eager_checkpoint, catalogue=(62,), checkpoint=Checkpoint.EAGER_WRAPPER,
           axes=MIN_CUT_ONLY, expect=Expect(check=check), goldens=("dynamo",),
           # A hit of the recompile limit would silently fall back to eager (numerics would still match): an error.
           compile=CompileSpec(fullgraph=False, composition=Composition.COMPILE_INSIDE, config={"dynamo": {
               "skip_fwd_side_effects_in_bwd_under_checkpoint": True, "recompile_limit": RECOMPILE_LIMIT,
               "fail_on_recompile_limit_hit": True}}))
      for name, check in (("compile_submodules_in_checkpoint_wrapper", _no_recompile),
                          # nn.Linear.compile() compiles nothing on torch 2.13 (known failure, see findings/).
                          ("compile_submodules_in_checkpoint_wrapper_every_child", _every_child_class_compiled))],
]

"""Area "memory_budget": ``torch.autograd.graph.region_activation_memory_budget`` reduces activation memory
(CATALOGUE.md items 48, 49, 54).

On CUDA (``make test-cuda``) the cells measure what upstream measures: the change of
``torch.cuda.memory_stats()["requested_bytes.all.current"]`` across a forward (after a warm-up forward+backward).
On CPU the same idea is checked on the partition itself: the activation bytes the forward saves for backward
(harness/core/analysis.py: saved tensors that are not inputs or parameters).  No budget: > 0; budget 0.0: exactly 0;
two regions split by a graph break each follow their own budget (item 49's ordering, and per region exactly);
a budget around a nested_compile_region call reaches into the invoke_subgraph body (item 54).

Two rules of the global ``activation_memory_budget`` (torch/_functorch/config.py) on a chain of three mm
(``mm_chain``), each a fast cell that kills a fault of the kit (docs/faults.md) nothing else in ``make test`` kills:

* ``budget_op_list_mm_saved`` (budget 0.5): an op-list SAC region (``create_selective_checkpoint_contexts([mm])``:
  "equivalent to a policy returning ``CheckpointPolicy.MUST_SAVE`` for the specified operations") keeps its mm saved
  under a budget: "Use ``MUST_*`` over ``PREFER_*`` to indicate that the policy should not be overridden by other
  subsystems like `torch.compile`" (``CheckpointPolicy``, torch/utils/checkpoint.py), and the partitioner keeps
  MUST_SAVE nodes out of the knapsack (``choose_saved_values_set``'s ``must_save_nodes``).  No mm in the backward
  beyond the six of the gradients (a PREFER_SAVE mm, or a MUST_SAVE one offered to the knapsack, is traded away);
* ``budget_mm_chain_recomputes_one`` (budget 0.7, no AC): the partitioner is "choosing the fastest option that saves
  less activations than the memory budget [...] It solves a 0-1 knapsack to find the minimum recompute necessary"
  (config.py).  Its aggressive min-cuts ban recomputing compute-intensive ops, so only the knapsack trades an mm;
  at 0.7 it recomputes one (seven mm in the backward on torch 2.13), where a min-cut free to recompute every mm
  returns a partition that recomputes all three (nine) although one suffices.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch.utils.checkpoint import create_selective_checkpoint_contexts

from harness.core import analysis
from harness.core.case import (AxesSpec, BuildContext, Case, Checkpoint, CompileSpec, Expect, Needs, Numerics,
                               Partitioner, Program, Requires, Runner, Selection)
from harness.core.checks import expect_equal

BUDGET_API = "torch.autograd.graph.region_activation_memory_budget"
CPU_WIDTH, CUDA_WIDTH = 64, 1000  # upstream: Linear(1000, 1000); the CPU cells read bytes off graphs, so any width
NO_SUBGRAPH_INLINE = {"dynamo": {"inline_single_use_invoke_subgraph": False}}


def _budget(value):
    import contextlib

    # The context manager raises in eager ("only inside a torch.compile region"): the eager references run without it.
    if value is None or not torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.autograd.graph.region_activation_memory_budget(value)


def _layers(ctx: BuildContext, n: int, width: int) -> torch.nn.Sequential:
    mods = []
    for _ in range(n):
        mods += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return ctx.module(torch.nn.Sequential(*mods))


def whole_model(budget, width=CPU_WIDTH):
    """Item 48: 4 x (Linear -> relu), then sum, optionally under one budget."""
    def build(ctx: BuildContext) -> Program:
        model = _layers(ctx, 4, width)

        def fn(x):
            with _budget(budget):
                return model(x).sum()

        return Program(fn, (ctx.randn(width, width),), module=model)

    return build


def per_region(a, b, width=CPU_WIDTH):
    """Item 49: two regions of 2 x (Linear -> relu), separated by a graph break, each under its own budget."""
    def build(ctx: BuildContext) -> Program:
        first, second = _layers(ctx, 2, width), _layers(ctx, 2, width)
        model = torch.nn.Sequential(first, second)

        def fn(x):
            with _budget(a):
                h = first(x)
            torch._dynamo.graph_break()
            with _budget(b):
                return second(h).sum()

        return Program(fn, (ctx.randn(width, width),), module=model)

    return build


def subgraph(budget, width=CPU_WIDTH):
    """Item 54: a nested_compile_region running 4 x (Linear -> relu); the whole forward optionally under the budget."""
    def build(ctx: BuildContext) -> Program:
        model = _layers(ctx, 4, width)

        @torch.compiler.nested_compile_region
        def region(x):
            return model(x)

        def fn(x):
            with _budget(budget):
                return region(x).sum()

        return Program(fn, (ctx.randn(width, width),), module=model)

    return build


def mm_chain(op_list_sac: bool):
    """x -> mm -> relu -> mm -> sin -> mm -> cos: three mm whose outputs the backward needs; optionally the whole chain
    in one op-list SAC region saving mm."""
    def chain(x, w1, w2, w3):
        return torch.mm(torch.mm(torch.mm(x, w1).relu(), w2).sin(), w3).cos()

    def build(ctx: BuildContext) -> Program:
        if not op_list_sac:
            return Program(chain, tuple(ctx.randn(16, 16) for _ in range(4)))
        context_fn = functools.partial(create_selective_checkpoint_contexts, [torch.ops.aten.mm.default])

        def fn(*args):
            return ctx.checkpoint(chain, *args, use_reentrant=False, context_fn=context_fn)

        return Program(fn, tuple(ctx.randn(16, 16) for _ in range(4)))

    return build


# --- CPU checks on saved activation bytes ----------------------------------------------------------------------

def activation_bytes(expect_zero: bool):
    def check(run) -> None:
        __tracebackhide__ = True
        a = analysis.of(run)
        seen = a.activation_bytes
        if expect_zero:
            expect_equal(f"{run.cell.id}: activation bytes saved for backward under budget 0.0 (inputs and parameters "
                         f"aside; saved: {[(s.name, s.kind) for s in a.saved]})", seen, 0)
        elif not seen:
            raise AssertionError(f"{run.cell.id}: expected activation bytes > 0 without a budget, saw {seen}")
    return check


PER_REGION = {(1.0, 1.0): "both_save", (0.0, 1.0): "a_recompute", (1.0, 0.0): "b_recompute", (0.0, 0.0): "both_recompute"}


def _region_bytes(run, kind: str = "activation_bytes") -> list[int]:
    return [getattr(g, kind) for g in analysis.of(run).graphs]


def per_region_check(a_budget, b_budget):
    def check(run) -> None:
        __tracebackhide__ = True
        regions = _region_bytes(run)
        made = _region_bytes(run, "intermediate_bytes")  # region b's input is region a's output:
        # saved under any budget (a graph input cannot be recomputed inside the graph), so budget 0.0 promises no
        # activation the region itself produced
        expect_equal(f"{run.cell.id}: number of partitioned regions (one per side of the graph break)", len(regions), 2)
        for label, budget, seen, own in (("region a", a_budget, regions[0], made[0]), ("region b", b_budget, regions[1], made[1])):
            if budget == 0.0:
                expect_equal(f"{run.cell.id}: {label} bytes of activations it produced, saved under budget 0.0", own, 0)
            elif not seen:
                raise AssertionError(f"{run.cell.id}: expected {label} activation bytes > 0 under budget {budget}, saw {seen}")
        if (a_budget, b_budget) != (0.0, 0.0):
            return
        # Item 49's ordering, over the four cells of the case family (run_cell adds them: Needs.related).
        total = {name: sum(_region_bytes(run.related[f"budget_per_region_{name}"])) for name in PER_REGION.values()}
        for bigger, smaller in (("both_save", "a_recompute"), ("both_save", "b_recompute"),
                                ("a_recompute", "both_recompute"), ("b_recompute", "both_recompute")):
            if not total[bigger] > total[smaller]:
                raise AssertionError(f"{run.cell.id}: expected activation bytes of {bigger} > {smaller}, "
                                     f"saw {total[bigger]} <= {total[smaller]} (all: {total})")
    return check


# --- CUDA: the allocator's view, as upstream measures it ---------------------------------------------------------

def cuda_variants(builder, budgets: dict):
    """Builder for ``Runner.MEMORY``: the program at the budget its variant names (``budgets``: variant -> budget),
    upstream's width."""
    return lambda ctx: builder(budgets[ctx.variant], CUDA_WIDTH)(ctx)


def cuda_check(relations):
    def check(run) -> None:
        __tracebackhide__ = True
        m = run.info["activation_memory"]
        for rel in relations:
            if not rel(m):
                raise AssertionError(f"{run.cell.id}: expected {rel.__doc__}, saw requested bytes per budget {m}")
    return check


def _rel(doc, f):
    f.__doc__ = doc
    return f


ZERO_OR_NONE = {"none": None, "0.0": 0.0}
PER_REGION_VARIANTS = {f"{a},{b}": (a, b) for a, b in PER_REGION}


CUDA_BASELINE_AND_ZERO = [_rel("activation memory > 0 without a budget", lambda m: m["none"] > 0),
                          _rel("activation memory == 0 under budget 0.0", lambda m: m["0.0"] == 0)]
CUDA_PER_REGION = [_rel(f"{a} > {b}", lambda m, a=a, b=b: m[a] > m[b])
                   for a, b in (("1.0,1.0", "0.0,1.0"), ("1.0,1.0", "1.0,0.0"), ("0.0,1.0", "0.0,0.0"),
                                ("1.0,0.0", "0.0,0.0"))]

NEEDS_BUDGET = Requires.api(BUDGET_API, "region activation memory budgets (torch 2.13 has them)")
CPU = AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu")
CUDA = AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cuda")
NEEDS_CUDA = Requires.cuda("measures torch.cuda.memory_stats (the CPU cells check the same idea on saved bytes)")
MEASURED = Numerics.none("a measurement of allocator bytes per budget, judged by its check")


def _per_region_cases() -> list[Case]:
    """The four budget pairs of item 49; the (0.0, 0.0) cell also checks the ordering over all four (Needs.related)."""
    family = {name: Case(f"budget_per_region_{name}", per_region(a, b), catalogue=(49,), checkpoint=Checkpoint.NONE,
                         axes=CPU, requires=NEEDS_BUDGET, compile=CompileSpec(fullgraph=False),
                         expect=Expect(check=per_region_check(a, b)))
              for (a, b), name in PER_REGION.items()}
    last = family["both_recompute"]
    family["both_recompute"] = dataclasses.replace(last, expect=dataclasses.replace(
        last.expect, needs=Needs(related=tuple(family.values()))))
    return list(family.values())


PER_REGION_CASES = _per_region_cases()

MM = "aten.mm.default"
BUDGET_RULES = [
    Case("budget_op_list_mm_saved", mm_chain(True), checkpoint=Checkpoint.SAC,
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu", budgets=0.5),
         expect=Expect({"fw": {MM: 3}, "bw": {MM: 6}}), goldens=(), selection=Selection(fast=(0.5,)),
         notes="op-list SAC (MUST_SAVE mm) under activation_memory_budget 0.5: no mm recomputed (module docstring)"),
    Case("budget_mm_chain_recomputes_one", mm_chain(False), checkpoint=Checkpoint.NONE,
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu", budgets=0.7),
         expect=Expect({"fw": {MM: 3}, "bw": {MM: 7}}), goldens=(), selection=Selection(fast=(0.7,)),
         notes="activation_memory_budget 0.7 on three mm: the knapsack recomputes one (module docstring)"),
]

CASES = [
    *BUDGET_RULES,
    Case("budget_whole_model_none", whole_model(None), catalogue=(48,), checkpoint=Checkpoint.NONE, axes=CPU,
         requires=NEEDS_BUDGET, expect=Expect(check=activation_bytes(False))),
    Case("budget_whole_model_zero", whole_model(0.0), catalogue=(48,), checkpoint=Checkpoint.NONE, axes=CPU,
         requires=NEEDS_BUDGET, expect=Expect(check=activation_bytes(True))),
    *PER_REGION_CASES,
    Case("budget_invoke_subgraph_none", subgraph(None), catalogue=(54,), checkpoint=Checkpoint.NONE, axes=CPU,
         requires=NEEDS_BUDGET, compile=CompileSpec(config=NO_SUBGRAPH_INLINE),
         expect=Expect(check=activation_bytes(False))),
    Case("budget_invoke_subgraph_zero", subgraph(0.0), catalogue=(54,), checkpoint=Checkpoint.NONE, axes=CPU,
         requires=NEEDS_BUDGET, compile=CompileSpec(config=NO_SUBGRAPH_INLINE),
         expect=Expect(check=activation_bytes(True))),
    Case("budget_whole_model_cuda_memory", cuda_variants(whole_model, ZERO_OR_NONE), catalogue=(48,),
         checkpoint=Checkpoint.NONE, axes=CUDA, runner=Runner.MEMORY, variants=tuple(ZERO_OR_NONE),
         requires=(NEEDS_CUDA, NEEDS_BUDGET), compile=CompileSpec(backward=False), numerics=MEASURED,
         expect=Expect(check=cuda_check(CUDA_BASELINE_AND_ZERO))),
    Case("budget_per_region_cuda_memory", cuda_variants(lambda pair, width: per_region(*pair, width=width),
                                                        PER_REGION_VARIANTS),
         catalogue=(49,), checkpoint=Checkpoint.NONE, axes=CUDA, runner=Runner.MEMORY,
         variants=tuple(PER_REGION_VARIANTS), requires=(NEEDS_CUDA, NEEDS_BUDGET), compile=CompileSpec(backward=False),
         numerics=MEASURED, expect=Expect(check=cuda_check(CUDA_PER_REGION))),
    Case("budget_invoke_subgraph_cuda_memory", cuda_variants(subgraph, ZERO_OR_NONE), catalogue=(54,),
         checkpoint=Checkpoint.NONE, axes=CUDA, runner=Runner.MEMORY, variants=tuple(ZERO_OR_NONE),
         requires=(NEEDS_CUDA, NEEDS_BUDGET), compile=CompileSpec(backward=False, config=NO_SUBGRAPH_INLINE),
         numerics=MEASURED, expect=Expect(check=cuda_check(CUDA_BASELINE_AND_ZERO))),
]

"""Area "budget_sweep": random ops at every budget of the sweep (issue 28 item 5), on models sized so that the
partitioner's choice moves with ``activation_memory_budget``.

One cell per budget of :data:`~harness.core.case.SWEEP_POINTS` (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1, 0.0), so
every invariant -- ``random_ops_replayed`` above all -- runs on the partition made at that budget.  The model is
findings/budget_interior_recomputes_random_op.py's: 4 x (Linear -> gelu -> dropout(0.1)), widths 128-512-128-512-128,
batch 64; at this size the min-cut and the knapsack save 7 different sets over the 10 budgets (5 with SAC; the ``sweep_check``
of the budget-1.0 cell asserts it and records the figures per budget: saved bytes, the peak estimate of
harness/core/peak.py, the knapsack's objective).  Two programs:

* ``sweep_dropout_mlp``: no checkpointing.  Every dropout is banned from recompute, yet at every budget in (0, 1)
  the knapsack trades some back and nothing replays their RNG state (pytorch/pytorch#190758, known failure
  budget-interior-recomputes-random-op); at 0.0 the inputs-only partition recomputes them all (known failure
  budget-zero-recomputes-random-op).  The gradients are then wrong, so numerics fail beside the invariant.
* ``sweep_dropout_mlp_sac``: the whole stack in one selectively checkpointed region, matmuls PREFER_SAVE (the
  knapsack may still drop them), dropouts PREFER_RECOMPUTE: replayed from a saved RNG state at every budget.

The budget-1.0 cells are sweep points (invariants.budget_monotone, budget_knapsack_monotone).  In ``make test``: one
cell of each at the 0.9-0.99 end; the rest run in the nightly.  No goldens: judged by numerics, the invariants and
the sweep check.
"""

from __future__ import annotations

import torch

from harness.core import analysis, figures, peak
from harness.core.case import (SWEEP_POINTS, AxesSpec, BuildContext, Case, Checkpoint, CompileSpec, Expect, Needs,
                               Partitioner, Program, Selection)
from harness.core.checks import NotRun
from harness.rows.cases.budget_solvers import stack_fn

DIMS, BATCH, P = (128, 512, 128, 512, 128), 64, 0.1
# Distinct saved sets the sweep must show (on torch 2.13.0: 7 without AC, 5 with SAC): fewer means the model no longer
# moves the solver and the random-op invariants at the interior budgets check one partition many times.
MIN_DISTINCT = 4


class DropoutMLP(torch.nn.Module):
    """findings/budget_interior_recomputes_random_op.py's model."""

    def __init__(self, dims=DIMS, p=P):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.p = p

    def forward(self, x):
        for lin in self.layers:
            x = torch.nn.functional.dropout(torch.nn.functional.gelu(lin(x)), self.p, True)
        return x


def _build(sac: bool):
    def build(ctx: BuildContext) -> Program:
        model = ctx.module(DropoutMLP())
        return Program(stack_fn(ctx, model, sac), (ctx.randn(BATCH, DIMS[0]),), module=model)
    return build


def sweep_figures(run) -> dict:
    """Per budget: the saved set, saved activation bytes, the peak estimate and the knapsack's objective (None: no
    knapsack posed at that budget)."""
    out = {}
    for b, r in sorted(run.at_budget.items(), reverse=True):
        a = analysis.of(r)
        est = peak.estimate(r.graphs["fw"][-1], r.graphs["bw"][-1])
        calls = r.info.get("knapsack", [])
        out[b] = {"saved": tuple(sorted(s.name for s in a.saved)), "activation_bytes": a.activation_bytes,
                  "peak_bytes": est.peak_bytes, "objective": calls[-1].objective if calls else None}
    return out


def sweep_check(run) -> None:
    """The solver's choice varies across the sweep: at least MIN_DISTINCT distinct saved sets over SWEEP_POINTS, and a
    knapsack posed at some budget (else the model is too small to move the solver and the interior cells repeat one
    partition).  Only the budget-1.0 cell checks it (it is given the runs at every budget: Needs.budgets)."""
    __tracebackhide__ = True
    if run.cell.axes.budget != 1.0:
        raise NotRun("the sweep's variety is checked by the case's budget-1.0 cell, which is given every budget's run")
    seen = sweep_figures(run)
    run.info["sweep_figures"] = {b: {k: v for k, v in f.items() if k != "saved"} for b, f in seen.items()}
    distinct = {f["saved"] for f in seen.values()}
    table = "; ".join(f"{b}: {figures.fmt_bytes(f['activation_bytes'])} B saved, peak {f['peak_bytes']} B, "
                      f"knapsack objective {f['objective']}" for b, f in seen.items())
    if len(distinct) < MIN_DISTINCT or all(f["objective"] is None for f in seen.values()):
        raise AssertionError(f"{run.cell.id}: expected the partitioner's choice to vary across the sweep "
                             f"{SWEEP_POINTS} (>= {MIN_DISTINCT} distinct saved sets, a knapsack posed somewhere), saw "
                             f"{len(distinct)} distinct saved sets ({table})")


def _needs_sweep(axes) -> tuple[float, ...]:
    return SWEEP_POINTS if axes.budget == 1.0 else ()


def _case(name: str, sac: bool, fast: float, notes: str) -> Case:
    return Case(name, _build(sac), checkpoint=Checkpoint.SAC if sac else Checkpoint.NONE,
                axes=AxesSpec(partitioners=Partitioner.MIN_CUT, devices="cpu", budgets=SWEEP_POINTS),
                compile=CompileSpec(config={"functorch": {"enable_autograd_cache": False}}),
                expect=Expect(check=sweep_check, needs=Needs(budgets=_needs_sweep)), goldens=(),
                selection=Selection(fast=(fast,)), notes=notes)


CASES = [
    _case("sweep_dropout_mlp", False, 0.95, "no AC: the knapsack recomputes banned dropouts without an RNG replay "
          "(budgets in (0, 1): pytorch/pytorch#190758; 0.0: the inputs-only partition)"),
    _case("sweep_dropout_mlp_sac", True, 0.9, "SAC around the stack, matmuls PREFER_SAVE: dropouts replayed at every "
          "budget"),
]

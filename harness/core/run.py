"""A cell's complete run: what its runner records (harness/core/runners.py) plus what its verdicts declare they need
(:class:`~harness.core.case.Needs`: the invariants' and the case check's), so every verdict is a pure function of the
run and none compiles.

Needs are produced only where they mean something, as the verdicts that read them would decide: the no-AC baseline
for a run with a checkpointed region (from the runner's own no-AC run, else harness/core/baselines.py: cached on disk,
compiled on a miss), the budget sweep for a cell that is a point of it (``invariants.sweep_excluded``), whole runs at
other budgets and of related cases on request.  A need that cannot be produced is named in ``Run.unavailable`` with
the reason, which the verdict reports as "not run"; one whose compile crashed holds the exception, which fails the
verdicts that read it.
"""

from __future__ import annotations

import dataclasses
import time

from harness.core import analysis, baselines, invariants, oracles
from harness.core.case import SWEEP_POINTS, Cell, Needs, Runner
from harness.core.figures import Figures
from harness.core.pipeline import Run, baseline
from harness.core.runners import record

# Whole runs of the case whose cells ran last in this process, by budget: a cell that needs its case at other
# budgets takes the ones already run (the cells of a case run together, in budget order, on one worker).
_RECENT: dict = {}


def run_cell(cell: Cell, needs: Needs | None = None) -> Run:
    """Record ``cell`` with its case's runner, then add what ``needs`` asks (default: every invariant's needs and the
    case check's)."""
    run = record(cell)
    start = time.perf_counter()
    complete(run, invariants.NEEDS | oracles.NEEDS | cell.case.expect.needs if needs is None else needs)
    run.timings["baselines"] = time.perf_counter() - start  # ~0 on a warm baseline cache
    return run


def complete(run: Run, needs: Needs) -> Run:
    """Put into ``run`` what ``needs`` asks for (see the module docstring); returns ``run``."""
    budgets = needs.budgets_for(run.cell.axes)
    for name, wanted, produce in (("no_ac", needs.no_ac, _no_ac), ("sweep", needs.sweep, _sweep),
                                  ("budgets", bool(budgets), lambda r: _at_budgets(r, budgets)),
                                  ("related", bool(needs.related), lambda r: _related(r, needs.related)),
                                  ("evidence", needs.evidence, _evidence)):
        if wanted:
            try:
                produce(run)
            except Exception as e:  # noqa: BLE001 - a baseline that crashes fails the verdicts that read it
                run.unavailable[name] = e
    return run


def _checkpointed(run: Run) -> str | None:
    """Why ``run`` has no checkpointed region to compare with a baseline (None: it has one)."""
    a = analysis.of(run)
    if a is None:
        return "the run has no analysable joint and backward graph"
    if not any(g.policies for g in a.graphs):
        return "no checkpointed region in the compiled graphs"
    return None


def _standard(run: Run) -> str | None:
    case = run.cell.case
    if case.runner is not Runner.STANDARD or case.variants:
        return f"runner {case.runner}{' with variants' if case.variants else ''} makes no baseline compile of its own"
    return None


def _no_ac(run: Run) -> None:
    if run.no_ac is not None:  # the runner recorded the program without AC itself (export, a distributed rank)
        plain = analysis.of(run.no_ac)
        run.no_ac_figures = Figures.of(plain) if plain is not None else None
        if plain is None:
            run.unavailable["no_ac"] = "the runner's run without AC recorded no analysable backward"
        return
    why = _checkpointed(run) or _standard(run)
    if why:
        run.unavailable["no_ac"] = why
        return
    fig = baselines.figures(run.cell.case, dataclasses.replace(run.cell.axes, budget=None), False)
    if fig is None:
        run.unavailable["no_ac"] = "the same program compiled without AC recorded no analysable backward"
    run.no_ac_figures = fig


def _sweep(run: Run) -> None:
    why = invariants.sweep_excluded(run) or _standard(run)
    a = analysis.of(run)
    if why is None and (a is None or a.activation_bytes is None):
        why = "the run has no analysable graphs with concrete saved bytes"
    if why:
        run.unavailable["sweep"] = why
        return
    case, axes = run.cell.case, run.cell.axes
    for b in SWEEP_POINTS:
        if b == axes.budget:
            continue
        fig = baselines.figures(case, dataclasses.replace(axes, budget=b), True, from_run=run)
        if fig is None:
            run.unavailable["sweep"] = f"the cell at budget {b} recorded no analysable backward"
            return
        run.sweep[b] = fig


def _at_budgets(run: Run, budgets: tuple[float, ...]) -> None:
    """The case's whole runs at ``budgets``: this cell's, another cell's of the case run earlier in this process, this
    cell's joints partitioned again at that budget (``pipeline.repartition``), else a compile at that budget."""
    case, axes = run.cell.case, run.cell.axes
    if _RECENT.get("case") is not case:
        _RECENT.clear()
        _RECENT["case"] = case
    _RECENT[axes] = run
    for b in budgets:
        other = dataclasses.replace(axes, budget=b)
        run.at_budget[b] = (run if b == axes.budget else _RECENT.get(other) or baselines.repartitioned(run, b)
                            or baseline(case, other, True))


def _evidence(run: Run) -> None:
    """The references of the run-time oracles (harness/core/oracles.py), for a cell they judge."""
    axes = run.cell.axes
    case = run.cell.case
    exported = case.runner is Runner.EXPORTED_PROGRAM  # its runner probed the exported programs, with and without AC
    if not exported:
        if not oracles.judged_at_run_time(axes):
            return  # today's cells: the graph invariants judge, the oracles are not applied
        why = _standard(run)
        if why:
            run.unavailable["evidence"] = why
            return
    eager_axes = dataclasses.replace(axes, budget=None, export="")
    run.evidence["eager"] = oracles.evidence(case, eager_axes, True, compiled=False)
    run.evidence["eager_no_ac"] = oracles.evidence(case, eager_axes, False, compiled=False)
    if not exported:
        run.evidence["compiled_no_ac"] = oracles.evidence(case, axes, False, compiled=True)


def _related(run: Run, cases) -> None:
    for case in cases:
        run.related[case.name] = run if case.name == run.cell.case.name else baseline(case, run.cell.axes, True)

"""Issue 28 items 4 and 5: along a budget sweep (harness.core.case.SWEEP_POINTS, 0.9-0.99 included) the invariants
check what torch's partitioner guarantees to be monotone in activation_memory_budget and nothing more
(invariants.budget_knapsack_monotone; the peak estimate is shown not to be monotone, so it is recorded, never
asserted), and the random-op invariant runs at every budget of the sweep on models whose partition moves with the
budget (harness/rows/cases/budget_sweep.py).  The failing checks come from faults planted here, not from a live torch
bug."""

from __future__ import annotations

import dataclasses

import pytest
import torch._functorch.partitioners as partitioners

from synthetic_faults import knapsack_slower_above

from harness.core import analysis, invariants, peak, pipeline
from harness.core.case import BUDGET_SWEEP, SWEEP_POINTS, Axes, Cell, Needs
from harness.core.run import run_cell
from harness.rows import collect
from harness.rows.cases import all_cases, find_case

# A sweep cell without random ops whose knapsack is posed at 0.5, 0.3 and 0.1 (an uneven 4-layer MLP under dp/flops):
# its other budgets are partitioned again from its own joint graph, no compile each.
KNAPSACK_CELL = Cell(find_case("bs_mlp4_wide_plain__dp__flops"), Axes("min_cut", "aot_eager", "cpu", "float32", 1.0))


def _axes(budget):
    return Axes("min_cut", "aot_eager", "cpu", "float32", budget)


def _fires(check, run, *parts):
    with pytest.raises(AssertionError) as info:
        check(run)
    for part in (run.cell.id, *parts):
        assert part in str(info.value), f"expected {part!r} in the message of {check.__name__}, saw:\n{info.value}"


def test_the_sweep_covers_the_whole_range_without_new_cells():
    """The sweep's points include BUDGET_SWEEP's cells and the 0.9-0.99 end; the cells (and their ids) stay where
    they were: the sweep's extra points are needs of the anchor cells, not cells."""
    assert set(BUDGET_SWEEP) <= set(SWEEP_POINTS) and {0.99, 0.95, 0.9} <= set(SWEEP_POINTS), SWEEP_POINTS
    assert min(SWEEP_POINTS) == 0.0 and max(SWEEP_POINTS) == 1.0, SWEEP_POINTS
    matrix = {a.budget for case in all_cases() for a in collect.matrix_axes(case, "cpu")}
    assert matrix == {None, *BUDGET_SWEEP}, f"expected the slow matrix's budget cells unchanged, saw {sorted(matrix, key=str)}"


def test_knapsack_monotone_holds_and_fires_on_a_solver_slower_at_a_larger_budget(monkeypatch):
    """Item 4.  Would have caught, where main did not: a knapsack solver whose answer gets slower as the budget grows
    (planted: above capacity 0.4 it recomputes every banned node).  budget_monotone, main's only sweep invariant,
    stays quiet on it: the faulty budget 0.5 saves *less*, and saved bytes are all it read, at 1.0, 0.5 and 0.0."""
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    run = run_cell(KNAPSACK_CELL, needs=Needs(sweep=True))
    assert sorted(run.sweep) == sorted(set(SWEEP_POINTS) - {1.0}), f"expected every other sweep point, saw {sorted(run.sweep)}"
    posed = {b: len(f.knapsack) for b, f in run.sweep.items()}
    assert posed[0.5] and posed[0.3] and posed[0.1] and not posed[0.99], f"expected knapsacks at 0.5-0.1 only, saw {posed}"
    checks = invariants.budget_knapsack_monotone(run)
    assert checks > len(SWEEP_POINTS) - 3, f"expected the down-set and the objective pairs checked, saw {checks} checks"

    knapsack_slower_above(monkeypatch, 0.4)
    faulty = run_cell(KNAPSACK_CELL, needs=Needs(sweep=True))
    assert invariants.budget_monotone(faulty) == 2, "expected main's saved-bytes invariant to pass on the fault"
    _fires(invariants.budget_knapsack_monotone, faulty, "exact solver dp's objective", "not to decrease as the capacity "
           "grows", "at budget 0.1", "-> 0.0 at budget 0.5")


def test_knapsack_posed_above_a_budget_where_it_was_not_fires():
    """Rule 1 of budget_knapsack_monotone: the knapsack is posed for every interior budget up to a threshold."""
    run = run_cell(KNAPSACK_CELL, needs=Needs(sweep=True))
    run.sweep[0.99] = dataclasses.replace(run.sweep[0.99], knapsack=run.sweep[0.5].knapsack)  # posed at 0.99, not 0.95
    _fires(invariants.budget_knapsack_monotone, run, "to pose no more knapsacks", "0.95 -> 0.99")


def test_the_peak_estimate_is_not_monotone_in_the_budget():
    """Why budget_knapsack_monotone does not assert the peak (issue 28 item 4): on a 4-layer MLP with no random op
    and no defect, harness/core/peak.py's peak *rises* as the budget falls from 0.5 to 0.3 and from 0.1 to 0.0 (the
    recomputed intermediates are live in the backward beside the gradients; the budget bounds what is saved, not the
    peak), while the saved activation bytes fall.  A peak asserted monotone would fail this correct partition."""
    first = pipeline.compile_and_record(KNAPSACK_CELL.case, KNAPSACK_CELL.axes, ac=True, codegen=False)
    joints = [g.joint for g in analysis.of(first).graphs]
    at = {b: pipeline.repartition(first, b, joints) for b in (0.5, 0.3, 0.1, 0.0)}
    peaks = {b: peak.estimate(r.graphs["fw"][-1], r.graphs["bw"][-1]).peak_bytes for b, r in at.items()}
    saved = {b: analysis.of(r).activation_bytes for b, r in at.items()}
    assert saved[0.5] > saved[0.3] > saved[0.1] > saved[0.0], f"expected saved bytes to fall with the budget: {saved}"
    assert peaks[0.3] > peaks[0.5] and peaks[0.0] > peaks[0.1], f"expected the peak to rise twice as the budget falls: {peaks}"


def test_random_op_invariant_runs_at_every_budget_on_a_moving_partition(monkeypatch):
    """Item 5.  Main ran random_ops_replayed at budgets 1.0, 0.5 and 0.0 only, on models too small to move the
    knapsack, so a replay lost at a budget in between went unseen (pytorch#190758: budgets 0.99-0.1 recompute a
    dropout with fresh randomness; known_failures.toml now carries it on sweep_dropout_mlp's cells).  Here: the SAC dropout MLP has a cell at every sweep point, its partition differs
    across the sweep (sweep_check), the invariant runs at every budget, and it fires at each budget where the
    forward's RNG state is planted away (no functionalize_rng_ops)."""
    case = find_case("sweep_dropout_mlp_sac")
    budgets = sorted(c.axes.budget for c in collect.declared_cells(case, "cpu"))
    assert budgets == sorted(SWEEP_POINTS), f"expected a cell per sweep point, saw {budgets}"
    run = run_cell(Cell(case, _axes(1.0)), needs=case.expect.needs)
    assert sorted(run.at_budget) == sorted(SWEEP_POINTS), sorted(run.at_budget)
    case.expect.check(run)  # the choice varies: >= MIN_DISTINCT saved sets, a knapsack posed
    saved = {b: analysis.of(r).activation_bytes for b, r in run.at_budget.items()}
    assert len(set(saved.values())) >= 4, f"expected the saved bytes to differ across the sweep, saw {saved}"
    replays = {b: invariants.random_ops_replayed(r) for b, r in run.at_budget.items()}
    assert all(n == 4 for n in replays.values()), f"expected the 4 dropouts replayed at every budget, saw {replays}"

    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    monkeypatch.setattr(partitioners, "functionalize_rng_ops", lambda joint, fw, bw, num_sym_nodes: (fw, bw))
    for b in (0.99, 0.9, 0.5, 0.1):
        faulty = pipeline.compile_and_record(case, _axes(b), ac=True, codegen=False)
        _fires(invariants.random_ops_replayed, faulty, "is recomputed in the backward without the forward's RNG state")

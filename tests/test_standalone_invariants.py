"""The repro scripts' invariants with torch alone (harness/rows/fuzz/standalone.py, embedded in every fuzz finding's
script) agree with the harness's (harness/core/invariants.py): on recorded cells that hold every invariant, and on the
same cells perturbed (as tests/test_invariants.py perturbs them) or compiled under a synthetic fault so that one
invariant breaks, each side fails exactly the same invariants."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic_faults import knapsack_slower_above, recompute_tag_ignored
from test_invariants import _ac_computes_less, _ac_saves_more, _case, _replay_node, _set_policy

from harness.core import invariants, pipeline
from harness.core.case import Axes, Cell, Needs
from harness.core.checks import NotRun
from harness.core.pipeline import NOT_ANALYSED
from harness.core.run import run_cell
from harness.rows.cases import find_case
from harness.rows.fuzz import standalone

GRAPH_ONLY = ("must_save_not_recomputed", "recompute_tagged_not_saved", "random_ops_replayed")
COMPARING = ("ac_backward_does_no_less_work", "ac_saves_within_eager_bound")


def _analysed(run):
    return standalone.analyse(run.graphs, cse=run.cell.axes.partitioner == "min_cut")


def _standalone_fails(run, name) -> bool:
    gs = _analysed(run)
    if name in COMPARING:
        axes = dataclasses.replace(run.cell.axes, budget=None)
        return bool(getattr(standalone, name)(gs, _analysed(pipeline.compile_and_record(run.cell.case, axes, ac=False))))
    if name == "budget_monotone":
        sweep = [(b, gs if b == run.cell.axes.budget else _analysed(pipeline.compile_and_record(
            run.cell.case, dataclasses.replace(run.cell.axes, budget=b), ac=True))) for b in invariants.BUDGET_SWEEP]
        return bool(standalone.budget_monotone(sweep))
    if name == "budget_knapsack_monotone":
        sweep = [(b, [(c.memory, c.runtimes, c.max_memory, c.objective, c.saved) for c in pipeline.compile_and_record(
            run.cell.case, dataclasses.replace(run.cell.axes, budget=b), ac=True).info.get("knapsack", ())])
            for b in invariants.SWEEP_POINTS]
        return bool(standalone.budget_knapsack_monotone(sweep, invariants._solver(run)))
    return bool(getattr(standalone, name)(gs))


def _harness_fails(run, name) -> bool:
    try:
        getattr(invariants, name)(run)
    except AssertionError:
        return True
    except NotRun:  # nothing to check: the standalone check finds nothing wrong either
        return False
    return False


def _agree(run, names, broken):
    run.analysis = NOT_ANALYSED
    seen = {n: (_harness_fails(run, n), _standalone_fails(run, n)) for n in names}
    want = {n: (n in broken, n in broken) for n in names}
    assert seen == want, f"{run.cell.id}: expected (harness, standalone) failing exactly {sorted(broken)}; saw {seen}"


def _recomputed_mm_must_save(run):
    _set_policy(run, "mm", "MUST_SAVE")


def _saved_mm_must_recompute(run):
    _set_policy(run, "mm_1", "MUST_RECOMPUTE")


def _saved_mm_plain_ac(run):
    _set_policy(run, "mm", "PREFER_RECOMPUTE")


def _fresh_draw(run):
    bw, replay = _replay_node(run)
    replay.target, replay.args = replay.args[1], replay.args[2:]
    replay._rename("native_dropout")


def _unsaved_state(run):
    bw, replay = _replay_node(run)
    with bw.graph.inserting_before(replay):
        state = bw.graph.call_function(torch.ops.aten.clone.default, (replay.args[0],))
    replay.args = (state, *replay.args[1:])


@pytest.mark.parametrize("case, perturb, broken", [
    ("reference_block_sac_save_mm", None, ()),
    ("tags_sequential_layers", None, ()),
    ("reference_dropout_ac_oracle", None, ()),
    ("reference_block_full_ac", _recomputed_mm_must_save, ("must_save_not_recomputed",)),
    ("reference_block_sac_save_mm", _saved_mm_must_recompute, ("recompute_tagged_not_saved",)),
    ("reference_block_sac_save_mm", _saved_mm_plain_ac, ("recompute_tagged_not_saved",)),
    ("reference_dropout_ac_oracle", _fresh_draw, ("random_ops_replayed",)),
    ("reference_dropout_ac_oracle", _unsaved_state, ("random_ops_replayed",)),
], ids=lambda v: getattr(v, "__name__", v) if callable(v) else None)
def test_the_graph_invariants_agree(case, perturb, broken):
    run = run_cell(Cell(find_case(case), Axes()))
    if perturb is not None:
        perturb(run)
    _agree(run, GRAPH_ONLY, broken)


@pytest.mark.parametrize("build, broken", [(_ac_saves_more, ()), (_ac_computes_less, ("ac_backward_does_no_less_work",))],
                         ids=["ac_saves_more", "ac_computes_less"])
def test_the_comparing_invariants_agree(build, broken):
    run = run_cell(Cell(_case(f"meta_{build.__name__.strip('_')}", build), Axes()))
    _agree(run, COMPARING, broken)


def test_the_comparing_invariants_agree_under_a_fault(monkeypatch):
    """A partitioner that saves every PREFER_RECOMPUTE intermediate saves more than no AC plus the region inputs."""
    recompute_tag_ignored(monkeypatch)
    run = run_cell(Cell(find_case("reference_block_full_ac"), Axes()))
    _agree(run, (*COMPARING, "recompute_tagged_not_saved"), ("ac_saves_within_eager_bound", "recompute_tagged_not_saved"))


def test_the_budget_sweep_agrees(monkeypatch):
    """Under a partitioner that saves, at budget 0 only, every PREFER_RECOMPUTE intermediate besides its choice,
    saved bytes rise as the budget goes 0.5 -> 0: both sides fail budget_monotone; without the fault both hold."""
    import torch._functorch.partitioners as partitioners

    run = run_cell(Cell(find_case("reference_block_full_ac"), Axes(budget=0.5)))
    _agree(run, ("budget_monotone",), ())
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    real = partitioners.choose_saved_values_set

    def faulty(joint_graph, node_info, memory_budget=1):
        saved = list(real(joint_graph, node_info, memory_budget))
        if memory_budget != 0:
            return saved
        return saved + [n for n in joint_graph.nodes if n.op == "call_function" and n not in saved
                        and getattr(n.meta.get("recompute"), "name", "") == "PREFER_RECOMPUTE"
                        and isinstance(n.meta.get("val"), torch.Tensor) and node_info.is_required_fw(n)]

    monkeypatch.setattr(partitioners, "choose_saved_values_set", faulty)
    run = run_cell(Cell(find_case("reference_block_full_ac"), Axes(budget=0.5)))  # its sweep made under the fault
    _agree(run, ("budget_monotone",), ("budget_monotone",))


def test_the_knapsack_sweep_agrees(monkeypatch):
    """budget_knapsack_monotone (issue 28 item 4): on a sweep cell whose knapsack is posed at budgets 0.5-0.1 both
    sides hold; under a solver planted to keep nothing above capacity 0.4 (its objective falls as the budget grows)
    both fail."""
    cell = Cell(find_case("bs_mlp4_wide_plain__dp__flops"), Axes(budget=1.0))
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    _agree(run_cell(cell, needs=Needs(sweep=True)), ("budget_knapsack_monotone",), ())
    knapsack_slower_above(monkeypatch, 0.4)
    _agree(run_cell(cell, needs=Needs(sweep=True)), ("budget_knapsack_monotone",), ("budget_knapsack_monotone",))

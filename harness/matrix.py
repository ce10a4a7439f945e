"""The partitioner x memory-budget x backend matrix (the ``slow``/nightly selection) and the "summary" golden.

Every case with a backward, run by the standard pipeline, also runs (marked ``slow``, so ``make test`` skips it) as:

* min-cut under ``activation_memory_budget`` 1.0, 0.5 and 0.0 (aot_eager), where budget monotonicity is checked;
* the default partitioner, where the case did not declare it;
* inductor (min-cut, no budget), where the case did not declare it.

These matrix cells check numerics (against eager with and without AC), the case's own ``check`` and every invariant
of ``harness/invariants.py``; they compare no goldens and no op counts (both are written for the declared axes:
a budget legitimately changes what is recomputed).
"""

from __future__ import annotations

import dataclasses
import functools
import os

from harness.case import Axes, Case, Cell

SWEEP_BUDGETS = (1.0, 0.5, 0.0)
# The "summary" golden kind (harness/analysis.py): saved tensors and bytes, recomputed ops, FLOPs per graph.
SUMMARY_GOLDEN = os.environ.get("AC_SUMMARY_GOLDEN", "1") == "1"  # AC_SUMMARY_GOLDEN=0 turns it off


# Cases left out of the inductor matrix cells, with the reason.
NO_INDUCTOR = {
    "tags_sequential_layers": "cos of a 3-deep x@x chain is ill-conditioned (eager float32 is 0.23 off float64), so "
                              "inductor's different summation order exceeds any meaningful tolerance",
}


# Areas left out of the matrix altogether, with the reason.
NOT_IN_MATRIX = {
    "memory_budget": "its cases set region budgets themselves and check what those do under min-cut; a global budget "
                     "or the default partitioner (which ignores budgets) changes the premise, not the promise",
    "fuzz_findings": "each is a shrunk reproduction pinned to the axes where it fails; the fuzzer itself varies the axes",
}


def eligible(case: Case) -> bool:
    return (case.area not in NOT_IN_MATRIX and case.backward and case.custom is None and case.raises is None and case.budgets == (None,)
            and "activation_memory_budget" not in case.config.get("functorch", {}))


@functools.cache
def matrix_case(case: Case) -> Case:
    """The case as the matrix runs it: no op-count expectations, no goldens (one object per case, so the eager
    reference is computed once).  Inductor draws random numbers its own way; ``fallback_random`` makes it use eager's
    generator so numerics stay comparable (the stream-independent RNG invariants run all the same)."""
    config = {**case.config, "inductor": {"fallback_random": True, **case.config.get("inductor", {})}}
    return dataclasses.replace(case, expect={}, expect_ge={}, goldens=(), config=config)


def matrix_axes(case: Case, device: str) -> list[Axes]:
    if not eligible(case) or device not in case.devices:
        return []
    declared = set(case.axes(device))
    out = []
    for dtype in case.dtypes:
        candidates = [Axes("min_cut", "aot_eager", device, dtype, b) for b in SWEEP_BUDGETS]
        candidates.append(Axes("default", "aot_eager", device, dtype))
        if case.name not in NO_INDUCTOR:
            candidates.append(Axes("min_cut", "inductor", device, dtype))
        out += [a for a in candidates if a not in declared]
    return out


def matrix_cells(case: Case, device: str) -> list[Cell]:
    return [Cell(matrix_case(case), a) for a in matrix_axes(case, device)]


def is_matrix_cell(cell: Cell) -> bool:
    from harness.case import all_cases

    return cell.case.goldens == () and any(cell.case is matrix_case(c) for c in all_cases() if c.name == cell.case.name)


def golden_texts(run, texts: dict[str, str]) -> dict[str, str]:
    """The texts a cell compares with goldens: none for a matrix cell; plus "summary" when it is enabled."""
    if is_matrix_cell(run.cell):
        return {}
    if SUMMARY_GOLDEN and texts:
        from harness.analysis import summary_text
        from harness.invariants import analysis_of

        a = analysis_of(run)
        if a is not None:
            texts = {**texts, "summary": summary_text(a)}
    return texts


def all_cell_ids(devices=("cpu", "cuda")) -> list[str]:
    """Every cell id the suites can collect on these devices: declared cells and the slow matrix."""
    from harness.case import all_cases

    return [c.id for dev in devices for case in all_cases()
            for c in [Cell(case, a) for a in case.axes(dev)] + matrix_cells(case, dev)]

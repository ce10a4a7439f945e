"""Collection: the case database expanded into the cells a run collects, in one place.

Every consumer (the pytest plugin, the snapshot review, the coverage table, the memory report, the nightly's
known-failure check) asks this module which cells exist: :func:`collect` for one area on one device (declared cells,
then the slow matrix), :func:`all_cell_ids` for every cell on every device.  A cell's requirements are evaluated
here too, so a skipped cell and its reason are data, not pytest calls.

The matrix (the ``slow``/nightly selection): every case with a backward, run by the standard pipeline, also runs as
min-cut under ``activation_memory_budget`` 1.0, 0.5 and 0.0 (aot_eager), under the default partitioner where the
case did not declare it, and under inductor (min-cut, no budget) where the case did not declare it.  Matrix cells
check numerics, the case's own ``check`` and every invariant; they compare no goldens and no op counts (both are
written for the declared axes: a budget legitimately changes what is recomputed).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

from harness.core.case import (BUDGET_SWEEP, Ambient, Axes, Backend, Case, Cell, Composition, Needs, Partitioner,
                               Runner)
from harness.core import oracles
from harness.rows.cases import all_cases

# Cases left out of the inductor matrix cells, with the reason.
NO_INDUCTOR = {
    "tags_sequential_layers": "cos of a 3-deep x@x chain is ill-conditioned (eager float32 is 0.23 off float64), so "
                              "inductor's different summation order exceeds any meaningful tolerance",
}

# The backends the matrix adds beside inductor (issue 27 item 2), each min-cut without a budget.
MATRIX_BACKENDS = (Backend.EAGER, Backend.AOT_EAGER_DECOMP_PARTITION)

# Areas left out of the matrix altogether, with the reason.
NOT_IN_MATRIX = {
    "memory_budget": "its cases set region budgets themselves and check what those do under min-cut; a global budget "
                     "or the default partitioner (which ignores budgets) changes the premise, not the promise",
    "fuzz_findings": "each is a shrunk reproduction pinned to the axes where it fails; the fuzzer itself varies the axes",
    "real_models": "library models take seconds to a minute a cell; each row declares the backends it runs",
}


@dataclasses.dataclass(frozen=True)
class Collected:
    """One collected cell: what the pytest plugin turns into a test item (``skip`` set: not run, with the reason)."""

    cell: Cell
    slow: bool = False
    skip: str | None = None
    marker: str = ""  # the case's own extra pytest marker (Case.selection.marker)

    @property
    def id(self) -> str:
        return skipped_cell_id(self.cell.case, self.cell.axes.device) if self.skip else self.cell.id


def eligible(case: Case) -> bool:
    """Whether the matrix expands ``case``: a plain compile-and-backprop case of the standard runner (the composition
    compile(checkpoint(f)), no ambient state, no variants, no compiled autograd) with no budget of its own, that its
    area and its row do not leave out (NOT_IN_MATRIX, ``Selection.matrix``)."""
    spec = case.compile
    return (case.area not in NOT_IN_MATRIX and not case.selection.matrix and spec.backward
            and case.runner is Runner.STANDARD and case.ambient == Ambient() and not case.variants
            and spec.composition is Composition.COMPILE_OUTSIDE and not spec.compiled_autograd
            and case.expect.raises is None and case.axes.budgets == (None,)
            and "activation_memory_budget" not in spec.config.get("functorch", {}))


@functools.cache
def matrix_case(case: Case) -> Case:
    """The case as the matrix runs it: no op-count expectations, no goldens (one object per case, so the eager
    reference is computed once).  Inductor draws random numbers its own way; ``fallback_random`` makes it use eager's
    generator so numerics stay comparable (the stream-independent RNG invariants run all the same)."""
    config = {**case.compile.config, "inductor": {"fallback_random": True, **case.compile.config.get("inductor", {})}}
    return dataclasses.replace(case, expect=dataclasses.replace(case.expect, ops={}, at_least={}, counters={}),
                               goldens=(), compile=dataclasses.replace(case.compile, config=config))


def declared_axes(case: Case, device: str) -> list[Axes]:
    """The axes of the cells ``case`` declares on ``device``: the product of its AxesSpec, export modes, compositions
    and compiled autograd last (inductor and aot_eager_decomp_partition only with min-cut: they partition with min-cut
    whatever the axis says; Dynamo-only eager, which partitions nothing, once, named min-cut).  Where the case is
    emulated on ``device`` (``AxesSpec.emulation_on``) its cells say so and keep only the backends the emulation runs."""
    spec = case.axes
    if device not in spec.devices:
        return []
    emulation = spec.emulation_on(device)
    return [Axes(part, backend, device, dtype, budget, composition, ca, ambient, emulation, export or "")
            for export, ambient, composition, ca, backend, part, dtype, budget in itertools.product(
                spec.exports, spec.ambients, spec.compositions, spec.compiled_autograd, spec.backends,
                spec.partitioners, spec.dtypes, spec.budgets)
            if (not (backend.own_partitioner or not backend.partitions) or part is Partitioner.MIN_CUT)
            and backend in emulation.backends]


def new_axis(axes: Axes) -> bool:
    """Whether the cell sits on one of issue 27's axes beyond today's cells: a composition other than compile outside,
    compiled autograd, or a backend other than aot_eager and inductor."""
    return oracles.judged_at_run_time(axes)  # the cells the run-time oracles judge are exactly these


@functools.cache
def axis_case(case: Case) -> Case:
    """The case as a cell on issue 27's axes runs it (:func:`new_axis`): the matrix's (no op counts, counters or
    goldens), and without the case's own check either: they are written about the graphs of compile(checkpoint(f))
    under aot_eager or inductor, which a composition or a Dynamo-only backend does not make.  Numerics, the state
    after the step, the invariants and the run-time oracles (harness/core/oracles.py) judge it."""
    m = matrix_case(case)
    return dataclasses.replace(m, expect=dataclasses.replace(m.expect, check=None, needs=Needs()))


def declared_cells(case: Case, device: str) -> list[Cell]:
    return [Cell(axis_case(case) if new_axis(a) else case, a) for a in declared_axes(case, device)]


def matrix_axes(case: Case, device: str) -> list[Axes]:
    if not eligible(case) or device not in case.axes.devices:
        return []
    declared = set(declared_axes(case, device))
    out = []
    for dtype in case.axes.dtypes:
        candidates = [Axes(Partitioner.MIN_CUT, Backend.AOT_EAGER, device, dtype, b) for b in BUDGET_SWEEP]
        candidates.append(Axes(Partitioner.DEFAULT, Backend.AOT_EAGER, device, dtype))
        if case.name not in NO_INDUCTOR:
            candidates.append(Axes(Partitioner.MIN_CUT, Backend.INDUCTOR, device, dtype))
        # Dynamo-only eager and upstream's aot_eager_decomp_partition (issue 27: backends as an axis everywhere)
        candidates += [Axes(Partitioner.MIN_CUT, b, device, dtype) for b in MATRIX_BACKENDS]
        emulation = case.axes.emulation_on(device)
        candidates = [dataclasses.replace(a, emulation=emulation) for a in candidates if a.backend in emulation.backends]
        out += [a for a in candidates if a not in declared]
    return out


def case_cells(case: Case, device: str) -> list[Cell]:
    """The declared cells of ``case`` on ``device``, then its matrix cells."""
    return declared_cells(case, device) + matrix_cells(case, device)


def matrix_cells(case: Case, device: str) -> list[Cell]:
    return [Cell(axis_case(case) if new_axis(a) else matrix_case(case), a) for a in matrix_axes(case, device)]


def collect(area: str, device: str) -> list[Collected]:
    """Every cell of ``area`` on ``device``; a case that cannot run here is one skipped entry with the reason."""
    out = []
    for case in all_cases():
        if case.area != area:
            continue
        unmet = case.unmet_requirement(device)
        cells = case_cells(case, device)
        if unmet or not cells:
            reason = unmet or f"not run on {device}: case declares devices {case.axes.devices}"
            out.append(Collected(Cell(case, Axes(device=device)), slow=case.selection.slow, skip=reason))
            continue
        fast = set(case.selection.fast)
        matrix = set(map(id, matrix_cells_of(cells, case, device)))
        out += [Collected(c, slow=id(c) in matrix or case.selection.slow
                          or (c.axes.budget is not None and c.axes.budget not in fast)
                          or ((new_axis(c.axes) or bool(c.axes.emulation) or bool(c.axes.export))
                              and c.axes.id not in case.selection.fast_axes),
                          marker=case.selection.marker) for c in cells]
    return out


def matrix_cells_of(cells: list[Cell], case: Case, device: str) -> list[Cell]:
    """Of ``case_cells(case, device)``, the matrix's (the ones after the declared)."""
    return cells[len(declared_axes(case, device)):]


def all_cells(devices=("cpu", "cuda")) -> list[Cell]:
    """Every cell the suites can collect on these devices: declared cells, the slow matrix, and (cpu) the distributed
    scenarios (harness/rows/scenarios.py; run by suites/test_distributed.py on 2 ranks)."""
    from harness.rows import scenarios

    cells = [c for dev in devices for case in all_cases() for c in case_cells(case, dev)]
    return cells + (scenarios.cells() if "cpu" in devices else [])


def all_cell_ids(devices=("cpu", "cuda")) -> list[str]:
    return [c.id for c in all_cells(devices)]


def skipped_cell_id(case: Case, device: str) -> str:
    """The id of the one entry a case that cannot run on ``device`` collects as (a one-cell contract case: its cell's)."""
    return Cell(case, Axes(device=device)).id if case.runner is Runner.CONTRACT else f"{case.name}-{device}"


# --- the suites whose tests are not case cells -----------------------------------------------------------------------

# suites/test_ac_policies.py: every AC policy of harness/core/policies.py but "none", on each model block; these
# pairs run in make test, the others nightly (slow).
POLICY_MODELS = ("llama", "moe")
POLICY_FAST = frozenset({("llama", "every_other_mm"), ("moe", "full")})


def policy_cells() -> list[tuple[str, str, bool]]:
    """(model, policy, slow) of each policy test."""
    from harness.core import policies

    return [(m, p, (m, p) not in POLICY_FAST) for m in POLICY_MODELS for p in policies.ALL if p != "none"]


def knapsack_solvers(exact: bool = False) -> list[str]:
    """The knapsack solvers this torch has (harness/core/knapsack.py), sorted; ``exact``: those whose answer is an
    optimum of the instance they solve (knapsack.EXACT): what suites/test_knapsack_solvers.py holds to optimality."""
    from harness.core import knapsack

    return sorted(s for s in knapsack.available_solvers() if not exact or s in knapsack.EXACT)

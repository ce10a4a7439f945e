"""The test template every suite module uses: run a cell, check it three ways, record what was checked."""

from __future__ import annotations

from harness.case import Cell
from harness.checks import assert_numerics, assert_op_counts, assert_raises_as_documented
from harness.golden import Goldens
from harness.pipeline import Run, run_cell

# Extra semantic checks run on every recorded cell (the invariants register here): f(run) -> number of checks.
SEMANTIC_CHECKS: list = []


def check_cell(cell: Cell, goldens: Goldens, record=lambda key, value: None) -> Run | None:
    """Numerics, then expectations and invariants, then goldens.

    Goldens are compared last and only when everything semantic passed, so a snapshot update can never
    bless a wrong result; on any failure the cell's existing goldens are kept as they are."""
    __tracebackhide__ = True
    case = cell.case
    record("case", case.name)
    if case.raises is not None:
        exc = None
        try:
            run_cell(cell)
        except Exception as e:  # the documented error is the expected outcome
            exc = e
        assert_raises_as_documented(cell, exc)
        record("error_checks", 1)
        goldens.keep_existing()
        return None
    try:
        run = run_cell(cell)
        record("numerics_checks", assert_numerics(run))
        record("op_count_checks", assert_op_counts(run))
        if case.check is not None:
            case.check(run)
            record("extra_checks", 1)
        for semantic in SEMANTIC_CHECKS:
            record("invariant_checks", semantic(run))
        record("compile_seconds", round(run.compile_seconds, 3))
    except BaseException:
        goldens.keep_existing()
        raise
    texts = run.texts if case.goldens is None else {k: v for k, v in run.texts.items() if k in case.goldens}
    record("graphs_compared", goldens.assert_match(texts))
    return run

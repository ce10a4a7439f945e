"""The test template every suite module uses: run a cell, check it three ways, record what was checked."""

from __future__ import annotations

import contextlib
import time

from harness.case import Cell
from harness.checks import assert_numerics, assert_op_counts, assert_raises_as_documented
from harness.golden import Goldens
from harness.invariants import INVARIANTS
from harness.matrix import golden_texts
from harness.pipeline import Run, run_cell

# Extra semantic checks run on every recorded cell (the invariants register here): f(run) -> number of checks.
SEMANTIC_CHECKS: list = list(INVARIANTS)
# Observers of every recorded run, before any check (the nightly plugin records graphs and metrics here): f(run).
RUN_OBSERVERS: list = []


def check_cell(cell: Cell, goldens: Goldens, record=lambda key, value: None) -> Run | None:
    """Numerics, then expectations and invariants, then goldens.

    Goldens are compared last and only when everything semantic passed, so a snapshot update can never
    bless a wrong result; on any failure the cell's existing goldens are kept as they are."""
    __tracebackhide__ = True
    case = cell.case
    record("case", case.name)
    if case.raises is not None:
        exc = None
        start = time.perf_counter()
        try:
            run_cell(cell)
        except Exception as e:  # the documented error is the expected outcome
            exc = e
        record("compile_seconds", round(time.perf_counter() - start, 4))  # the compile that raises
        try:
            assert_raises_as_documented(cell, exc)
        except AssertionError as e:
            goldens.keep_existing()
            e.ac_check = "error_check"
            raise
        record("error_checks", 1)
        goldens.keep_existing()
        return None
    stage = "run"  # which check failed, as ``exc.ac_check`` (the nightly report separates failures by it)
    try:
        run = run_cell(cell)
        for observe in RUN_OBSERVERS:
            observe(run)
        stage = "numerics"
        start = time.perf_counter()
        record("numerics_checks", assert_numerics(run))
        stage = "expectations"
        record("op_count_checks", assert_op_counts(run))
        if case.check is not None:
            stage = "case_check"
            case.check(run)
            record("extra_checks", 1)
        run.timings["check"] = time.perf_counter() - start
        start = time.perf_counter()
        for semantic in SEMANTIC_CHECKS:
            stage = f"invariant:{getattr(semantic, '__name__', semantic)}"
            record("invariant_checks", semantic(run))
        run.timings["invariants"] = time.perf_counter() - start  # mostly the no-AC baseline compiles they make
    except BaseException as e:
        goldens.keep_existing()
        with contextlib.suppress(Exception):
            e.ac_check = stage
        raise
    start = time.perf_counter()
    texts = run.texts if case.goldens is None else {k: v for k, v in run.texts.items() if k in case.goldens}
    texts = golden_texts(run, texts)  # adds the "summary" kind; matrix-only cells (harness/matrix.py) compare none
    record("graphs_compared", goldens.assert_match(texts))
    run.timings["golden"] = time.perf_counter() - start
    for key, seconds in run.timings.items():  # read back by bench/run_bench.py from the JUnit XML
        record(f"{key}_seconds", round(seconds, 4))
    for key, count in run.cache.items():
        record(key, count)
    return run

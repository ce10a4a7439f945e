"""The test template every suite module uses: run a cell, check it three ways, record what was checked.

Every check of a cell runs, in order: numerics, expectations (op counts and compile counters), the case's own check,
each invariant, then the run-time oracles on the cells they judge (issue 27's axes: harness/core/oracles.py) and the
module state after the step where the forward changes some (issue 31); a failing check does not stop the others.  A check that cannot run on the cell (it raises
:class:`~harness.core.checks.NotRun`, or makes no check at all) is recorded as not run with its reason, never as
passed; a cell whose every invariant did not run is counted apart in the run's summary.  A contract cell
(``Runner.CONTRACT``) has one check, its clause's oracle, one verdict per named part of it (``case_check:<part>``).
Then:

* every check passed: the goldens are compared (or written under ``--snapshot-update``);
* a known failure (harness/core/known_failures.py) covers the cell and exactly its named check failed with its message:
  an expected failure, "known failure <id> at <stage>; N other checks passed";
* the known failure's check passed: a strict XPASS, the run fails until the entry is removed or narrowed;
* any other failing check: the cell fails, naming every failing check (``exc.ac_check`` is the first of them).

Goldens are compared in every cell that ran, failing ones included: a failing cell's existing goldens are compared
(never written), so a graph that drifted in a known-failure cell fails it as drift beside the known failure, and
drift in a cell with other failures is listed with them.  A snapshot update never blesses a failing cell (known or
not): its existing goldens are kept as they are and none is written for it.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from harness.core import attribution, known_failures, oracles
from harness.core.case import Cell, Needs, Runner
from harness.core.checks import (NamedChecks, NotRun, assert_numerics, assert_op_counts,
                                 assert_raises_as_documented)
from harness.core.golden import GoldenDrift, Goldens, texts_for
from harness.core.invariants import INVARIANTS
from harness.core.pipeline import Run
from harness.core.run import run_cell
from harness.core.runners import record as record_run


class CellFailure(AssertionError):
    """One or more checks of a cell failed; ``ac_check`` names the first, ``failures`` lists (stage, message)."""

    def __init__(self, cell_id: str, failures: list[tuple[str, str]], note: str = ""):
        self.ac_check = failures[0][0]
        self.failures = failures
        lines = [f"{cell_id}: {len(failures)} check(s) failed{note}:"]
        lines += [f"[{stage}] {message}" for stage, message in failures]
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class Verdicts:
    """The outcome of every check of one cell."""

    cell: Cell
    passed: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    not_run: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (stage, why it could not run)

    def check(self, stage: str, fn, *args) -> int:
        """Run one check; an AssertionError (or any exception) is that check's failure, not the cell's end.  A check
        that raises NotRun, or returns a count of 0, did not run: recorded with the reason, not as passed.  A check
        returning :class:`~harness.core.checks.NamedChecks` is one verdict per part, ``<stage>:<name>``."""
        try:
            n = fn(*args)
        except NotRun as e:
            self.not_run.append((stage, str(e)))
            return 0
        except Exception as e:  # noqa: BLE001 - a crashing check is a failing check, reported with its type
            self.failed.append((stage, str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"))
            return 0
        if isinstance(n, NamedChecks):  # one verdict per named part
            self.passed += [f"{stage}:{name}" for name in n.passed]
            self.failed += [(f"{stage}:{name}", message) for name, message in n.failed]
            if not n.passed and not n.failed:
                self.not_run.append((stage, "made no check"))
            return len(n.passed) + len(n.failed)
        if n == 0 and isinstance(n, int):
            self.not_run.append((stage, "made no check"))
            return 0
        self.passed.append(stage)
        return n if isinstance(n, int) else 1

    def record_not_run(self, record) -> None:
        """The checks that did not run (count and reasons) and whether every invariant was among them."""
        record("checks_not_run", len(self.not_run))
        if self.not_run:
            record("not_run", [f"{stage}: {why}" for stage, why in self.not_run])
        invariants = [s for s, _ in self.not_run if s.startswith("invariant:")]
        if len(invariants) == len(INVARIANTS):
            record("cells_without_invariants", 1)

    def conclude(self, entries: list[known_failures.KnownFailure], run: Run | None, record,
                 drift: list[str] = ()) -> None:
        """Raise what the cell's verdicts mean, given the known failures in force and (a failing cell) how its graphs
        drifted from their goldens (see the module docstring)."""
        __tracebackhide__ = True
        known = known_failures.matching(entries, self.cell, run, torch.__version__)
        if run is None:  # the run failed: an entry that selects by a feature of the run cannot be said to apply
            known = [e for e in known if not e.select.features]
        for entry in known:
            fixed = [stage for stage, _ in entry.breaks if stage in self.passed]
            if fixed:
                record("known_failure", entry.id)
                raise AssertionError(
                    f"XPASS(strict) {self.cell.id}: known failure {entry.id} no longer fails: check {fixed[0]} "
                    f"passed on torch {torch.__version__} ({entry.reason[:200]}); remove the entry from "
                    f"known_failures.toml or narrow its torch range")
        explained = [(e, f) for e in known for f in self.failed if e.explains(*f)]
        unexplained = [f for f in self.failed if not any(f is g for _, g in explained)]
        if unexplained:
            note = f" (besides known failure {explained[0][0].id} at {explained[0][0].stage})" if explained else ""
            raise CellFailure(self.cell.id, unexplained + [("golden", d) for d in drift], note)
        unused = [e for e in known if not any(e.explains(*f) for f in self.failed)]
        if unused:  # the named check never ran (an earlier stage failed, or the cell has no such check)
            why = dict(self.not_run).get(unused[0].stage)
            raise AssertionError(f"{self.cell.id}: known failure {unused[0].id} names check {unused[0].stage}, "
                                 f"which this cell did not run{f' ({why})' if why else ''} (checks run: {self.passed})")
        if explained:  # every entry that explained a failing check, first the first (a cell may break two)
            record("known_failure", " ".join(dict.fromkeys(e.id for e, _ in explained)))
        if explained and drift:
            entry = explained[0][0]
            raise GoldenDrift(f"{self.cell.id}: graphs differ from goldens, besides known failure {entry.id} at "
                              f"{entry.stage} ({len(self.passed)} other checks passed):\n" + "\n".join(drift))
        if explained:
            entry, (stage, _) = explained[0]
            record("known_failure_cells", 1)
            record("known_failure_other_checks", len(self.passed))
            pytest.xfail(f"known failure {entry.id} at {stage}; {len(self.passed)} other checks passed "
                         f"({entry.upstream})")


def check_cell(cell: Cell, goldens: Goldens, record) -> Run | None:
    """Every check of the cell, then its goldens (written only when every check passed); ``record`` is the plugin's
    CellRecord."""
    __tracebackhide__ = True
    case = cell.case
    record("case", case.name)
    entries = getattr(record, "known_failures", [])
    verdicts = Verdicts(cell)
    if case.expect.raises is not None:  # nothing is recorded when the documented error is raised, so no goldens
        try:
            _check_error_cell(cell, verdicts, entries, record)
        finally:
            goldens.keep_existing()
        return None
    try:
        run = None
        start = time.perf_counter()
        contract = case.runner is Runner.CONTRACT  # a clause's program, judged by its own oracle alone
        try:
            run = run_cell(cell, Needs()) if contract else run_cell(cell)  # a contract run needs nothing more
        except Exception as e:  # noqa: BLE001 - the compile or run crashed: no other check can run
            verdicts.failed.append(("run", f"{type(e).__name__}: {e}"))
        drift: list[str] = []
        if run is not None and contract:
            verdicts.passed.append("run")
            record("contract_checks", verdicts.check("case_check", case.expect.check, run))
            verdicts.record_not_run(record)
        elif run is not None:
            verdicts.passed.append("run")
            getattr(record, "observe", lambda r: None)(run)
            start = time.perf_counter()
            record("numerics_checks", verdicts.check("numerics", assert_numerics, run))
            verdicts.failed = attribution.attribute(run, verdicts.failed)  # also wrong without AC: a backend difference
            record("op_count_checks", verdicts.check("expectations", assert_op_counts, run))
            if case.expect.check is not None:
                stage = getattr(case.expect.check, "stage", "case_check")  # attribution.ac_effect_check names its own
                record("extra_checks", verdicts.check(stage, case.expect.check, run))
            run.timings["check"] = time.perf_counter() - start
            start = time.perf_counter()
            for invariant in INVARIANTS:
                record("invariant_checks", verdicts.check(f"invariant:{invariant.__name__}", invariant, run))
            if oracles.judged_at_run_time(cell.axes):  # issue 27's axes: what the graphs cannot show
                for oracle in oracles.RUNTIME_ORACLES:
                    record("runtime_checks", verdicts.check(f"oracle:{oracle.__name__}", oracle, run))
            if cell.axes.export:  # an exported program run eagerly: its checkpointing is eager's
                for oracle in oracles.EXPORT_ORACLES:
                    record("runtime_checks", verdicts.check(f"oracle:{oracle.__name__}", oracle, run))
            if oracles.mutated_state(run):  # a forward that changes its module's state (issue 31)
                record("state_checks", verdicts.check(oracles.STATE_STAGE, oracles.assert_state, run))
            run.timings["invariants"] = time.perf_counter() - start
            verdicts.record_not_run(record)
            compare = getattr(goldens, "drift", None)  # a golden handle that can compare without writing
            if verdicts.failed and compare is not None and not getattr(goldens, "update", False):
                drift = compare(texts_for(run))  # a failing cell's goldens are compared, never written
        verdicts.conclude(entries, run, record, drift)
    except BaseException:
        goldens.keep_existing()
        raise
    start = time.perf_counter()
    record("graphs_compared", goldens.assert_match(texts_for(run)))
    run.timings["golden"] = time.perf_counter() - start
    for key, seconds in run.timings.items():  # read back by bench/run_bench.py from the JUnit XML
        record(f"{key}_seconds", round(seconds, 4))
    for key, count in run.cache.items():
        record(key, count)
    return run


def _check_error_cell(cell: Cell, verdicts: Verdicts, entries, record) -> None:
    """A cell that must raise its documented error (type and message)."""
    __tracebackhide__ = True
    exc = None
    start = time.perf_counter()
    try:
        record_run(cell)  # no baselines: a cell that must raise has nothing to compare
    except Exception as e:  # noqa: BLE001 - the documented error is the expected outcome
        exc = e
    record("compile_seconds", round(time.perf_counter() - start, 4))  # the compile that raises
    record("error_checks", verdicts.check("error_check", assert_raises_as_documented, cell, exc))
    verdicts.conclude(entries, None, record)

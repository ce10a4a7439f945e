"""Issue 28, items 1 and 2 (harness/core/suite.py): a check that could not run is "not run" with its reason, never a
pass; a cell whose every invariant did not run says so in the summary; and a failing cell's goldens are compared (a
graph that drifted in a known-failure cell is reported beside the known failure) but never written."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core import known_failures, suite
from harness.core.invariants import INVARIANTS
from harness.core.case import Axes, Cell
from harness.core.golden import GoldenDrift, Goldens, texts_for
from harness.core.run import run_cell
from harness.rows.cases import find_case

CELL = Cell(find_case("tags_function"), Axes("min_cut", "aot_eager", "cpu", "float32"))


class _Record(list):
    known_failures: list = []

    def __call__(self, key, value):
        self.append((key, value))

    def get(self, key):
        return [v for k, v in self if k == key]


class DirGoldens(Goldens):
    """The real golden handle's comparison (Goldens.drift) on a plain folder; writing is an error here."""

    def __init__(self, root: Path):
        self.root, self.cell_id, self.device, self.update = root, CELL.id, "cpu", False

    def path(self, kind: str) -> Path:
        return self.root / f"{kind}.txt"

    def existing_kinds(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.txt"))

    def assert_match(self, texts):
        raise AssertionError("a failing cell's goldens must not be asserted (an update would write them)")

    def keep_existing(self):
        pass


def _goldens_of_the_cell(tmp_path: Path) -> DirGoldens:
    for kind, body in texts_for(run_cell(CELL)).items():
        (tmp_path / f"{kind}.txt").write_text(f"# header\n# ---\n{body}")
    return DirGoldens(tmp_path)


def _known_numerics_fault(monkeypatch):
    """A synthetic defect and its known-failure entry: the compiled input gradient is 1.5x off."""
    real = run_cell

    def faulty(cell):
        run = real(cell)
        run.compiled.grads["input[0]"] = run.compiled.grads["input[0]"] * 1.5
        return run

    monkeypatch.setattr(suite, "run_cell", faulty)
    entry = known_failures.KnownFailure("planted-grad-fault", "a test's planted fault", "none: test", "", "numerics",
                                        r"grad of input\[0\]", known_failures.SpecifierSet(">=2"),
                                        known_failures.Selector(cases=("tags_function",)))
    record = _Record()
    record.known_failures = [entry]
    return record


def test_a_known_failure_cell_whose_graph_drifted_reports_the_drift_beside_the_known_failure(tmp_path, monkeypatch):
    goldens = _goldens_of_the_cell(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    record = _known_numerics_fault(monkeypatch)
    with pytest.raises(pytest.xfail.Exception, match="known failure planted-grad-fault at numerics"):
        suite.check_cell(CELL, goldens, record)  # goldens as recorded: the known failure alone

    fw = tmp_path / "fw.txt"
    fw.write_text(fw.read_text().replace("aten.sigmoid.default", "aten.tanh.default"))
    drifted = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(GoldenDrift) as info:
        suite.check_cell(CELL, goldens, _known_numerics_fault(monkeypatch))
    msg = str(info.value)
    for part in ("besides known failure planted-grad-fault at numerics", "graph 'fw' drifted", "+", "sigmoid"):
        assert part in msg, f"expected {part!r} in the drift report of a known-failure cell, saw:\n{msg[:3000]}"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == drifted != before, \
        "a failing cell's goldens are compared, never written"


def test_drift_in_a_cell_with_an_unexplained_failure_is_listed_with_it(tmp_path, monkeypatch):
    goldens = _goldens_of_the_cell(tmp_path)
    (tmp_path / "bw.txt").write_text("# header\n# ---\nsomething else\n")
    record = _known_numerics_fault(monkeypatch)
    record.known_failures = []  # the same fault, not known
    with pytest.raises(suite.CellFailure) as info:
        suite.check_cell(CELL, goldens, record)
    stages = [s for s, _ in info.value.failures]
    assert stages == ["numerics", "golden"] and "graph 'bw' drifted" in str(info.value), info.value.failures


def test_a_missing_golden_in_a_failing_cell_is_no_drift(tmp_path, monkeypatch):
    """A failing cell's goldens are never written, so a known-failure cell may have none: nothing to compare."""
    with pytest.raises(pytest.xfail.Exception, match="known failure planted-grad-fault"):
        suite.check_cell(CELL, DirGoldens(tmp_path), _known_numerics_fault(monkeypatch))


def test_an_invariant_that_cannot_run_is_not_run_with_its_reason_never_passed():
    """tags_function has no budget: budget_monotone cannot run on it.  It used to return 0 checks and count as passed."""
    record = _Record()
    verdicts = []
    real = suite.Verdicts

    class Spy(real):
        def conclude(self, *args, **kwargs):
            verdicts.append(self)
            return super().conclude(*args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(suite, "Verdicts", Spy)
        suite.check_cell(CELL, _AnyGoldens(), record)
    (v,) = verdicts
    not_run = dict(v.not_run)
    assert "invariant:budget_monotone" not in v.passed, f"a check that did not run must not pass, saw {v.passed}"
    assert not_run.get("invariant:budget_monotone") == "no activation_memory_budget on this cell", not_run
    assert record.get("checks_not_run") == [len(v.not_run)] and record.get("not_run"), record
    assert "invariant:recompute_tagged_not_saved" in v.passed and sum(record.get("invariant_checks")) > 0, \
        f"expected the invariants that apply to run and count, saw passed {v.passed}, record {record}"


def test_a_check_that_makes_no_check_is_not_run():
    v = suite.Verdicts(CELL)
    assert v.check("case_check", lambda: 0) == 0 and v.check("other", lambda: 3) == 3
    assert v.not_run == [("case_check", "made no check")] and v.passed == ["other"], (v.not_run, v.passed)


def test_a_cell_whose_every_invariant_did_not_run_is_flagged():
    """A program without checkpointing (Checkpoint.NONE): no invariant applies, and the cell says so."""
    cell = Cell(find_case("budget_whole_model_none"), Axes("min_cut", "aot_eager", "cpu", "float32"))
    record = _Record()
    suite.check_cell(cell, _AnyGoldens(), record)
    reasons = record.get("not_run")[0]
    assert record.get("cells_without_invariants") == [1], f"expected the cell flagged, saw {record}"
    assert len([r for r in reasons if r.startswith("invariant:")]) == len(INVARIANTS), reasons
    assert sum(record.get("invariant_checks")) == 0, record


class _AnyGoldens:
    update = False

    def assert_match(self, texts):
        return len(texts)

    def keep_existing(self):
        pass

    def drift(self, texts):
        return []


pytest_plugins = ("pytester",)


def test_the_summary_names_the_cells_where_no_invariant_ran(pytester):
    pytester.makepyfile(test_cells='''
import pytest

@pytest.mark.parametrize("name", ["checked", "unchecked"])
def test_cell(name, record):
    record("case", name)
    record("invariant_checks", 3 if name == "checked" else 0)
    record("checks_not_run", 1 if name == "checked" else 6)
    if name == "unchecked":
        record("cells_without_invariants", 1)
''')
    result = pytester.runpytest_subprocess("-p", "harness.tools.plugin", "-p", "no:cacheprovider", timeout=300)
    out = result.stdout.str()
    assert "checks not run: 7" in out and "cells where no invariant ran (1;" in out and "unchecked" in out, out[-3000:]

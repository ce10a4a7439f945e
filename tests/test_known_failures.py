"""Known failures pin one check (harness/core/known_failures.py, harness/core/suite.py): a covered cell still runs every other
check, a second fault in it fails the cell naming that check, a fixed defect XPASSes, and selectors are predicates
(budget 0.0 never matches budget 0.05)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.core import analysis, known_failures, suite
from harness.core.analysis import Analysis, Saved
from harness.core.case import Axes, Cell
from harness.core.run import run_cell
from harness.rows.cases import find_case
from harness.rows.collect import matrix_case
from harness.core.paths import KNOWN_FAILURES

# A budget-0.0 cell is a matrix cell: the case as the matrix runs it (no op-count expectations, no goldens).
BUDGET_ZERO = Cell(matrix_case(find_case("sac_no_recompute_mm")), Axes("min_cut", "aot_eager", "cpu", "float32", 0.0))


class _Goldens:
    def keep_existing(self):
        pass

    def assert_match(self, texts):
        return len(texts)


class _Record(list):
    def __init__(self, entries):
        super().__init__()
        self.known_failures = entries

    def __call__(self, key, value):
        self.append((key, value))


def _entries():
    return known_failures.load(KNOWN_FAILURES)


def _check(cell, entries, monkeypatch=None, perturb=None):
    if perturb is not None:
        real = run_cell

        def faulty(c):
            run = real(c)
            perturb(run)
            return run

        monkeypatch.setattr(suite, "run_cell", faulty)
    record = _Record(entries)
    suite.check_cell(cell, _Goldens(), record)
    return record


def test_a_known_failure_cell_runs_every_other_check_and_xfails_naming_the_entry():
    with pytest.raises(pytest.xfail.Exception) as info:
        _check(BUDGET_ZERO, _entries())
    msg = str(info.value)
    # run, numerics, five invariants... less the two that cannot run here (a matrix cell declares no op counts; the
    # program has no random op), which are not run, not passed (issue 28)
    assert "known failure budget-zero-ignores-must-save at invariant:must_save_not_recomputed" in msg and \
        "6 other checks passed" in msg, f"expected the entry, its check and the other checks counted, saw: {msg}"


def test_a_second_fault_in_a_known_failure_cell_fails_it_naming_that_check(monkeypatch):
    def wrong_gradient(run):
        g = run.compiled.grads["input[0]"]
        run.compiled.grads["input[0]"] = g * 1.5

    with pytest.raises(suite.CellFailure) as info:
        _check(BUDGET_ZERO, _entries(), monkeypatch, wrong_gradient)
    assert [s for s, _ in info.value.failures] == ["numerics"], info.value.failures
    assert "besides known failure budget-zero-ignores-must-save" in str(info.value), str(info.value)


def test_an_extra_saved_tensor_in_a_known_failure_cell_fails_it_naming_the_invariant(monkeypatch):
    def extra_saved(run):
        a = analysis.of(run)
        g = a.graphs[0]
        intermediate = next(n for n, p in g.policies.items() if p == "PREFER_RECOMPUTE" and n not in g.boundaries)
        extra = Saved(intermediate, "f32[4, 4]", 64, "activation")  # a region intermediate saved after all
        run.analysis = Analysis([dataclasses.replace(g, saved=g.saved + [extra])])

    with pytest.raises(suite.CellFailure) as info:
        _check(BUDGET_ZERO, _entries(), monkeypatch, extra_saved)
    stages = [s for s, _ in info.value.failures]
    assert "invariant:recompute_tagged_not_saved" in stages and "invariant:must_save_not_recomputed" not in stages, stages


def test_a_known_failure_whose_check_passes_is_a_strict_xpass():
    entry = dataclasses.replace(_entries()[0], id="pretend-open")
    fixed = Cell(matrix_case(find_case("sac_no_recompute_mm")), Axes("min_cut", "aot_eager", "cpu", "float32", 0.5))
    pretend = dataclasses.replace(entry, select=dataclasses.replace(entry.select, axes=(("budget", (0.5,)),)))
    with pytest.raises(AssertionError, match=r"XPASS\(strict\) .*known failure pretend-open no longer fails: "
                                             r"check invariant:must_save_not_recomputed passed"):
        _check(fixed, [pretend])


def test_an_entry_outside_its_torch_range_does_not_apply():
    entry = _entries()[0]
    assert entry.applies(BUDGET_ZERO, version=torch.__version__)
    assert not dataclasses.replace(entry, torch=known_failures.SpecifierSet("<2.0")).applies(BUDGET_ZERO,
                                                                                               version=torch.__version__)


def test_a_budget_selector_never_matches_another_budget():
    entry = next(e for e in _entries() if e.id == "budget-zero-ignores-must-save")
    case = find_case("sac_no_recompute_mm")
    for budget, want in ((0.0, True), (0.05, False), (0.5, False), (None, False)):
        cell = Cell(case, Axes("min_cut", "aot_eager", "cpu", "float32", budget))
        assert entry.select.selects(cell) is want, f"budget {budget}: expected selects={want}"


def test_the_file_format_rejects_entries_without_their_fields(tmp_path):
    bad = tmp_path / "kf.toml"
    bad.write_text('[[failure]]\nid = "x"\nreason = "r"\nupstream = "u"\nstage = "run"\ntorch = ">=2"\n'
                   'select = { cases = ["a"] }\n')
    with pytest.raises(ValueError, match=r"lacks \['message'\]"):
        known_failures.load(bad)
    bad.write_text('[[failure]]\nid = "x"\nreason = "r"\nupstream = "u"\nstage = "run"\nmessage = "."\n'
                   'torch = ">=2"\nselect = { budgets = [0.0] }\n')
    with pytest.raises(ValueError, match="unknown selector keys"):
        known_failures.load(bad)


pytest_plugins = ("pytester",)

_PLAIN_TESTS = '''
def test_pinned():
    assert False, "the pinned defect shows"

def test_other_fault():
    assert False, "some other fault"

def test_fixed():
    pass
'''


def test_a_plain_test_entry_is_a_strict_xfail_pinned_to_its_message(pytester):
    """``tests`` entries (harness/tools/plugin.py): the matching message xfails; another message fails; a pass is XPASS(strict)."""
    pytester.makepyfile(test_plain=_PLAIN_TESTS)
    entries = "".join(
        f'[[failure]]\nid = "{name}"\nreason = "r"\nupstream = "none: test"\nstage = "test"\n'
        f'message = "pinned defect"\ntorch = ">=2"\nselect = {{ tests = ["test_plain.py::{name}"] }}\n\n'
        for name in ("test_pinned", "test_other_fault", "test_fixed"))
    toml = pytester.path / "known.toml"
    toml.write_text(entries)
    result = pytester.runpytest_subprocess("-p", "harness.tools.plugin", "-p", "no:cacheprovider", "--known-failures",
                                           str(toml), "-rxXf", timeout=300)
    outcomes = result.parseoutcomes()
    assert (outcomes.get("xfailed"), outcomes.get("failed")) == (1, 2), (
        f"expected test_pinned xfailed and test_other_fault / test_fixed failed; saw {outcomes}:\n{result.stdout.str()[-3000:]}")
    out = result.stdout.str()
    assert "expected the test to fail with a message matching /pinned defect/" in out and "XPASS(strict)" in out, (
        f"expected the other-message failure and the strict XPASS explained; saw:\n{out[-3000:]}")


def test_every_plain_test_entry_names_an_existing_test():
    """A ``tests`` glob that names no test function has rotted (the cell entries are checked by test_coverage.py)."""
    import fnmatch
    import re

    from harness.core.paths import ROOT

    stale = []
    for e in _entries():
        for pattern in e.select.tests:
            path, _, name = pattern.partition("::")
            file = ROOT / path
            defined = re.findall(r"^def (test_\w+)", file.read_text(), re.M) if file.exists() else []
            if not fnmatch.filter(defined, name.split("[", 1)[0]):  # the function; a parametrized id's brackets
                stale.append(f"{e.id}: {pattern}")
    assert stale == [], f"expected every `tests` glob in known_failures.toml to name a test; saw unmatched: {stale}"


def test_a_parametrized_node_id_matches_literally():
    """``test_policy[llama-full]`` names that one test, although ``[...]`` is a character class to fnmatch."""
    from harness.core.known_failures import KnownFailure, Selector, known_test
    from packaging.specifiers import SpecifierSet

    e = KnownFailure("x", "r", "none: test", "", "test", ".", SpecifierSet(">=2"),
                     Selector(tests=("suites/t.py::test_policy[llama-full]", "suites/t.py::test_glob_*")))
    seen = {n: known_test([e], n, "2.13.0") is e for n in ("suites/t.py::test_policy[llama-full]",
                                                            "suites/t.py::test_policyl", "suites/t.py::test_glob_a[x]")}
    assert seen == {"suites/t.py::test_policy[llama-full]": True, "suites/t.py::test_policyl": False,
                    "suites/t.py::test_glob_a[x]": True}, f"expected the literal id and the glob to match; saw {seen}"


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_an_entry_matching_no_cell_is_reported(pytester, xdist):
    """The rotted-entry warning: computed where the case database is imported (an xdist worker hands it to the
    controller, which prints it), so it must show the same with and without xdist."""
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    toml = pytester.path / "known.toml"
    toml.write_text('[[failure]]\nid = "rotted"\nreason = "r"\nupstream = "none: test"\nstage = "run"\nmessage = "."\n'
                    'torch = ">=2"\nselect = { cases = ["no_such_case"] }\n')
    result = pytester.runpytest_subprocess("-p", "harness.tools.plugin", "-p", "no:cacheprovider", "--known-failures",
                                           str(toml), *xdist, timeout=300)
    out = result.stdout.str()
    assert "entry 'rotted' matches no cell of the case database" in out, (
        f"expected the warning for the entry selecting no cell ({' '.join(xdist) or 'serial'}); saw:\n{out[-3000:]}")


def test_a_check_of_named_parts_is_one_verdict_per_part():
    """A contract cell (Runner.CONTRACT): each named check its oracle makes is a verdict ``case_check:<name>``, so an
    entry pins one of them; another failing part fails the cell naming it, and the pinned part passing is an XPASS."""
    from harness.core.case import AxesSpec, Case, Expect, Runner
    from harness.rows.collect import declared_cells
    from harness.rows.contract import judge

    def cell(observations):
        case = Case("clause-prog-nonreentrant-eager", lambda ctx: observations, runner=Runner.CONTRACT,
                    axes=AxesSpec(partitioners="min_cut", devices="cpu"), expect=Expect(check=judge), goldens=(),
                    area="contract")
        (only,) = declared_cells(case, "cpu")
        return only

    entry = known_failures._entry({"id": "pinned", "reason": "r", "upstream": "none", "stage": "case_check:a",
                                   "message": "^expected 0", "torch": ">=2",
                                   "select": {"cases": ["clause-prog-nonreentrant-eager"]}}, "test")
    with pytest.raises(pytest.xfail.Exception, match="known failure pinned at case_check:a; 2 other checks passed"):
        _check(cell([("a", "expected 0; saw 1"), ("b", None)]), [entry])
    with pytest.raises(suite.CellFailure) as info:
        _check(cell([("a", "expected 0; saw 1"), ("b", "expected 2; saw 3"), ("b", None)]), [entry])
    assert [s for s, _ in info.value.failures] == ["case_check:b"], info.value.failures
    with pytest.raises(AssertionError, match="XPASS.*check case_check:a passed"):
        _check(cell([("a", None), ("b", None)]), [entry])
    with pytest.raises(suite.CellFailure, match="no_checks"):
        _check(cell([]), [])
    assert cell([]).id == "clause-prog-nonreentrant-eager", "expected a contract cell named as its case"

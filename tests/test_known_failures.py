"""Known failures pin one check (harness/core/known_failures.py, harness/core/suite.py): a covered cell still runs every other
check, a second fault in it fails the cell naming that check, a fixed defect XPASSes, and selectors are predicates
(budget 0.0 never matches budget 0.05).  The failing check comes from a synthetic fault (tests/synthetic_faults.py), not
from a live torch bug, so these tests mean the same once torch is fixed."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from harness.core import analysis, known_failures, suite
from harness.core.analysis import Analysis, Saved
from harness.core.case import Axes, Cell
from harness.core.run import run_cell
from harness.rows.cases import find_case
from harness.rows.collect import matrix_case
from synthetic_faults import MUST_SAVE_IGNORED_ENTRY, must_save_ignored

# A matrix cell (no op-count expectations, no goldens) at a budget where torch saves the MUST_SAVE mm; the planted
# fault makes it recompute them.
FAULTY = Cell(matrix_case(find_case("sac_no_recompute_mm")), Axes("min_cut", "aot_eager", "cpu", "float32", 0.5))


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


@pytest.fixture
def entry(tmp_path) -> known_failures.KnownFailure:
    """The synthetic fault's known-failure entry, selecting FAULTY (read through the file format)."""
    path = tmp_path / "known_failures.toml"
    path.write_text(MUST_SAVE_IGNORED_ENTRY + 'torch = ">=2"\nselect = { cases = ["sac_no_recompute_mm"], budget = [0.5] }\n')
    (e,) = known_failures.load(path)
    return e


@pytest.fixture
def fault(monkeypatch):
    must_save_ignored(monkeypatch)


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


def test_a_known_failure_cell_runs_every_other_check_and_xfails_naming_the_entry(entry, fault):
    with pytest.raises(pytest.xfail.Exception) as info:
        _check(FAULTY, [entry])
    msg = str(info.value)
    # run, numerics, five invariants... less the two that cannot run here (a matrix cell declares no op counts; the
    # program has no random op), which are not run, not passed (issue 28)
    assert "known failure synthetic-must-save-ignored at invariant:must_save_not_recomputed" in msg and \
        "6 other checks passed" in msg, f"expected the entry, its check and the other checks counted, saw: {msg}"


def test_a_second_fault_in_a_known_failure_cell_fails_it_naming_that_check(entry, fault, monkeypatch):
    def wrong_gradient(run):
        g = run.compiled.grads["input[0]"]
        run.compiled.grads["input[0]"] = g * 1.5

    with pytest.raises(suite.CellFailure) as info:
        _check(FAULTY, [entry], monkeypatch, wrong_gradient)
    assert [s for s, _ in info.value.failures] == ["numerics"], info.value.failures
    assert "besides known failure synthetic-must-save-ignored" in str(info.value), str(info.value)


def test_an_extra_saved_tensor_in_a_known_failure_cell_fails_it_naming_the_invariant(entry, fault, monkeypatch):
    def extra_saved(run):
        a = analysis.of(run)
        g = a.graphs[0]
        intermediate = next(n for n, p in g.policies.items() if p == "PREFER_RECOMPUTE" and n not in g.boundaries)
        extra = Saved(intermediate, "f32[4, 4]", 64, "activation")  # a region intermediate saved after all
        run.analysis = Analysis([dataclasses.replace(g, saved=g.saved + [extra])])

    with pytest.raises(suite.CellFailure) as info:
        _check(FAULTY, [entry], monkeypatch, extra_saved)
    stages = [s for s, _ in info.value.failures]
    assert "invariant:recompute_tagged_not_saved" in stages and "invariant:must_save_not_recomputed" not in stages, stages


def test_a_known_failure_whose_check_passes_is_a_strict_xpass(entry):
    """The same cell without the fault: torch saves the MUST_SAVE mm, the entry's check passes."""
    with pytest.raises(AssertionError, match=r"XPASS\(strict\) .*known failure synthetic-must-save-ignored no longer "
                                             r"fails: check invariant:must_save_not_recomputed passed"):
        _check(FAULTY, [entry])


def test_an_entry_outside_its_torch_range_does_not_apply(entry):
    assert entry.applies(FAULTY, version=torch.__version__)
    assert not dataclasses.replace(entry, torch=known_failures.SpecifierSet("<2.0")).applies(FAULTY,
                                                                                               version=torch.__version__)


def test_a_budget_selector_never_matches_another_budget(entry):
    case = find_case("sac_no_recompute_mm")
    for budget, want in ((0.5, True), (0.05, False), (0.0, False), (None, False)):
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


def _run(pytester, monkeypatch, *args):
    """A pytest session with the suites' plugin, in this process (tests/inprocess.py)."""
    from inprocess import keep_imported_modules

    keep_imported_modules(pytester, monkeypatch)
    return pytester.runpytest_inprocess("-p", "harness.tools.plugin", "-p", "no:cacheprovider", *args)

_PLAIN_TESTS = '''
def test_pinned():
    assert False, "the pinned defect shows"

def test_other_fault():
    assert False, "some other fault"

def test_fixed():
    pass
'''


def test_a_plain_test_entry_is_a_strict_xfail_pinned_to_its_message(pytester, monkeypatch):
    """``tests`` entries (harness/tools/plugin.py): the matching message xfails; another message fails; a pass is XPASS(strict)."""
    pytester.makepyfile(test_plain=_PLAIN_TESTS)
    entries = "".join(
        f'[[failure]]\nid = "{name}"\nreason = "r"\nupstream = "none: test"\nstage = "test"\n'
        f'message = "pinned defect"\ntorch = ">=2"\nselect = {{ tests = ["test_plain.py::{name}"] }}\n\n'
        for name in ("test_pinned", "test_other_fault", "test_fixed"))
    toml = pytester.path / "known.toml"
    toml.write_text(entries)
    result = _run(pytester, monkeypatch, "--known-failures", str(toml), "-rxXf")
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
    for e in known_failures.load():
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
def test_an_entry_matching_no_cell_is_reported(pytester, monkeypatch, xdist):
    """The rotted-entry warning: computed where the case database is imported (an xdist worker hands it to the
    controller, which prints it), so it must show the same with and without xdist."""
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    toml = pytester.path / "known.toml"
    toml.write_text('[[failure]]\nid = "rotted"\nreason = "r"\nupstream = "none: test"\nstage = "run"\nmessage = "."\n'
                    'torch = ">=2"\nselect = { cases = ["no_such_case"] }\n')
    result = _run(pytester, monkeypatch, "--known-failures", str(toml), *xdist)
    out = result.stdout.str()
    assert "entry 'rotted' matches no cell of the case database" in out, (
        f"expected the warning for the entry selecting no cell ({' '.join(xdist) or 'serial'}); saw:\n{out[-3000:]}")


def test_no_meta_test_leans_on_a_live_torch_bug():
    """A meta test that needs a failing check plants a synthetic fault (tests/synthetic_faults.py) with its own entry;
    code under tests/ that names an entry of known_failures.toml (a string it asserts on, an entry it looks up) relies
    on that torch bug staying alive, and turns red, or passes for another reason, once torch is fixed.  Docstrings and
    comments may name the defect a synthetic fault imitates."""
    import ast

    from harness.core.paths import ROOT

    ids = {e.id for e in known_failures.load()}
    leaning = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                leaning += [f"{path.name}:{node.lineno}: {i}" for i in sorted(ids) if i in node.value]
    assert leaning == [], f"expected no meta test to name a live known failure (plant a synthetic fault); saw {leaning}"


def test_every_entry_pins_a_check_a_message_and_a_repro():
    """An entry explains a failure only when the named check fails with its message: a message that matches any text
    (``"."``) would also explain another cause failing the same check.  Each entry names a standalone repro under
    findings/ that exists."""
    from harness.core.paths import ROOT

    loose, no_repro = [], []
    for e in known_failures.load():
        for stage, message in e.breaks:
            if not stage or any(re.search(message, text) for text in ("", "x", "some unrelated failure 123")):
                loose.append(f"{e.id}: [{stage}] /{message}/")
        if not e.repro or not e.repro.startswith("findings/") or not (ROOT / e.repro).is_file():
            no_repro.append(f"{e.id}: {e.repro!r}")
    assert loose == [] and no_repro == [], (f"expected every (stage, message) to match only its defect's message and "
                                            f"every repro to be a script under findings/; saw loose messages {loose}, "
                                            f"repros missing {no_repro}")


def test_expected_failures_live_only_in_known_failures_toml():
    """No test of the suites or the examples carries a hand-written xfail (a reason written in the test): the
    expectation goes to known_failures.toml (a ``tests`` selector), with its torch range, message and repro, so it
    turns into a failure naming the entry when torch fixes the defect, instead of a bare XPASS(strict)."""
    import ast

    from harness.core.paths import ROOT

    hand_written = []
    for path in sorted([*(ROOT / "examples").rglob("*.py"), *(ROOT / "suites").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("xfail", "skip"):
                literal = [k for k in node.keywords if k.arg == "reason" and isinstance(k.value, ast.Constant)]
                literal += [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if literal:
                    hand_written.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hand_written == [], f"expected no hand-written xfail/skip in suites/ or examples/; saw {hand_written}"


def test_make_check_runs_the_examples():
    """The examples are tests of the user path: `make check` runs them (the Makefile's check target depends on a
    target that runs pytest on examples/)."""
    from harness.core.paths import ROOT

    text = (ROOT / "Makefile").read_text()
    rules = dict(re.findall(r"^([\w-]+):[^=\n]*?(?:##.*)?\n((?:\t.*\n)*)", text, re.M))
    deps = {name: re.search(rf"^{name}:([^#\n]*)", text, re.M).group(1).split() for name in rules}

    def reaches(target, seen=()):
        return target not in seen and ("examples" in rules.get(target, "").replace("$(PYTEST)", "").split() or
                                       any(reaches(d, (*seen, target)) for d in deps.get(target, ())))

    assert reaches("check"), "expected `make check` to run pytest on examples/ (directly or through a prerequisite)"


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

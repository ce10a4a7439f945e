"""The user-model plugin (harness/user/conformance.py) in a temporary project, through pytest's ``pytester``: a passing
check with figures, a numerics failure, an invariant failure, a missing golden and the update workflow (a refused
update keeps the goldens byte-identical); and bad input is one clear message."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

from inprocess import keep_imported_modules

from harness.core.paths import ROOT

pytest_plugins = ("pytester",)

# Where the package is installed, pytest loads the plugin through its pytest11 entry point; here (an editable install
# that predates the entry point, or none) it is named explicitly.  Never both: pytest refuses a second registration.
_INSTALLED = any(e.value == "harness.user.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))
PLUGIN = () if _INSTALLED else ("-p", "harness.user.pytest_plugin")

MODEL = '''
import os
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 16, bias=False)
        self.down = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])

    def forward(self, x):
        wrapped = any(type(layer).__name__ == "CheckpointWrapper" for layer in self.layers)
        for layer in self.layers:
            x = layer(x)
        wrong = os.environ.get("USER_MODEL_WRONG")
        if torch.compiler.is_compiling() and (wrong == "1" and wrapped or wrong == "backend"):
            x = x * 1.01  # "1": only the compiled AC program differs from eager; "backend": compiled with or without AC
        return x


def build():
    return Net(), torch.randn(4, 8)
'''


def run(pytester, *args):
    # In this process (tests/inprocess.py): no process start, no second `import torch` or compiler warm-up.
    return pytester.runpytest_inprocess(*PLUGIN, "-p", "no:cacheprovider", "--show-capture=no", *args)


@pytest.fixture
def project(pytester, monkeypatch):
    keep_imported_modules(pytester, monkeypatch)
    pytester.makepyfile(usermodel=MODEL)
    return pytester


def test_passing_check_reports_figures(project):
    project.makepyfile(test_block='''
from usermodel import build


def test_block_ac(ac_conformance):
    report = ac_conformance.check(build, policy="selective-op")
    (cell,) = report.results
    assert cell.verdict == "pass" and cell.id == "build_selective_op-min_cut-aot_eager-cpu-float32"
    f = cell.figures
    assert f["activation_bytes"] > 0 and f["peak_bytes"] > 0 and f["bw_flops"] > 0 and f["recomputed_ops"] > 0
    assert cell.no_ac["activation_bytes"] >= f["activation_bytes"]
    assert cell.checks > 0
''')
    result = run(project)
    result.assert_outcomes(passed=1)


def test_numerics_failure_is_one_readable_message(project, monkeypatch):
    monkeypatch.setenv("USER_MODEL_WRONG", "1")
    project.makepyfile(test_block='''
from usermodel import build


def test_block_ac(ac_conformance):
    ac_conformance.check(build, policy="full")
''')
    result = run(project)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for part in ("ac_conformance: 1 of 1 cell(s) failed (1 wrong)", "[numerics]",
                 "compiled vs eager without AC: output[0]", "grad of param layers.0.up.weight", "rtol=1.3e-06"):
        assert part in out, f"expected {part!r} in the failure:\n{out[-4000:]}"
    assert "Traceback" not in out and "harness/core/suite.py" not in out, "one message, no harness traceback"


def test_invariant_failure_names_the_invariant(project, monkeypatch):
    # A synthetic fault (tests/synthetic_faults.py: min-cut recomputes MUST_SAVE nodes, as torch 2.11-2.14 do at budget
    # 0) and its known-failure entry, planted in the user's process: the invariant catches it in the user's model as in
    # the suites, and the message notes the known defect, whatever torch fixes.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])))
    project.makepyfile(test_block='''
from harness.core import known_failures
from synthetic_faults import MUST_SAVE_IGNORED_ENTRY, must_save_ignored
from usermodel import build


def test_block_ac(ac_conformance, monkeypatch, tmp_path):
    must_save_ignored(monkeypatch)
    path = tmp_path / "known.toml"
    path.write_text(MUST_SAVE_IGNORED_ENTRY + 'torch = ">=2"\\nselect = { features = ["must_save"], budget = [0.5] }\\n')
    real_load = known_failures.load
    monkeypatch.setattr(known_failures, "load", lambda *args: real_load(path))
    ac_conformance.check(build, policy="selective_op", budgets=(0.5,))
''')
    result = run(project)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "[invariant:must_save_not_recomputed]" in out and "policy MUST_SAVE) is recomputed" in out, out[-4000:]
    assert "build_selective_op-min_cut-aot_eager-cpu-float32-budget0.5" in out, out[-4000:]
    assert "note: [invariant:must_save_not_recomputed] is the known torch defect synthetic-must-save-ignored" in out, \
        out[-4000:]


def _goldens(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.txt"))}


def test_missing_golden_then_update_workflow(project, monkeypatch):
    project.makepyfile(test_block='''
from usermodel import build


def test_block_ac(ac_conformance):
    ac_conformance.check(build, policy="full", goldens="my_goldens")
''')
    root = project.path / "my_goldens"
    missing = run(project)
    missing.assert_outcomes(failed=1)
    out = missing.stdout.str()
    assert "no golden for graph 'fw'" in out and "pytest --snapshot-update" in out, out[-4000:]
    assert not root.exists() or not _goldens(root), "a plain run writes no golden"

    run(project, "--snapshot-update").assert_outcomes(passed=1)
    cell = "build_full-min_cut-aot_eager-cpu-float32"
    written = _goldens(root)
    assert sorted(written) == [f"cpu/{cell}/test_block/test_block_ac[{k}].txt"
                               for k in ("bw", "dynamo", "fw", "joint", "summary")], sorted(written)
    clean = run(project)
    clean.assert_outcomes(passed=1)  # the goldens match
    assert "Can not relate snapshot location" not in clean.stdout.str(), "syrupy must relate each golden to its test"

    monkeypatch.setenv("USER_MODEL_WRONG", "1")  # an update must not bless a wrong result
    refused = run(project, "--snapshot-update")
    refused.assert_outcomes(failed=1)
    assert "[numerics]" in refused.stdout.str()
    assert _goldens(root) == written, "a refused cell's goldens stay byte-identical"
    monkeypatch.delenv("USER_MODEL_WRONG")

    fw = root / "cpu" / cell / "test_block" / "test_block_ac[fw].txt"
    fw.write_text(fw.read_text().replace("aten.relu.default", "aten.tanh.default"))
    drift = run(project)
    drift.assert_outcomes(failed=1)
    assert "graph 'fw' drifted" in drift.stdout.str() and "1 graph drift" in drift.stdout.str()


def test_bad_input_fails_with_one_sentence(project):
    project.makepyfile(test_block='''
import torch
from usermodel import build


def test_unknown_policy(ac_conformance):
    ac_conformance.check(build, policy="selective-opp")


def test_no_trainable_parameters(ac_conformance):
    def frozen():
        model, x = build()
        return model.requires_grad_(False), x
    ac_conformance.check(frozen)


def test_factory_raises(ac_conformance):
    def broken():
        raise RuntimeError("checkpoint file not found")
    ac_conformance.check(broken)
''')
    result = run(project)
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    for part in ("bad input: unknown AC policy 'selective-opp' (did you mean 'selective_op'?)",
                 "the model has no parameters that require grad",
                 "factory test_factory_raises.<locals>.broken() raised RuntimeError: checkpoint file not found"):
        assert part in out, f"expected {part!r}:\n{out[-4000:]}"

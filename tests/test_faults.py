"""The fault-injection kit (harness/tools/faults, issue 29): every fault applies to the installed torch, is shown by its
probe (which holds without it) and leaves a program without checkpointing unchanged; AC_FAULT reaches every process
of a run; the runner's pieces (outcomes, kills, the smoke cover, guard) and the committed selection.

Every probe and fault runs in this process, one after the other (a fault is undone before the next): the probes are
tiny programs and share nothing but torch, so the whole kit takes well under a minute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.core.paths import ROOT
from harness.tools import faults
from harness.tools.faults import catalogue, mutate, outcomes, patching, probes

FAULTS = faults.faults()
TORCH_SITE = Path(torch.__file__).parents[1]


def test_the_catalogue_covers_every_stage_with_described_faults():
    ids = [f.id for f in catalogue.FAULTS]
    assert len(ids) == len(set(ids)), f"expected unique fault ids, repeated: {sorted({i for i in ids if ids.count(i) > 1})}"
    assert len(ids) >= 40, f"expected at least 40 faults, saw {len(ids)}"
    stages = {f.stage for f in catalogue.FAULTS}
    assert stages == set(faults.STAGES), f"expected a fault in every stage {faults.STAGES}, missing {set(faults.STAGES) - stages}"
    for f in catalogue.FAULTS:
        assert (TORCH_SITE / f.file).is_file(), f"{f.id}: expected its torch file {f.file} under {TORCH_SITE}"
        assert f.doc and "\n" not in f.doc, f"{f.id}: expected a one-line description, saw {f.doc!r}"
        assert f.probe in probes.PROBES, f"{f.id}: expected a probe named {f.probe!r} in harness.tools.faults.probes"
        target = patching.resolve(f.target)
        where = patching.function_of(target).__code__.co_filename if f.edits else patching.resolve(
            f.target.partition(":")[0] + ":__file__")
        assert str(where).endswith(f.file), f"{f.id}: expected its target {f.target} to live in {f.file}, saw {where}"


@pytest.mark.parametrize("name", sorted({f.probe for f in FAULTS.values()}))
def test_probe_holds_on_torch_as_installed(name):
    probes.PROBES[name]()


@pytest.fixture(scope="module")
def no_ac():
    return probes.no_ac_fingerprint()


@pytest.mark.parametrize("fault_id", sorted(FAULTS))
def test_fault_is_shown_by_its_probe_and_spares_a_program_without_ac(fault_id, no_ac):
    fault = FAULTS[fault_id]
    stages = ("eager", "aot_eager", "inductor") if fault.stage == "inductor" else ("eager", "aot_eager")
    with probes.fault_applied(fault):
        try:
            probes.PROBES[fault.probe]()
            shown = None
        except Exception as e:  # noqa: BLE001 - any failure of the probe shows the fault (assertion, error, crash)
            shown = e
        fingerprint = probes.no_ac_fingerprint(stages)
    assert shown is not None, f"{fault_id}: expected its probe {fault.probe} to fail with the fault applied; it passed"
    changed = [k for k in fingerprint if fingerprint[k] != no_ac[k]]
    assert changed == [], f"{fault_id}: expected a program without checkpointing unchanged, these differ: {changed}"


def test_undo_puts_torch_back():
    def state(target, fault):
        if fault.edits:
            return patching.function_of(target).__code__
        return list(target) if isinstance(target, list) else set(target)

    for fault in catalogue.FAULTS:
        target = patching.resolve(fault.target)
        before = state(target, fault)
        undo = fault.apply()
        during = state(target, fault)
        undo()
        after = state(target, fault)
        assert during != before, f"{fault.id}: expected the fault to change {fault.target}"
        assert after == before, f"{fault.id}: expected undo to restore {fault.target}"


def test_an_edit_that_no_longer_matches_torch_fails_loudly():
    with pytest.raises(ValueError, match="exactly once"):
        patching.patch_source("torch.utils.checkpoint:_policy_from_bool", (("no such text", "x"),))


def test_ac_fault_applies_once_and_an_unknown_id_is_an_error(monkeypatch):
    from torch.utils.checkpoint import CheckpointPolicy, _policy_from_bool

    monkeypatch.setenv(faults.ENV, "no-such-fault")
    with pytest.raises(RuntimeError, match="no such fault"):
        faults.apply_from_env()
    monkeypatch.setenv(faults.ENV, "sac-bool-policy-inverted")
    try:
        assert faults.apply_from_env() == "sac-bool-policy-inverted"
        assert faults.apply_from_env() == "sac-bool-policy-inverted"
        assert faults.applied() == ["sac-bool-policy-inverted"]
        assert _policy_from_bool(True) is CheckpointPolicy.PREFER_RECOMPUTE, "expected the inverted bool policy"
    finally:
        faults.undo_all()
    assert _policy_from_bool(True) is CheckpointPolicy.MUST_SAVE, "expected undo_all to restore torch"
    monkeypatch.delenv(faults.ENV)
    assert faults.apply_from_env() is None


def test_every_distributed_rank_applies_the_fault():
    from harness.tools import distributed

    ranks = distributed.launch("harness.tools.faults:rank_applied", timeout=120,
                               env={faults.ENV: "early-stop-ignored"})
    assert ranks == [["early-stop-ignored"]] * 2, f"expected both ranks to apply the fault, saw {ranks}"


def test_the_suite_plugin_applies_the_fault_in_the_controller_and_every_worker(tmp_path):
    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""
        from torch.utils.checkpoint import CheckpointPolicy, _policy_from_bool

        def test_patched():
            assert _policy_from_bool(True) is CheckpointPolicy.PREFER_RECOMPUTE
    """))
    result = tmp_path / "outcomes.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_probe.py"), "-p", "harness.tools.plugin",
                           "-p", "harness.tools.faults.outcomes", "--ac-outcomes", str(result), "-n", "1",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, faults.ENV: "sac-bool-policy-inverted"})
    tests = outcomes.read(result)["tests"]
    assert proc.returncode == 0, f"expected the patched test to pass in an xdist worker, saw:\n{proc.stdout[-3000:]}"
    assert "FAULT INJECTED sac-bool-policy-inverted" in proc.stdout, "expected the report header to name the fault"
    assert [(t["outcome"], t["fault"]) for t in tests.values()] == [("passed", "sac-bool-policy-inverted")], tests


def test_outcomes_tell_crashed_from_never_started(tmp_path):
    path = tmp_path / "o.jsonl"
    lines = [{"test": "a.py::ok", "when": w, "outcome": "passed", "seconds": 1.0, "fault": "f"}
             for w in ("setup", "call", "teardown")]
    lines += [{"test": "a.py::xf", "when": "setup", "outcome": "passed", "seconds": 0, "fault": "f"},
              {"test": "a.py::xf", "when": "call", "outcome": "xfailed", "seconds": 0, "fault": "f"},
              {"test": "a.py::xf", "when": "teardown", "outcome": "passed", "seconds": 0, "fault": "f"},
              {"test": "b.py", "when": "collect", "outcome": "failed", "seconds": 0, "fault": None},
              {"test": "a.py::hangs", "when": "setup", "outcome": "passed", "seconds": 0, "fault": "f"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"test": "cut')
    doc = outcomes.read(path)
    assert doc["exitstatus"] is None
    assert {k: v["outcome"] for k, v in doc["tests"].items()} == {
        "a.py::ok": "passed", "a.py::xf": "xfailed", "b.py": "failed", "a.py::hangs": "crashed"}
    baseline = {"outcomes": {"a.py::ok": "passed", "a.py::xf": "xfailed", "a.py::hangs": "passed", "b.py::t": "passed",
                             "a.py::later": "passed", "a.py::skip": "skipped"}}
    result = {"outcomes": {k: v["outcome"] for k, v in doc["tests"].items()}}
    assert mutate.Mutate.killed_by(baseline, result) == ["a.py::hangs", "b.py::t"], \
        "expected the cell that crashed and the cell whose module failed to collect, not the cell that never started"
    stopped = dict(result, timed_out=True)  # the same crash, but the run was stopped at its timeout: our kill
    assert mutate.Mutate.killed_by(baseline, stopped) == ["b.py::t"], \
        "expected a timed-out run's crashed cell (stopped by the timeout) not to count as a kill"


def _matrix(kills: dict[str, list[int]], seconds: list[float]) -> dict:
    return {"cells": [f"s.py::c{i}" for i in range(len(seconds))], "cell_seconds": seconds,
            "faults": [{"id": f, "status": "killed" if k else "survived", "killed_by": k, "file": f"torch/{f}.py"}
                       for f, k in kills.items()]}


def test_smoke_selection_covers_every_killed_fault_preferring_cheap_cells():
    doc = _matrix({"a": [0, 1], "b": [1, 2], "c": [3], "d": []}, [10.0, 1.0, 1.0, 0.5])
    assert mutate.smoke_selection(doc) == ["s.py::c1", "s.py::c3"]
    assert mutate.smoke_selection(doc, ["c"]) == ["s.py::c3"]


def test_guard_picks_the_cells_of_the_faults_in_a_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_matrix({"a": [0, 1], "b": [2], "c": [3]}, [1.0, 0.5, 1.0, 1.0])))
    chosen, cells = mutate.guard_cells([".venv/lib/python3.11/site-packages/torch/a.py", "torch/b.py"], matrix=path)
    assert [f["id"] for f in chosen] == ["a", "b"] and cells == ["s.py::c1", "s.py::c2"]
    _, every = mutate.guard_cells(["torch/a.py"], everything=True, matrix=path)
    assert every == ["s.py::c0", "s.py::c1"]
    with pytest.raises(SystemExit, match="no fault of the kit lives in"):
        mutate.guard_cells(["torch/nowhere.py"], matrix=path)


def test_the_committed_smoke_selection_is_collected_and_covers_the_committed_matrix():
    doc = json.loads(mutate.BENCH_MATRIX.read_text())
    smoke = mutate.BENCH_SMOKE.read_text().split()
    unknown = [f["id"] for f in doc["faults"] if f["id"] not in FAULTS]
    assert unknown == [], f"expected every fault of bench/kill-matrix.json in the kit (rerun make mutate): {unknown}"
    index = {c: i for i, c in enumerate(doc["cells"])}
    assert all(c in index for c in smoke), "expected every smoke cell in the matrix's cells"
    uncovered = [f["id"] for f in doc["faults"] if f["status"] == "killed" and not {index[c] for c in smoke} & set(f["killed_by"])]
    assert uncovered == [], f"expected bench/smoke.txt to kill every fault the matrix kills, not killed: {uncovered}"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", f"@{mutate.BENCH_SMOKE}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert proc.returncode == 0 and sorted(collected) == sorted(smoke), (
        f"expected every id of bench/smoke.txt to be collected (a renamed or removed cell: rerun make mutate), "
        f"collected {len(collected)} of {len(smoke)}:\n{proc.stdout[-3000:]}")

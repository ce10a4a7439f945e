"""The snapshot-update workflow: refused cells are listed with their reason and keep their goldens (also under
xdist), a selected update leaves other cells' goldens alone, a full update removes goldens of cells that no longer
exist, and an update killed in the middle of writing leaves every golden either old or new, never half-written."""

from __future__ import annotations

import pytest
from project_copy import goldens_of, make_project, run_in

CELL = "tags_function-min_cut-aot_eager-cpu-float32"


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


# Under xdist (workers, a controller) and the other workflows: whole pytest processes on a project copy, some with
# two workers (tens of seconds each): `make meta-slow` and `make nightly`.  The serial refusal stays in `make meta`.
XDIST = pytest.param(["-n", "2", "--dist", "loadgroup"], id="xdist", marks=pytest.mark.meta_slow)


@pytest.mark.parametrize("xdist", [pytest.param([], id="serial"), XDIST])
def test_refused_cell_is_listed_with_reason_and_keeps_goldens(project, xdist):
    sel = ["suites/test_planted.py", "-m", "not slow", "-k", "planted-", *xdist]
    ok = run_in(project, *sel, "--snapshot-update")
    assert ok.returncode == 0, f"expected a clean first update, saw rc={ok.returncode}:\n{ok.stdout[-3000:]}"
    before = goldens_of(project)
    assert any("planted-min_cut" in p for p in before), f"expected planted goldens after the update, saw {sorted(before)}"

    refused = run_in(project, *sel, "--snapshot-update", env={"PLANTED_WRONG": "1"})
    assert refused.returncode == 1, f"expected the update to fail, saw rc={refused.returncode}:\n{refused.stdout[-3000:]}"
    line = next((x for x in refused.stdout.splitlines() if x.strip().startswith("REFUSED planted-min_cut")), None)
    assert line is not None and "numerics mismatch" in line, \
        f"expected a 'REFUSED planted-min_cut...: ... numerics mismatch' line in the summary, saw:\n{refused.stdout[-3000:]}"
    assert "output[0]" in refused.stdout, f"expected the mismatching tensor named in the failure, saw:\n{refused.stdout[-3000:]}"
    assert goldens_of(project) == before, "a refused cell's goldens (and every other golden) must stay byte-identical"


@pytest.mark.meta_slow
@pytest.mark.parametrize("xdist", [pytest.param([], id="serial"), XDIST])
def test_selected_update_keeps_other_goldens_and_full_update_removes_stale_ones(project, xdist):
    before = goldens_of(project)
    gone = project / "golden" / "cpu" / "test_tags" / "test_case[gone_case-min_cut-aot_eager-cpu-float32][fw].txt"
    gone.write_text("# ---\nx: f32[1] = input\n")
    target = next(p for p in before if CELL in p and p.endswith("[fw].txt"))
    (project / "golden" / target).write_text((project / "golden" / target).read_text() + "stale: line\n")

    # as `make snapshot-update ARGS="-k <cell>"` runs it
    sel = run_in(project, "suites", "-m", "not slow", "-k", CELL, "--snapshot-update", *xdist)
    assert sel.returncode == 0, sel.stdout[-3000:]
    after = goldens_of(project)
    assert after[target] == before[target], f"the selected cell's changed golden should be rewritten: {target}"
    missing = sorted(set(before) - set(after))
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    assert not missing and not changed, f"a selected update must not touch other goldens; removed {missing}, changed {changed}"
    assert gone.exists(), "a selected update must not remove goldens outside its selection"
    assert f"C golden/{target}" in sel.stdout, \
        f"expected the changed golden in the review summary, saw:\n{sel.stdout[-2000:]}"

    full = run_in(project, "suites", "-m", "not slow", "--snapshot-update", *xdist)
    assert full.returncode == 0, full.stdout[-3000:]
    assert not gone.exists(), "a full update must remove the golden of a cell that no longer exists"
    tags = {k: v for k, v in goldens_of(project).items() if k.startswith("cpu/test_tags/")}
    assert tags == before, "a full update under the pinned torch must reproduce the committed tags goldens"
    assert "R golden/cpu/test_tags/test_case[gone_case" in full.stdout, f"expected the removal in the summary:\n{full.stdout[-2000:]}"


KILLER = '''
"""Loaded with -p killer: the 3rd golden write writes half its text to the temp file, then SIGKILLs the process."""
import os
import signal

import harness.core.golden as golden

_calls = {"n": 0}


class _Half:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


class _Os:
    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *args, **kwargs):
        _calls["n"] += 1
        f = os.fdopen(fd, *args, **kwargs)
        return _Half(f) if _calls["n"] == 3 else f


golden.os = _Os()
'''


@pytest.mark.meta_slow
def test_update_killed_midway_leaves_each_golden_old_or_new(project):
    new = goldens_of(project)  # what a complete update writes under the pinned torch
    cells = sorted(p for p in new if "tags_function-" in p)
    assert len(cells) >= 8, f"expected several tags_function goldens to rewrite, saw {cells}"
    old = {}
    for rel in cells:  # make every one of them out of date, so the update rewrites them all
        path = project / "golden" / rel
        path.write_text(path.read_text() + "out_of_date: line\n")
        old[rel] = path.read_bytes()
    (project / "killer.py").write_text(KILLER)

    killed = run_in(project, "-p", "killer", "suites/test_tags.py", "-m", "not slow", "-k", "tags_function-", "--snapshot-update")
    assert killed.returncode == -9, f"expected the update to die by SIGKILL, saw rc={killed.returncode}:\n{killed.stdout[-2000:]}"
    after = goldens_of(project)
    half = [p for p in cells if after.get(p) not in (old[p], new[p])]
    assert not half, f"goldens neither old nor new after the kill (half-written): {half}"
    n_new = sum(after[p] == new[p] for p in cells)
    assert 0 < n_new < len(cells), f"the kill should land mid-update (some rewritten, some not), saw {n_new}/{len(cells)} new"
    leftovers = list((project / "golden").rglob(".*.tmp"))
    assert leftovers, "expected the interrupted write's temp file (the kill landed inside a write)"

    rerun = run_in(project, "suites/test_tags.py", "-m", "not slow", "-k", "tags_function-", "--snapshot-update")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert all(goldens_of(project)[p] == new[p] for p in cells), "a rerun after the kill must complete the update"

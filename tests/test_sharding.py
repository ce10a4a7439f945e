"""Sharding across machines (make test SHARD=i/N -> pytest-split --splits N --group i): the shards of a selection
together collect exactly its cells, each cell in one shard only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["suites", "-m", "not slow"]  # what make test runs


pytest_plugins = ("pytester",)


def _ids(pytester, what: str, *extra: str) -> list[str]:
    """The node ids ``make test``'s selection collects, in this process (tests/inprocess.py), as the project runs it."""
    result = pytester.runpytest_inprocess(f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"),
                                          *[str(ROOT / a) if a == "suites" else a for a in SELECTION], "--collect-only", "-q",
                                          *extra)
    out = result.stdout.str()
    assert result.ret == 0, f"collecting {what}: expected exit 0, saw {result.ret}:\n{out[-3000:]}"
    return [line.strip() for line in out.splitlines() if "::" in line and not line.startswith(("WARNING", "ERROR"))]


def test_two_shards_partition_the_selection(pytester, monkeypatch):
    from inprocess import keep_imported_modules

    keep_imported_modules(pytester, monkeypatch)
    monkeypatch.chdir(ROOT)  # pytest-split reads .test_durations from the working directory
    ids = {"unsharded": _ids(pytester, "unsharded"), "shard 1/2": _ids(pytester, "shard 1/2", "--splits", "2", "--group", "1"),
           "shard 2/2": _ids(pytester, "shard 2/2", "--splits", "2", "--group", "2")}
    full, one, two = ids["unsharded"], ids["shard 1/2"], ids["shard 2/2"]
    assert full, "expected the unsharded selection to collect cells, saw none"
    assert len(set(full)) == len(full), f"expected unique node ids, saw {len(full) - len(set(full))} repeated"
    assert one and two, f"expected both shards non-empty, saw {len(one)} and {len(two)} cells"
    both = set(one) & set(two)
    assert not both, f"expected disjoint shards, saw {len(both)} cells in both, e.g. {sorted(both)[:3]}"
    missing, extra = set(full) - set(one) - set(two), (set(one) | set(two)) - set(full)
    assert not missing and not extra, (f"expected shards 1/2 + 2/2 to be exactly the unsharded selection "
                                       f"({len(full)} cells), saw {len(missing)} missing (e.g. {sorted(missing)[:3]}) "
                                       f"and {len(extra)} extra (e.g. {sorted(extra)[:3]})")


def test_durations_file_is_valid():
    path = ROOT / ".test_durations"
    assert path.exists(), f"expected {path} (make durations writes it), saw none"
    data = json.loads(path.read_text())
    # an xdist group suffix ("...]@case", --dist loadgroup) never matches the ids pytest-split splits
    bad = {k: v for k, v in data.items() if "::" not in k or k.rfind("@") > k.rfind("]")
           or not isinstance(v, (int, float)) or v < 0}
    assert data and not bad, (f"expected a non-empty map of node id (no xdist group suffix) -> seconds, saw "
                              f"{len(data)} entries, bad: {list(bad.items())[:3]}")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_translates_shard():
    out = subprocess.run(["make", "-n", "test", "SHARD=2/3"], cwd=ROOT, capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if "pytest" in ln and "suites" in ln), "")
    assert "--splits 3 --group 2" in line, f"expected make test SHARD=2/3 to pass '--splits 3 --group 2', saw: {line!r}"

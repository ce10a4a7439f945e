"""The project's pytest plugin tunes the garbage collector of the pytest processes it runs in (harness/tools/plugin.py
``tune_gc``): a rarer full collection, the heap at the end of collection frozen, ``AC_GC=default`` for CPython's
settings."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from harness.core import paths


@pytest.mark.skipif(os.environ.get("AC_GC") == "default", reason="AC_GC=default: this run keeps CPython's settings")
def test_this_pytest_process_runs_with_the_tuned_collector():
    assert gc.get_threshold()[2] == 100, (f"expected the plugin's third gc threshold 100 in this pytest process; "
                                          f"seen {gc.get_threshold()}")
    assert gc.get_freeze_count() > 0, "expected the objects alive at the end of collection frozen; none are"


@pytest.mark.parametrize("setting, expected", [(None, 100), ("default", 10)])
def test_ac_gc_default_keeps_cpythons_thresholds(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "AC_GC"} | ({"AC_GC": setting} if setting else {})
    out = subprocess.run([sys.executable, "-c", "import gc, harness.tools.plugin as p; p.tune_gc(); "
                          "print(gc.get_threshold()[2])"], cwd=paths.ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == expected, (f"AC_GC={setting}: expected the third gc threshold {expected}; "
                                         f"seen {out.stdout.strip()}")


def test_a_tuned_pytest_process_frees_its_heap_at_exit(tmp_path):
    """The heap frozen after collection is unfrozen when the session ends: a frozen object is never freed, and triton's
    nanobind bindings report every binding the interpreter's exit did not free (pages of "leaked" lines)."""
    (tmp_path / "test_imports_triton.py").write_text("import triton\n\n\ndef test_imports_triton():\n"
                                                     "    assert triton.__version__\n")
    env = {k: v for k, v in os.environ.items() if k != "AC_GC"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "harness.tools.plugin", "-p", "no:cacheprovider",
                          "test_imports_triton.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    leaks = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("nanobind:")]
    assert not leaks, f"expected no nanobind leak report at the pytest process's exit; seen {leaks}"


def test_an_xdist_worker_skips_the_heap_teardown_but_runs_its_exit_handlers(tmp_path):
    """An xdist worker leaves through ``os._exit`` after the interpreter's exit handlers (plugin ``_worker_exit``): an
    ``atexit`` handler of the tests still runs, an object alive at the end is never finalized (the teardown that took
    1.5-3.7 s a ``make test`` worker is skipped), the heap it keeps frozen prints no nanobind report, and a failing
    test still fails the run.  What the tests made is frozen too when the session ends, so pytest's end-of-session
    collections (at unconfigure) do not scan it."""
    (tmp_path / "conftest.py").write_text(
        "import gc, pathlib\n\n\n"
        "def pytest_unconfigure(config):  # before pytest's own (unraisableexception's) collections\n"
        "    if hasattr(config, 'workerinput'):\n"
        "        pathlib.Path(__file__).with_name('unfrozen').write_text(str(len(gc.get_objects())))\n")
    (tmp_path / "test_worker.py").write_text(
        "import atexit, pathlib, triton\n\n"
        "OUT = pathlib.Path(__file__).parent\n\n\n"
        "class Sentinel:\n"
        "    def __init__(self, path):\n"
        "        self.path = path\n\n"
        "    def __del__(self, _open=open):  # module globals may be gone by then\n"
        "        with _open(self.path, 'w') as f:\n"
        "            f.write('yes')\n\n\n"
        "KEPT = Sentinel(str(OUT / 'finalized'))\n"
        "atexit.register(lambda: (OUT / 'atexit_ran').write_text('yes'))\n\n\n"
        "MADE = []\n\n\n"
        "def test_passes():\n"
        "    MADE.append([[i] for i in range(100_000)])  # tracked objects the tests leave alive\n"
        "    assert triton.__version__\n\n\n"
        "def test_fails():\n"
        "    assert False, 'planted'\n")
    env = {k: v for k, v in os.environ.items() if k != "AC_GC"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "harness.tools.plugin", "-p",
                          "no:cacheprovider", "test_worker.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    text = out.stdout[-2000:] + out.stderr[-2000:]
    assert out.returncode == 1 and "1 failed, 1 passed" in out.stdout, f"expected the planted failure to fail the run; {text}"
    assert (tmp_path / "atexit_ran").exists(), f"expected the worker's atexit handler to run before it left; {text}"
    assert not (tmp_path / "finalized").exists(), ("expected the worker to leave without the interpreter's teardown "
                                                   "(an object alive at the end never finalized); it was finalized")
    leaks = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("nanobind:")]
    assert not leaks, f"expected no nanobind leak report at the worker's exit; seen {leaks}"
    unfrozen = int((tmp_path / "unfrozen").read_text())
    assert unfrozen < 100_000, (f"expected the 100,000 lists the tests left frozen before pytest's end-of-session "
                                f"collections; {unfrozen} objects were left for them to scan")

"""The package the way users get it (issue 26 item 7): build the wheel, install it (without the repo) into a fresh
venv, and run the examples and the command line from a folder outside the repo.  The fresh venv borrows torch and
the other dependencies from this one through a ``.pth`` file pointing at a folder of links to them (never to this
checkout's editable install), so the only ``harness`` it can import is the wheel's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from harness.core.paths import ROOT

# Building the wheel, a fresh venv and three processes outside the repo: ~40 s of CPU, so `make meta-slow` (CI and the
# nightly run it), not `make meta` (issue 30: `make check` in six minutes).
pytestmark = pytest.mark.meta_slow

OWN = ("harness", "ac_conformance", "__editable__", "_ac_conformance", "__pycache__")


def _run(cmd, cwd, timeout=900, env=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})})
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"  # a copy of what the wheel is built from: setuptools writes build/ beside the sources
    shutil.copytree(ROOT / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(tmp / "dist"), str(src)], cwd=tmp)
    assert build.returncode == 0, f"building the wheel failed:\n{build.stdout[-2000:]}\n{build.stderr[-3000:]}"
    (wheel,) = (tmp / "dist").glob("ac_conformance-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
                .stdout.strip())
    deps = tmp / "deps"  # this venv's packages, less this checkout's own
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OWN) and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    (site / "borrowed-deps.pth").write_text(f"{deps}\n")
    inst = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                cwd=tmp)
    assert inst.returncode == 0, f"installing the wheel failed:\n{inst.stdout[-2000:]}\n{inst.stderr[-3000:]}"
    outside = tmp / "outside"
    shutil.copytree(ROOT / "examples", outside, ignore=shutil.ignore_patterns("__pycache__"))
    return wheel, env_dir, outside


def test_the_wheel_ships_the_harness_and_its_entry_points(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/user/conformance.py" in names and "harness/rows/cases/real_models.py" in names, names[:20]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "ac-conformance = harness.user.cli:main" in text and "ac_conformance = harness.user.pytest_plugin" in text, text


def test_the_installed_harness_is_the_wheels(installed):
    _, env_dir, outside = installed
    proc = _run([str(env_dir / "bin" / "python"), "-c", "import harness; print(harness.__file__)"], cwd=outside)
    assert proc.returncode == 0 and str(env_dir) in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_examples_run_from_outside_the_repo(installed):
    _, env_dir, outside = installed
    proc = _run([str(env_dir / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "test_llama_block.py"], cwd=outside)
    assert proc.returncode == 0, f"expected the examples to pass, exit {proc.returncode}:\n{proc.stdout[-4000:]}"
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]


def test_the_command_line_runs_from_outside_the_repo(installed):
    _, env_dir, outside = installed
    proc = _run([str(env_dir / "bin" / "ac-conformance"), "check", "llama_block.py:build", "--policy", "full",
                 "--report", "report"], cwd=outside)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "PASS  build_full-min_cut-aot_eager-cpu-float32" in proc.stdout, proc.stdout[-2000:]
    assert (outside / "report" / "report.html").exists()



def test_examples_run_inside_the_checkout_with_the_installed_wheel(installed):
    """The repo's conftest.py then loads the wheel's suite plugin, which must not look for the checkout's files
    (findings/, known_failures.toml) in site-packages.  ``-P``: the checkout's ``harness`` stays off sys.path."""
    _, env_dir, _ = installed
    proc = _run([str(env_dir / "bin" / "python"), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "examples/test_llama_block.py", "-k", "every_other_mm"], cwd=ROOT)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, \
        f"exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert str(env_dir) in _run([str(env_dir / "bin" / "python"), "-P", "-c", "import harness; print(harness.__file__)"],
                                cwd=ROOT).stdout

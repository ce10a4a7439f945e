"""A temporary copy of the project for tests that run pytest or the nightly in a subprocess: its own golden dir
(AC_GOLDEN_DIR), a planted case whose compiled program can be made wrong (PLANTED_WRONG=1) or can kill its process
(PLANTED_CRASH=1), and the committed tags goldens to start from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PLANTED = '''
import os
import signal
import torch
from harness.core.case import MIN_CUT_ONLY, Case, Program


def build(ctx):
    wrong = os.environ.get("PLANTED_WRONG") == "1"

    def fn(x):
        y = ctx.checkpoint(torch.sin, x, use_reentrant=False)
        if wrong and ctx.ac and torch.compiler.is_compiling():
            y = y * 1.01  # the compiled AC program no longer matches eager (without AC it still does: an AC defect)
        return y

    return Program(fn, (ctx.randn(4, 4),))


def build_crash(ctx):
    if ctx.ac and os.environ.get("PLANTED_CRASH") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-cell
    return build(ctx)


CASES = [Case("planted", build, axes=MIN_CUT_ONLY),
         Case("planted_crash", build_crash, axes=MIN_CUT_ONLY)]
'''


def make_project(tmp: Path, tags_goldens: bool = True) -> Path:
    skip = {".git", ".venv", ".nightly-venv", "golden", "runs", "reports", ".cache", "tests", "suites", ".hypothesis"}
    names = [p.name for p in ROOT.iterdir() if p.name not in skip and not p.name.endswith(".egg-info")]
    for name in [*names, "suites/test_tags.py"]:  # everything the case modules may read (e.g. findings/), one suite
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        elif src.exists():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp / name)
    (tmp / "harness" / "rows" / "cases" / "planted.py").write_text(PLANTED)
    (tmp / "suites" / "test_planted.py").write_text((ROOT / "suites" / "test_tags.py").read_text())
    (tmp / "golden" / "cpu").mkdir(parents=True)
    if tags_goldens:
        shutil.copytree(ROOT / "golden" / "cpu" / "test_tags", tmp / "golden" / "cpu" / "test_tags")
    return tmp


def run_in(project: Path, *args: str, env: dict | None = None, module: str = "pytest") -> subprocess.CompletedProcess:
    full_env = {**os.environ, "AC_GOLDEN_DIR": str(project / "golden"), **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    extra = ["-p", "no:cacheprovider", "-q"] if module == "pytest" else []
    return subprocess.run([sys.executable, "-m", module, *extra, *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=900)


def goldens_of(project: Path) -> dict[str, bytes]:
    d = project / "golden"
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.txt"))}

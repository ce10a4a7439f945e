"""Isolated per-torch environments: ``<NIGHTLY_VENVS>/<slug of the pip spec>/``, built once and reused.

An environment is complete when its ``.installed`` marker (holding the spec and a digest of pyproject.toml) exists; a
build that died midway has no marker and is rebuilt; a marker with another pyproject digest (a dependency was added)
re-installs the project into the environment.  The nightly (one spec) and the compatibility run (one per release) share them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness.core.figures import fmt_bytes
from harness.core.paths import NIGHTLY_VENVS, ROOT, shown

MARKER = ".installed"


def slug(text: str) -> str:
    return re.sub(r"[^\w.+]+", "-", text).strip("-") or "torch"


def env_dir(spec: str, base: Path = NIGHTLY_VENVS) -> Path:
    return base / slug(spec)


def ensure_env(spec: str, base: Path = NIGHTLY_VENVS, pip_args: tuple[str, ...] = ()) -> Path:
    """The python of ``<base>/<slug>/`` with ``spec`` and the project installed; built once, then reused."""
    venv = env_dir(spec, base)
    py = venv / "bin" / "python"
    base.mkdir(parents=True, exist_ok=True)
    # One builder per environment: a second process (a compat run while `compat build` builds ahead) waits, then reuses.
    with open(base / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / MARKER).exists():
            if (venv / MARKER).read_text() != _marker(spec):  # the project's dependencies changed since the build
                print(f"[nightly] updating the project's dependencies in {shown(venv)}", file=sys.stderr)
                subprocess.run([str(py), "-m", "pip", "install", "-q", *pip_args, spec, "-e", str(ROOT)], check=True)
                (venv / MARKER).write_text(_marker(spec))
            print(f"[nightly] reusing {shown(venv)}", file=sys.stderr)
            return py
        print(f"[nightly] building {venv} with {spec} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *pip_args, spec, "-e", str(ROOT)], check=True)
        (venv / MARKER).write_text(_marker(spec))
    return py


def _marker(spec: str) -> str:
    """What the marker holds: the spec and a digest of pyproject.toml (a new dependency re-installs the project)."""
    import hashlib

    return f"{spec}\npyproject {hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:16]}\n"


def disk_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks, links not followed; 0 when absent)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    name: str          # the directory name (slug of the spec)
    path: Path
    spec: str | None   # what the marker says was installed (None: incomplete build)
    bytes: int

    @property
    def complete(self) -> bool:
        return self.spec is not None


def list_envs(base: Path = NIGHTLY_VENVS) -> list[EnvInfo]:
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []:
        marker = d / MARKER
        out.append(EnvInfo(d.name, d, marker.read_text().strip() if marker.exists() else None, disk_bytes(d)))
    return out


def prune(specs: list[str] | None = None, base: Path = NIGHTLY_VENVS, keep: list[str] = ()) -> list[EnvInfo]:
    """Remove the environments of ``specs`` (all when None), except those of ``keep``; returns what was removed."""
    wanted = None if specs is None else {slug(s) for s in specs}
    kept = {slug(s) for s in keep}
    removed = []
    for info in list_envs(base):
        if (wanted is None or info.name in wanted) and info.name not in kept:
            shutil.rmtree(info.path)
            removed.append(info)
    return removed


def human(n: int | None) -> str:
    return fmt_bytes(n, human=True, none="—")

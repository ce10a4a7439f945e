"""Isolated per-torch environments: ``<NIGHTLY_VENVS>/<slug of the pip spec>/``, built once and reused.

An environment is complete when its ``.installed`` marker (holding the spec and a digest of pyproject.toml) exists; a
build that died midway has no marker and is rebuilt; a marker with another pyproject digest (a dependency was added)
re-installs the project into the environment.  The nightly (one spec) and the compatibility run (one per release) share them.

Each environment also gets the ``models`` dependency group (:func:`install_models`: the real-model suite's libraries,
installed beside that environment's torch without replacing it), so the nightly and the release matrix run the
real-model cells instead of skipping them; ``make models`` installs the same group into ``.venv``
(``python -m harness.tools.reports.envs models``).
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
# The models group's packages installed with --no-deps: their requirements would pull another torch (torchvision,
# timm) or torchtitan's training-only packages.  The rest resolve normally under a constraint that keeps the torch.
# The installed torch distribution's version (pip's view: a CUDA wheel's torch.__version__ carries a local +cuXYZ label
# that its metadata does not, and a constraint on the local label resolves nothing).
TORCH_DIST_VERSION = "import importlib.metadata as m; print(m.version('torch'))"
MODELS_NO_DEPS = ("torchtitan", "timm", "torchvision")
# What `pip check` may report after the group is installed: torchtitan's trainer needs (the suite imports its models
# and AC, never the trainer), and torchvision built for another torch release (its ops then fail to load, the shim in
# harness/rows/real_models.py stands in for their schemas, and the ResNet rows say so if it cannot).
MODELS_ALLOWED = re.compile(r"^torchtitan [0-9.]+ requires (datasets|tensorboard|torchdata|wandb),"
                            r"|^torchvision [0-9.]+ has requirement torch==")


def slug(text: str) -> str:
    return re.sub(r"[^\w.+]+", "-", text).strip("-") or "torch"


def env_dir(spec: str, base: Path = NIGHTLY_VENVS) -> Path:
    return base / slug(spec)


# The project with its ``triton`` extra: the user-Triton-kernel cells, emulated on CPU (harness/core/triton_emulation.py).
# The extra names triton unpinned: a CUDA torch wheel pins its own triton, a CPU one takes the newest.
PROJECT = f"{ROOT}[triton]"


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
                subprocess.run([str(py), "-m", "pip", "install", "-q", *pip_args, spec, "-e", PROJECT], check=True)
                (venv / MARKER).write_text(_marker(spec))
                install_models(py, pip_args)
                (venv / MARKER).write_text(_marker(spec))
            print(f"[nightly] reusing {shown(venv)}", file=sys.stderr)
            return py
        print(f"[nightly] building {venv} with {spec} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *pip_args, spec, "-e", PROJECT], check=True)
        install_models(py, pip_args)
        (venv / MARKER).write_text(_marker(spec))
    return py


def models_pins() -> list[str]:
    """The ``models`` dependency group of pyproject.toml (exact pins)."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["models"]


def broken_requirements(pip_check: str) -> list[str]:
    """The lines of ``pip check``'s output that :data:`MODELS_ALLOWED` does not excuse."""
    return [line for line in pip_check.splitlines()
            if line.strip() and not line.startswith("No broken requirements") and not MODELS_ALLOWED.search(line)]


def _torch_version(py: Path) -> str:
    return subprocess.run([str(py), "-c", TORCH_DIST_VERSION], check=True, capture_output=True, text=True).stdout.strip()


def install_models(py: Path, pip_args: tuple[str, ...] = ()) -> None:
    """Install the models group into the environment of ``py`` beside its torch (which must not change: checked), then
    ``pip check``: anything broken beyond :data:`MODELS_ALLOWED` is an error."""
    torch_version = _torch_version(py)
    constraint = py.parent.parent / "torch-constraint.txt"
    constraint.write_text(f"torch=={torch_version}\n")
    pins = models_pins()
    no_deps = [p for p in pins if re.split(r"[=<>~!]", p)[0] in MODELS_NO_DEPS]
    rest = [p for p in pins if p not in no_deps]
    pip = [str(py), "-m", "pip", "install", "-q", *pip_args]
    subprocess.run([*pip, "-c", str(constraint), *rest], check=True)
    subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    after = _torch_version(py)
    if after != torch_version:
        raise RuntimeError(f"installing the models group replaced torch {torch_version} by {after} in {shown(py)}")
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    broken = broken_requirements(check.stdout)
    if broken:
        raise RuntimeError(f"pip check after installing the models group into {shown(py)}:\n" + "\n".join(broken))


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


if __name__ == "__main__":  # python -m harness.tools.reports.envs models [PYTHON]: the models group (make models-install)
    if sys.argv[1:2] != ["models"]:
        sys.exit("usage: python -m harness.tools.reports.envs models [PYTHON]")
    install_models(Path(sys.argv[2] if len(sys.argv) > 2 else sys.executable))

"""The figures of a case's baseline compiles (without AC; the other budgets of a sweep), cached on disk across runs.

The comparing invariants (harness/core/invariants.py) judge a cell against the same program compiled without AC, and
``budget_monotone`` against the other budgets of its sweep; ``run_cell`` (harness/core/run.py) fetches those figures
from here before any verdict.  Those compiles were ~40% of a warm ``make test``
(bench/run_bench.py's split: "invariants"), and they are the same on every run of the same torch and harness.  So
their figures -- saved tensors, backward FLOPs, activation bytes: what the invariants read -- are stored under
``.cache/baselines/`` (``AC_BASELINE_CACHE`` points elsewhere; ``off`` disables it) and reused.  On a miss, a
baseline that differs from a run already made only in what the partitioner reads (another budget; the default
partitioner instead of min-cut, without AC) is that run's kept joint graphs partitioned again
(``pipeline.repartition``), not a second trace.

A training step without AC (a distributed rank's, harness/tools/training.py ``rank_program``; a policy cell's compiled
reference, ``no_ac_step``) is a baseline the pipeline cannot rebuild from a case, and its cell compares the gradients
bitwise: such a step is stored whole (its gradients, counts and figures, ``steps/``, :func:`step_path`), under a key
that also holds the thread count and the CPU capability, which change a step's bits but not its graphs.

Nothing cached can hide a regression:

* only baselines are cached, never the cell's own compile (or step): every check of a cell runs on a fresh compile;
* the key holds everything that decides the baseline's graphs: torch's version and git revision, a digest of the
  installed torch's files (path, size, mtime of every .py and .so: an edited or rebuilt torch with the same version
  misses), the sha256 of every harness source file (the case builders, the pipeline, the analysis), the case and its
  axes, with or without AC, and what else changes the torch that runs (:func:`environment`: torch / inductor /
  dynamo configuration variables, ``AC_FAULT``, ``PYTHONPATH``, ``sitecustomize`` / ``usercustomize`` / ``.pth``
  start-up code on the path);
* only cases of the case database (``harness/rows/cases/<area>.py``) are cached: a fuzz program or a user's model is
  always compiled.

tests/test_baselines.py shows a changed torch (version, or its files) misses the cache and a faulty cell still fails on
a warm one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from harness.core import analysis, paths
from harness.core.analysis import Saved
from harness.core.figures import Figures
from harness.core.case import Axes, Case, Runner
from harness.core.pipeline import KnapsackCall, Run, baseline, repartition

_ENV = "AC_BASELINE_CACHE"


def repartitioned(run: Run, budget: float | None, partitioner: str | None = None) -> Run | None:
    """``run``'s (a min-cut run's) analysed joints partitioned again at ``budget``, with ``partitioner`` where given
    (None: not possible here)."""
    a = analysis.of(run)
    if a is None or run.cell.axes.partitioner != "min_cut" or (budget is None and partitioner is None):
        return None
    return repartition(run, budget, [g.joint for g in a.graphs], partitioner)


def _from_min_cut(case: Case, axes: Axes) -> Run | None:
    """The program without AC under ``axes`` (another partitioner than min-cut, aot_eager), made by partitioning the
    joints of the min-cut baseline of the same program again (``pipeline.repartition``): the joint is traced before
    any partitioner runs, so a case's cells of both partitioners trace it once, not twice (None: not possible here;
    the min-cut baseline comes from this process's ``pipeline.baseline`` cache when a min-cut cell made it)."""
    if axes.partitioner == "min_cut" or axes.backend != "aot_eager":
        return None
    try:
        src = baseline(case, dataclasses.replace(axes, partitioner="min_cut"), False)
    except Exception:  # noqa: BLE001 - the caller compiles at its own partitioner, and reports that compile's error
        return None
    return repartitioned(src, axes.budget, axes.partitioner)


def cache_dir() -> Path | None:
    value = os.environ.get(_ENV, "")
    if value == "off":
        return None
    return Path(value) if value else paths.CACHE / "baselines"


@functools.cache
def harness_digest() -> str:
    """sha256 over every harness source file, path and content (any edit to a builder or the pipeline misses)."""
    h = hashlib.sha256()
    root = paths.ROOT / "harness"
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def torch_digest() -> str:
    """sha256 over the path, size and mtime of every .py and .so file of the installed torch: a torch built or edited
    in place (a compiler engineer's editable install, same version string) misses the cache.  ~0.1-0.3 s a process."""
    h = hashlib.sha256()
    root = Path(torch.__file__).parent
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".py", ".so")):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# Environment variables that change the torch a process runs without changing its files: torch's, inductor's and
# dynamo's configuration (TORCH_*, TORCHINDUCTOR_*, TORCHDYNAMO_*, PYTORCH_*), the fault kit's in-process patch
# (AC_FAULT, issue 29), what Python imports (PYTHONPATH and friends) and what the loader injects.  Where caches live
# (``*_CACHE_DIR``) changes nothing torch computes and differs between runs, so it stays out.
_ENV_PREFIXES = ("TORCH", "PYTORCH", "AC_FAULT")
_ENV_NAMES = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "LD_PRELOAD",
              "LD_LIBRARY_PATH")


def environment() -> list[tuple[str, str]]:
    """What can change the torch that runs besides its files: the variables above, and the start-up code Python
    finds on ``sys.path`` (``sitecustomize`` / ``usercustomize`` modules and ``.pth`` files, which may patch torch
    before any test runs), each by path and sha256 of its content."""
    env = [(k, v) for k, v in os.environ.items()
           if (k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES) and not k.endswith("CACHE_DIR")]
    for entry in dict.fromkeys(sys.path):
        try:
            names = sorted(e.name for e in os.scandir(entry or ".") if e.is_file() and (
                e.name.endswith(".pth") or e.name in ("sitecustomize.py", "usercustomize.py")))
        except OSError:
            continue
        for name in names:
            path = os.path.join(entry, name)
            try:
                env.append((path, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
            except OSError:
                continue
    return sorted(env)


def _digest(*parts: str) -> str:
    """The key of what ``parts`` name, computed by this torch, harness and environment (see the module docstring)."""
    common = [torch.__version__, getattr(torch.version, "git_version", ""), torch_digest(), harness_digest(),
              repr(environment())]
    return hashlib.sha256("\n".join([*common, *parts]).encode()).hexdigest()


def key(case: Case, axes: Axes, ac: bool) -> str:
    return _digest(case.area, case.name, repr(dataclasses.astuple(axes)), str(ac))


def _cacheable(case: Case) -> bool:
    return (bool(case.area) and case.runner is Runner.STANDARD and not case.variants
            and (paths.ROOT / "harness" / "rows" / "cases" / f"{case.area}.py").exists())


def figures_doc(fig: Figures) -> dict:
    """``fig`` as plain JSON values (what :func:`figures_of_doc` reads back)."""
    return {"saved": [dataclasses.asdict(s) for s in fig.saved], "bw_flops": fig.bw_flops,
            "activation_bytes": fig.activation_bytes, "knapsack": [dataclasses.asdict(c) for c in fig.knapsack]}


def figures_of_doc(doc: dict) -> Figures:
    return Figures(tuple(Saved(**s) for s in doc["saved"]), doc["bw_flops"], doc["activation_bytes"],
                   tuple(KnapsackCall(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                         for c in doc["knapsack"]))


def _load(path: Path) -> Figures | None:
    try:
        return figures_of_doc(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or written by another layout: recompute


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)  # atomic: xdist workers (or ranks) may write the same key
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store(path: Path, fig: Figures) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(figures_doc(fig)).encode()))


# ---------------------------------------------------------------------------------------------------------------
# Steps: a baseline the pipeline cannot rebuild from a case (a training step without AC), with the tensors its cell
# compares bitwise


def step_path(*parts: str) -> Path | None:
    """Where the step named by ``parts`` (e.g. scenario key, rank, world size) is cached (None: the cache is off).
    The key holds all of :func:`key`'s torch and harness parts, plus what changes a step's numbers but not its
    graphs: torch's intra-op thread count and the CPU capability its kernels dispatch to."""
    where = cache_dir()
    if where is None:
        return None
    bits = (f"threads={torch.get_num_threads()}", torch.backends.cpu.get_cpu_capability())
    return where / "steps" / f"{_digest(*bits, *parts)}.pt"


def load_step(path: Path | None) -> dict | None:
    """A stored step (``torch.load``, tensors and plain values only), or None (absent, unreadable: recompute)."""
    if path is None:
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - absent, truncated or another layout: the caller runs the step
        return None


def store_step(path: Path | None, step: dict) -> None:
    if path is not None:
        _atomic_write(path, lambda f: torch.save(step, f))


_SHARED_NO_AC: dict[tuple[str, Axes], Figures | None] = {}  # (Case.no_ac_key, axes) -> figures, this process


def figures(case: Case, axes: Axes, ac: bool, from_run: Run | None = None) -> Figures | None:
    """The baseline's figures: from the cache when this torch and harness computed them before, else compiled
    (``pipeline.baseline``) and stored.  None when the baseline recorded nothing analysable.  Cases that declare the
    same program without AC (``Case.no_ac_key``: the fuzzer's) share one no-AC compile in a process.  ``from_run``:
    a run of the same case with AC at another budget, whose joint graphs are partitioned again at ``axes.budget``
    (``pipeline.repartition``) rather than the program traced again; likewise a baseline without AC at the default
    partitioner is the min-cut one's joints partitioned again (:func:`_from_min_cut`)."""
    shared = (case.no_ac_key, axes) if case.no_ac_key and not ac else None
    if shared in _SHARED_NO_AC:
        return _SHARED_NO_AC[shared]
    where = cache_dir()
    path = where / f"{key(case, axes, ac)}.json" if where is not None and _cacheable(case) else None
    if path is not None and (hit := _load(path)) is not None:
        return hit
    made = repartitioned(from_run, axes.budget) if from_run is not None and ac else None
    made = made if made is not None or ac else _from_min_cut(case, axes)
    made = made if made is not None else baseline(case, axes, ac)
    a = analysis.of(made)
    fig = Figures.of(a, made.info.get("knapsack", ())) if a is not None else None
    if path is not None and fig is not None:
        _store(path, fig)
    if shared is not None:
        _SHARED_NO_AC[shared] = fig
    return fig

"""Wires the harness into pytest: the --device option, cell parametrization, known failures, markers,
per-worker compile caches, a config-leak guard, and the run summary (cells, graphs, checks, golden changes)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser):
    group = parser.getgroup("ac-conformance")
    group.addoption("--device", default=os.environ.get("AC_DEVICE", "cpu"), choices=("cpu", "cuda"),
                    help="device the cells run on (default cpu; cuda needs a CUDA device)")
    group.addoption("--known-failures", default=str(ROOT / "known_failures.txt"),
                    help="file of cell-id prefixes expected to fail, each with a '# reason'")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _pin_xdist_worker_to_gpu() -> None:
    """xdist worker gwN sees only GPU N (mod the GPUs visible): make test-cuda starts one worker per GPU.

    Runs when this module is imported, before anything initializes CUDA (CUDA reads CUDA_VISIBLE_DEVICES once)."""
    import subprocess

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return  # no NVIDIA driver: nothing to pin
        visible = ",".join(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU "))
    gpus = [g.strip() for g in visible.split(",") if g.strip()]
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]


_pin_xdist_worker_to_gpu()


def pytest_configure(config):
    # Compile caches that persist across runs (inductor FX graph cache and C++/triton kernels), one directory shared
    # by every xdist worker: inductor and triton write it atomically under file locks (several processes share
    # /tmp/torchinductor_<user> by default), and --dist loadgroup does not put a case on the same worker from one
    # run to the next, so per-worker directories would miss kernels another worker (or a serial run) compiled.
    cache = ROOT / ".cache"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    device = config.getoption("--device")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); "
                                "run `make test` for the CPU suite")
    from harness import golden

    config._ac_golden_before = golden.tree_digest() if _worker() == "main" else None
    config._ac_golden_texts = ({p: (golden.GOLDEN_DIR / p).read_text() for p in config._ac_golden_before}
                               if config._ac_golden_before is not None else {})


def pytest_report_header(config):
    import platform

    import torch

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        triton_v = "not installed"
    cuda = torch.version.cuda or "none"
    dev = config.getoption("--device")
    name = torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or platform.machine()
    return [f"ac-conformance: torch {torch.__version__}, triton {triton_v}, CUDA {cuda}, "
            f"python {platform.python_version()}, device {dev} ({name})"]


def _unmet_requirement(case, device: str) -> str | None:
    import torch

    for req in filter(None, (r.strip() for r in case.requires.split(","))):
        if req == "cuda" and device != "cuda":
            return f"CUDA-only: {case.requires_reason or 'needs a CUDA device'} (runs under make test-cuda)"
        if req == "triton":
            try:
                import triton  # noqa: F401
            except ImportError:
                return f"needs triton: {case.requires_reason}"
        if req == "distributed" and not torch.distributed.is_available():
            return "needs torch.distributed"
        if req.startswith("torch>="):
            want = tuple(int(x) for x in req[len("torch>="):].split("."))
            have = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[: len(want)])
            if have < want:
                return f"needs torch>={req[7:]} (installed {torch.__version__}): {case.requires_reason}"
        if req.startswith("api:") and not _has_api(req[4:]):  # e.g. api:torch.autograd.graph.region_activation_memory_budget
            return f"needs {req[4:]}, missing in torch {torch.__version__}: {case.requires_reason}"
    return None


def _has_api(dotted: str) -> bool:
    import importlib

    obj = importlib.import_module(dotted.split(".")[0])
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames:
        return
    from harness import known_failures
    from harness.case import Axes, Cell, cases_for_area

    device = metafunc.config.getoption("--device")
    area = metafunc.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    entries = known_failures.load(Path(metafunc.config.getoption("--known-failures")))
    params = []
    for case in cases_for_area(area):
        unmet = _unmet_requirement(case, device)
        axes = case.axes(device)
        if unmet or not axes:
            reason = unmet or f"not run on {device}: {case.requires_reason or 'case declares devices ' + str(case.devices)}"
            cell = Cell(case, Axes(device=device))
            params.append(pytest.param(cell, id=f"{case.name}-{device}", marks=pytest.mark.skip(reason=reason)))
            continue
        from harness.matrix import matrix_cells

        # The declared cells, then the partitioner x budget x backend matrix (slow; harness/matrix.py).
        for cell in [Cell(case, a) for a in axes] + matrix_cells(case, device):
            a = cell.axes
            marks = [pytest.mark.xdist_group(case.name)]
            if a.budget is not None or a.backend == "inductor" and "slow" in case.notes or cell.case is not case:
                marks.append(pytest.mark.slow)
            if "cuda" in case.requires:
                marks.append(pytest.mark.cuda)
            known = known_failures.match(cell.id, entries)
            if known:
                marks.append(pytest.mark.xfail(strict=True, reason=f"known failure: {known.reason}"))
            params.append(pytest.param(cell, id=cell.id, marks=marks))
    if not params:
        raise pytest.UsageError(f"suite {metafunc.module.__name__}: no case in the database has area {area!r}")
    metafunc.parametrize("cell", params)


@pytest.fixture
def goldens(snapshot, cell, request):
    from harness.golden import Goldens

    # --snapshot-update-new-only: syrupy writes the missing goldens and leaves existing ones as they are (a drifted
    # existing golden still fails the cell), so the handle must let the missing ones through to syrupy.
    update = request.config.option.update_snapshots or getattr(request.config.option, "update_new_snapshots_only", False)
    return Goldens(snapshot, cell.id, cell.axes.device, update=update)


@pytest.fixture
def record(request):
    """Adds a figure to the test report (it travels back from xdist workers as a user property)."""
    return lambda key, value: request.node.user_properties.append((key, value))


_CONFIG_MODULES = ("torch._dynamo.config", "torch._functorch.config", "torch._inductor.config")


def _config_state():
    import importlib

    return {m: importlib.import_module(m).get_config_copy() for m in _CONFIG_MODULES}


@pytest.fixture(autouse=True)
def _no_config_leak(request):
    """Every config patch a case makes must be undone when it ends."""
    before = _config_state()
    yield
    after = _config_state()
    leaked = [f"{m}.{k}: {before[m].get(k)!r} -> {after[m].get(k)!r}"
              for m in _CONFIG_MODULES for k in sorted(set(before[m]) | set(after[m]))
              if before[m].get(k) is not after[m].get(k) and before[m].get(k) != after[m].get(k)]
    if leaked:
        pytest.fail(f"{request.node.nodeid} leaked config changes:\n  " + "\n  ".join(leaked), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    totals: Counter = Counter()
    cases: set[str] = set()
    cells = 0
    for key in ("passed", "failed", "xfailed", "xpassed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", "call") != "call":
                continue
            if "[" in rep.nodeid and rep.nodeid.split("::")[0].startswith("suites/"):
                cells += 1
            for k, v in rep.user_properties:
                if k == "case":
                    cases.add(v)
                elif isinstance(v, (int, float)) and not k.endswith("_seconds"):
                    totals[k] += v
    if cells:
        terminalreporter.write_sep("-", "conformance summary")
        terminalreporter.write_line(
            f"cases: {len(cases)}; cells run: {cells}; graphs compared with goldens: {totals['graphs_compared']}; "
            f"numerics comparisons: {totals['numerics_checks']}; op-count checks: {totals['op_count_checks']}; "
            f"invariant checks: {totals['invariant_checks']}; error-message checks: {totals['error_checks']}")
    _report_unmatched_known_failures(terminalreporter, config)
    before = getattr(config, "_ac_golden_before", None)
    if before is not None:
        from harness import review

        if config.option.update_snapshots and not config.option.keyword:
            review.remove_orphans()  # goldens of cells that no longer exist (syrupy keeps them while the module exists)
        review.report_golden_changes(terminalreporter, before, config._ac_golden_texts)
        if config.option.update_snapshots or getattr(config.option, "update_new_snapshots_only", False):
            review.report_refused(terminalreporter)


def _report_unmatched_known_failures(terminalreporter, config) -> None:
    """An entry that matches no cell of the database (on any device) has rotted: say so."""
    from harness import known_failures
    from harness.matrix import all_cell_ids

    stale = known_failures.unmatched(known_failures.load(Path(config.getoption("--known-failures"))), all_cell_ids())
    for e in stale:
        terminalreporter.write_line(f"WARNING known_failures.txt:{e.line}: '{e.prefix}' matches no cell of the case database")

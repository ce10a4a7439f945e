"""The project's pytest plugin (``conftest.py`` only registers it): the ``--device`` and ``--known-failures`` options,
cell parametrization from :mod:`harness.rows.collect`, markers, per-run compile caches, a config-leak guard, the report
header and the run summary (cells, graphs, checks, golden changes).

Other plugins observe each recorded run through the ``pytest_ac_run_recorded`` hook (the nightly plugin records
graphs and figures there); a cell's test receives a :class:`CellRecord` (the ``record`` fixture) that carries the
figures it reports, the known-failure entries in force and that hook.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from harness.core import paths
from harness.tools import overhead

_CONFIG_MODULES = ("torch._dynamo.config", "torch._functorch.config", "torch._inductor.config")


class Hooks:
    @pytest.hookspec
    def pytest_ac_run_recorded(self, run, item):
        """A cell's run was recorded (before any check): observe its graphs, texts and figures."""


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(Hooks)


def pytest_addoption(parser):
    group = parser.getgroup("ac-conformance")
    group.addoption("--device", default=os.environ.get("AC_DEVICE", "cpu"), choices=("cpu", "cuda"),
                    help="device the cells run on (default cpu; cuda needs a CUDA device)")
    group.addoption("--known-failures", default=str(paths.KNOWN_FAILURES),
                    help="TOML file of known failures (root causes, each pinned to the check it breaks)")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pin_xdist_worker_to_gpu() -> None:
    """xdist worker gwN sees only GPU N (mod the GPUs visible): make test-cuda starts one worker per GPU.

    Must run before anything initializes CUDA (CUDA reads CUDA_VISIBLE_DEVICES once): called when pytest imports this
    plugin (conftest.py's ``pytest_plugins``), before any test module."""
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


pin_xdist_worker_to_gpu()


def prune_empty_kernels(cache: Path) -> list[Path]:
    """Remove the empty compiled kernels (``*.so`` of 0 bytes) a compile killed midway leaves in the inductor cache:
    inductor (torch 2.11 at least) loads an existing .so without checking it and fails the cell with "file too short"
    in every later run.  Returns what was removed."""
    removed = []
    if cache.is_dir():
        for so in cache.rglob("*.so"):
            if so.is_file() and so.stat().st_size == 0:
                so.unlink(missing_ok=True)
                removed.append(so)
    return removed


_GC_TUNED = os.environ.get("AC_GC") != "default"
_gc_frozen_by = None  # the config whose collection froze the heap (not an in-process pytester run inside it)


def tune_gc() -> None:
    """Fewer, smaller full garbage collections in a process whose heap is mostly torch.

    CPython collects its oldest generation once its third threshold (10) of younger collections has passed and the
    objects that survived them have grown by a quarter of that generation; each such collection scans every tracked
    object.  An xdist worker of ``make test`` holds ~0.5 M objects once torch and the suites are imported and ~0.4 M
    more that the compiles leave in torch's caches: 16 full collections of ~0.28 s each, ~4.5 s of a worker's ~60 s
    (measured with ``gc.callbacks``).  So the third threshold goes to 100, and what exists when collection ends leaves
    every later collection (``gc.freeze`` in :func:`pytest_collection_finish`): 9 full collections, ~2 s, 4 of them
    after the freeze, each scanning only what the tests made.  Cyclic garbage is still collected by the younger
    generations and by the rarer full collections, and ``gc.collect()`` still collects everything created after the
    freeze.  The heap is unfrozen when the session ends (:func:`pytest_unconfigure`), so that the interpreter's exit
    frees it as usual: a frozen heap is never freed, and triton's nanobind bindings then print pages of "leaked"
    objects at exit.
    ``AC_GC=default`` keeps CPython's settings."""
    import gc

    if _GC_TUNED:
        gc.set_threshold(*gc.get_threshold()[:2], 100)


def pytest_collection_finish(session):
    """See :func:`tune_gc`: once a process has imported torch and the suites, the objects alive then (modules, torch's
    op registrations, the case database) leave the collector until the session ends."""
    global _gc_frozen_by
    import gc

    if _GC_TUNED and _gc_frozen_by is None:
        _gc_frozen_by = session.config
        gc.collect()
        gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """See :func:`tune_gc`: the session that froze the heap unfreezes it, for the interpreter's exit; an xdist worker
    keeps it frozen and leaves through :func:`_worker_exit` instead."""
    global _gc_frozen_by
    import atexit
    import gc

    if config is _gc_frozen_by:
        _gc_frozen_by = None
        if hasattr(config, "workerinput"):  # this session is an xdist worker's (not a pytester run inside one)
            atexit.register(_worker_exit)
        else:
            gc.unfreeze()


def _worker_exit() -> None:
    """An xdist worker's exit, without the interpreter's teardown of its heap.

    The worker's results reached the controller before its session ended, and the controller then waits for the
    worker process to end (xdist ``teardown_nodes``).  CPython's exit spent that wait in full collections and in
    freeing a heap of ~1 M objects the OS is about to reclaim: 1.5-3.7 s a ``make test`` worker, after pytest's own 5
    end-of-session collections (unraisableexception) over the unfrozen heap.  So the worker keeps the heap frozen
    (those 5 collections skip it), runs every other exit handler (``atexit``: torch's compile-worker shutdown, weakref
    finalizers, logging, coverage) and leaves with ``os._exit(0)``, the status a worker that returns from execnet's
    ``serve`` has (execnet does not read it).  Registered last, this handler runs first: it unregisters itself, runs
    the others, flushes stdout and stderr.  Nothing is lost: reports, goldens and the baseline cache were written and
    closed during the session; and no nanobind "leaked" report, since nanobind checks in the teardown skipped here.
    Cyclic garbage the last tests left is frozen with the rest (:func:`pytest_sessionfinish`) and never finalized."""
    import atexit
    import sys

    atexit.unregister(_worker_exit)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed, or a closed pipe: nothing more to say
    os._exit(0)


def pytest_configure(config):
    tune_gc()
    # Compile caches that persist across runs (inductor FX graph cache and C++/triton kernels), one directory shared
    # by every xdist worker: inductor and triton write it atomically under file locks, and --dist loadgroup does not
    # put a case on the same worker from one run to the next, so per-worker directories would miss kernels.
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
        prune_empty_kernels(paths.CACHE / "inductor")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(paths.CACHE / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(paths.CACHE / "triton"))
    device = config.getoption("--device")
    import torch

    from harness.tools import faults

    config._ac_fault = faults.apply_from_env()  # AC_FAULT=<id>: the fault-injection kit patches torch in this process
    if device == "cuda" and not torch.cuda.is_available() and not config.option.collectonly:
        raise pytest.UsageError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); "
                                "run `make test` for the CPU suite (`--collect-only` lists the CUDA cells without one)")
    from harness.core import golden, known_failures

    if not golden.updating(config):
        # syrupy's unused-snapshot accounting matters only to an update (it deletes the stale graph kinds of a cell
        # that ran); a plain run has its own stale-kind check (Goldens.assert_match) and syrupy never flags an
        # orphan golden there anyway.  It cost ~1.3 s at the end of every run, serial in the xdist controller.
        config.option.disable_unused_snapshots = True
    config._ac_known = known_failures.load(Path(config.getoption("--known-failures")))
    config._ac_golden_before = golden.tree_digest() if _worker() == "main" else None
    config._ac_golden_texts = ({p: (golden.GOLDEN_DIR / p).read_text() for p in config._ac_golden_before}
                               if config._ac_golden_before is not None else {})


def pytest_itemcollected(item):
    """Under AC_FAULT every cell carries the fault applied in the process that collected (and so runs) it."""
    fault = getattr(item.config, "_ac_fault", None)
    if fault:
        item.user_properties.append(("ac_fault", fault))


def pytest_collection_modifyitems(config, items):
    """Plain tests a known-failure entry selects (``tests`` node-id globs, on this torch): strict xfails."""
    import torch

    from harness.core import known_failures

    for item in items:
        entry = known_failures.known_test(config._ac_known, item.nodeid, torch.__version__)
        if entry is not None:
            item._ac_known_test = entry
            item.user_properties.append(("known_failure", entry.id))  # the nightly record's known_failure field
            # AssertionError, or pytest.fail's (the ac_conformance fixture reports a failing cell with it)
            item.add_marker(pytest.mark.xfail(strict=True, raises=(AssertionError, pytest.fail.Exception),
                                              reason=f"known failure {entry.id} ({entry.upstream}); repro {entry.repro}"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Inside pytest's log capture of the phase (see :func:`harness.tools.overhead.quiet_trace_log`).  The guard
    patch comes before each test, once Dynamo is imported (an xdist controller never imports it)."""
    overhead.skip_guard_latency_profile()
    overhead.quiet_trace_log()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    overhead.quiet_trace_log()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    overhead.quiet_trace_log()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A known-failure test that fails with another message than its entry's fails (the xfail pins one defect)."""
    report = yield
    entry = getattr(item, "_ac_known_test", None)
    if entry is not None and call.when == "call" and call.excinfo is not None and hasattr(report, "wasxfail"):
        seen = str(call.excinfo.value)
        if not re.search(entry.message, seen):
            del report.wasxfail
            report.outcome = "failed"
            report.longrepr = (f"known failure {entry.id}: expected the test to fail with a message matching "
                               f"/{entry.message}/; seen {call.excinfo.typename}: {seen[:2000]}")
    return report


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
    lines = [f"ac-conformance: torch {torch.__version__}, triton {triton_v}, CUDA {cuda}, "
             f"python {platform.python_version()}, device {dev} ({name})"]
    if getattr(config, "_ac_fault", None):
        from harness.tools import faults

        fault = faults.faults()[config._ac_fault]
        lines.append(f"ac-conformance: FAULT INJECTED {fault.id} ({fault.file}): {fault.doc}")
    if not overhead.kept():
        lines.append("ac-conformance: Dynamo's guard-latency profile and pytest's capture of torch's structured trace "
                     "are off (harness/tools/overhead.py; AC_COMPILE_OVERHEAD=torch keeps them)")
    return lines


def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames:
        return
    from harness.core.case import Need
    from harness.rows.collect import collect

    device = metafunc.config.getoption("--device")
    area = metafunc.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    params = []
    for c in collect(area, device):
        if c.skip:
            params.append(pytest.param(c.cell, id=c.id, marks=[pytest.mark.skip(reason=c.skip)]
                                       + ([pytest.mark.slow] if c.slow else [])))
            continue
        marks = [pytest.mark.xdist_group(c.cell.case.name)]
        if c.slow:
            marks.append(pytest.mark.slow)
        if c.marker:
            marks.append(getattr(pytest.mark, c.marker))
        if device == "cuda" or c.cell.case.needs(Need.CUDA):
            marks.append(pytest.mark.cuda)
        params.append(pytest.param(c.cell, id=c.id, marks=marks))
    if not params:
        raise pytest.UsageError(f"suite {metafunc.module.__name__}: no case in the database has area {area!r}")
    metafunc.parametrize("cell", params)


@pytest.fixture
def goldens(snapshot, cell, request):
    from harness.core.golden import Goldens

    return Goldens.of_request(snapshot, cell.id, cell.axes.device, request.config)


class CellRecord:
    """What a cell's test reports: figures (user properties that travel back from xdist workers), the observers of
    its run, and the known failures in force."""

    def __init__(self, item):
        self.item = item
        self.known_failures = item.config._ac_known

    def __call__(self, key: str, value) -> None:
        self.item.user_properties.append((key, value))

    def observe(self, run) -> None:
        self.item.config.hook.pytest_ac_run_recorded(run=run, item=self.item)


@pytest.fixture
def record(request):
    return CellRecord(request.node)


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
    without_invariants: list[str] = []
    for key in ("passed", "failed", "xfailed", "xpassed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", "call") != "call":
                continue
            cells += any(k == "case" for k, _ in rep.user_properties)  # a cell (check_cell records its case)
            for k, v in rep.user_properties:
                if k == "case":
                    cases.add(v)
                elif isinstance(v, (int, float)) and not k.endswith("_seconds"):
                    totals[k] += v
                if k == "cells_without_invariants":
                    without_invariants.append(rep.nodeid.rpartition("[")[2].rstrip("]"))
    if cells:
        terminalreporter.write_sep("-", "conformance summary")
        terminalreporter.write_line(
            f"cases: {len(cases)}; cells run: {cells}; graphs compared with goldens: {totals['graphs_compared']}; "
            f"numerics comparisons: {totals['numerics_checks']}; op-count checks: {totals['op_count_checks']}; "
            f"invariant checks: {totals['invariant_checks']}; run-time oracle checks: {totals['runtime_checks']}; "
            f"state checks: {totals['state_checks']}; error-message checks: {totals['error_checks']}; "
            f"contract checks: {totals['contract_checks']}; known-failure cells: {totals['known_failure_cells']} ({totals['known_failure_other_checks']} other "
            f"checks passed in them); checks not run: {totals['checks_not_run']}")
        if without_invariants:
            shown = ", ".join(sorted(without_invariants)[:8]) + (f", +{len(without_invariants) - 8} more"
                                                                 if len(without_invariants) > 8 else "")
            terminalreporter.write_line(f"cells where no invariant ran ({len(without_invariants)}; the reasons are "
                                        f"each cell's 'not_run' property): {shown}")
    _report_unmatched_known_failures(terminalreporter, config)
    before = getattr(config, "_ac_golden_before", None)
    if before is not None:
        from harness.core import golden
        from harness.tools import review

        if config.option.update_snapshots and not config.option.keyword:
            review.remove_orphans()  # goldens of cells that no longer exist (syrupy keeps them while the module exists)
        review.report_golden_changes(terminalreporter, before, config._ac_golden_texts)
        if golden.updating(config):
            review.report_refused(terminalreporter)


def _unmatched_known_failures(config) -> list[str]:
    """The ids of entries whose selector matches no cell of the database (on any device): they have rotted."""
    from harness.core import known_failures
    from harness.rows.collect import all_cells

    return [e.id for e in known_failures.unmatched(config._ac_known, all_cells())]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """An xdist worker has the case database imported already; the controller has not (importing it there cost ~1 s,
    serial, at the end of every run), so the worker computes the unmatched entries and the controller prints them.

    Then, last (the session's fixtures are torn down, and xdist sends the worker's results after this), a worker
    that froze the heap (:func:`tune_gc`) freezes what its tests left too: pytest's 5 end-of-session collections
    (unraisableexception) scanned it, ~0.6 s of the controller's wait for its workers to end, and the worker then
    leaves without freeing it (:func:`_worker_exit`)."""
    import gc

    config = session.config
    if hasattr(config, "workeroutput"):
        config.workeroutput["ac_unmatched_known_failures"] = _unmatched_known_failures(config)
    if config is _gc_frozen_by and hasattr(config, "workerinput"):
        gc.freeze()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    ids = getattr(node, "workeroutput", {}).get("ac_unmatched_known_failures")
    if ids is not None:
        node.config._ac_unmatched_known_failures = ids


def _report_unmatched_known_failures(terminalreporter, config) -> None:
    ids = getattr(config, "_ac_unmatched_known_failures", None)  # a worker's answer, or computed here (no xdist)
    for entry_id in _unmatched_known_failures(config) if ids is None else ids:
        terminalreporter.write_line(f"WARNING {Path(config.getoption('--known-failures')).name}: entry '{entry_id}' "
                                    f"matches no cell of the case database")

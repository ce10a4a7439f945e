"""pytest plugin for nightly runs (``-p harness.tools.nightly_plugin --nightly-out FILE``), used by ``harness.tools.nightly``.

On the process that runs a cell (the main process or an xdist worker) it records, for every cell, which check failed
(``exc.ac_check`` set by ``harness.core.suite.check_cell``; golden drift is ``harness.core.golden.GoldenDrift``), each graph
kind against its committed golden (same / changed / missing / stale, with both texts when they differ), and the
figures of the recorded and the golden graphs (op counts, saved bytes, FLOPs).  These travel to the controller as
user properties.  The controller appends one JSON line per finished cell to FILE as it goes (so a run killed midway
still leaves its results), prints progress (cells done / total, current cell, elapsed), and turns a crashed xdist
worker into a failure record for the cell it was running.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest



def pytest_addoption(parser):
    parser.getgroup("ac-conformance").addoption(
        "--nightly-out", default=None, help="JSON-lines file the nightly plugin appends its records to")


def _is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def env_info(device: str) -> dict:
    import platform

    import torch

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        triton_v = None
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return {"torch": torch.__version__, "triton": triton_v, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": device, "device_name": name, "platform": platform.platform()}


def pytest_configure(config):
    if not _is_worker() and config.getoption("--nightly-out"):
        config.pluginmanager.register(_Controller(config), "ac-nightly-controller")


# --- the process running the cell -------------------------------------------------------------------------------

def pytest_ac_run_recorded(run, item) -> None:
    """Each graph kind against its golden, and the figures of both (before any check can stop the cell)."""
    from harness.core import figures
    from harness.core.golden import split_golden, texts_for

    goldens = getattr(item, "funcargs", {}).get("goldens")
    if goldens is None:
        return
    texts = texts_for(run)
    golden_texts = {k: split_golden(goldens.path(k).read_text())[1] for k in goldens.existing_kinds()}
    graphs = {}
    for kind in sorted(set(texts) | set(golden_texts)):
        new, old = texts.get(kind), golden_texts.get(kind)
        status = "same" if new == old else "missing" if old is None else "stale" if new is None else "changed"
        graphs[kind] = {"status": status}
        if status != "same":
            graphs[kind].update(golden=old, recorded=new)
    golden = figures.parse_summary(golden_texts["summary"]) if "summary" in golden_texts else None
    item.user_properties.append(("nightly_graphs", {
        "graphs": graphs, "recorded": figures.of(run), "golden": golden,
        "compile_seconds": round(run.compile_seconds, 3)}))


MESSAGE_CHARS = 4000


def _cut(text: str, n: int) -> str:
    """``text`` within ``n`` characters: its head and its tail (where a traceback's error line is)."""
    if len(text) <= n:
        return text
    kept = n - len(f"\n[... {len(text)} characters cut ...]\n")
    mark = f"\n[... {len(text) - kept} characters cut ...]\n"
    head = (n - len(mark)) * 2 // 3
    return text[:head] + mark + text[len(text) - (n - len(mark) - head):]


def _message(exc: BaseException) -> str:
    """A failure's message within MESSAGE_CHARS; a CellFailure keeps every ``[stage]`` line, each check's message cut
    to its share, so the compat report can still tell every failing check (harness.tools.reports.releases.failing_checks)."""
    from harness.core.suite import CellFailure

    if not isinstance(exc, CellFailure):
        return _cut(f"{type(exc).__name__}: {exc}", MESSAGE_CHARS)
    failures = exc.failures
    head = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    share = max(200, (MESSAGE_CHARS - len(head)) // len(failures) - 20)
    return "\n".join([head] + [f"[{stage}] {_cut(str(msg), share)}" for stage, msg in failures])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if call.when == "call" or (call.when == "setup" and call.excinfo is not None):
        from harness.core.golden import GoldenDrift
        from harness.core.invariants import INVARIANTS

        check, message = None, None
        if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
            exc = call.excinfo.value
            if isinstance(exc, GoldenDrift):
                check = "golden"
            elif call.when == "setup":
                check = "setup"
            else:
                check = getattr(exc, "ac_check", None) or ("exception" if not isinstance(exc, AssertionError) else "assertion")
            message = _message(exc)
        cell = getattr(item, "callspec", None) and item.callspec.params.get("cell")
        rep.user_properties.append(("nightly_cell", {
            "failed_check": check, "message": message,
            "error_case": bool(cell is not None and getattr(cell.case, "raises", None) is not None),
            "invariants": [f.__name__ for f in INVARIANTS],
            "known_failure": next((v for k, v in item.user_properties if k == "known_failure"), None),
            "cell": getattr(cell, "id", None), "case": getattr(getattr(cell, "case", None), "name", None)}))
    return rep


# --- the controller ------------------------------------------------------------------------------------------------

def _props(rep) -> dict:
    return {k: v for k, v in rep.user_properties if k.startswith("nightly_")}


def cell_record(nodeid: str, reports: list) -> dict:
    """One cell's record from its setup/call/teardown reports (or a crash report)."""
    props: dict = {}
    for r in reports:
        props.update(_props(r))
    info = props.get("nightly_cell", {})
    graphs = props.get("nightly_graphs", {})
    crash = next((r for r in reports if r.when not in ("setup", "call", "teardown")), None)
    main = next((r for r in reports if r.when == "call"), None) or next((r for r in reports if r.failed or r.skipped), reports[0])
    check, message = info.get("failed_check"), info.get("message")
    known = info.get("known_failure")
    if crash is not None:
        category, check, message = "semantic", "crash", str(crash.longrepr)
    elif hasattr(main, "wasxfail"):
        category = "known_failure"
    elif main.failed and "XPASS(strict)" in str(main.longrepr):
        category, check, message = "known_failure_passes", None, f"known failure now passes: {known}"
    elif main.skipped:
        category = "skipped"
        message = main.longrepr[2] if isinstance(main.longrepr, tuple) else str(main.longrepr)
    elif main.failed or any(r.failed for r in reports):
        category = "drift" if check == "golden" else "semantic"
        if check is None:
            check = "teardown" if any(r.failed and r.when == "teardown" for r in reports) else "exception"
            message = message or str(next(r for r in reports if r.failed).longrepr)[-4000:]
    else:
        category = "pass"
    stages = ["run", "numerics", "expectations", "case_check"] + [f"invariant:{n}" for n in info.get("invariants", [])]

    def result(stage: str) -> str:
        if category in ("skipped",) or info.get("error_case") or check in ("crash", "setup"):
            return "not run"
        if check in (None, "golden", "teardown") and category != "known_failure":
            return "pass"
        if check == stage:
            return "fail"
        if check in stages and stages.index(stage) < stages.index(check):
            return "pass"
        return "not run"

    cell = info.get("cell") or (nodeid.split("[", 1)[1].rstrip("]") if "[" in nodeid else nodeid)
    return {
        "nodeid": nodeid, "cell": cell, "case": info.get("case"), "suite": nodeid.split("::")[0],
        "category": category, "failed_check": check, "message": message, "known_failure": known,
        "numerics": result("numerics"), "expectations": result("expectations"),
        "invariants": {n: result(f"invariant:{n}") for n in info.get("invariants", [])},
        "error_check": ("fail" if check == "error_check" else "pass" if category == "pass" else "not run")
        if info.get("error_case") else None,
        "graphs": graphs.get("graphs", {}), "recorded": graphs.get("recorded"), "golden": graphs.get("golden"),
        "compile_seconds": graphs.get("compile_seconds"),
        "duration_seconds": round(sum(r.duration for r in reports), 3),
    }


class _Controller:
    def __init__(self, config):
        self.config = config
        self.out = Path(config.getoption("--nightly-out"))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.total: int | None = None
        self.done = 0
        self.running: dict[str, None] = {}  # started, not yet finished (one per worker)
        self.reports: dict[str, list] = {}
        self._write({"type": "env", **env_info(config.getoption("--device"))})

    def _write(self, obj: dict) -> None:
        with self.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")

    def _collected(self, ids) -> None:
        if self.total is None:
            self.total = len(ids)
            self._write({"type": "collected", "ids": list(ids)})

    def pytest_collection_finish(self, session):
        if not self.config.pluginmanager.hasplugin("dsession"):
            self._collected([i.nodeid for i in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self._collected(ids)

    def pytest_runtest_logstart(self, nodeid, location):
        self.running[nodeid] = None

    def pytest_runtest_logreport(self, report):
        reps = self.reports.setdefault(report.nodeid, [])
        reps.append(report)
        if report.when in ("teardown", "???"):
            rec = cell_record(report.nodeid, reps)
            self._write({"type": "cell", **rec})
            del self.reports[report.nodeid]
            self.running.pop(report.nodeid, None)
            self.done += 1
            elapsed = int(time.monotonic() - self.start)
            total = self.total if self.total is not None else "?"
            sys.stderr.write(f"\n[nightly] {self.done}/{total} cells, {elapsed // 3600}:{elapsed // 60 % 60:02d}:"
                             f"{elapsed % 60:02d} elapsed, last: {rec['cell']} ({rec['category']}), "
                             f"running: {', '.join(n.rsplit('[', 1)[-1].rstrip(']') for n in self.running) or '-'}\n")
            sys.stderr.flush()

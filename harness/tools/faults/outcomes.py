"""pytest plugin for ``make mutate`` (``-p harness.tools.faults.outcomes --ac-outcomes FILE``): one JSON line per test
phase report, written (and flushed) by the controller as it arrives, then one closing line with the exit status.  A run
that crashes or is killed leaves every phase reported so far, so the reader can tell the test that was running (set up,
never torn down) from those that never started.

:func:`read` turns the lines into one outcome per test: ``passed``, ``failed`` (any phase failed: setup, call or
teardown), ``skipped``, ``xfailed``, ``xpassed``, ``crashed`` (started, never finished) or, for a module that failed to
collect, ``failed`` under its node id.
"""

from __future__ import annotations

import json
from pathlib import Path

RANK = {"passed": 0, "skipped": 1, "xpassed": 2, "xfailed": 3, "failed": 4}  # a later phase never hides a failure


def pytest_addoption(parser):
    parser.addoption("--ac-outcomes", default=None, help="append each test phase's outcome to this file (JSON lines)")


class _Writer:
    def __init__(self, path: Path):
        self.file = open(path, "w")

    def _write(self, doc: dict) -> None:
        self.file.write(json.dumps(doc) + "\n")
        self.file.flush()

    def pytest_runtest_logreport(self, report):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        fault = next((v for k, v in report.user_properties if k == "ac_fault"), None)
        self._write({"test": report.nodeid, "when": report.when, "outcome": outcome,
                     "seconds": round(report.duration, 3), "fault": fault})

    def pytest_collectreport(self, report):
        if report.failed:
            self._write({"test": report.nodeid or "<collection>", "when": "collect", "outcome": "failed",
                         "seconds": 0.0, "fault": None})

    def pytest_sessionfinish(self, session, exitstatus):
        self._write({"exitstatus": int(exitstatus)})
        self.file.close()


def pytest_configure(config):
    path = config.getoption("--ac-outcomes")
    if path and not hasattr(config, "workerinput"):  # the controller (or a run without xdist) sees every report
        config.pluginmanager.register(_Writer(Path(path)), "ac-outcomes")


def read(path: Path) -> dict:
    """``{"exitstatus": int | None (no closing line: crashed or killed), "tests": {nodeid: {"outcome", "seconds",
    "fault"}}}``."""
    tests: dict[str, dict] = {}
    exitstatus = None
    finished: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if "exitstatus" in doc:
            exitstatus = doc["exitstatus"]
            continue
        entry = tests.setdefault(doc["test"], {"outcome": "passed", "seconds": 0.0, "fault": None})
        if RANK[doc["outcome"]] > RANK[entry["outcome"]]:
            entry["outcome"] = doc["outcome"]
        entry["seconds"] = round(entry["seconds"] + doc["seconds"], 3)
        entry["fault"] = entry["fault"] or doc["fault"]
        if doc["when"] in ("teardown", "collect"):
            finished.add(doc["test"])
    for nodeid, entry in tests.items():
        if nodeid not in finished:
            entry["outcome"] = "crashed"
    return {"exitstatus": exitstatus, "tests": tests}

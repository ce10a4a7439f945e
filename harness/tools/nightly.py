"""Nightly regression runs against a torch build: the whole suite (slow matrix included) against the committed goldens.

    python -m harness.tools.nightly run --torch torch==2.14.1 [--workers 2] [-- PYTEST ARGS]   (what `make nightly` calls)
    python -m harness.tools.nightly merge RUN_DIR RUN_DIR ... [--out DIR]                       (shards -> one report)
    python -m harness.tools.nightly report RUN_DIR                                              (re-render report.html)

`run` builds (once) or reuses an isolated environment ``.nightly-venv/<torch spec>/`` (harness.tools.reports.envs), runs pytest there with the
nightly plugin (goldens are compared, never written) and writes ``runs/<UTC timestamp>-<torch>/`` holding
``junit.xml``, ``run.json`` (schema: docs/nightly-schema.json), ``report.html`` and ``pytest.log``; it appends one line
to ``runs/history.jsonl`` and re-renders ``runs/trend.html``.

Every cell lands in one category: semantic (numerics, expectations, invariants, error checks, exceptions, crashed
workers), drift (graphs differ from goldens while every semantic check passed), known_failure (still failing),
known_failure_passes (a known failure that now passes: the upstream fix landed), pass, skipped.

Exit codes: 0 clean; 1 graph-only drift or known failures that now pass (review, no alarm);
2 semantic failures (an alarm); 3 the run itself failed (environment, collection, no cell ran).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.core.paths import ROOT, RUNS_DIR, SCHEMA
from harness.tools.reports.envs import ensure_env, slug
from harness.tools.reports.html import render_report, render_trend
from harness.tools.reports.junit import merge_junit
from harness.tools.reports.record import EXIT_BROKEN, build_document, history_line, read_cells, validate


def finish(run_dir: Path, doc: dict, runs_dir: Path, history: bool) -> int:
    problems = validate(doc, json.loads(SCHEMA.read_text()))
    if problems:  # a harness bug: still write everything, but say so
        print("[nightly] run.json does not match docs/nightly-schema.json:\n  " + "\n  ".join(problems[:20]), file=sys.stderr)
    (run_dir / "run.json").write_text(json.dumps(doc, indent=1) + "\n")
    (run_dir / "report.html").write_text(render_report(doc))
    if history:
        with (runs_dir / "history.jsonl").open("a") as f:
            f.write(json.dumps(history_line(doc)) + "\n")
        lines = [json.loads(x) for x in (runs_dir / "history.jsonl").read_text().splitlines() if x.strip()]
        (runs_dir / "trend.html").write_text(render_trend(lines))
    s = doc["summary"]
    print(f"[nightly] {run_dir}: {s['cells']} cells: {s['semantic']} semantic failures, {s['drift']} graph-only drift, "
          f"{s['known_failure_passes']} known failures now passing, {s['known_failure']} known failures, {s['pass']} passes, "
          f"{s['skipped']} skipped; drifting graphs by kind {s['drifting_graphs_by_kind']}; exit {doc['exit_code']}")
    print(f"[nightly] report: {run_dir / 'report.html'}")
    return EXIT_BROKEN if problems or (doc["pytest_exit_code"] not in (0, 1, None) or not s["cells"]) else doc["exit_code"]


def cmd_run(a) -> int:
    py = Path(a.python) if a.python else ensure_env(a.torch) if a.torch else Path(sys.executable)
    version = subprocess.run([str(py), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                             check=True).stdout.strip()
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-torch-{slug(version)}"
    runs_dir = Path(a.runs_dir)
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    args = a.pytest_args[1:] if a.pytest_args[:1] == ["--"] else a.pytest_args
    if not any(not x.startswith("-") and Path(x.split("::")[0]).exists() for x in args):
        args = ["suites", *args]
    cmd = [str(py), "-m", "pytest", *args, "-p", "harness.tools.nightly_plugin", "--nightly-out", str(run_dir / "cells.jsonl"),
           f"--junitxml={run_dir / 'junit.xml'}", "-q", "-n", str(a.workers), "--dist", "load"]
    # --dist load, not loadgroup: under xdist 3.8 a crashed worker's replacement is never given work with loadgroup
    # (the run hangs), while load reschedules; cells of a case then may not share a worker's eager cache.
    print("[nightly] " + " ".join(cmd), file=sys.stderr)
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    with (run_dir / "pytest.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if "[nightly]" in line or not a.quiet:
                sys.stdout.write(line[line.index("[nightly]"):] if a.quiet else line)
                sys.stdout.flush()
        rc = proc.wait()
    env_info, _, cells = read_cells(run_dir / "cells.jsonl")
    doc = build_document(run_id, env_info, cells, torch_spec=a.torch or version, started=started.isoformat(timespec="seconds"),
                         seconds=time.monotonic() - t0, pytest_exit=rc, args=args)
    return finish(run_dir, doc, runs_dir, history=not a.no_history)


def cmd_merge(a) -> int:
    docs = [json.loads((Path(d) / "run.json").read_text()) for d in a.dirs]
    cells: dict[str, dict] = {}
    for d in docs:
        for c in d["cells"]:
            cells[c["nodeid"]] = c
    torches = sorted({d["environment"].get("torch") for d in docs}, key=str)
    if len(torches) > 1:
        print(f"[nightly] warning: merging runs of different torch versions {torches}", file=sys.stderr)
    runs_dir = Path(a.runs_dir)
    first = docs[0]
    run_id = f"{first['run_id']}-merged{len(docs)}"
    run_dir = Path(a.out) if a.out else runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    merge_junit([Path(d) / "junit.xml" for d in a.dirs], run_dir / "junit.xml")
    rcs = [d["pytest_exit_code"] for d in docs]
    doc = build_document(run_id, first["environment"], list(cells.values()), torch_spec=first["torch_spec"],
                         started=min(d["started"] for d in docs), seconds=max(d["duration_seconds"] for d in docs),
                         pytest_exit=max((r for r in rcs if r is not None), default=None), args=first["pytest_args"],
                         shards=sum(d.get("shards", 1) for d in docs))
    return finish(run_dir, doc, runs_dir, history=not a.no_history)


def cmd_report(a) -> int:
    doc = json.loads((Path(a.dir) / "run.json").read_text())
    (Path(a.dir) / "report.html").write_text(render_report(doc))
    return doc["exit_code"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.tools.nightly", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 clean; 1 graph-only drift or known failures that now pass; "
                                       "2 semantic failures (numerics, expectations, invariants, exceptions, crashes); "
                                       "3 the run itself failed (environment, collection, no cell ran)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the suite against the committed goldens and write a run directory")
    r.add_argument("--torch", default=None, help="pip spec, e.g. torch==2.14.1: run in .nightly-venv/<spec> (built once)")
    r.add_argument("--python", default=None, help="run with this interpreter instead of building an environment")
    r.add_argument("--workers", type=int, default=int(os.environ.get("NIGHTLY_WORKERS", "2")),
                   help="xdist workers (>= 1 so that a crashing cell only takes its worker down)")
    r.add_argument("--runs-dir", default=str(RUNS_DIR))
    r.add_argument("--no-history", action="store_true", help="do not append to history (a shard; merge appends)")
    r.add_argument("--quiet", action="store_true", help="print only progress lines, not pytest's output")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments (paths, -k, -m)")
    m = sub.add_parser("merge", help="merge the run directories of several shards into one report")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--out", default=None)
    m.add_argument("--runs-dir", default=str(RUNS_DIR))
    m.add_argument("--no-history", action="store_true")
    rep = sub.add_parser("report", help="re-render report.html of a run directory from its run.json")
    rep.add_argument("dir")
    a = p.parse_args(argv)
    return {"run": cmd_run, "merge": cmd_merge, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

"""Nightly regression runs against a torch build: the whole suite (slow matrix included) against the committed goldens.

    python -m harness.nightly run --torch torch==2.14.1 [--workers 2] [-- PYTEST ARGS]   (what `make nightly` calls)
    python -m harness.nightly merge RUN_DIR RUN_DIR ... [--out DIR]                       (shards -> one report)
    python -m harness.nightly report RUN_DIR                                              (re-render report.html)

`run` builds (once) or reuses an isolated environment ``.nightly-venv/<torch spec>/``, runs pytest there with the
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
import difflib
import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "nightly-schema.json"
FIGURES = ("saved_bytes", "activation_bytes", "rng_state_bytes", "fw_flops", "bw_flops", "recompute_flops")
CATEGORIES = ("semantic", "drift", "known_failure_passes", "known_failure", "pass", "skipped")
EXIT_CLEAN, EXIT_DRIFT, EXIT_SEMANTIC, EXIT_BROKEN = 0, 1, 2, 3


def slug(text: str) -> str:
    return re.sub(r"[^\w.+]+", "-", text).strip("-") or "torch"


def ensure_env(spec: str, base: Path = ROOT / ".nightly-venv") -> Path:
    """The python of ``.nightly-venv/<slug>/`` with ``spec`` and the project installed; built once, then reused."""
    venv = base / slug(spec)
    py = venv / "bin" / "python"
    if (venv / ".installed").exists():
        print(f"[nightly] reusing {venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv}", file=sys.stderr)
        return py
    print(f"[nightly] building {venv} with {spec} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", spec, "-e", str(ROOT)], check=True)
    (venv / ".installed").write_text(spec + "\n")
    return py


# --- documents ----------------------------------------------------------------------------------------------------

def read_cells(jsonl: Path) -> tuple[dict, list[str], list[dict]]:
    env, collected, cells = {}, [], {}
    for line in jsonl.read_text().splitlines() if jsonl.exists() else []:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        kind = obj.pop("type", None)
        if kind == "env":
            env = obj
        elif kind == "collected":
            collected += [i for i in obj["ids"] if i not in collected]
        elif kind == "cell":
            cells[obj["nodeid"]] = obj
    for nodeid in collected:  # the run died before these reported: each is a failure, not a silent gap
        if nodeid not in cells:
            cells[nodeid] = {
                "nodeid": nodeid, "cell": nodeid.split("[", 1)[-1].rstrip("]"), "case": None, "suite": nodeid.split("::")[0],
                "category": "semantic", "failed_check": "not_reported",
                "message": "the run ended before this cell reported (killed or crashed)", "known_failure": None,
                "numerics": "not run", "expectations": "not run", "invariants": {}, "error_check": None, "graphs": {},
                "recorded": None, "golden": None, "compile_seconds": None, "duration_seconds": 0.0}
    return env, collected, list(cells.values())


def summarize(cells: list[dict]) -> dict:
    counts = {c: sum(1 for x in cells if x["category"] == c) for c in CATEGORIES}
    drift_kinds: dict[str, int] = {}
    for x in cells:
        for kind, g in x["graphs"].items():
            if g["status"] != "same":
                drift_kinds[kind] = drift_kinds.get(kind, 0) + 1
    figures = [x["recorded"] for x in cells if x.get("recorded")]
    return {"cells": len(cells), **counts, "drifting_graphs_by_kind": dict(sorted(drift_kinds.items())),
            "saved_bytes": sum(f["saved_bytes"] or 0 for f in figures),
            "flops": sum((f["fw_flops"] or 0) + (f["bw_flops"] or 0) for f in figures)}


def exit_code(summary: dict) -> int:
    if summary["semantic"]:
        return EXIT_SEMANTIC
    if summary["drift"] or summary["known_failure_passes"]:
        return EXIT_DRIFT
    return EXIT_CLEAN


def build_document(run_id: str, env: dict, cells: list[dict], *, torch_spec: str, started: str, seconds: float,
                   pytest_exit: int | None, args: list[str], shards: int = 1) -> dict:
    summary = summarize(cells)
    return {"schema_version": 1, "run_id": run_id, "torch_spec": torch_spec, "started": started,
            "duration_seconds": round(seconds, 1), "pytest_args": args, "pytest_exit_code": pytest_exit,
            "shards": shards, "environment": env, "summary": summary, "exit_code": exit_code(summary),
            "cells": sorted(cells, key=lambda c: c["nodeid"])}


def validate(doc, schema: dict, path: str = "$") -> list[str]:
    """The subset of JSON Schema that docs/nightly-schema.json uses (type, enum, required, properties,
    additionalProperties, items, $ref to #/$defs).  Returns the problems found, each naming where."""
    root = schema
    problems: list[str] = []

    def check(value, sch, where):
        if "$ref" in sch:
            sch = root["$defs"][sch["$ref"].rsplit("/", 1)[-1]]
        types = sch.get("type")
        if types:
            types = [types] if isinstance(types, str) else types
            pytypes = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                       "integer": int, "number": (int, float)}
            ok = any(isinstance(value, pytypes[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                     for t in types)
            if not ok:
                problems.append(f"{where}: expected {'/'.join(types)}, saw {type(value).__name__} {str(value)[:60]!r}")
                return
        if "enum" in sch and value not in sch["enum"]:
            problems.append(f"{where}: expected one of {sch['enum']}, saw {value!r}")
        if isinstance(value, dict):
            for key in sch.get("required", []):
                if key not in value:
                    problems.append(f"{where}: missing required key {key!r}")
            props = sch.get("properties", {})
            extra = sch.get("additionalProperties", True)
            for key, v in value.items():
                if key in props:
                    check(v, props[key], f"{where}.{key}")
                elif extra is False:
                    problems.append(f"{where}: unexpected key {key!r}")
                elif isinstance(extra, dict):
                    check(v, extra, f"{where}.{key}")
        if isinstance(value, list) and "items" in sch:
            for i, v in enumerate(value):
                check(v, sch["items"], f"{where}[{i}]")

    check(doc, schema, path)
    return problems


# --- HTML ---------------------------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px} th{background:#eee}
.semantic{background:#f8c8c8} .drift{background:#fde9a8} .known_failure_passes{background:#c8e0f8}
.pass{background:#cdeccd} .known_failure,.skipped{background:#e8e8e8} pre{background:#f6f6f6;padding:6px;overflow-x:auto}
table.diff{font-family:monospace;font-size:12px} .diff_add{background:#aaffaa} .diff_chg{background:#ffff77}
.diff_sub{background:#ffaaaa} h2{border-bottom:2px solid #ccc}"""

_LABELS = {"semantic": "semantic failures", "drift": "graph-only drift", "known_failure_passes": "known failures that now pass",
           "known_failure": "known failures (still failing)", "pass": "passes", "skipped": "skipped"}


def _fmt(v) -> str:
    return "—" if v is None else f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def _delta(old, new) -> str:
    if old is None or new is None:
        return f"{_fmt(old)} → {_fmt(new)}"
    d = new - old
    return f"{_fmt(old)} → {_fmt(new)} ({'+' if d >= 0 else ''}{d:,})"


def render_report(doc: dict) -> str:
    e, s = doc["environment"], doc["summary"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>nightly {html.escape(doc['run_id'])}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Nightly run {html.escape(doc['run_id'])}</h1>",
           f"<p>torch {_fmt(e.get('torch'))} ({html.escape(doc['torch_spec'])}), triton {_fmt(e.get('triton'))}, "
           f"CUDA {_fmt(e.get('cuda'))}, Python {_fmt(e.get('python'))}, device {_fmt(e.get('device'))} "
           f"({_fmt(e.get('device_name'))}); started {html.escape(doc['started'])}, {doc['duration_seconds']} s; "
           f"exit code <b>{doc['exit_code']}</b></p>",
           "<h2>Summary</h2><table id='summary'><tr><th>category</th><th>cells</th><th>cells (first 20)</th></tr>"]
    for cat in CATEGORIES:
        names = [c["cell"] for c in doc["cells"] if c["category"] == cat]
        shown = ", ".join(html.escape(n) for n in names[:20]) + (" …" if len(names) > 20 else "")
        out.append(f"<tr class='{cat}'><td>{_LABELS[cat]}</td><td>{len(names)}</td><td>{shown if cat != 'pass' else ''}</td></tr>")
    out.append(f"<tr><td>all cells</td><td>{s['cells']}</td><td>drifting graphs by kind: "
               f"{html.escape(json.dumps(s['drifting_graphs_by_kind']))}</td></tr></table>")
    sem = [c for c in doc["cells"] if c["category"] in ("semantic", "known_failure_passes")]
    if sem:
        out.append("<h2>Semantic failures and known failures that now pass</h2><table><tr><th>cell</th><th>category</th>"
                   "<th>failed check</th><th>numerics</th><th>message</th></tr>")
        for c in sem:
            msg = (c["message"] or "")[:1500]
            out.append(f"<tr class='{c['category']}'><td>{html.escape(c['cell'])}</td><td>{c['category']}</td>"
                       f"<td>{_fmt(c['failed_check'])}</td><td>{c['numerics']}</td><td><pre>{html.escape(msg)}</pre></td></tr>")
        out.append("</table>")
    drifting = [c for c in doc["cells"] if any(g["status"] != "same" for g in c["graphs"].values())]
    if drifting:
        out.append("<h2>Graph drift per cell</h2>")
    for c in drifting:
        out.append(f"<h3 id='{html.escape(c['cell'])}' class='{c['category']}'>{html.escape(c['cell'])} — {_LABELS[c['category']]}</h3>")
        old, new = c.get("golden") or {}, c.get("recorded") or {}
        rows = [(k.replace("_", " "), old.get(k), new.get(k)) for k in FIGURES if old.get(k) != new.get(k)]
        changed = {k for k, g in c["graphs"].items() if g["status"] != "same"}
        rows += [(f"{kind}: {op} (now)", None, n) for kind, ops in sorted(new.get("ops", {}).items()) if kind in changed
                 for op, n in sorted(ops.items())]
        out.append("<table><tr><th>figure</th><th>golden → now (delta)</th></tr>"
                   + "".join(f"<tr><td>{html.escape(k)}</td><td>{_delta(a, b)}</td></tr>" for k, a, b in rows) + "</table>")
        for kind, g in sorted(c["graphs"].items()):
            if g["status"] == "same":
                continue
            a, b = (g.get("golden") or "").splitlines(), (g.get("recorded") or "").splitlines()
            table = difflib.HtmlDiff(wrapcolumn=90).make_table(a, b, f"golden {kind}", f"recorded {kind}", context=True, numlines=2)
            out.append(f"<h4>{kind} graph: {g['status']}</h4>{table}")
    out.append("</body></html>")
    return "\n".join(out)


def history_line(doc: dict) -> dict:
    s = doc["summary"]
    return {"run_id": doc["run_id"], "started": doc["started"], "torch": doc["environment"].get("torch"),
            "torch_spec": doc["torch_spec"], "exit_code": doc["exit_code"],
            **{k: s[k] for k in ("cells", *CATEGORIES, "saved_bytes", "flops")}}


def render_trend(history: list[dict]) -> str:
    """One row per run and two small line charts (failures and drift per run; total saved bytes per run)."""
    def chart(title, series, w=640, h=160):
        n = max(len(history), 2)
        top = max([max(v) for _, v, _ in series if v] + [1])
        svg = [f"<svg width='{w}' height='{h + 30}' style='border:1px solid #ccc;background:#fff'>",
               f"<text x='5' y='14' font-size='12'>{html.escape(title)} (max {top:,})</text>"]
        for name, vals, color in series:
            pts = " ".join(f"{20 + i * (w - 40) / (n - 1):.0f},{h + 10 - (v / top) * (h - 20):.0f}" for i, v in enumerate(vals))
            svg.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{pts}'/>")
            svg += [f"<circle cx='{20 + i * (w - 40) / (n - 1):.0f}' cy='{h + 10 - (v / top) * (h - 20):.0f}' r='3' fill='{color}'/>"
                    for i, v in enumerate(vals)]
        legend = " ".join(f"<span style='color:{c}'>■ {html.escape(nm)}</span>" for nm, _, c in series)
        return "".join(svg) + "</svg><div>" + legend + "</div>"

    rows = "".join(
        f"<tr><td>{html.escape(h['run_id'])}</td><td>{_fmt(h['torch'])}</td><td>{h['exit_code']}</td><td>{h['cells']}</td>"
        f"<td class='semantic'>{h['semantic']}</td><td class='drift'>{h['drift']}</td><td>{h['known_failure_passes']}</td>"
        f"<td>{h['pass']}</td><td>{_fmt(h['saved_bytes'])}</td><td>{_fmt(h['flops'])}</td></tr>" for h in history)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nightly trend</title><style>{_CSS}</style></head><body>"
            "<h1>Nightly trend</h1>"
            + chart("cells per run", [("semantic", [h["semantic"] for h in history], "#c00"),
                                      ("drift", [h["drift"] for h in history], "#c90"),
                                      ("known failures now passing", [h["known_failure_passes"] for h in history], "#06c")])
            + chart("saved bytes (all cells)", [("saved bytes", [h["saved_bytes"] for h in history], "#090")])
            + "<table><tr><th>run</th><th>torch</th><th>exit</th><th>cells</th><th>semantic</th><th>drift</th>"
              "<th>known failures now passing</th><th>pass</th><th>saved bytes</th><th>FLOPs</th></tr>"
            + rows + "</table></body></html>")


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


# --- commands -----------------------------------------------------------------------------------------------------

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
    cmd = [str(py), "-m", "pytest", *args, "-p", "harness.nightly_plugin", "--nightly-out", str(run_dir / "cells.jsonl"),
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


def merge_junit(paths: list[Path], out: Path) -> None:
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites")
    for p in paths:
        if p.exists():
            t = ET.parse(p).getroot()
            root.extend(t.findall("testsuite") if t.tag == "testsuites" else [t])
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


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
    p = argparse.ArgumentParser(prog="python -m harness.nightly", description=__doc__.split("\n\n")[0],
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
    r.add_argument("--runs-dir", default=str(ROOT / "runs"))
    r.add_argument("--no-history", action="store_true", help="do not append to history (a shard; merge appends)")
    r.add_argument("--quiet", action="store_true", help="print only progress lines, not pytest's output")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments (paths, -k, -m)")
    m = sub.add_parser("merge", help="merge the run directories of several shards into one report")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--out", default=None)
    m.add_argument("--runs-dir", default=str(ROOT / "runs"))
    m.add_argument("--no-history", action="store_true")
    rep = sub.add_parser("report", help="re-render report.html of a run directory from its run.json")
    rep.add_argument("dir")
    a = p.parse_args(argv)
    return {"run": cmd_run, "merge": cmd_merge, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

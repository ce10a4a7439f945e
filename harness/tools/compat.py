"""Release compatibility matrix: the whole suite (slow matrix included) against the pinned goldens on each torch
release, sequentially, resumable, then one report of what changed when.

    python -m harness.tools.compat run --releases "2.11.0 2.12.1 2.13.0 2.14.0 2.14.1" [--rerun 2.14.1|all] [--workers 1]
    python -m harness.tools.compat run --releases 2.13.0 --patch -- NODEID ...   (rerun some cells of a release done)
    python -m harness.tools.compat --out runs/compat-known run --known-failures   (only the tests the entries address)
    python -m harness.tools.compat build [--releases ...]      (build or reuse the environments only)
    python -m harness.tools.compat report                      (re-render compat.json / compat.html from the state)
    python -m harness.tools.compat changes                     (the verdict changes between consecutive releases, markdown)
    python -m harness.tools.compat envs                        (the environments and their disk size)
    python -m harness.tools.compat prune [RELEASE ...] [--all] (remove environments)

Each release runs in the nightly's isolated environment ``.nightly-venv/torch-<release>/`` (harness.tools.reports.envs;
built once, reused) through ``python -m harness.tools.nightly run --python ... --no-history``.  The state
(``runs/compat/state.json``) records per release: status, run directory, wall time, environment disk size; a release
already done is not rerun unless ``--rerun`` names it.  Progress goes to stdout and ``runs/compat/progress.log``.
The report (``runs/compat/compat.html``, ``compat.json``, ``diffs/``) is rewritten after every release.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.core.paths import NIGHTLY_VENVS, ROOT, RUNS_DIR, shown
from harness.tools.reports import envs
from harness.tools.reports.releases import build_compat, entries_from_known_failures, placeholder_case, release_key
from harness.tools.reports.html import render_compat, render_compat_diff
from harness.tools.reports.record import read_cells

COMPAT_DIR = RUNS_DIR / "compat"
RELEASES = ("2.11.0", "2.12.1", "2.13.0", "2.14.0", "2.14.1")
# CUDA wheels of ~5.5 GB each: do not keep a second copy in pip's cache.
PIP_ARGS = ("--no-cache-dir",)


def spec_of(release: str) -> str:
    return f"torch=={release}"  # always an exact pin


class State:
    def __init__(self, out: Path):
        self.path = out / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"releases": {}}

    def get(self, release: str) -> dict:
        return self.data["releases"].setdefault(release, {"status": "pending"})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


class Log:
    def __init__(self, path: Path):
        self.f = path.open("a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        line = f"[compat {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()

    def raw(self, line: str) -> None:
        self.f.write(line)
        self.f.flush()


def _nightly(release: str, py: Path, out: Path, workers: int, pytest_args: list[str], log: Log, st: dict):
    """One nightly run of ``release`` into out/runs: (exit code, run directory or None, wall seconds, whether it
    finished: its run.json written and a verdict exit code)."""
    cmd = [sys.executable, "-m", "harness.tools.nightly", "run", "--python", str(py), "--workers", str(workers),
           "--runs-dir", str(out / "runs"), "--no-history", "--quiet", "--", *pytest_args]
    t1 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = None
    last = 0.0
    for line in proc.stdout:
        log.raw(line)
        if line.startswith("[nightly] report: "):
            run_dir = Path(line.split(": ", 1)[1].strip()).parent
        elif run_dir is None and "--nightly-out " in line:
            run_dir = Path(line.split("--nightly-out ", 1)[1].split()[0]).parent
            if st.get("status") == "running":
                st["run_dir"] = _rel(run_dir, out)
        elif "[nightly]" in line and time.monotonic() - last > 30:  # a progress line every 30 s on stdout
            last = time.monotonic()
            print(f"[compat] torch {release}: " + line[line.index("[nightly]") + 10:].strip(), flush=True)
    rc = proc.wait()
    finished = bool(run_dir and (run_dir / "run.json").exists() and rc in (0, 1, 2))
    return rc, run_dir, round(time.monotonic() - t1, 1), finished


def _rel(run_dir: Path | None, out: Path) -> str | None:
    if run_dir is None:
        return None
    return str(run_dir.relative_to(out)) if run_dir.is_relative_to(out) else str(run_dir)


def run_release(release: str, st: dict, out: Path, workers: int, pytest_args: list[str], log: Log) -> None:
    spec = spec_of(release)
    t0 = time.monotonic()
    built = not (envs.env_dir(spec) / envs.MARKER).exists()
    st.update(status="building" if built else "running", started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    log(f"torch {release}: {'building' if built else 'reusing'} {shown(envs.env_dir(spec))}")
    try:
        py = envs.ensure_env(spec, pip_args=PIP_ARGS)
    except subprocess.CalledProcessError as e:
        st.update(status="env_failed", error=f"building the environment failed: {e}")
        log(f"torch {release}: environment build failed: {e}")
        return
    st["build_seconds"] = round(time.monotonic() - t0, 1) if built else st.get("build_seconds")
    st["env_bytes"] = envs.disk_bytes(envs.env_dir(spec))
    log(f"torch {release}: environment {envs.human(st['env_bytes'])}; running the suite ({workers} worker)")
    st["status"] = "running"
    rc, run_dir, wall, finished = _nightly(release, py, out, workers, pytest_args, log, st)
    st.update(wall_seconds=wall, nightly_exit=rc, run_dir=_rel(run_dir, out))
    st["status"] = "done" if finished else "failed"
    log(f"torch {release}: {st['status']} in {st['wall_seconds']} s (nightly exit {rc}), {st.get('run_dir')}")


def run_patch(release: str, st: dict, out: Path, workers: int, pytest_args: list[str], log: Log) -> bool:
    """Rerun only the cells ``pytest_args`` select on a release already done, e.g. after the harness changed under
    them: their records replace the full run's in the report (``patches`` in the state, newest last)."""
    py = envs.ensure_env(spec_of(release), pip_args=PIP_ARGS)
    log(f"torch {release}: patch run of the selected cells ({workers} worker)")
    rc, run_dir, wall, ok = _nightly(release, py, out, workers, pytest_args, log, st)
    if ok:
        st.setdefault("patches", []).append({"run_dir": _rel(run_dir, out), "wall_seconds": wall,
                                             "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    log(f"torch {release}: patch {'done' if ok else 'failed'} in {wall} s (nightly exit {rc}), {_rel(run_dir, out)}")
    return ok


def partial_doc(out: Path, release: str, st: dict) -> dict | None:
    """The cells an unfinished run of ``release`` reported (its newest run directory), marked partial: cells it had not
    reached count as not run, not as failures."""
    dirs = sorted((out / "runs").glob(f"*-torch-{release}*")) if (out / "runs").exists() else []
    run_dir = out / st["run_dir"] if st.get("run_dir") else dirs[-1] if dirs else None
    if run_dir is None or not (run_dir / "cells.jsonl").exists():
        return None
    env, collected, cells = read_cells(run_dir / "cells.jsonl")
    reported = [c for c in cells if c["failed_check"] != "not_reported"]
    return {"environment": env, "cells": reported, "partial": f"{len(reported)} of {len(collected)} cells",
            "run_dir": str(run_dir.relative_to(out))}


def patched(doc: dict, patches: list[dict]) -> tuple[dict, int]:
    """A release's run document with the cells of its patch runs (newest last) in place of the full run's records,
    and how many cells they replaced or added."""
    cells = {c["cell"]: c for c in doc.get("cells", [])}
    ids = set()
    for p in patches:
        for c in p.get("cells", []):
            case = placeholder_case(c)  # the case is now skipped whole: its cells' old records go
            real = c.get("case")  # the case now runs: its old skipped placeholder goes
            for old in [k for k, v in cells.items() if (case and v.get("case") == case)
                        or (real and placeholder_case(v) == real)]:
                del cells[old]
            cells[c["cell"]] = {**c, "patched": True}
            ids.add(c["cell"])
    return {**doc, "cells": list(cells.values())}, len(ids)


def write_report(out: Path, state: State, releases: list[str]) -> dict:
    docs, info = {}, {}
    for r in releases:
        st = state.get(r)
        info[r] = {k: st.get(k) for k in ("status", "wall_seconds", "build_seconds", "env_bytes", "run_dir", "nightly_exit")}
        if not info[r]["env_bytes"] and (envs.env_dir(spec_of(r)) / envs.MARKER).exists():
            info[r]["env_bytes"] = envs.disk_bytes(envs.env_dir(spec_of(r)))
        path = out / st["run_dir"] / "run.json" if st.get("status") == "done" and st.get("run_dir") else None
        docs[r] = json.loads(path.read_text()) if path and path.exists() else None
        if docs[r] is not None and st.get("patches"):
            docs[r], info[r]["patched"] = patched(docs[r], [json.loads((out / p["run_dir"] / "run.json").read_text())
                                                           for p in st["patches"]])
        if docs[r] is None and st.get("status") not in (None, "pending", "done"):
            docs[r] = partial_doc(out, r, st)  # unfinished (running, killed, failed): what reported so far
            if docs[r]:
                info[r]["partial"] = docs[r]["partial"]
                info[r]["run_dir"] = docs[r]["run_dir"]
        if docs[r]:
            info[r]["torch"] = docs[r]["environment"].get("torch")
    entries, kf_id, covers = entries_from_known_failures()
    doc = build_compat(info, docs, entries, kf_id, covers)
    diffs = out / "diffs"
    shutil.rmtree(diffs, ignore_errors=True)
    diffs.mkdir(parents=True)
    for g in doc["drifting_goldens"]:
        g["page"] = f"diffs/{envs.slug(g['cell'])}--{g['kind']}.html"
        (out / g["page"]).write_text(render_compat_diff(g))
    (out / "compat.html").write_text(render_compat(doc))
    slim = {**doc, "drifting_goldens": [{k: v for k, v in g.items() if k not in ("texts", "golden")}
                                         for g in doc["drifting_goldens"]]}
    (out / "compat.json").write_text(json.dumps(slim, indent=1) + "\n")
    return doc


def known_failure_nodeids(python: Path | str = sys.executable, suites: str = "suites") -> list[str]:
    """The tests of ``suites``, as ``python`` (a release's environment: what it collects differs, e.g. a real-model
    case is one skipped placeholder where its library is missing) collects them, that some entry of
    known_failures.toml addresses: cells its static selector selects (run features cannot narrow before the run, so an entry with features takes every cell of its static
    part), a model-level test named by the entry's cases, and plain tests by node-id glob.  A release run of these
    is what confirms (or corrects) each entry's torch range without running the whole suite."""
    import re

    from harness.core import known_failures
    from harness.rows import collect

    listed = subprocess.run([str(python), "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:xdist", suites],
                            cwd=ROOT, capture_output=True, text=True)
    ids = [line.strip() for line in listed.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError(f"collecting {suites} gave no tests:\n{listed.stdout[-2000:]}{listed.stderr[-2000:]}")
    entries = known_failures.load()
    cells = {c.id: c for c in collect.all_cells(("cpu",))}
    chosen = []
    for nodeid in ids:
        m = re.search(r"\[(.*)\]$", nodeid)
        param = m.group(1) if m else ""
        cell = cells.get(param)
        if any((e.select.selects(cell) if cell is not None
                else any(param in (c, f"{c}-cpu") for c in e.select.cases)) for e in entries) \
                or any(e.select.selects_test(nodeid) for e in entries):
            chosen.append(nodeid)
    return chosen


def cmd_run(a) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    releases = a.releases.split()  # run in the order given (e.g. local wheels first); the report orders by version
    state = State(out)
    state.data["order"] = sorted(set(state.data.get("order", [])) | set(releases), key=release_key)
    rerun = set(releases if a.rerun == ["all"] else a.rerun or [])
    log = Log(out / "progress.log")
    pytest_args = a.pytest_args[1:] if a.pytest_args[:1] == ["--"] else a.pytest_args
    if a.known_failures:
        if pytest_args:
            raise SystemExit("--known-failures chooses the tests itself: pass no pytest arguments with it")
        log("--known-failures: each release runs the tests, as its environment collects them, that known_failures.toml's "
            "entries address")
    log(f"releases {' '.join(releases)}; environments under {shown(NIGHTLY_VENVS)}; state {shown(state.path)}")
    for i, r in enumerate(releases, 1):
        st = state.get(r)
        if a.patch:
            if st.get("status") != "done":
                log(f"[{i}/{len(releases)}] torch {r}: not done, nothing to patch (run it first)")
                continue
            run_patch(r, st, out, a.workers, pytest_args, log)
            state.save()
            write_report(out, state, state.data["order"])
            continue
        if st.get("status") == "done" and r not in rerun:
            log(f"[{i}/{len(releases)}] torch {r}: done already ({st.get('run_dir')}), not rerun (--rerun {r} to rerun)")
            continue
        log(f"[{i}/{len(releases)}] torch {r}")
        st.clear()
        st["status"] = "running"  # saved now: a run killed midway is rerun next time, and `report` shows its cells so far
        state.save()
        args = pytest_args
        if a.known_failures:
            args = known_failure_nodeids(envs.ensure_env(spec_of(r), pip_args=PIP_ARGS))
            log(f"torch {r}: {len(args)} tests addressed by known_failures.toml's entries")
        run_release(r, st, out, a.workers, args, log)
        state.save()
        write_report(out, state, state.data["order"])
    doc = write_report(out, state, state.data["order"])
    log(f"report: {out / 'compat.html'}")
    for rel in doc["releases"]:
        log(f"torch {rel['release']}: {rel.get('status')}, {rel.get('wall_seconds')} s, env {envs.human(rel.get('env_bytes'))}, "
            f"{rel.get('summary')}")
    return 0 if all(state.get(r).get("status") == "done" for r in releases) else 3


def cmd_report(a) -> int:
    out = Path(a.out)
    state = State(out)
    releases = state.data.get("order") or sorted(state.data["releases"], key=release_key)
    write_report(out, state, releases)
    print(f"[compat] report: {out / 'compat.html'}")
    return 0


def cmd_changes(a) -> int:
    """The verdict changes between consecutive releases (from compat.json), as a markdown table."""
    doc = json.loads((Path(a.out) / "compat.json").read_text())
    print("| releases | from | to | why | cells |\n|---|---|---|---|---|")
    for c in doc.get("changes", []):
        cells = ", ".join(c["cells"][:a.cells]) + (f", … ({len(c['cells'])} cells)" if len(c["cells"]) > a.cells else "")
        print(f"| {c['from_release']} → {c['to_release']} | {c['from']} | {c['to']} | {c['why']} | {cells} |")
    return 0


def cmd_build(a) -> int:
    """Build (or reuse) the environments of the releases, in order, without running anything."""
    rc = 0
    for r in a.releases.split():
        t0 = time.monotonic()
        try:
            envs.ensure_env(spec_of(r), pip_args=PIP_ARGS)
        except subprocess.CalledProcessError as e:
            print(f"[compat] torch {r}: environment build failed: {e}", flush=True)
            rc = 3
            continue
        print(f"[compat] torch {r}: environment ready in {time.monotonic() - t0:.0f} s, "
              f"{envs.human(envs.disk_bytes(envs.env_dir(spec_of(r))))}", flush=True)
    return rc


def cmd_envs(a) -> int:
    total = 0
    for e in envs.list_envs():
        total += e.bytes
        print(f"{e.name:24} {envs.human(e.bytes):>10}  {e.spec or '(incomplete build)'}  {e.path}")
    print(f"{'total':24} {envs.human(total):>10}")
    return 0


def cmd_prune(a) -> int:
    if not a.all and not a.releases:
        print("name releases to prune, or --all", file=sys.stderr)
        return 2
    removed = envs.prune(None if a.all else [spec_of(r) for r in a.releases])
    for e in removed:
        print(f"removed {e.path} ({envs.human(e.bytes)})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.tools.compat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(COMPAT_DIR), help="state, runs and report directory (default runs/compat)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every release (resumable), then write the report")
    r.add_argument("--releases", default=" ".join(RELEASES), help="space-separated exact torch releases")
    r.add_argument("--rerun", nargs="*", default=[], help="releases to rerun although done ('all' for every one)")
    r.add_argument("--workers", type=int, default=1, help="xdist workers per run (>= 1: a crash takes only its worker)")
    r.add_argument("--patch", action="store_true", help="rerun only the cells the pytest arguments select on releases "
                   "already done; their records replace the full run's in the report")
    r.add_argument("--known-failures", action="store_true", help="run only the tests the entries of "
                   "known_failures.toml address (confirms each entry's range; use its own --out)")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments (default: every suite)")
    b = sub.add_parser("build", help="build (or reuse) the environments only")
    b.add_argument("--releases", default=" ".join(RELEASES))
    sub.add_parser("report", help="re-render the report from the state")
    ch = sub.add_parser("changes", help="the verdict changes between consecutive releases, as markdown")
    ch.add_argument("--cells", type=int, default=6, help="cells named per row")
    sub.add_parser("envs", help="list the environments and their disk size")
    pr = sub.add_parser("prune", help="remove environments")
    pr.add_argument("releases", nargs="*")
    pr.add_argument("--all", action="store_true")
    a = p.parse_args(argv)
    return {"run": cmd_run, "build": cmd_build, "report": cmd_report, "changes": cmd_changes, "envs": cmd_envs,
            "prune": cmd_prune}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

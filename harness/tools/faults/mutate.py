"""``make mutate``: a pytest selection (default: ``make test``'s) against every fault of the kit, then the kill matrix.

One unpatched baseline run first, then one run per fault (``AC_FAULT=<id>`` in its environment), ``jobs`` runs at a
time, each ``pytest -n workers`` (0: without xdist).  Every run records each test's outcome
(:mod:`harness.tools.faults.outcomes`); a cell *kills* a fault when it passed (or failed as a known failure: xfailed)
in the baseline and fails (or xpasses) under the fault, or never reports because the run crashed or timed out.

Nothing cached can replay an unpatched result into a patched run: every run has its own inductor cache directory
(the FX graph cache and AOTAutograd cache start empty; only compiled kernels, keyed by their own source, are copied
in from the baseline's) and its own baseline-figures cache (``AC_BASELINE_CACHE``), removed when the run ends.
Every test of a fault run must report the fault applied in the process that ran it (the suites' plugin adds it), or
the run is an error, not a result.

Resumable: ``<out>/state.json`` keeps each finished run with the digest of the code it ran (harness, suites, goldens,
known failures, torch); a finished run of the same digest and selection is not rerun.  Outputs under ``<out>``
(default runs/mutate/): ``kill-matrix.json``, ``kill-matrix.html``, ``smoke.txt``, ``progress.log``, ``runs/<id>/``
(outcomes and the pytest log of each run).  For ``make test``'s selection and the whole kit, the matrix (compact) and
the smoke selection are also written to ``bench/kill-matrix.json`` and ``bench/smoke.txt``, which ``make smoke`` and
``make guard`` read.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.core import paths
from harness.tools.faults import outcomes

DEFAULT_SELECTION = ("suites", "-m", "not slow")
BENCH_MATRIX = paths.ROOT / "bench" / "kill-matrix.json"
BENCH_SMOKE = paths.ROOT / "bench" / "smoke.txt"
KILLING = ("failed", "xpassed", "crashed")  # what a cell that passed (or xfailed) in the baseline may turn into
COUNTED = ("passed", "xfailed")  # baseline outcomes whose change means something
# Caches a patched run must not read from an unpatched one: their whole subdirectory stays behind.
_REPLAYING_CACHE_DIRS = ("fxgraph", "aotautograd")


def code_digest() -> str:
    """What a run's outcomes depend on besides the selection and its fault: the harness (the kit's runner, report and
    probes aside), the suites, goldens, known failures and the installed torch's version and files."""
    import torch

    from harness.core.baselines import torch_digest

    h = hashlib.sha256(f"{torch.__version__}\0{torch_digest()}".encode())
    root = paths.ROOT
    kit = root / "harness" / "tools" / "faults"
    files = [root / "conftest.py", root / "known_failures.toml", root / "pyproject.toml"]
    for folder in ("harness", "suites", "golden"):
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and not (p.is_relative_to(kit) and p.name not in ("__init__.py", "patching.py")))
    for p in files:
        if p.exists():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _copy_kernels(src: Path, dst: Path) -> None:
    """Copy an inductor cache directory without the caches that replay whole compiled graphs."""
    if not src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        return
    shutil.copytree(src, dst, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == src and n in _REPLAYING_CACHE_DIRS])


class Run:
    """One pytest process (the baseline, or one fault)."""

    def __init__(self, runner: Mutate, name: str, fault: str | None):
        self.runner, self.name, self.fault = runner, name, fault
        self.dir = runner.out / "runs" / name
        self.cache = runner.out / "cache" / name
        self.outcomes = self.dir / "outcomes.jsonl"
        self.proc: subprocess.Popen | None = None
        self.start = 0.0
        self._log = None

    def command(self) -> list[str]:
        workers = self.runner.workers
        xdist = ["-n", str(workers), "--dist", "loadgroup"] if workers else ["-p", "no:xdist"]
        return [sys.executable, "-m", "pytest", *self.runner.selection, *xdist, "-p", "harness.tools.faults.outcomes",
                "--ac-outcomes", str(self.outcomes), "-p", "no:cacheprovider", "-q", "-rN"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("AC_FAULT", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # the harness's bytecode is reused (~0.9 s a process)
        if self.fault:
            env["AC_FAULT"] = self.fault
        env.update(TORCHINDUCTOR_CACHE_DIR=str(self.cache / "inductor"), TRITON_CACHE_DIR=str(self.cache / "triton"),
                   AC_BASELINE_CACHE=str(self.cache / "baselines"), PYTHONUNBUFFERED="1")
        return env

    def launch(self, seed: Path) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        self.dir.mkdir(parents=True)
        _copy_kernels(seed, self.cache / "inductor")
        self._log = open(self.dir / "pytest.log", "w")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=paths.ROOT, env=self.env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def finish(self, timed_out: bool, keep_kernels: Path | None = None) -> dict:
        self._log.close()
        seconds = round(time.monotonic() - self.start, 1)
        doc = outcomes.read(self.outcomes)
        result = {"fault": self.fault, "seconds": seconds, "exitstatus": doc["exitstatus"],
                  "returncode": self.proc.returncode, "timed_out": timed_out,
                  "outcomes": {k: v["outcome"] for k, v in doc["tests"].items()},
                  "durations": {k: v["seconds"] for k, v in doc["tests"].items()}}
        unpatched = [k for k, v in doc["tests"].items() if "::" in k and v["fault"] != self.fault]
        if not any("::" in k for k in doc["tests"]):
            result["error"] = (f"no test reported (pytest exit {self.proc.returncode}"
                               f"{', timed out' if timed_out else ''}); see {paths.shown(self.dir)}/pytest.log")
        elif unpatched:
            result["error"] = (f"{len(unpatched)} tests ran without the fault {self.fault!r} applied in their process, "
                               f"e.g. {unpatched[0]}")
        if keep_kernels is not None:
            _copy_kernels(self.cache / "inductor", keep_kernels)
        shutil.rmtree(self.cache, ignore_errors=True)
        return result


class Mutate:
    def __init__(self, selection=DEFAULT_SELECTION, faults: list[str] | None = None, jobs: int = 2, workers: int = 0,
                 out: Path = paths.RUNS_DIR / "mutate", timeout_factor: float = 4.0, min_timeout: float = 600.0,
                 rerun: list[str] = (), keep_stale: bool = False, log=print):
        from harness.tools.faults import faults as all_faults

        self.catalogue = all_faults()
        unknown = [f for f in faults or () if f not in self.catalogue]
        if unknown:
            raise SystemExit(f"unknown faults {unknown}; `python -m harness.tools.faults list` lists them")
        self.selection = list(selection)
        self.fault_ids = list(faults) if faults else list(self.catalogue)
        self.jobs, self.workers, self.out = jobs, workers, Path(out)
        self.timeout_factor, self.min_timeout, self.log = timeout_factor, min_timeout, log
        self.rerun, self.keep_stale = set(rerun), keep_stale
        self.state_path = self.out / "state.json"
        self.digest = code_digest()

    # --- state ---------------------------------------------------------------------------------------------------
    def load_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("selection") != self.selection:
            if state:
                self.log(f"mutate: {self.state_path} was written for another selection ({state.get('selection')}): "
                         f"starting afresh")
            state = {"selection": self.selection, "runs": {}}
        return state

    def key(self, name: str) -> str:
        """What a finished run must have been run with to be reused: the code digest and the fault's definition."""
        fault = self.catalogue.get(name)
        return self.digest + ("" if fault is None else "/" + hashlib.sha256(repr(fault).encode()).hexdigest()[:12])

    def done(self, state: dict, name: str) -> bool:
        result = state["runs"].get(name)
        if result is None or result.get("error") or name in self.rerun or "all" in self.rerun:
            return False
        if result.get("key") != self.key(name):
            if not self.keep_stale:
                return False
            result["stale"] = True
        return True

    def save_state(self, state: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def progress(self, line: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self.log(f"[{stamp}] {line}")
        with open(self.out / "progress.log", "a") as f:
            f.write(f"[{stamp}] {line}\n")

    # --- running ---------------------------------------------------------------------------------------------------
    def _run_all(self, state: dict, names: list[tuple[str, str | None]], seed: Path, timeout: float) -> None:
        pending = list(names)
        running: list[Run] = []
        done, total, start = 0, len(names), time.monotonic()
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    name, fault = pending.pop(0)
                    run = Run(self, name, fault)
                    run.launch(seed)
                    running.append(run)
                time.sleep(0.5)
                for run in list(running):
                    timed_out = time.monotonic() - run.start > timeout
                    if run.proc.poll() is None and not timed_out:
                        continue
                    run.kill()
                    running.remove(run)
                    result = run.finish(timed_out, keep_kernels=seed if run.fault is None else None)
                    result["key"] = self.key(run.name)
                    state["runs"][run.name] = result
                    self.save_state(state)
                    done += 1
                    elapsed = time.monotonic() - start
                    eta = elapsed / done * (total - done)
                    self.progress(f"[{done}/{total}] {run.name}: {self.describe(state, run.name)} "
                                  f"({result['seconds']:.0f} s; elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min)")
        finally:
            for run in running:
                run.kill()

    def describe(self, state: dict, name: str) -> str:
        result = state["runs"][name]
        if result.get("error"):
            return "ERROR " + result["error"]
        if name == "baseline":
            counts = {}
            for o in result["outcomes"].values():
                counts[o] = counts.get(o, 0) + 1
            return "baseline " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        killers = self.killed_by(state["runs"]["baseline"], result)
        return f"killed by {len(killers)} cells" if killers else "SURVIVED"

    @staticmethod
    def killed_by(baseline: dict, result: dict) -> list[str]:
        """The cells that passed (or xfailed) in the baseline and fail, xpass or crash under the fault; a cell of a
        module that failed to collect fails.  A cell that never started (a run that crashed or timed out on another
        cell) kills nothing."""
        outcomes = result["outcomes"]
        if result.get("timed_out"):  # the cell running when the run was stopped "crashed" by our kill: no kill
            outcomes = {k: "not run" if o == "crashed" else o for k, o in outcomes.items()}
        broken = [k for k, o in outcomes.items() if "::" not in k and o == "failed"]

        def outcome(cell: str) -> str:
            if cell in outcomes:
                return outcomes[cell]
            return "failed" if any(cell.startswith(m + "::") for m in broken) else "not run"

        return [cell for cell, before in baseline["outcomes"].items() if before in COUNTED and outcome(cell) in KILLING]

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        state = self.load_state()
        seed = self.out / "cache" / "seed"
        if not self.done(state, "baseline"):
            self.progress(f"baseline: {' '.join(self.selection)} (jobs 1, workers {self.workers})")
            shutil.rmtree(seed, ignore_errors=True)
            _copy_kernels(paths.CACHE / "inductor", seed)
            # The baseline's compiled kernels then seed every fault run (its graph caches stay behind).
            self._run_all(state, [("baseline", None)], seed, timeout=24 * 3600)
        baseline = state["runs"]["baseline"]
        if baseline.get("error"):
            raise SystemExit(f"mutate: {baseline['error']}")
        todo = [(f, f) for f in self.fault_ids if not self.done(state, f)]
        stale = sorted(name for name, r in state["runs"].items() if r.get("stale"))
        if stale:
            self.progress(f"reusing {len(stale)} runs made with other code or fault definitions (--keep-stale): {stale}")
        timeout = max(self.min_timeout, self.timeout_factor * baseline["seconds"])
        self.progress(f"{len(self.fault_ids) - len(todo)} of {len(self.fault_ids)} faults already done; running "
                      f"{len(todo)} ({self.jobs} at a time, workers {self.workers}, timeout {timeout:.0f} s each)")
        self._run_all(state, todo, seed, timeout)
        return self.write(state)

    # --- the matrix ------------------------------------------------------------------------------------------------
    def matrix(self, state: dict) -> dict:
        import torch

        baseline = state["runs"]["baseline"]
        cells = list(baseline["outcomes"])
        index = {c: i for i, c in enumerate(cells)}
        faults = []
        for fid in self.fault_ids:
            fault, result = self.catalogue[fid], state["runs"].get(fid)
            entry = {"id": fid, "stage": fault.stage, "file": fault.file, "doc": fault.doc}
            if result is None or result.get("error"):
                entry.update(status="not run", error=(result or {}).get("error", "not run yet"), killed_by=[])
            else:
                killers = self.killed_by(baseline, result)
                # A run stopped at its timeout reached only part of the selection: no kill is "timed out", not survived.
                entry.update(status="killed" if killers else "timed out" if result.get("timed_out") else "survived",
                             killed_by=[index[c] for c in killers], seconds=result["seconds"])
                if result.get("stale"):
                    entry["stale"] = True
            faults.append(entry)
        return {"torch": torch.__version__, "selection": self.selection, "digest": self.digest,
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
                "baseline": {"seconds": baseline["seconds"],
                             "not_counted": sorted(c for c, o in baseline["outcomes"].items() if o not in COUNTED)},
                "cells": cells, "cell_seconds": [round(baseline["durations"].get(c, 0.0), 2) for c in cells],
                "faults": faults}

    def write(self, state: dict) -> dict:
        doc = self.matrix(state)
        smoke = smoke_selection(doc)
        (self.out / "kill-matrix.json").write_text(json.dumps(doc, indent=1) + "\n")
        (self.out / "kill-matrix.html").write_text(render_html(doc, smoke))
        (self.out / "smoke.txt").write_text("".join(c + "\n" for c in smoke))
        self.log(summary(doc, smoke))
        complete = all(f["status"] != "not run" for f in doc["faults"])
        fresh = not any(f.get("stale") for f in doc["faults"])
        if complete and fresh and tuple(self.selection) == DEFAULT_SELECTION and set(self.fault_ids) == set(self.catalogue):
            BENCH_MATRIX.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
            BENCH_SMOKE.write_text("".join(c + "\n" for c in smoke))
            self.log(f"mutate: wrote {paths.shown(BENCH_MATRIX)} and {paths.shown(BENCH_SMOKE)} (commit them)")
        return doc


def smoke_selection(doc: dict, fault_ids: list[str] | None = None) -> list[str]:
    """A small set of cells that kills every fault the matrix's selection kills (of ``fault_ids``, default all): greedy
    weighted set cover, each step taking the cell that kills the most faults not yet killed per second of its baseline
    duration.  Greedy set cover is within a factor ln(#faults) of the smallest cover; ties go to collection order."""
    wanted = {f["id"]: set(f["killed_by"]) for f in doc["faults"]
              if f["status"] == "killed" and (fault_ids is None or f["id"] in fault_ids)}
    seconds = doc["cell_seconds"]
    uncovered, chosen = set(wanted), []
    while uncovered:
        gain: dict[int, int] = {}
        for fid in uncovered:
            for cell in wanted[fid]:
                gain[cell] = gain.get(cell, 0) + 1
        best = max(gain, key=lambda c: (gain[c] / max(seconds[c], 0.05), -c))
        chosen.append(best)
        uncovered = {fid for fid in uncovered if best not in wanted[fid]}
    return [doc["cells"][c] for c in sorted(chosen)]


def summary(doc: dict, smoke: list[str]) -> str:
    faults = doc["faults"]
    killed = [f for f in faults if f["status"] == "killed"]
    lines = [f"kill matrix: {len(killed)} of {len(faults)} faults killed by {' '.join(doc['selection'])} "
             f"({len(doc['cells'])} cells, baseline {doc['baseline']['seconds']:.0f} s)"]
    by_stage: dict[str, list[int]] = {}
    for f in faults:
        by_stage.setdefault(f["stage"], [0, 0])[0 if f["status"] == "killed" else 1] += 1
    lines.append("  per stage (killed/survived): " + ", ".join(f"{s} {k}/{n}" for s, (k, n) in by_stage.items()))
    for f in faults:
        if f["status"] != "killed":
            lines.append(f"  {f['status'].upper()}: {f['id']} ({f['file']}): {f['doc']}"
                         + (f" [{f['error']}]" if f.get("error") else ""))
    smoke_seconds = sum(doc["cell_seconds"][doc["cells"].index(c)] for c in smoke)
    lines.append(f"  smoke selection: {len(smoke)} cells ({smoke_seconds:.1f} s of the baseline's cell time, of "
                 f"{sum(doc['cell_seconds']):.1f} s) kill all {len(killed)} killed faults")
    return "\n".join(lines)


def render_html(doc: dict, smoke: list[str]) -> str:
    faults, cells = doc["faults"], doc["cells"]
    used = sorted({c for f in faults for c in f["killed_by"]})
    e = html.escape
    head = "".join(f'<th class="v" title="{e(cells[c])}">{e(cells[c].split("::")[-1][:60])}</th>' for c in used)
    rows = []
    for f in faults:
        killers = set(f["killed_by"])
        marks = "".join(f'<td class="{"k" if c in killers else ""}" title="{e(cells[c])}"></td>' for c in used)
        rows.append(f'<tr class="{f["status"].replace(" ", "-")}"><th>{e(f["id"])}</th><td>{e(f["stage"])}</td>'
                    f'<td>{e(f["file"])}</td><td>{f["status"]}</td><td>{len(killers)}</td><td>{e(f["doc"])}</td>{marks}</tr>')
    survivors = "".join(f"<li><b>{e(f['id'])}</b> ({e(f['file'])}): {e(f['doc'])}</li>"
                        for f in faults if f["status"] != "killed") or "<li>none</li>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>kill matrix</title><style>
body{{font-family:sans-serif;font-size:13px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ddd;padding:2px 4px}}
th.v{{writing-mode:vertical-rl;font-weight:normal;font-size:10px;max-height:22em;overflow:hidden}}
td.k{{background:#c33}} tr.survived th,tr.survived td:nth-child(4){{background:#fc6}} tr.not-run th{{background:#ccc}}
</style></head><body><h1>Kill matrix</h1>
<pre>{e(summary(doc, smoke))}</pre>
<p>torch {e(doc['torch'])}; selection <code>{e(' '.join(doc['selection']))}</code>; {e(doc['created'])}.
A red square: the cell (column) kills the fault (row). Columns: the {len(used)} cells that kill at least one fault.</p>
<h2>Faults no cell kills</h2><ul>{survivors}</ul>
<h2>Smoke selection ({len(smoke)} cells)</h2><ul>{''.join(f'<li><code>{e(c)}</code></li>' for c in smoke)}</ul>
<h2>Matrix</h2><table><tr><th>fault</th><th>stage</th><th>file</th><th>status</th><th>cells</th><th>regression</th>{head}</tr>
{''.join(rows)}</table></body></html>
"""


def guard_cells(files: list[str], everything: bool = False, matrix: Path = BENCH_MATRIX) -> tuple[list[dict], list[str]]:
    """The faults of the committed matrix that live in ``files`` (torch-relative paths, e.g.
    ``torch/_functorch/partitioners.py``; a longer path is cut at its ``torch/``), and the cells that kill them: a
    small covering set, or (``everything``) every killing cell."""
    doc = json.loads(matrix.read_text())
    wanted = {f[f.rfind("torch/"):] if "torch/" in f else f for f in files}
    known = sorted({f["file"] for f in doc["faults"]})
    unknown = wanted - set(known)
    if unknown:
        raise SystemExit(f"guard: no fault of the kit lives in {sorted(unknown)}; the kit's files: {', '.join(known)}")
    faults = [f for f in doc["faults"] if f["file"] in wanted]
    ids = [f["id"] for f in faults]
    if everything:
        cells = [doc["cells"][c] for c in sorted({c for f in faults for c in f["killed_by"]})]
    else:
        cells = smoke_selection(doc, ids)
    return faults, cells

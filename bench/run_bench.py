"""Suite benchmark: serial vs xdist, cold vs warm compile caches, and where each cell's time goes.

One round runs the selection four times -- serial cold, serial warm, ``-n W --dist loadgroup`` cold, the same warm --
"cold" pointing every compile cache (inductor FX graph / AOT caches, triton) at a fresh empty directory, "warm"
reusing the directory the cold run just filled.  Each cell's time is split into eager reference, compile, compiled
run, another runner than the standard one (export, make_fx tracing, remat, ...: harness/core/runners.py), the baselines
the verdicts need (harness/core/run.py: mostly the no-AC baseline compile), the semantic invariants
(harness/core/invariants.py), harness overhead (graph recording, normalization, checks, golden summary and
comparison) and the rest (pytest, fixtures), from the ``*_seconds`` user properties
``harness.core.suite.check_cell`` records, read back from a JUnit XML.  Ratios are taken within one round; with several
rounds every figure is the median over rounds.  Prints a table and writes JSON (reports/bench.json).

Side by side (issue 30): ``make test``'s whole selection (``pytest suites -n 2 --dist loadgroup -m "not slow"``) and
PyTorch's own ``test/dynamo/test_activation_checkpointing.py`` made to run on CPU (bench/upstream.py: the file and every
change made to it), each the whole pytest process with ``-n 2``, cold then warm, the two alternating (who goes first
swaps every round), median of BENCH_SIDE_REPEAT rounds (default 3); the ratios are the issue's targets, and the
conformance summary of each ``make test`` run is kept (its counts must not fall).  Every side-by-side process runs
bench/compile_clock.py: Dynamo's frame compiles, counted and timed (over the workers, a floor under the wall
time).  The meta tests (``make meta``'s ``pytest tests -n 2 -m "not meta_slow"``) cold and warm, once.

Two more figures, each measured once per ``make bench`` (they take minutes):

* nightly: ``python -m harness.tools.nightly run`` (what ``make nightly`` runs, on this interpreter's pinned torch) over
  bench/nightly-382.txt -- make nightly's cells when issue 16 was filed -- cold, then warm; wall seconds and verdicts;
* fuzz: ``python -m harness.tools.fuzz run --seed 11`` for BENCH_FUZZ_SECONDS with an empty example database and no
  findings written (the seed alone decides the programs), in its default worker processes: programs/s.

Environment:
  BENCH_PARTS    which of suite, side_by_side, meta, nightly, fuzz to measure (default: all, comma-separated)
  BENCH_SIDE_REPEAT    rounds of the side-by-side runs (default 3)
  BENCH_UPSTREAM_FILE  the upstream file (default bench/upstream/test_activation_checkpointing.py; bench/upstream.py)
  BENCH_SIDE_BEFORE    another checkout with its own .venv (e.g. a worktree of the previous commit): its make test
                 selection runs in the same rounds, a third side, for a before/after table beside the upstream file;
                 BENCH_SIDE_BEFORE_XDIST its xdist flags (default "--dist loadgroup")
  BENCH_SIDE_ARGS, BENCH_UPSTREAM_ARGS  other selections for the two sides (a quick check of the benchmark itself;
                 the figures of issue 30 are taken with neither set)
  BENCH_ARGS     pytest selection and options (default: the node ids of BENCH_CELLS); -m "not slow" is added unless
                 it names -m
  BENCH_CELLS    file of node ids (default bench/cells-178.txt: make test's 178 cells when issue 16 was filed)
  BENCH_REPEAT   rounds; "auto" (default): 3 when the first round took under BENCH_SHORT seconds, else 1
  BENCH_SHORT    seconds (default 240)
  BENCH_WORKERS  xdist workers of the parallel runs (default 2)
  BENCH_TOP      slowest cells listed (default 10)
  BENCH_OUT      JSON path (default reports/bench.json)
  BENCH_NIGHTLY_CELLS  file of node ids for the nightly (default bench/nightly-382.txt)
  BENCH_FUZZ_SECONDS   the fuzz run's time budget (default 120)
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import compile_clock

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("eager", "compile", "run", "runner", "baselines", "invariants", "harness", "other")
HARNESS = ("record", "normalize", "check", "golden")  # harness overhead, as recorded by pipeline/suite
ALL_PARTS = PARTS + tuple(f"harness.{k}" for k in HARNESS)
CACHE_COUNTS = ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass")  # recorded per cell
CELLS = ROOT / "bench" / "cells-178.txt"  # the default selection: make test's cells when the throughput issue was filed
NIGHTLY_CELLS = ROOT / "bench" / "nightly-382.txt"  # make nightly's cells then
FUZZ_SEED = 11
# Issue 16's targets on the 2-core machine.  The fuzz reference: the harness at 4841b6a (the issue's filing) tried
# 305 programs in 130 s with --seed 11 --seconds 120 (2.35/s), measured side by side with the new code on 2026-12-02.
FUZZ_REFERENCE = 2.35
CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "AC_BASELINE_CACHE")  # cold: all empty


def _number(text: str) -> bool:
    """A property that is a number (a distributed cell records per-side figures, {'ac': ..., 'no_ac': ...})."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_junit(path: Path) -> dict:
    """Per cell: outcome, total seconds (setup+call+teardown) and the split into PARTS."""
    cells = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if tc.find(tag) is not None:
                outcome = tag
        total = float(tc.get("time") or 0.0)
        bad = next((tc.find(t) for t in ("failure", "error") if tc.find(t) is not None), None)
        secs = {k[: -len("_seconds")]: float(v) for k, v in props.items() if k.endswith("_seconds") and _number(v)}
        split = {p: secs.get(p, 0.0) for p in PARTS[:-2]}
        split["harness"] = sum(secs.get(k, 0.0) for k in HARNESS)
        split["other"] = max(total - sum(split.values()), 0.0)
        split.update({f"harness.{k}": secs.get(k, 0.0) for k in HARNESS})
        cache = {k.removeprefix("fxgraph_cache_"): int(props.get(k, 0)) for k in CACHE_COUNTS}
        cells[f"{tc.get('classname')}::{tc.get('name')}"] = {"outcome": outcome, "seconds": total, "split": split,
                                                            "fxgraph_cache": cache,
                                                            "message": (bad.get("message") or "")[:500] if bad is not None else None}
    return cells


def cells_of(path: Path) -> list[str]:
    """The node ids listed in ``path`` (one a line, ``#`` comments): the fixed selection the targets are measured on."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def shown(args: list[str]) -> str:
    """The command line, node ids counted rather than listed."""
    ids = [a for a in args if "::" in a]
    rest = [a for a in args if "::" not in a]
    return shlex.join(rest) + (f" <{len(ids)} node ids>" if ids else "")


XDIST_ARGS = ["--dist", "loadgroup"]  # as make test (the Makefile's XDIST)


def run_pytest(args: list[str], cache: Path, workers: int, work: Path, label: str, cwd: Path = ROOT,
               python: str = sys.executable, xdist_args: list[str] = XDIST_ARGS, clock: bool = False) -> dict:
    """One pytest process over ``args``; ``clock``: with bench/compile_clock.py (Dynamo's compiles, counted and timed)."""
    junit = work / f"{label}.xml"
    cmd = [python, "-m", "pytest", *args, "-q", f"--junitxml={junit}", "-o", "junit_duration_report=total"]
    if workers > 1:
        cmd += ["-n", str(workers), *xdist_args]
    env = cache_env(cache)
    clock_dir = work / f"{label}-clock"
    if clock:
        cmd += ["-p", "compile_clock"]
        env.update(BENCH_COMPILE_CLOCK=str(clock_dir),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "bench"), env.get("PYTHONPATH")])))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not junit.exists():  # 1: some tests failed -- still measured, and said so
        sys.exit(f"bench: {label}: pytest exited {proc.returncode}\n$ {shlex.join(cmd)}\n{(proc.stdout + proc.stderr)[-4000:]}")
    cells = parse_junit(junit)
    outcomes: dict[str, int] = {}
    for c in cells.values():
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
    totals = {p: round(sum(c["split"][p] for c in cells.values()), 3) for p in ALL_PARTS}
    failed = {name: c["message"] for name, c in cells.items() if c["message"] is not None}
    for name, message in failed.items():  # a benchmark that fails a cell says which, and why (it is measured anyway)
        print(f"  {label}: FAILED {name}: {message.splitlines()[0] if message else ''}", flush=True)
    summary = next((line for line in proc.stdout.splitlines() if line.startswith("cases: ")), None)
    return {"label": label, "wall_seconds": round(wall, 3), "exit_code": proc.returncode, "outcomes": outcomes,
            "failed": failed, "conformance_summary": summary,
            "compile_clock": compile_clock.read(clock_dir) if clock else None,
            "cell_seconds": round(sum(c["seconds"] for c in cells.values()), 3), "split": totals, "cells": cells,
            "fxgraph_cache": {k: sum(c["fxgraph_cache"][k] for c in cells.values()) for k in ("hit", "miss", "bypass")}}


def cache_env(cache: Path) -> dict:
    return dict(os.environ, **{v: str(cache / v.lower()) for v in CACHE_VARS})  # wins over conftest's setdefault


def run_nightly(work: Path) -> dict:
    """make nightly's run over NIGHTLY_CELLS, cold then warm: wall seconds and the verdict counts of run.json."""
    selection = Path(os.environ.get("BENCH_NIGHTLY_CELLS", NIGHTLY_CELLS))
    ids = cells_of(selection)
    cache = Path(tempfile.mkdtemp(prefix="cache-nightly-", dir=work))
    out = {"selection": selection.name, "cells": len(ids)}
    for temp in ("cold", "warm"):
        runs = work / f"nightly-{temp}"
        cmd = [sys.executable, "-m", "harness.tools.nightly", "run", "--python", sys.executable, "--runs-dir", str(runs),
               "--no-history", "--quiet", "--", *ids]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=cache_env(cache), capture_output=True, text=True)
        wall = time.perf_counter() - start
        docs = sorted(runs.glob("*/run.json"))
        if not docs:
            sys.exit(f"bench: nightly {temp}: no run.json (exit {proc.returncode})\n{(proc.stdout + proc.stderr)[-4000:]}")
        doc = json.loads(docs[-1].read_text())
        out[temp] = {"wall_seconds": round(wall, 1), "exit_code": proc.returncode, "summary": doc.get("summary")}
        print(f"  nightly {temp}: {wall:8.1f} s  exit {proc.returncode}", flush=True)
    return out


def run_fuzz(work: Path) -> dict:
    """The fuzzer for BENCH_FUZZ_SECONDS with --seed 11, cold compile caches, no example database, nothing written."""
    seconds = float(os.environ.get("BENCH_FUZZ_SECONDS", "120"))
    stats = work / "fuzz.json"
    cmd = [sys.executable, "-m", "harness.tools.fuzz", "run", "--seconds", str(seconds), "--seed", str(FUZZ_SEED),
           "--no-database", "--no-write", "--stats-json", str(stats)]
    proc = subprocess.run(cmd, cwd=ROOT, env=cache_env(Path(tempfile.mkdtemp(prefix="cache-fuzz-", dir=work))),
                          capture_output=True, text=True)
    if not stats.exists():
        sys.exit(f"bench: fuzz: no statistics (exit {proc.returncode})\n{(proc.stdout + proc.stderr)[-4000:]}")
    doc = json.loads(stats.read_text())
    print(f"  fuzz: {doc['tried']} programs in {doc['seconds']} s by {doc['workers']} workers = "
          f"{doc['programs_per_second']}/s", flush=True)
    return doc


def one_round(args: list[str], workers: int, work: Path, index: int) -> dict:
    runs = {}
    for mode, w in (("serial", 1), (f"-n {workers}", workers)):
        cache = Path(tempfile.mkdtemp(prefix=f"cache-r{index}-w{w}-", dir=work))  # empty: cold
        for temp in ("cold", "warm"):
            key = f"{mode} {temp}"
            runs[key] = run_pytest(args, cache, w, work, f"r{index}-{key.replace(' ', '_')}")
            print(f"  round {index + 1}: {key:<12} {runs[key]['wall_seconds']:8.1f} s  {runs[key]['outcomes']}", flush=True)
    par = f"-n {workers}"
    wall = {k: r["wall_seconds"] for k, r in runs.items()}
    ratios = {
        f"{par} speed-up, cold": wall["serial cold"] / wall[f"{par} cold"],
        f"{par} speed-up, warm": wall["serial warm"] / wall[f"{par} warm"],
        "warm speed-up, serial": wall["serial cold"] / wall["serial warm"],
        f"warm speed-up, {par}": wall[f"{par} cold"] / wall[f"{par} warm"],
    }
    return {"runs": runs, "ratios": {k: round(v, 3) for k, v in ratios.items()}}


def median_of(rounds: list[dict], get) -> float:
    return round(statistics.median(get(r) for r in rounds), 3)


def suite_doc(args: list[str], workers: int, work: Path, repeat: str, short: float, top: int) -> dict:
    """The suite's four runs, in rounds: medians, ratios, split, slowest cells and targets."""
    rounds = []
    start = time.perf_counter()
    rounds.append(one_round(args, workers, work, 0))
    n = (3 if time.perf_counter() - start < short else 1) if repeat == "auto" else int(repeat)
    for i in range(1, n):
        rounds.append(one_round(args, workers, work, i))
    keys = list(rounds[0]["runs"])
    summary = {k: {"wall_seconds": median_of(rounds, lambda r, k=k: r["runs"][k]["wall_seconds"]),
                   "cell_seconds": median_of(rounds, lambda r, k=k: r["runs"][k]["cell_seconds"]),
                   "fxgraph_cache": rounds[0]["runs"][k]["fxgraph_cache"],
                   "split": {p: median_of(rounds, lambda r, k=k, p=p: r["runs"][k]["split"][p]) for p in ALL_PARTS}}
               for k in keys}
    ratios = {k: median_of(rounds, lambda r, k=k: r["ratios"][k]) for k in rounds[0]["ratios"]}
    # Slowest cells: median over rounds of the serial cold run (no cache, no contention from a second worker).
    names = rounds[0]["runs"]["serial cold"]["cells"]
    slow = []
    for name in names:
        per = [r["runs"]["serial cold"]["cells"].get(name) for r in rounds]
        per = [c for c in per if c]
        slow.append({"cell": name, "seconds": round(statistics.median(c["seconds"] for c in per), 3),
                     "split": {p: round(statistics.median(c["split"][p] for c in per), 3) for p in ALL_PARTS}})
    slow.sort(key=lambda c: -c["seconds"])
    par = f"-n {workers}"
    harness_share = {k: (s["split"]["harness"] / s["cell_seconds"] if s["cell_seconds"] else 0.0) for k, s in summary.items()}
    targets = {
        "harness overhead <= 5% of cell time (serial cold)": [round(harness_share["serial cold"], 4), harness_share["serial cold"] <= 0.05],
        f"{par} vs serial >= 1.6x (cold)": [ratios[f"{par} speed-up, cold"], ratios[f"{par} speed-up, cold"] >= 1.6],
        "warm vs cold >= 2x (parallel, as make test runs)": [ratios[f"warm speed-up, {par}"], ratios[f"warm speed-up, {par}"] >= 2.0],
        f"issue 16: {par} warm wall <= 27 s": [summary[f"{par} warm"]["wall_seconds"], summary[f"{par} warm"]["wall_seconds"] <= 27],
        f"issue 16: {par} cold wall <= 70 s": [summary[f"{par} cold"]["wall_seconds"], summary[f"{par} cold"]["wall_seconds"] <= 70],
    }
    return {"args": args, "workers": workers, "rounds_run": len(rounds), "summary": summary, "ratios": ratios,
            "harness_share": {k: round(v, 4) for k, v in harness_share.items()}, "targets": targets,
            "slowest": slow[:top], "outcomes": rounds[0]["runs"]["serial cold"]["outcomes"],
            "rounds": [{"ratios": r["ratios"], "runs": {k: {x: v for x, v in run.items() if x != "cells"}
                                                        for k, run in r["runs"].items()}} for r in rounds]}


def side_by_side(work: Path, workers: int) -> dict:
    """make test's selection and the upstream file on CPU, cold then warm, alternating, median of rounds."""
    import upstream

    copy = upstream.prepare(work / "upstream")
    ours = shlex.split(os.environ.get("BENCH_SIDE_ARGS", "")) or ["suites", "-m", "not slow"]
    runs = {"make test": ([*ours, "-p", "no:cacheprovider"], ROOT, sys.executable, XDIST_ARGS),
            "upstream": ([copy.name, "-p", "no:cacheprovider", *shlex.split(os.environ.get("BENCH_UPSTREAM_ARGS", ""))],
                         copy.parent, sys.executable, XDIST_ARGS)}
    before = None
    if tree := os.environ.get("BENCH_SIDE_BEFORE"):  # another checkout (its own .venv): the "before" of a change
        tree = Path(tree).resolve()
        python = tree / ".venv" / "bin" / "python"
        if not python.exists():
            sys.exit(f"bench: BENCH_SIDE_BEFORE={tree}: no {python} (run `make install` there first)")
        before = {"tree": str(tree), "xdist": shlex.split(os.environ.get("BENCH_SIDE_BEFORE_XDIST", "--dist loadgroup"))}
        runs["make test before"] = ([*ours, "-p", "no:cacheprovider"], tree, str(python), before["xdist"])
    n = int(os.environ.get("BENCH_SIDE_REPEAT", "3"))
    seen: dict[str, list[dict]] = {f"{k} {t}": [] for k in runs for t in ("cold", "warm")}
    for i in range(n):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        caches = {k: Path(tempfile.mkdtemp(prefix=f"cache-side{i}-", dir=work)) for k in runs}
        for temp in ("cold", "warm"):
            for name in order:
                args, cwd, python, xdist_args = runs[name]
                key = f"{name} {temp}"
                r = run_pytest(args, caches[name], workers, work, f"side{i}-{name.replace(' ', '_')}-{temp}", cwd=cwd,
                               python=python, xdist_args=xdist_args, clock=True)
                seen[key].append(r)
                print(f"  side by side {i + 1}/{n}: {key:<16} {r['wall_seconds']:8.1f} s  {r['outcomes']}", flush=True)
    med = {k: round(statistics.median(r["wall_seconds"] for r in rs), 3) for k, rs in seen.items()}
    # Dynamo's compiles in each run's processes (bench/compile_clock.py): their seconds over the workers is a floor
    # under the run's wall time that only fewer or cheaper compiles lower
    clock = {k: {"compiles": statistics.median(r["compile_clock"]["compiles"] for r in rs),
                 "seconds": round(statistics.median(r["compile_clock"]["seconds"] for r in rs), 3)} for k, rs in seen.items()}
    ratios = {t: round(med[f"make test {t}"] / med[f"upstream {t}"], 3) for t in ("cold", "warm")}
    if before:
        ratios.update({f"before {t}": round(med[f"make test before {t}"] / med[f"upstream {t}"], 3) for t in ("cold", "warm")})
    summaries = sorted({r["conformance_summary"] for k, rs in seen.items() if k.startswith("make test") for r in rs
                        if r["conformance_summary"]})
    return {"rounds": n, "workers": workers, "upstream": {"file": str(upstream.source()), "commit": upstream.COMMIT},
            "before": before,
            "median_wall_seconds": med, "ratios": ratios, "conformance_summaries": summaries, "compile_clock": clock,
            "outcomes": {k: rs[0]["outcomes"] for k, rs in seen.items()},
            "runs": {k: [r["wall_seconds"] for r in rs] for k, rs in seen.items()},
            "targets": {"issue 30: make test warm <= 1.0x upstream": [ratios["warm"], ratios["warm"] <= 1.0],
                        "issue 30: make test cold <= 1.5x upstream": [ratios["cold"], ratios["cold"] <= 1.5]}}


def meta(work: Path, workers: int) -> dict:
    """make meta's run (pytest tests -n W -m "not meta_slow"), cold then warm: wall seconds and outcomes."""
    cache = Path(tempfile.mkdtemp(prefix="cache-meta-", dir=work))
    out = {}
    for temp in ("cold", "warm"):
        r = run_pytest(["tests", "-m", "not meta_slow", "-p", "no:cacheprovider"], cache, workers, work, f"meta-{temp}")
        out[temp] = {"wall_seconds": r["wall_seconds"], "outcomes": r["outcomes"], "exit_code": r["exit_code"],
                     "slowest": sorted(((round(c["seconds"], 1), name) for name, c in r["cells"].items()), reverse=True)[:10]}
        print(f"  meta {temp}: {r['wall_seconds']:8.1f} s  {r['outcomes']}", flush=True)
    return out


PARTS_MEASURED = ("suite", "side_by_side", "meta", "nightly", "fuzz")


def main() -> int:
    parts = [x.strip() for x in os.environ.get("BENCH_PARTS", ",".join(PARTS_MEASURED)).split(",") if x.strip()]
    if unknown := set(parts) - set(PARTS_MEASURED):
        sys.exit(f"bench: BENCH_PARTS names {sorted(unknown)}; known: {', '.join(PARTS_MEASURED)}")
    args = shlex.split(os.environ.get("BENCH_ARGS", "")) or cells_of(Path(os.environ.get("BENCH_CELLS", CELLS)))
    if "-m" not in args:
        args += ["-m", "not slow"]
    workers = int(os.environ.get("BENCH_WORKERS", "2"))
    repeat = os.environ.get("BENCH_REPEAT", "auto") or "auto"
    out = Path(os.environ.get("BENCH_OUT", ROOT / "reports" / "bench.json"))
    print(f"bench: {', '.join(parts)}; suite: pytest {shown(args)}; serial vs -n {workers}, cold vs warm; "
          f"repeat={repeat}", flush=True)
    doc = {"parts": parts, "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="ac-bench-") as tmp:
        work = Path(tmp)
        if "suite" in parts:
            doc.update(suite_doc(args, workers, work, repeat, float(os.environ.get("BENCH_SHORT", "240")),
                                 int(os.environ.get("BENCH_TOP", "10"))))
        if "side_by_side" in parts:
            doc["side_by_side"] = side = side_by_side(work, workers)
            doc.setdefault("targets", {}).update(side["targets"])
        if "meta" in parts:
            doc["meta"] = meta(work, workers)
        if "nightly" in parts:
            doc["nightly"] = n = run_nightly(work)
            doc.setdefault("targets", {}).update({
                "issue 16: nightly warm <= 60 s": [n["warm"]["wall_seconds"], n["warm"]["wall_seconds"] <= 60],
                "issue 16: nightly cold <= 120 s": [n["cold"]["wall_seconds"], n["cold"]["wall_seconds"] <= 120]})
        if "fuzz" in parts:
            doc["fuzz"] = f = run_fuzz(work)
            rate = f["programs_per_second"] or 0.0
            doc.setdefault("targets", {})[f"issue 16: fuzz >= 2x {FUZZ_REFERENCE} programs/s (4841b6a, seed {FUZZ_SEED})"] = [
                rate, rate >= 2 * FUZZ_REFERENCE]
    doc["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.with_name(out.stem + ".previous.json")
    if out.exists():
        out.replace(previous)  # the last result, kept for comparison
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print_table(doc)
    if previous.exists():
        print_comparison(json.loads(previous.read_text()), doc)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def print_comparison(before: dict, after: dict) -> None:
    """Wall seconds of every figure measured both times, the previous result beside this one (the suite's runs only
    when it timed the same selection)."""
    rows = []
    if "summary" in after and before.get("args") == after.get("args"):
        rows += [(k, before.get("summary", {}).get(k, {}).get("wall_seconds"), s["wall_seconds"])
                 for k, s in after["summary"].items()]
    elif "summary" in after:
        print("previous result: another suite selection, its runs not compared")
    for k, v in after.get("side_by_side", {}).get("median_wall_seconds", {}).items():
        rows.append((f"side {k}", before.get("side_by_side", {}).get("median_wall_seconds", {}).get(k), v))
    for temp in ("cold", "warm"):
        if "meta" in after and "meta" in before:
            rows.append((f"meta {temp}", before["meta"][temp]["wall_seconds"], after["meta"][temp]["wall_seconds"]))
        if "nightly" in after and "nightly" in before:
            rows.append((f"nightly {temp}", before["nightly"][temp]["wall_seconds"], after["nightly"][temp]["wall_seconds"]))
    print(f"\n{'run':<26} {'previous s':>10} {'now s':>8} {'ratio':>6}")
    for k, old, new in rows:
        if old:
            print(f"{k:<26} {old:10.1f} {new:8.1f} {old / new:5.2f}x")
    if "fuzz" in after and "fuzz" in before:
        old, new = before["fuzz"]["programs_per_second"], after["fuzz"]["programs_per_second"]
        print(f"{'fuzz':<14} {old:8.2f}/s {new:6.2f}/s {new / old if old else 0:5.2f}x")


def print_table(doc: dict) -> None:
    if "summary" in doc:
        print_suite(doc)
    if "side_by_side" in doc:
        side = doc["side_by_side"]
        med = side["median_wall_seconds"]
        print(f"\nside by side (-n {side['workers']}, whole process, median of {side['rounds']}; upstream "
              f"{side['upstream']['commit'][:10]} on CPU, bench/upstream.py):")
        print(f"{'run':<6} {'make test s':>12} {'upstream s':>11} {'ratio':>6}")
        for t in ("cold", "warm"):
            print(f"{t:<6} {med[f'make test {t}']:12.1f} {med[f'upstream {t}']:11.1f} {side['ratios'][t]:5.2f}x")
        if side.get("before"):
            print(f"before ({side['before']['tree']}, {' '.join(side['before']['xdist'])}), the same rounds:")
            for t in ("cold", "warm"):
                print(f"{t:<6} {med[f'make test before {t}']:12.1f} {med[f'upstream {t}']:11.1f} "
                      f"{side['ratios'][f'before {t}']:5.2f}x")
        if clock := side.get("compile_clock"):
            print(f"inside Dynamo's compiles (bench/compile_clock.py; / {side['workers']} workers: a floor under the wall time):")
            for k, c in clock.items():
                print(f"  {k:<22} {c['compiles']:6.0f} compiles {c['seconds']:8.1f} s  "
                      f"floor {c['seconds'] / side['workers']:6.1f} s of {med[k]:.1f} s")
        print("outcomes: " + "; ".join(f"{k} {v}" for k, v in side["outcomes"].items()))
        for line in side["conformance_summaries"]:
            print(f"make test conformance summary: {line}")
    if "meta" in doc:
        print("\nmeta tests (pytest tests): " + "; ".join(f"{t} {m['wall_seconds']:.1f} s {m['outcomes']}"
                                                      for t, m in doc["meta"].items()))
    if "nightly" in doc:
        n = doc["nightly"]
        verdicts = ("semantic", "drift", "known_failure", "pass", "skipped")
        print(f"\nnightly ({n['cells']} cells, {n['selection']}): " + "; ".join(
            f"{t} {n[t]['wall_seconds']:.1f} s (exit {n[t]['exit_code']}; "
            + ", ".join(f"{v} {(n[t]['summary'] or {}).get(v)}" for v in verdicts) + ")" for t in ("cold", "warm")))
    if "fuzz" in doc:
        f = doc["fuzz"]
        print(f"\nfuzz (seed {FUZZ_SEED}, {f['seconds']} s, {f['workers']} workers): {f['tried']} programs = "
              f"{f['programs_per_second']}/s; judged per backend: "
              + ", ".join(f"{b} {n} in {f['judge_seconds'].get(b, 0)} s" for b, n in f["judged"].items()))
    if doc.get("targets"):
        print("targets: " + "; ".join(f"{k}: {v} {'ok' if ok else 'MISSED'}" for k, (v, ok) in doc["targets"].items()))


def print_suite(doc: dict) -> None:
    n, outcomes = doc["rounds_run"], doc["outcomes"]
    print(f"\npytest {shown(doc['args'])}: {sum(outcomes.values())} cells {outcomes}; "
          f"{'median of ' + str(n) + ' rounds' if n > 1 else '1 round'}; {doc['cpu_count']} CPUs, "
          f"load average {doc['loadavg_before'][0]} -> {doc['loadavg_after'][0]}")
    head = f"{'run':<12} {'wall s':>8} {'cells s':>8} " + " ".join(f"{p:>10}" for p in PARTS) + f" {'harness%':>8}"
    print(head)
    print("-" * len(head))
    for k, s in doc["summary"].items():
        print(f"{k:<12} {s['wall_seconds']:8.1f} {s['cell_seconds']:8.1f} " + " ".join(f"{s['split'][p]:10.2f}" for p in PARTS)
              + f" {100 * doc['harness_share'][k]:7.1f}%")
    print("(cells s: the cells' own time summed over workers; wall s: the whole pytest process, start-up included)")
    print("harness = " + "; ".join(f"{k}: " + " + ".join(f"{h} {s['split']['harness.' + h]:.2f}" for h in HARNESS)
                                   for k, s in doc["summary"].items()))
    print("inductor FX graph cache (hit/miss/bypass): " + "; ".join(
        f"{k} {'/'.join(str(v) for v in s['fxgraph_cache'].values())}" for k, s in doc["summary"].items()))
    print("ratios (within a round): " + "; ".join(f"{k} {v:.2f}x" for k, v in doc["ratios"].items()))
    print(f"slowest cells (serial cold): cell s = " + " + ".join(PARTS))
    for c in doc["slowest"]:
        print(f"  {c['seconds']:7.2f}  " + " ".join(f"{c['split'][p]:6.2f}" for p in PARTS) + f"  {c['cell']}")


if __name__ == "__main__":
    sys.exit(main())

"""``ac-conformance check path/to/model.py:factory``: the user-model conformance check for a model without tests.

Runs the same cells as the ``ac_conformance`` fixture (harness/user/conformance.py: a Case from the factory and each
policy, every cell through harness.core.suite.check_cell) and writes an HTML report: verdicts, figures, a
memory-vs-recompute plot (inline SVG), and per cell its saved tensors, recomputed ops, failing checks and graphs.

Exit codes (0-3 as the nightly's, ``python -m harness.tools.nightly --help``; the worst cell decides):

  0  clean: every cell passed
  1  graph-only drift: the graphs differ from the goldens under --goldens while every semantic check passed
  2  wrong: a numerics (an AC defect), invariant or run failure in some cell
  3  bad input: see EXIT_HELP
  4  compile/backend difference: compiled with AC differs from eager, and so does compiled without AC (not AC)
  5  AC had no effect: a policy that should checkpoint recomputed nothing and saved what no AC saves

The import name ``harness`` is shared with an unrelated PyPI package: prefer the console script ``ac-conformance``
(``python -m harness check ...`` works where this project's harness is the one importable).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from pathlib import Path

from harness.user import conformance
from harness.user.conformance import BAD_INPUT, EXIT_WORDS, InputError, Report, fmt_bytes

EXIT_HELP = """exit codes (the worst cell decides; 0-3 as the nightly's):
  0  clean: every cell passed
  1  graph-only drift from the goldens under --goldens (every semantic check passed)
  2  wrong: numerics (an AC defect), an invariant or the run failed in some cell
  3  bad input: factory missing or raising, inputs of another shape, no trainable parameters, unknown policy or op,
     no blocks found, a model that already checkpoints under a harness policy (double AC), a model that fails
     eagerly without AC ("cannot run"), backend unusable here
  4  compile/backend difference: compiled without AC differs from eager without AC the same way (not AC's fault)
  5  AC had no effect: the policy recomputed nothing and saved what the model without AC saves"""
JSON_MESSAGE_LIMIT = 4000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ac-conformance", description="Activation-checkpointing conformance of your "
                                "model under torch.compile: numerics, invariants, figures, goldens.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check a model factory", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EXIT_HELP + "\n\nThe factory returns (model, inputs); inputs: a tensor, a tuple, a dict of "
                       "keyword arguments or (args, kwargs).")
    c.add_argument("model", help="path/to/model.py:factory (or package.module:factory)")
    c.add_argument("--policy", action="append", default=None,
                   help="AC policy, repeatable: harness policies none, full, selective_op (selective-op), "
                        "every_other_mm, selective_layer, memory_budget; the model's own mechanism hf, hf_reentrant, "
                        "timm, torchtitan_full, torchtitan_selective, checkpoint_sequential, own (the model as the "
                        "factory returns it, or factory(ac=True)); parameters as name:key=value,... e.g. "
                        "selective_layer:every=3, selective_op:save=aten.mm.default+aten.max.default, "
                        "hf:use_reentrant=True (default: full)")
    c.add_argument("--budget", action="append", type=float, default=None,
                   help="activation_memory_budget axis, repeatable (default: untouched)")
    c.add_argument("--backend", action="append", default=None, help="aot_eager (default) or inductor, repeatable")
    c.add_argument("--partitioner", action="append", default=None, help="min_cut (default) or default, repeatable")
    c.add_argument("--blocks", action="append", default=None, metavar="ATTR.PATH",
                   help="where the blocks are (a ModuleList/ModuleDict/Sequential), repeatable; '.' checkpoints the "
                        "whole model as one block (default: found in the common layouts)")
    c.add_argument("--tolerance", default=None, metavar="RTOL,ATOL",
                   help="numerics tolerance for the compiled program (default: torch's for the dtype)")
    c.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    c.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    c.add_argument("--report", type=Path, default=Path("ac-report"), help="directory for report.html and report.json")
    c.add_argument("--goldens", type=Path, default=None, help="compare graphs with goldens under this directory")
    c.add_argument("--update-goldens", action="store_true", help="write the goldens of cells whose checks all pass")
    c.add_argument("--repro", action="store_true", help="write repro_<cell>.py for each failing cell into --report")
    return p


def _tolerance(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        rtol, atol = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--tolerance {text}: expected RTOL,ATOL, e.g. 1e-4,1e-5") from None
    if rtol < 0 or atol < 0:
        raise InputError(f"--tolerance {text}: tolerances are not negative")
    return rtol, atol


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        factory = conformance.load_factory(args.model)
        tolerance = _tolerance(args.tolerance)
        cases = [conformance.model_case(factory, policy, backends=args.backend or ("aot_eager",),
                                        budgets=args.budget or (None,), partitioners=args.partitioner or ("min_cut",),
                                        device=args.device, dtype=args.dtype, tolerance=tolerance, blocks=args.blocks,
                                        check_backends=lambda b: conformance.backend_problem(b, args.device))
                 for policy in (args.policy or ["full"])]
    except InputError as e:
        print(f"ac-conformance: bad input: {e}", file=sys.stderr)
        return BAD_INPUT
    goldens_for = None
    if args.goldens is not None:
        goldens_for = lambda cell: conformance.FileGoldens(args.goldens, cell, args.update_goldens)  # noqa: E731
    results = []
    for mc in cases:
        d = mc.described
        print(f"policy {d.policy}: wraps {d.wrapped}")
        for w in d.warnings:
            print(f"  warning: {w}")
        for r in conformance.run_case(mc, goldens_for, on_result=_progress):
            results.append(r)
    report = Report(results)
    args.report.mkdir(parents=True, exist_ok=True)
    html_path = args.report / "report.html"
    html_path.write_text(render_html(report, args), encoding="utf-8")
    (args.report / "report.json").write_text(json.dumps(report_json(report, args), indent=1, default=str))
    if args.repro:
        for r in report.results:
            if r.verdict not in ("pass", "drift"):
                path = args.report / f"repro_{r.id}.py"
                path.write_text(repro_script(r, args))
                print(f"repro: {path}")
    if not report.ok:
        print()
        print(report.message(where=str(html_path)))
    print(f"\nreport: {html_path}\nexit {report.exit_code}: {EXIT_WORDS[report.exit_code]}")
    return report.exit_code


def _progress(r) -> None:
    """Each cell once, as it finishes: verdict, figures beside the no-AC figures, notes."""
    print(conformance.summary_line(r), flush=True)


def report_json(report: Report, args) -> dict:
    def failure(r, stage, msg):
        lines = msg.splitlines() or [""]
        body = msg if len(msg) <= JSON_MESSAGE_LIMIT else (
            msg[:JSON_MESSAGE_LIMIT] + f"\n[... cut: {len(msg) - JSON_MESSAGE_LIMIT} of {len(msg)} characters not "
            f"shown; the whole message is in report.html]")
        return {"check": stage, "first_line": lines[0], "message": body, "truncated": len(msg) > JSON_MESSAGE_LIMIT}

    def policy(r):
        d = r.described
        return None if d is None else {"policy": d.policy, "wrapped": d.wrapped, "wrapped_blocks": d.wrapped_blocks,
                                       "outputs": d.outputs, "warnings": d.warnings}

    skip = ("saved", "recomputed")
    return {"model": args.model, "exit": report.exit_code, "exit_meaning": EXIT_WORDS[report.exit_code],
            "cells": [{"cell": r.id, "verdict": r.verdict, "policy": policy(r), "notes": r.notes,
                       "failures": [failure(r, s, m) for s, m in r.failures],
                       "figures": {k: v for k, v in r.figures.items() if k not in skip},
                       "no_ac": {k: v for k, v in r.no_ac.items() if k not in skip}}
                      for r in report.results]}


# ------------------------------------------------------------------------------------------------ HTML

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}
.pass{background:#dff5df}.drift{background:#fff3c4}.wrong{background:#fbd5d5}.backend{background:#dde7fb}
.no-effect{background:#f3dcf5}.bad-input{background:#eee}.warn{color:#a35a00;font-weight:bold}pre{background:#f7f7f7;padding:8px;
overflow:auto;font-size:12px;max-height:420px}.num{text-align:right;font-variant-numeric:tabular-nums}
h2{margin-top:28px}summary{cursor:pointer}"""


def _e(x) -> str:
    return html.escape(str(x))


def plot_svg(report: Report) -> str:
    """Saved activation bytes (x) vs recompute FLOPs (y), one point per cell, plus each cell's no-AC point."""
    pts = []
    for r in report.results:
        f = r.figures
        if f.get("activation_bytes") is not None:
            pts.append((r.id, f["activation_bytes"], f.get("recompute_flops") or 0, r.verdict))
    base = {}
    for r in report.results:
        n = r.no_ac
        if n.get("activation_bytes") is not None:
            base.setdefault((n["activation_bytes"], n.get("recompute_flops") or 0), f"no AC ({r.cell.axes.backend})")
    allp = [(x, y) for _, x, y, _ in pts] + list(base)
    if not allp:
        return "<p>(no analysable backward: nothing to plot)</p>"
    w, h, m = 640, 360, 60
    xmax = max(x for x, _ in allp) or 1
    ymax = max(y for _, y in allp) or 1
    sx = lambda x: m + (w - 2 * m) * x / xmax  # noqa: E731
    sy = lambda y: h - m + -(h - 2 * m) * y / ymax  # noqa: E731
    colour = {"pass": "#2a8a2a", "drift": "#c8a000", "wrong": "#c62828", "backend": "#2850c6", "no-effect": "#9a30a8",
              "bad-input": "#777"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="saved activation bytes vs recompute FLOPs">',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="#333"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{m}" y2="{m}" stroke="#333"/>',
           f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle" font-size="12">saved activation bytes '
           f'(0 .. {fmt_bytes(xmax)})</text>',
           f'<text x="16" y="{h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 {h / 2})">'
           f'recompute FLOPs (0 .. {ymax:,})</text>']
    for j, ((x, y), label) in enumerate(base.items()):
        out.append(f'<rect x="{sx(x) - 5}" y="{sy(y) - 5}" width="10" height="10" fill="#777"><title>{_e(label)}: '
                   f'{x} B, {y} FLOPs</title></rect>')
        out.append(f'<text x="{sx(x) - 8}" y="{sy(y) - 10 - 13 * j}" font-size="11" fill="#555" text-anchor="end">'
                   f'{_e(label)}: {fmt_bytes(x)}</text>')
    at: dict = {}  # cells on the same spot share one label
    for i, (cid, x, y, verdict) in enumerate(pts):
        at.setdefault((x, y), []).append((i + 1, cid, verdict))
    for (x, y), cells in at.items():
        from harness.user.conformance import SEVERITY

        worst = next(v for v in SEVERITY if any(v == c for *_, c in cells))
        title = "; ".join(f"{cid} ({v})" for _, cid, v in cells)
        out.append(f'<circle cx="{sx(x)}" cy="{sy(y)}" r="6" fill="{colour[worst]}" fill-opacity="0.8">'
                   f'<title>{_e(title)}: {x} B, {y} FLOPs</title></circle>')
        out.append(f'<text x="{sx(x) + 9}" y="{sy(y) + 4}" font-size="11">{", ".join(str(n) for n, *_ in cells)}</text>')
    out.append("</svg>")
    legend = "".join(f"<li>{i + 1}: {_e(cid)} ({v})</li>" for i, (cid, _, _, v) in enumerate(pts))
    return "\n".join(out) + f"<ol style='list-style:none;padding:0;font-size:12px'>{legend}</ol>"


def render_html(report: Report, args) -> str:
    import torch

    from harness.user.conformance import EXIT_WORDS

    verdict_word = EXIT_WORDS[report.exit_code]
    rows = []
    for r in report.results:
        f, n = r.figures, r.no_ac
        failed = ", ".join(sorted({s for s, _ in r.failures})) or ""
        warn = " <span class='warn' title='see the cell'>&#9888;</span>" if r.warnings else ""
        rows.append(f"<tr class='{r.verdict}'><td><a href='#{_e(r.id)}'>{_e(r.id)}</a>{warn}</td><td>{r.verdict}</td>"
                    f"<td>{_e(failed)}</td><td class='num'>{fmt_bytes(f.get('activation_bytes'))}</td>"
                    f"<td class='num'>{fmt_bytes(n.get('activation_bytes'))}</td>"
                    f"<td class='num'>{fmt_bytes(f.get('peak_bytes'))}</td>"
                    f"<td class='num'>{fmt_bytes(n.get('peak_bytes'))}</td>"
                    f"<td class='num'>{f.get('fw_flops', '?')}</td><td class='num'>{f.get('bw_flops', '?')}</td>"
                    f"<td class='num'>{n.get('bw_flops', '?')}</td>"
                    f"<td class='num'>{f.get('recompute_flops', '?')}</td><td class='num'>{f.get('recomputed_ops', '?')}</td>"
                    f"<td class='num'>{r.checks}</td></tr>")
    policies_seen = {}
    for r in report.results:
        if r.described is not None:
            policies_seen.setdefault(r.described.policy, r.described)
    pol = "".join(f"<li><b>{_e(p)}</b>: wraps {_e(d.wrapped)}; outputs compared: {_e(', '.join(d.outputs) or '?')}"
                  + "".join(f"<br><span class='warn'>warning: {_e(w)}</span>" for w in d.warnings) + "</li>"
                  for p, d in policies_seen.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ac-conformance: {_e(args.model)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>ac-conformance: {_e(args.model)}</h1>",
             f"<p><b>exit {report.exit_code} ({verdict_word})</b> — {len(report.results)} cells; torch "
             f"{_e(torch.__version__)}; device {_e(args.device)}, dtype {_e(args.dtype)}. Each cell: numerics "
             f"against eager with and without AC (outputs, input and parameter gradients; a mismatch compiling "
             f"without AC shows too is a backend difference), the invariants, whether AC had an effect, "
             f"{'goldens under ' + _e(args.goldens) if args.goldens else 'no goldens'}.</p>",
             f"<ul>{pol}</ul>",
             "<table><tr><th>cell</th><th>verdict</th><th>failed checks</th><th>saved activations</th>"
             "<th>no AC</th><th>peak estimate</th><th>peak no AC</th><th>fw FLOPs</th><th>bw FLOPs</th>"
             "<th>bw FLOPs no AC</th><th>recompute FLOPs</th><th>recomputed ops</th><th>checks</th></tr>", *rows,
             "</table>", "<h2>Memory vs recompute</h2>", plot_svg(report)]
    for r in report.results:
        parts.append(f"<h2 id='{_e(r.id)}' class='{r.verdict}'>{_e(r.id)}: {r.verdict}</h2>")
        for note in r.notes:
            parts.append(f"<p class='{'warn' if note.startswith('warning') else ''}'>{_e(note)}</p>")
        if r.message:
            parts.append(f"<pre>{_e(r.message)}</pre>")
        saved = r.figures.get("saved", [])
        if saved:
            parts.append("<table><tr><th>saved tensor</th><th>type</th><th>bytes</th><th>kind</th></tr>" + "".join(
                f"<tr><td>{_e(s['name'])}</td><td>{_e(s['type'])}</td><td class='num'>{_e(s['bytes'])}</td>"
                f"<td>{_e(s['kind'])}</td></tr>" for s in saved) + "</table>")
        rec = r.figures.get("recomputed")
        if rec:
            from collections import Counter

            parts.append("<p>recomputed in the backward: " + ", ".join(
                f"{_e(op)} &times;{c}" for op, c in sorted(Counter(rec).items())) + "</p>")
        texts = r.run.texts if r.run is not None else {}
        for kind in ("dynamo", "joint", "fw", "bw"):
            if kind in texts:
                parts.append(f"<details><summary>{kind} graph ({texts[kind].count(chr(10))} lines)</summary>"
                             f"<pre>{_e(texts[kind])}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ repro

REPRO = '''"""Repro of a failing ac-conformance cell: {cell}

Written by `ac-conformance check {model} --repro` on torch {torch}.  Run `python {name}`: it re-runs this one cell
through the harness's checks (harness.user.conformance, the same as the fixture and the command line) and exits 1 while
it fails, 0 once it passes.  What failed:
{failures}
"""
import sys

sys.path.insert(0, {root!r})  # the harness checkout that wrote this repro
from harness.user import conformance  # noqa: E402
from harness.core.case import Axes, Cell  # noqa: E402
from harness.core.policies import *  # noqa: E402, F403 - the policy's repr below names its class
from harness.rows.mechanisms import *  # noqa: E402, F403

MODEL = {model!r}
POLICY = {policy}
AXES = Axes({partitioner!r}, {backend!r}, {device!r}, {dtype!r}, {budget!r})

mc = conformance.model_case(conformance.load_factory(MODEL), POLICY, backends=(AXES.backend,),
                            budgets=(AXES.budget,), partitioners=(AXES.partitioner,), device=AXES.device,
                            dtype=AXES.dtype, blocks={blocks!r}, tolerance={tolerance!r})
result = conformance.check_cell_of(Cell(mc.case, AXES), conformance.NoGoldens(), mc.described, mc.policy)
print(result.message or f"{{result.id}}: passed")
sys.exit(0 if result.verdict == "pass" else 1)
'''


def repro_script(r, args) -> str:
    import torch

    a = r.cell.axes
    model_path, _, fn = args.model.rpartition(":")
    model = f"{Path(model_path).resolve()}:{fn}" if model_path.endswith(".py") else args.model
    policy = r.cell.case.notes.removeprefix("policy ")
    failures = "\n".join(f"  [{s}] {m.splitlines()[0][:300]}" for s, m in r.failures)
    from harness.core.paths import ROOT

    return REPRO.format(root=str(ROOT), cell=r.id, model=model, torch=torch.__version__, name=f"repro_{r.id}.py", failures=failures,
                        policy=policy, partitioner=str(a.partitioner), backend=str(a.backend), device=a.device,
                        dtype=a.dtype, budget=a.budget, blocks=args.blocks, tolerance=_tolerance(args.tolerance))


if __name__ == "__main__":
    sys.exit(main())

"""``make memory-report``: saved-activation bytes against recompute FLOPs, per case and policy/budget.

For every case with a backward run by the standard pipeline (CPU, aot_eager), the program is compiled without AC,
with AC, and with AC under activation_memory_budget 1.0 / 0.5 / 0.0 (min-cut), and each partition is analysed
(harness/analysis.py).  Writes ``reports/memory_report.md`` (a table) and ``reports/memory_report.png`` (a scatter
plot: one point per configuration, a line per case through its budget sweep).

    python -m harness.memory_report [--out reports] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from harness import analysis
from harness.case import Axes, Backend, Partitioner, all_cases
from harness.collect import SWEEP_BUDGETS, eligible
from harness.pipeline import baseline

MIN_CUT, DEFAULT = Partitioner.MIN_CUT, Partitioner.DEFAULT
CONFIGS = [("no AC", MIN_CUT, None, False), ("AC", MIN_CUT, None, True), ("AC", DEFAULT, None, True)]
CONFIGS += [(f"AC budget {b}", MIN_CUT, b, True) for b in SWEEP_BUDGETS]


def collect(substring: str = "") -> list[dict]:
    rows = []
    for case in all_cases():
        if not (eligible(case) and "cpu" in case.axes.devices and substring in case.name) or case.requires:
            continue
        for label, part, budget, ac in CONFIGS:
            if part not in case.axes.partitioners and budget is None and ac:
                continue
            axes = Axes(part, Backend.AOT_EAGER, "cpu", case.axes.dtypes[0], budget)
            try:
                a = analysis.of(baseline(case, axes, ac))
            except Exception as e:  # a configuration the case does not support: reported, not fatal
                rows.append(dict(case=case.name, policy=case.checkpoint, config=f"{label} ({part})", error=type(e).__name__))
                continue
            if a is None:
                continue
            rows.append(dict(case=case.name, policy=case.checkpoint, config=f"{label} ({part})", budget=budget, ac=ac,
                             saved=a.saved_bytes, activation=a.activation_bytes, rng=a.rng_state_bytes,
                             bw_flops=a.bw_flops, recompute_flops=a.recompute_flops,
                             recomputed=len(a.recomputed)))
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | policy | configuration | saved bytes | activation bytes | RNG-state bytes | backward FLOPs | "
            "recompute FLOPs | recomputed ops |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['policy']} | {r['config']} | {r['error']} | | | | | |")
        else:
            lines.append(f"| {r['case']} | {r['policy']} | {r['config']} | {r['saved']} | {r['activation']} | {r['rng']} | "
                         f"{r['bw_flops']} | {r['recompute_flops']} | {r['recomputed']} |")
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 7))
    markers = {"no AC": ("o", "tab:gray"), "AC": ("s", "tab:blue"), "AC budget 1.0": ("^", "tab:green"),
               "AC budget 0.5": ("D", "tab:orange"), "AC budget 0.0": ("v", "tab:red")}
    good = [r for r in rows if "error" not in r and r["activation"] is not None]
    for label, (marker, color) in markers.items():
        pts = [r for r in good if r["config"].startswith(label + " (")]
        ax.scatter([r["activation"] for r in pts], [r["recompute_flops"] for r in pts], marker=marker, color=color,
                   label=label, alpha=0.7, s=36)
    for case in sorted({r["case"] for r in good}):
        sweep = [r for r in good if r["case"] == case and r["budget"] is not None]
        if len(sweep) > 1:
            ax.plot([r["activation"] for r in sweep], [r["recompute_flops"] for r in sweep], color="lightgray", lw=0.8,
                    zorder=0)
    ax.set_xscale("symlog", linthresh=64)
    ax.set_yscale("symlog", linthresh=64)
    ax.set_xlabel("saved activation bytes (inputs and parameters aside)")
    ax.set_ylabel("recompute FLOPs in the backward (matmul-class ops)")
    ax.set_title(f"Activation memory vs recompute, {len({r['case'] for r in good})} cases (CPU, aot_eager); "
                 "grey lines: a case's budget sweep 1.0 -> 0.5 -> 0.0")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports")
    p.add_argument("-k", default="", help="only cases whose name contains this")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = collect(args.k)
    seconds = time.perf_counter() - start
    md = out / "memory_report.md"
    md.write_text(f"# Saved-activation memory vs recompute cost\n\n{len({r['case'] for r in rows})} cases, "
                  f"{len(rows)} configurations, collected in {seconds:.0f} s (CPU, aot_eager). "
                  "Bytes: tensors the forward saves for backward; activation bytes leave out inputs and parameters; "
                  "FLOPs: torch.utils.flop_counter formulas on the graphs' shapes. Plot: memory_report.png\n\n"
                  + table(rows))
    plot(rows, out / "memory_report.png")
    print(f"wrote {md} and {out / 'memory_report.png'} ({len(rows)} rows, {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

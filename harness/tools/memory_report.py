"""``make memory-report``: saved-activation bytes against recompute FLOPs, per case and policy/budget.

For every case with a backward run by the standard pipeline (CPU, aot_eager), the program is compiled without AC,
with AC, and with AC under activation_memory_budget 1.0 / 0.5 / 0.0 (min-cut), and each partition is analysed
(harness/core/analysis.py).  Writes ``reports/memory_report.md`` (a table) and ``reports/memory_report.png`` (a scatter
plot: one point per configuration, a line per case through its budget sweep).

    python -m harness.tools.memory_report [--out reports] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from harness.core import analysis
from harness.core.case import BUDGET_SWEEP, Axes, Backend, Partitioner
from harness.rows.cases import all_cases
from harness.rows.collect import eligible
from harness.core.pipeline import baseline

MIN_CUT, DEFAULT = Partitioner.MIN_CUT, Partitioner.DEFAULT
CONFIGS = [("no AC", MIN_CUT, None, False), ("AC", MIN_CUT, None, True), ("AC", DEFAULT, None, True)]
CONFIGS += [(f"AC budget {b}", MIN_CUT, b, True) for b in BUDGET_SWEEP]


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


def markdown(columns: tuple[str, ...], rows: list[dict], key: str, cells) -> str:
    """A markdown table: the first ``len(key)`` columns name the row, the rest are figures (right-aligned); a row with
    an ``error`` shows it in the first figure column."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(key) + "---:|" * (len(columns) - len(key)) + "\n"
    lines = []
    for r in rows:
        named = [str(r[k]) for k in key]
        figures = [r["error"]] + [""] * (len(columns) - len(key) - 1) if "error" in r else [str(v) for v in cells(r)]
        lines.append("| " + " | ".join(named + figures) + " |")
    return head + "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    return markdown(("case", "policy", "configuration", "saved bytes", "activation bytes", "RNG-state bytes",
                     "backward FLOPs", "recompute FLOPs", "recomputed ops"), rows, ("case", "policy", "config"),
                    lambda r: (r["saved"], r["activation"], r["rng"], r["bw_flops"], r["recompute_flops"], r["recomputed"]))


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


PARETO_MODELS = ("mlp4_plain", "mlp4_wide_plain", "mlp4_wide_sac")


def pareto_rows(estimator: str = "flops", models=PARETO_MODELS) -> list[dict]:
    """Per reference model and solver, the budget sweep of harness/rows/cases/budget_solvers.py (the same cases and
    compiles as the budget_matrix cells): saved bytes (the partitioner's measure), harness/core/peak.py's peak estimate,
    the knapsack's estimated recompute cost (the runtime of the items it lets be recomputed, in the estimator's
    units; 0.0 and 1.0 pose no knapsack) and the recompute FLOPs read off the backward graph."""
    from harness.rows.cases import budget_solvers as bs

    rows = []
    for model in models:
        for solver in bs.SOLVERS:
            case = next(c for c in all_cases() if c.name == f"bs_{model}__{solver}__{estimator}")
            for b in bs.BUDGETS:
                axes = Axes(Partitioner.MIN_CUT, Backend.AOT_EAGER, "cpu", "float32", b)
                try:
                    f = bs.figures_of(baseline(case, axes, True))
                except Exception as e:  # reported, not fatal
                    rows.append(dict(model=model, solver=solver, budget=b, error=type(e).__name__))
                    continue
                row = f.row()
                rows.append(dict(model=model, solver=solver, **row))
    return rows


def pareto_rows_from_junit(path: Path, estimator: str = "flops", models=PARETO_MODELS) -> list[dict]:
    """The same rows from a budget_matrix run's JUnit XML (each cell records its figures as ``budget_*`` properties,
    suites/test_budget_solvers.py), instead of compiling again."""
    import ast
    import re
    import xml.etree.ElementTree as ET

    from harness.rows.cases import budget_solvers as bs

    rows = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        m = re.search(r"\[bs_(\w+?)__(\w+?)__(\w+?)-min_cut-aot_eager-cpu-float32-budget([0-9.]+)\]", tc.get("name", ""))
        if not m or m.group(1) not in models or m.group(3) != estimator:
            continue
        props = {p.get("name")[len("budget_"):]: p.get("value") for p in tc.iter("property")
                 if p.get("name", "").startswith("budget_")}
        if not props:
            continue
        row = {}
        for k, v in props.items():
            try:
                row[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                row[k] = v
        rows.append(dict(model=m.group(1), solver=m.group(2), **row))
    order = {s: i for i, s in enumerate(bs.SOLVERS)}
    rows.sort(key=lambda r: (models.index(r["model"]), order.get(r["solver"], 99), r["budget"]))
    return rows


def torch_pareto(model: str, out: Path, budget: float = 0.5, estimator: str = "flops") -> list[tuple[float, float]]:
    """torch's own frontier (functorch config ``visualize_memory_budget_pareto``, written as an SVG under
    ``memory_budget_pareto_dir``), for the same model: the points it plots, (memory ratio, runtime of recomputed
    components), captured from its ``plt.plot`` call.  It bisects the budget between 0 and 1 with the configured
    solver and estimator, so it is the curve of one (solver, estimator)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = next(c for c in all_cases() if c.name == f"bs_{model}__dp__{estimator}")
    points: list[tuple[float, float]] = []
    real = plt.plot

    def spy(x, y, *args, **kwargs):
        points.extend(zip(x, y))
        return real(x, y, *args, **kwargs)

    import torch

    plt.plot = spy
    try:
        with torch._functorch.config.patch(visualize_memory_budget_pareto=True, memory_budget_pareto_dir=str(out)):
            baseline.__wrapped__(case, Axes(Partitioner.MIN_CUT, Backend.AOT_EAGER, "cpu", "float32", budget), True)
    finally:
        plt.plot = real
        plt.close("all")
    return points


def pareto_plot(rows: list[dict], torch_points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if "error" not in r]
    models = sorted({r["model"] for r in good}, key=PARETO_MODELS.index)
    solvers = list(dict.fromkeys(r["solver"] for r in good))
    fig, axs = plt.subplots(3, len(models), figsize=(6 * len(models), 14), squeeze=False)
    for j, model in enumerate(models):
        for k, solver in enumerate(solvers):
            pts = [r for r in good if r["model"] == model and r["solver"] == solver]
            lo, hi = pts[0]["saved_B"], pts[-1]["saved_B"]
            kw = dict(marker="os^Dv"[k % 5], label=solver, alpha=0.75, ms=6 - k * 0.6)
            axs[0][j].plot([r["saved_B"] for r in pts], [r["recompute_flops"] for r in pts], **kw)
            axs[1][j].plot([r["budget"] for r in pts], [r["peak_B"] for r in pts], **kw)
            ks = [r for r in pts if "recompute_cost" in r]
            if hi > lo:
                axs[2][j].plot([(r["saved_B"] - lo) / (hi - lo) for r in ks], [r["recompute_cost"] for r in ks], **kw)
            for r in pts:
                axs[0][j].annotate(f"{r['budget']}", (r["saved_B"], r["recompute_flops"]), fontsize=6, alpha=0.6)
        tp = sorted(torch_points.get(model, []))
        if tp:
            axs[2][j].plot([x for x, _ in tp], [y for _, y in tp], color="black", lw=1, ls="--", marker=".",
                           label="torch visualize_memory_budget_pareto (dp)")
        axs[0][j].set(title=f"{model}: recompute FLOPs vs saved bytes", xlabel="saved bytes (partitioner measure)",
                      ylabel="recompute FLOPs in the backward")
        axs[1][j].set(title=f"{model}: peak estimate (harness/core/peak.py)", xlabel="activation_memory_budget",
                      ylabel="peak live activation bytes")
        axs[2][j].set(title=f"{model}: knapsack's estimated recompute cost", xlabel="budget used: (saved - saved(0)) / "
                      "(saved(1) - saved(0))", ylabel="runtime of recomputed items (flops estimator)")
        for i in range(3):
            axs[i][j].grid(True, alpha=0.3)
            axs[i][j].legend(fontsize=7)
    fig.suptitle("activation_memory_budget sweep 0.0, 0.1, 0.3, 0.5, 0.8, 1.0 per knapsack solver (flops estimator, "
                 "CPU, aot_eager, min-cut)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def pareto_table(rows: list[dict]) -> str:
    return markdown(("model", "solver", "budget", "knapsack items", "saved bytes", "activation bytes", "peak estimate",
                     "MUST_SAVE bytes", "recompute FLOPs", "est. recompute cost"), rows, ("model", "solver", "budget"),
                    lambda r: (r["n"], r["saved_B"], r["act_B"], r["peak_B"], r["must_save_B"], r["recompute_flops"],
                               r.get("recompute_cost", "-")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports")
    p.add_argument("-k", default="", help="only cases whose name contains this")
    p.add_argument("--no-pareto", action="store_true", help="skip the budget-solver Pareto curves")
    p.add_argument("--from-junit", default="", help="take the Pareto figures from a budget_matrix run's JUnit XML "
                   "(make budget-matrix ARGS=--junitxml=...) instead of compiling the sweep again")
    p.add_argument("--pareto-only", action="store_true", help="only the budget-solver Pareto curves")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_pareto:
        start = time.perf_counter()
        prows = pareto_rows_from_junit(Path(args.from_junit)) if args.from_junit else pareto_rows()
        tdir = out / "torch_pareto"
        tpoints = {}
        for model in PARETO_MODELS:
            try:
                tpoints[model] = torch_pareto(model, tdir / model)
            except Exception as e:  # reported, not fatal
                print(f"torch's visualize_memory_budget_pareto failed on {model}: {type(e).__name__}: {e}")
        pareto_plot(prows, tpoints, out / "budget_pareto.png")
        (out / "budget_pareto.md").write_text(
            f"# activation_memory_budget x solver (flops estimator)\n\n{len(prows)} compiles in "
            f"{time.perf_counter() - start:.0f} s. Plot: budget_pareto.png; torch's own frontier SVGs: torch_pareto/.\n\n"
            + pareto_table(prows) + "\n## torch visualize_memory_budget_pareto points (memory ratio, recompute runtime)\n\n"
            + "".join(f"- {m}: {sorted(set(v))}\n" for m, v in tpoints.items()))
        print(f"wrote {out / 'budget_pareto.png'} and {out / 'budget_pareto.md'} ({len(prows)} rows)")
        if args.pareto_only:
            return 0
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

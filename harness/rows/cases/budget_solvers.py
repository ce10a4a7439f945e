"""Area "budget_solvers": activation_memory_budget x knapsack solver x runtime estimator x partitioner knobs on
reference models, end to end under torch.compile (issue 14, items 1, 2 and 5).

One case per (model, solver, estimator[, knob]), named ``bs_<model>__<solver>__<estimator>[__<knob>]`` so that the
solver, estimator and knob are visible in every cell id, e.g.
``bs_mlp4_wide_plain__ilp__flops-min_cut-aot_eager-cpu-float32-budget0.3``; the budget is the cell's budget axis
(0.0, 0.1, 0.3, 0.5, 0.8, 1.0).  Solver, estimator and knobs are functorch config patches around the cell.  All cells
carry the ``budget_matrix`` marker (their own nightly selection, ``make budget-matrix``) and are ``slow``, except the
budget-0.5 cells of the two cases in FAST, which run in ``make test``.

The models are bench/budget_sweep.py's (4 x linear + gelu, even and uneven widths) plus a selective-AC block whose
matmuls are PREFER_SAVE.  A model whose every layer is its own checkpointed region never reaches the knapsack (every
region boundary is MUST_SAVE after ``cleanup_recompute_tags``, and the rest must be recomputed), so the plain
(uncheckpointed) models compiled under a budget carry the solver comparison; ``mlp4_ac`` shows the MUST_SAVE floor.

AOTAutogradCache leaves the solver and estimator out of its key (findings/autograd_cache_ignores_budget_solver.py):
a cache hit would hand one case the partition another solver chose.  Every case therefore patches
``enable_autograd_cache=False`` (the harness's inductor path also turns it off, harness/core/pipeline.py); keep it so.

Oracles per cell (``budget_check``), besides numerics and the invariants every cell gets:

* **feasibility**: torch/_functorch/config.py defines the budget: "0.0 corresponds to the activation memory from
  applying activation checkpointing to the full compiled region, and 1.0 corresponds to the activation memory from
  the default runtime-optimized strategy.  So, 0.4 would result in a strategy that saves 40% of the activations
  compared to the default strategy."  The two end points are measured on the same case (same model, solver,
  estimator, knobs) at budgets 0.0 and 1.0; with ``saved_B`` the partitioner's own measure of the saved set
  (harness.core.peak.partitioner_saved_bytes), a budget b must give ``saved_B <= lo + (b + slack) * (hi - lo)`` where
  slack is the solver's rounding (harness.core.knapsack.budget_slack: (n + 1) / 20000 for the dp family, 1e-6 for ilp,
  0 for greedy); or, when the knapsack had no items, ``saved_B <= lo + must_save_B`` (the MUST_SAVE floor: the
  partitioner returns ``node_info.inputs + must_save_nodes`` for every budget in (0, 1), while budget 0 ignores
  MUST_SAVE, findings/budget_zero_ignores_must_save.py);
* **monotonicity**: an exact solver's objective never decreasing as the budget grows is the invariant
  ``budget_knapsack_monotone`` (harness/core/invariants.py), which every sweep cell of the matrix (budgets 1.0, 0.5,
  0.0) checks over all of ``SWEEP_POINTS``; saved *bytes* need not be monotone between two interior budgets (a larger
  capacity may pick a smaller, costlier item), so that is reported (``mono_bytes``), not asserted, and so is greedy's
  and dynamic_memory_budget_dp's objective (no documented guarantee);
* **agreement of exact solvers**: on a cell's recorded instance, dp and ilp must return the same saved set when the
  optimum is unique, decided by enumeration (harness.core.knapsack.unique_optimum: exactly one optimal subset on the exact
  weights, on the weights with HiGHS' 1e-6 tolerance and on dp's quantized weights, and the same one); the cell's own
  answer is checked and the other exact solver is run on the same instance as a pure function;
* figures recorded per cell (JUnit properties and the test's output): saved_B, activation bytes, harness/core/peak.py's
  peak estimate, MUST_SAVE bytes, knapsack items n, the solver's objective, the exhaustive optimum and the gap.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from harness.core import analysis, figures, knapsack, peak
from harness.core.case import (AxesSpec, BuildContext, Case, Checkpoint, CompileSpec, Expect, Needs, Partitioner, Program,
                               Selection)

BUDGETS = (0.0, 0.1, 0.3, 0.5, 0.8, 1.0)
ESTIMATORS = ("flops", "testing")  # "profile" benchmarks each op on the device: not reproducible on a shared CPU
SOLVERS = tuple(knapsack.available_solvers())
MARKER = "budget_matrix"


class MLP(torch.nn.Module):
    """bench/budget_sweep.py's model: linear + gelu layers, each its own checkpointed region when ``checkpoint``."""

    def __init__(self, dims, checkpoint):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.checkpoint = checkpoint  # None: no AC, else the checkpoint function to call

    @staticmethod
    def _layer(lin, x):
        return torch.nn.functional.gelu(lin(x))

    def forward(self, x):
        for lin in self.layers:
            x = self._layer(lin, x) if self.checkpoint is None else self.checkpoint(self._layer, lin, x,
                                                                                   use_reentrant=False)
        return x


def _prefer_save_mm(ctx, func, *args, **kwargs):
    return CheckpointPolicy.PREFER_SAVE if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default) \
        else CheckpointPolicy.PREFER_RECOMPUTE


def stack_fn(ctx: BuildContext, model: torch.nn.Module, sac: bool):
    """The program's function: ``model`` as it is, or (``sac``) inside one region around the whole stack whose
    matmuls are PREFER_SAVE (the knapsack may still drop them) and the rest PREFER_RECOMPUTE."""
    if sac:
        policy = functools.partial(create_selective_checkpoint_contexts, _prefer_save_mm)

        def fn(x):
            return ctx.checkpoint(model, x, use_reentrant=False, context_fn=policy)
    else:
        def fn(x):
            return model(x)
    return fn


def _mlp(dims, batch, per_layer_ac=False, sac=False):
    def build(ctx: BuildContext) -> Program:
        model = ctx.module(MLP(dims, ctx.checkpoint if per_layer_ac else None))
        return Program(stack_fn(ctx, model, sac), (ctx.randn(batch, dims[0]),), module=model)
    return build


MODELS = {
    "mlp4_plain": (_mlp([256] * 5, 64), Checkpoint.NONE),
    "mlp4_wide_plain": (_mlp([128, 512, 128, 512, 128], 64), Checkpoint.NONE),
    "mlp4_wide_sac": (_mlp([128, 512, 128, 512, 128], 64, sac=True), Checkpoint.SAC),
    "mlp4_ac": (_mlp([256] * 5, 64, per_layer_ac=True), Checkpoint.NON_REENTRANT),
}

# Partitioner knobs (torch/_functorch/config.py), each flipped from its default on one model under dp/flops.
KNOBS = {
    "aggressive_recomputation": True,  # "Sets all of the ban_recompute heuristics to False except ban_recompute_reductions"
    "recompute_views": True,  # "Prevents the partitioner from ever saving views (i.e. always recompute them)"
    "ban_recompute_used_far_apart": False,
    "ban_recompute_long_fusible_chains": False,
    "ban_recompute_materialized_backward": False,
    "ban_recompute_not_in_allowlist": False,
    "ban_recompute_reductions": False,
}

# The cases whose budget-0.5 cell runs in make test (the rest of the matrix is nightly).
# Two cells: the SAC block under dp (a unique optimum: dp/ilp agreement runs) and the uneven MLP under ilp (ties).
FAST = ("bs_mlp4_wide_plain__ilp__flops", "bs_mlp4_wide_sac__dp__flops")


# --- figures ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Figures:
    budget: float
    saved_B: int  # the partitioner's measure (harness.core.peak.partitioner_saved_bytes)
    act_B: int  # saved activation bytes, inputs aside (harness.core.peak)
    peak_B: int  # peak live activation bytes over fw then bw (harness.core.peak)
    must_save_B: int  # joint nodes MUST_SAVE by policy or as region boundaries (harness.core.analysis.boundaries)
    recompute_flops: int | None  # FLOPs of the forward ops redone in the backward (harness.core.analysis)
    n: int = 0  # knapsack items (0: the knapsack was not posed)
    call: object = None  # the last harness.core.pipeline.KnapsackCall

    def row(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "call"}
        if self.call is not None:
            out["objective"] = self.call.objective
            out["recompute_cost"] = sum(self.call.runtimes[i] for i in self.call.recomputed)
        return out


def figures_of(run) -> Figures:
    fw, bw, joint = run.graphs["fw"][-1], run.graphs["bw"][-1], run.graphs["joint"][-1]
    est = peak.estimate(fw, bw)
    calls = run.info.get("knapsack", [])
    a = analysis.of(run)
    return Figures(run.cell.axes.budget, peak.partitioner_saved_bytes(fw, bw), est.saved_bytes, est.peak_bytes, figures.must_save_bytes(joint),
                   None if a is None else a.recompute_flops, len(calls[-1].memory) if calls else 0,
                   calls[-1] if calls else None)


def _needed_budgets(axes) -> tuple[float, ...]:
    """What budget_check reads besides the cell: the same case at the sweep's ends and at the budget below (mono_bytes)."""
    below = [b for b in BUDGETS if b < axes.budget]
    return (0.0, 1.0, *below[-1:])


def figures_at(run, budget: float) -> Figures:
    """The same case's figures at another budget (run_cell adds those runs: Needs.budgets)."""
    return figures_of(run.at_budget[budget])


# --- the oracles ------------------------------------------------------------------------------------------------

def solver_of(case: Case) -> str:
    return case.compile.config["functorch"]["activation_memory_budget_solver"]


def feasibility(f: Figures, lo: Figures, hi: Figures, solver: str) -> tuple[str, float | None, float]:
    """('yes' | 'floor' | 'NO' | '-', the budget actually used on the config's scale, the slack)."""
    slack = knapsack.budget_slack(solver, f.n)
    ratio = (f.saved_B - lo.saved_B) / (hi.saved_B - lo.saved_B) if hi.saved_B > lo.saved_B else None
    if f.budget in (0.0, 1.0):
        return "-", ratio, slack
    if f.saved_B <= lo.saved_B + (f.budget + slack) * (hi.saved_B - lo.saved_B):
        return "yes", ratio, slack
    if f.n == 0 and f.saved_B <= lo.saved_B + f.must_save_B:
        return "floor", ratio, slack
    return "NO", ratio, slack


def optimality(call) -> dict:
    """The exhaustive optimum of the recorded instance, the gap to the solver's answer and the unique optimum (if
    any); n > 16 items: not decided (None)."""
    if call is None or len(call.memory) > 16:
        return {}
    best = knapsack.exhaustive(call.memory, call.runtimes, call.max_memory)
    own = sum(Fraction(call.runtimes[i]) for i in call.saved)
    return {"optimum": best.objective, "gap": float(Fraction(best.objective) - own),
            "unique": knapsack.unique_optimum(call.memory, call.runtimes, call.max_memory)}


def budget_check(run) -> None:
    __tracebackhide__ = True
    case, axes = run.cell.case, run.cell.axes
    solver = solver_of(case)
    f = figures_of(run)
    lo, hi = figures_at(run, 0.0), figures_at(run, 1.0)
    ok, ratio, slack = feasibility(f, lo, hi, solver)
    below = [b for b in BUDGETS if b < axes.budget]
    prev = figures_at(run, below[-1]) if below else None
    opt = optimality(f.call)
    row = {**f.row(), "lo_B": lo.saved_B, "hi_B": hi.saved_B, "ratio": ratio, "slack": slack, "feasible": ok,
           "mono_bytes": "-" if prev is None else ("yes" if f.saved_B >= prev.saved_B else "NO"),
           **{k: v for k, v in opt.items() if k != "unique"}, "unique": opt.get("unique") is not None}
    run.info["budget_figures"] = row
    problems = []
    if ok == "NO":
        problems.append(f"saved {f.saved_B} B at budget {axes.budget} is over the bound lo + (b + slack) * (hi - lo) = "
                        f"{lo.saved_B} + ({axes.budget} + {slack:.6f}) * ({hi.saved_B} - {lo.saved_B}) = "
                        f"{lo.saved_B + (axes.budget + slack) * (hi.saved_B - lo.saved_B):.1f} B (budget used: "
                        f"{ratio}) and above the MUST_SAVE floor {lo.saved_B} + {f.must_save_B} (n = {f.n})")
    unique = opt.get("unique")
    if unique is not None and solver in ("dp", "ilp"):
        other = "ilp" if solver == "dp" else "dp"
        answers = [(f"{solver} (the cell's partitioner)", tuple(sorted(f.call.saved)))]
        if other in knapsack.available_solvers():  # ilp needs scipy (a project dependency; absent in an old env)
            theirs = knapsack.solve(other, f.call.memory, f.call.runtimes, f.call.max_memory)
            answers.append((f"{other} (pure function, same instance)", tuple(sorted(theirs.saved))))
        for who, got in answers:
            if got != unique:
                problems.append(f"{who} saved items {got}, the unique optimum is {unique} (memory {f.call.memory}, "
                                f"runtimes {f.call.runtimes}, max_memory {f.call.max_memory})")
    if problems:
        raise AssertionError(f"{run.cell.id}: " + "; ".join(problems) + f"\nfigures: {row}")


# --- the rows ---------------------------------------------------------------------------------------------------

def _case(model: str, solver: str, estimator: str, knob: str | None = None) -> Case:
    build, checkpoint = MODELS[model]
    name = f"bs_{model}__{solver}__{estimator}" + (f"__{knob}" if knob else "")
    functorch = {"activation_memory_budget_solver": solver, "activation_memory_budget_runtime_estimator": estimator,
                 # AOTAutogradCache's key ignores solver and estimator (findings/autograd_cache_ignores_budget_solver.py)
                 "enable_autograd_cache": False}
    if knob:
        functorch[knob] = KNOBS[knob]
    return Case(name, build, checkpoint=checkpoint,
                axes=AxesSpec(partitioners=(Partitioner.MIN_CUT,), devices=("cpu",), budgets=BUDGETS),
                compile=CompileSpec(config={"functorch": functorch}),
                expect=Expect(check=budget_check, needs=Needs(budgets=_needed_budgets)), goldens=(),
                selection=Selection(marker=MARKER, fast=(0.5,) if name in FAST else ()),
                notes="oracles: feasibility, exact-solver monotonicity and dp/ilp agreement (module docstring); "
                      "no goldens: the matrix is judged by its oracles")


CASES = [_case(m, s, e) for m in ("mlp4_plain", "mlp4_wide_plain", "mlp4_wide_sac") for s in SOLVERS for e in ESTIMATORS]
CASES += [_case("mlp4_ac", "dp", "flops")]
CASES += [_case("mlp4_wide_plain", "dp", "flops", knob) for knob in KNOBS]

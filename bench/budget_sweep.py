"""activation_memory_budget sweep: saved activation bytes and estimated peak per (model, solver, estimator, budget).

Each row compiles a small model with an aot_eager-style recording backend (``aot_autograd`` with identity fw/bw
compilers and ``min_cut_rematerialization_partition``) under

    torch._functorch.config.patch(activation_memory_budget=b, activation_memory_budget_solver=s,
                                  activation_memory_budget_runtime_estimator=e, enable_autograd_cache=False)

runs forward + backward once, and reads the recorded fw/bw graphs:

* ``saved_B``: the partitioner's own measure of the saved set, ``sum(_size_of(v))`` over the backward's saved
  placeholders (graph inputs included, like ``estimate_activations_size`` which compares against
  ``min_act_size = size(node_info.inputs)``);
* ``act_B``: saved activation bytes (graph inputs and their views excluded; harness/core/peak.py);
* ``peak_B``: harness/core/peak.py's peak live activation bytes over fw then bw;
* ``torch_peak_B``: torch's ``memory_estimator.get_peak_memory`` logic (harness.core.peak.torch_peak_memory: CPU filter
  lifted, its output-node lookup fixed): counts primals, tangents and user outputs too, so it is >= peak_B;
* ``ratio``: ``(saved_B(b) - saved_B(0)) / (saved_B(1) - saved_B(0))``, i.e. the budget the result actually uses on the
  config's scale ("0.0 corresponds to the activation memory from applying activation checkpointing to the full
  compiled region, and 1.0 corresponds to the activation memory from the default runtime-optimized strategy",
  torch/_functorch/config.py), with the two end points measured (budget 0 and 1 do not reach the solver:
  ``choose_saved_values_set`` returns ``node_info.inputs`` at 0 and the default min-cut at 1, whatever the solver);
* ``ok``: ``ratio <= b + slack`` where slack is the solver's rounding in budget units: dp-based solvers (dp,
  hirschberg, dynamic) quantize to 1/10000 per item, ``(n + 1) / 20000`` for n knapsack items; 0 for greedy and
  ilp (ilp: plus HiGHS' 1e-6).  ``n`` and the knapsack's own answer come from wrapping
  ``partitioners._optimize_runtime_with_given_memory``;
  "floor" when the knapsack had no items and saved_B <= saved_B(0) + must_save_B: the partitioner then returns
  ``node_info.inputs + must_save_nodes`` for every budget in (0, 1) (the per-layer checkpoint boundaries are
  MUST_SAVE after ``cleanup_recompute_tags``), while budget 0 returns the inputs alone (it ignores MUST_SAVE:
  findings/budget_zero_ignores_must_save.py), so the measured 0 end point is below what (0, 1) can reach;
* ``must_save_B``: bytes of the joint graph's nodes tagged MUST_SAVE;
* ``mono``: saved_B does not increase as the budget decreases (within one model x solver x estimator).

Run: python bench/budget_sweep.py [--models mlp4_ac,mlp4_wide_ac,mlp4_plain,mlp4_wide_plain] [--quick]
(all four models, 6 budgets, 5 solvers, 2 estimators: about 170 compiles, 6-8 min on 2 shared CPU cores)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch._functorch import partitioners  # noqa: E402

from harness.core.knapsack import available_solvers, budget_slack as slack  # noqa: E402
from harness.core.peak import estimate, partitioner_saved_bytes, torch_peak_memory  # noqa: E402

BUDGETS = (0.0, 0.1, 0.3, 0.5, 0.8, 1.0)
ESTIMATORS = ("flops", "testing")


class MLP(torch.nn.Module):
    def __init__(self, dims, checkpoint):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.checkpoint = checkpoint

    def _layer(self, lin, x):
        return torch.nn.functional.gelu(lin(x))

    def forward(self, x):
        for lin in self.layers:
            if self.checkpoint:
                x = torch.utils.checkpoint.checkpoint(self._layer, lin, x, use_reentrant=False)
            else:
                x = self._layer(lin, x)
        return x


MODELS = {
    # 4 x (linear + gelu), each layer under non-reentrant checkpoint
    "mlp4_ac": lambda: (MLP([256] * 5, True), (64, 256)),
    # uneven widths: knapsack items of different sizes
    "mlp4_wide_ac": lambda: (MLP([128, 512, 128, 512, 128], True), (64, 128)),
    # the same 4 layers without AC: the budget alone decides (the knapsack sees the activations)
    "mlp4_plain": lambda: (MLP([256] * 5, False), (64, 256)),
    # uneven widths without AC: knapsack items of different sizes and FLOPs
    "mlp4_wide_plain": lambda: (MLP([128, 512, 128, 512, 128], False), (64, 128)),
}


def run_one(model_name, budget, solver, estimator):
    torch.manual_seed(0)
    model, shape = MODELS[model_name]()
    x = torch.randn(*shape, requires_grad=True)
    graphs, knapsack_calls = {}, []

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return gm.forward
        return compiler

    orig = partitioners._optimize_runtime_with_given_memory

    def spy(joint_graph, memory, runtimes, max_memory, *rest):
        res = orig(joint_graph, memory, runtimes, max_memory, *rest)
        knapsack_calls.append((list(memory), list(runtimes), max_memory, res))
        return res

    def partition(joint, inputs, **kw):
        graphs["joint"] = joint
        return partitioners.min_cut_rematerialization_partition(joint, inputs, **kw)

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=partition)
    with torch._functorch.config.patch(activation_memory_budget=budget, activation_memory_budget_solver=solver,
                                       activation_memory_budget_runtime_estimator=estimator,
                                       enable_autograd_cache=False), \
            mock.patch.object(partitioners, "_optimize_runtime_with_given_memory", spy):
        torch.compile(model, backend=backend, fullgraph=True)(x).sum().backward()
    fw, bw = graphs["fw"], graphs["bw"]
    saved_b = partitioner_saved_bytes(fw, bw)
    must_save = {n.name: partitioners._size_of(n) for n in graphs["joint"].graph.nodes
                 if n.meta.get("recompute") == torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE}
    est = estimate(fw, bw)
    n_items = len(knapsack_calls[-1][0]) if knapsack_calls else 0
    ks_mem = None
    if knapsack_calls:
        mem, _, _, (_, saved_idx, _) = knapsack_calls[-1]
        ks_mem = sum(mem[i] for i in saved_idx)
    return {"saved_B": saved_b, "act_B": est.saved_bytes, "peak_B": est.peak_bytes, "n": n_items,
            "torch_peak_B": torch_peak_memory(fw, bw),
            "ks_mem": ks_mem, "calls": len(knapsack_calls),
            "must_save_B": sum(must_save.values())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--solvers", default=",".join(available_solvers()))
    ap.add_argument("--quick", action="store_true", help="budgets 0, 0.5, 1 and the flops estimator only")
    args = ap.parse_args(argv)
    budgets = (0.0, 0.5, 1.0) if args.quick else BUDGETS
    estimators = ("flops",) if args.quick else ESTIMATORS
    t0 = time.time()
    print(f"torch {torch.__version__}; budgets {budgets}; estimators {estimators}")
    header = (f"| model | solver | estimator | budget | n | knapsack mem | saved_B | act_B | must_save_B | "
              f"peak_B | torch_peak_B | ratio | bound ok | mono |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    problems = []
    for model_name in args.models.split(","):
        for estimator in estimators:
            ends = {b: run_one(model_name, b, "dp", estimator) for b in (0.0, 1.0)}  # solver-independent
            lo, hi = ends[0.0]["saved_B"], ends[1.0]["saved_B"]
            for solver in args.solvers.split(","):
                prev = None
                for b in budgets:
                    r = ends[b] if b in ends else run_one(model_name, b, solver, estimator)
                    ratio = (r["saved_B"] - lo) / (hi - lo) if hi > lo else float("nan")
                    if b in ends:
                        ok = "-"
                    elif ratio <= b + slack(solver, r["n"]):
                        ok = "yes"
                    elif r["n"] == 0 and r["saved_B"] <= lo + r["must_save_B"]:
                        ok = "floor"  # no knapsack items: inputs + MUST_SAVE nodes, whatever the budget
                    else:
                        ok = "NO"
                    mono = "yes" if prev is None or r["saved_B"] >= prev else "NO"
                    prev = r["saved_B"]
                    if "NO" in (ok, mono):
                        problems.append((model_name, solver, estimator, b, ok, mono))
                    km = "-" if r["ks_mem"] is None else f"{r['ks_mem']:.4f}"
                    print(f"| {model_name} | {solver} | {estimator} | {b} | {r['n']} | {km} | {r['saved_B']} | "
                          f"{r['act_B']} | {r['must_save_B']} | {r['peak_B']} | {r['torch_peak_B']} | "
                          f"{ratio:.4f} | {ok} | {mono} |", flush=True)
    print(f"\n{len(problems)} row(s) over the bound or non-monotone: {problems}")
    print(f"wall {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

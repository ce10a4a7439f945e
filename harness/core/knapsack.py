"""The 0/1 knapsack behind ``activation_memory_budget``: torch's solvers run as pure functions, and a reference.

How the partitioner poses it (``torch/_functorch/partitioners.py::choose_saved_values_set``, torch 2.13):

* the items are the "recomputable banned nodes" of the most aggressive min-cut (sorted by ``_size_of``, largest
  first); ``memory[i] = get_normalized_size(_size_of(node_i))``, i.e. bytes / (max_act_size - min_act_size), where
  ``max_act_size`` is the bytes saved by the default runtime-optimised min-cut (budget 1.0) and ``min_act_size`` the
  bytes of ``node_info.inputs`` (budget 0.0);
* ``runtimes[i] = estimate_runtime(node_i)``: ``1`` under the "testing" estimator, ``max(flops, 1)`` under "flops";
* ``max_memory = max(memory_budget, 0)``;
* ``_optimize_runtime_with_given_memory`` dispatches on ``config.activation_memory_budget_solver`` and every solver
  returns ``(objective, saved_idxs, recomputable_idxs)``: the runtime of the *saved* items (the recompute avoided),
  the indices it keeps, and the indices it allows to be recomputed.  Only the recomputable indices are used (they
  become ``dont_ban`` for the final min-cut).

So the problem is: choose ``S`` maximising ``sum(runtimes[S])`` subject to ``sum(memory[S]) <= max_memory``.

:func:`solve` runs one of torch's solvers by its config name; :func:`exhaustive` is the reference (all subsets, exact
arithmetic); :func:`quantize` mirrors the scaling ``dp`` and ``dp_knapsack_sliding_hirschberg`` apply
(``S = 10000``; ``round(m * S)``, ``round(max_memory * S)``) so that their answers can be checked against the exact
optimum of the problem they actually solve.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from fractions import Fraction
from typing import Callable, Sequence

from torch._functorch._activation_checkpointing import knapsack as _tk

# dp_knapsack and dp_knapsack_sliding_hirschberg: "Scaling factor to convert floating point weights to integers".
SCALE = 10000

Solver = Callable[[list, list, float], tuple]


@dataclasses.dataclass(frozen=True)
class Solution:
    objective: float  # what the solver reports: runtime of the saved items
    saved: tuple[int, ...]
    recomputed: tuple[int, ...]

    def memory(self, memory: Sequence[float]) -> Fraction:
        """Exact memory of the saved set (floats are rationals; no rounding)."""
        return sum((Fraction(memory[i]) for i in self.saved), Fraction(0))

    def runtime(self, runtimes: Sequence[float]) -> Fraction:
        return sum((Fraction(runtimes[i]) for i in self.saved), Fraction(0))


def dynamic_memory_budget_dp(memory: list[float], runtimes: list[float], max_memory: float) -> tuple:
    """The "dynamic_memory_budget_dp" branch of ``_optimize_runtime_with_given_memory``, as a pure function.

    The partitioner builds ``GraphInfoProvider.inialize_from_graph(joint_graph, ...)`` and calls
    ``dp_knapsack(memory, runtimes, KnapsackEvaluator(...).get_knee_point_memory_budget(knapsack_algo=dp_knapsack,
    max_mem_budget=max_memory))``.  The knee search only calls ``evaluate_knapsack_output`` with
    ``account_for_backward_pass=False``, which reads ``all_node_memories`` / ``all_node_runtimes`` (built from the
    recorded knapsack inputs) and never the graph edges, so a provider with the same items and no edges gives the same
    knee.  Requires networkx (the module imports it).
    """
    from torch._functorch._activation_checkpointing.graph_info_provider import GraphInfoProvider
    from torch._functorch._activation_checkpointing.knapsack_evaluator import KnapsackEvaluator

    names = [f"n{i}" for i in range(len(memory))]
    provider = GraphInfoProvider(
        graph_nodes_in_order=names,
        graph_edges=[],
        all_recomputable_banned_nodes=names,
        recorded_knapsack_input_memories=list(memory),
        recorded_knapsack_input_runtimes=list(runtimes),
    )
    knee = KnapsackEvaluator(graph_info_provider=provider).get_knee_point_memory_budget(
        knapsack_algo=_tk.dp_knapsack, max_mem_budget=max_memory
    )
    return _tk.dp_knapsack(memory, runtimes, knee)


def _ilp_available() -> bool:
    return importlib.util.find_spec("scipy") is not None  # installed; imported only when solving (seconds at import)


def _dynamic_available() -> bool:
    return importlib.util.find_spec("networkx") is not None


# Solvers whose answer is an optimum of the instance they solve (dp and hirschberg of the quantized one, ilp up to
# HiGHS' tolerances); greedy and dynamic_memory_budget_dp promise no optimum.
EXACT = ("dp", "ilp", "dp_knapsack_sliding_hirschberg")


def available_solvers() -> dict[str, Solver]:
    """Config name (``torch._functorch.config.activation_memory_budget_solver``) -> pure solver, for those this torch
    has and whose dependencies are installed ("ilp" needs scipy, "dynamic_memory_budget_dp" networkx)."""
    solvers: dict[str, Solver] = {"greedy": _tk.greedy_knapsack, "dp": _tk.dp_knapsack}
    if _ilp_available():
        solvers["ilp"] = _tk.ilp_knapsack
    if hasattr(_tk, "dp_knapsack_sliding_hirschberg"):
        solvers["dp_knapsack_sliding_hirschberg"] = _tk.dp_knapsack_sliding_hirschberg
    if _dynamic_available():
        solvers["dynamic_memory_budget_dp"] = dynamic_memory_budget_dp
    return solvers


def solve(name: str, memory: Sequence[float], runtimes: Sequence[float], max_memory: float) -> Solution:
    """Run torch's solver ``name`` on the instance, returning its answer as a :class:`Solution`."""
    objective, saved, recomputed = available_solvers()[name](list(memory), list(runtimes), max_memory)
    return Solution(float(objective), tuple(int(i) for i in saved), tuple(int(i) for i in recomputed))


def exhaustive(memory: Sequence[float], runtimes: Sequence[float], max_memory, *, weights=None) -> Solution:
    """The exact optimum over all 2**n subsets, in exact rational arithmetic (no float rounding in the sums).

    ``weights`` (default ``memory``) are the weights the capacity applies to; pass quantized integer weights (and an
    integer capacity) to solve the problem ``dp`` actually solves.  Ties: the subset with fewer items.  Intended for
    n <= 12.
    """
    n = len(memory)
    w = [Fraction(x) for x in (memory if weights is None else weights)]
    r = [Fraction(x) for x in runtimes]
    cap = Fraction(max_memory)
    # Subset sums by bitmask: sums[mask] = sums[mask without its lowest bit] + item(lowest bit); 2**n additions.
    ws, rs = [Fraction(0)] * (1 << n), [Fraction(0)] * (1 << n)
    best, best_mask = Fraction(-1), 0
    for mask in range(1 << n):
        if mask:
            low = (mask & -mask).bit_length() - 1
            ws[mask] = ws[mask & (mask - 1)] + w[low]
            rs[mask] = rs[mask & (mask - 1)] + r[low]
        # Ties: fewer items first, then the lower mask (popcount order mirrors itertools.combinations by size).
        if ws[mask] <= cap and (rs[mask] > best or rs[mask] == best and mask.bit_count() < best_mask.bit_count()):
            best, best_mask = rs[mask], mask
    best_set = tuple(i for i in range(n) if best_mask >> i & 1)
    return Solution(float(best), best_set, tuple(i for i in range(n) if i not in best_set))


def quantize(memory: Sequence[float], max_memory: float) -> tuple[list[int], int]:
    """The integer instance dp_knapsack solves: ``round(m * S)`` per item and ``round(max_memory * S)``, exactly the
    expressions of its code (Python's round: half to even)."""
    return [round(m * SCALE) for m in memory], round(max_memory * SCALE)


def budget_slack(solver: str, n: int) -> float:
    """How far past the budget (in budget units, the config's 0..1 scale) a solver's own rounding may land, for ``n``
    knapsack items: dp-based solvers (dp, dp_knapsack_sliding_hirschberg, dynamic_memory_budget_dp) round each
    item's and the capacity's weight to 1/SCALE, i.e. at most ``(n + 1) / (2 * SCALE)``; ilp HiGHS' feasibility
    tolerance 1e-6; greedy adds exact floats (0)."""
    if solver in ("dp", "dp_knapsack_sliding_hirschberg", "dynamic_memory_budget_dp"):
        return (n + 1) / (2 * SCALE)
    return 1e-6 if solver == "ilp" else 0.0


def unique_optimum(memory: Sequence[float], runtimes: Sequence[float], max_memory: float,
                   max_items: int = 16) -> tuple[int, ...] | None:
    """The saved set both exact solvers must return, or None when the optimum is not unique (or n > max_items).

    Uniqueness is decided by enumeration (exact rationals) over the three problems the exact solvers actually
    solve: the exact weights with capacity ``max_memory`` (the problem), the same with HiGHS' feasibility tolerance
    (1e-6 on the capacity: ilp may take a set up to there), and dp's quantized weights and capacity
    (:func:`quantize`).  The optimum is unique when each problem has exactly one subset of maximal runtime and it is
    the same subset in all three; otherwise the solvers may legitimately differ (ties, or rounding deciding)."""
    n = len(memory)
    if n > max_items:
        return None
    qw, qcap = quantize(memory, max_memory)
    problems = [([Fraction(x) for x in memory], Fraction(max_memory)),
                ([Fraction(x) for x in memory], Fraction(max_memory) + Fraction(1, 10**6)),
                ([Fraction(x) for x in qw], Fraction(qcap))]
    r = [Fraction(x) for x in runtimes]
    answer = None
    for w, cap in problems:
        ws, rs = [Fraction(0)] * (1 << n), [Fraction(0)] * (1 << n)
        best, masks = Fraction(-1), []
        for mask in range(1 << n):
            if mask:
                low = (mask & -mask).bit_length() - 1
                ws[mask] = ws[mask & (mask - 1)] + w[low]
                rs[mask] = rs[mask & (mask - 1)] + r[low]
            if ws[mask] <= cap:
                if rs[mask] > best:
                    best, masks = rs[mask], [mask]
                elif rs[mask] == best:
                    masks.append(mask)
        if len(masks) != 1 or (answer is not None and masks[0] != answer):
            return None
        answer = masks[0]
    return tuple(i for i in range(n) if answer >> i & 1)

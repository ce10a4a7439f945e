"""activation_memory_budget_solver="dynamic_memory_budget_dp" saves more than the budget when the budget is < 0.001.

torch 2.13.0 (CPU; pure Python, no device needed; needs networkx).  No matching upstream issue found (searched
pytorch issues for dynamic_memory_budget_dp / knee point / min_mem_budget).

`torch/_functorch/partitioners.py::_optimize_runtime_with_given_memory` calls
``dp_knapsack(memory, runtimes, KnapsackEvaluator(...).get_knee_point_memory_budget(knapsack_algo=dp_knapsack,
max_mem_budget=max_memory))``.  `get_knee_point_memory_budget` evaluates budgets
``min_mem_budget + i * (max_mem_budget - min_mem_budget) / (iterations - 1)`` with ``min_mem_budget=0.001``; when
``max_memory < 0.001`` these run from 0.001 down to max_memory, and the knee it returns can be above max_memory, so
the final dp_knapsack saves more than the budget allows.  (Budget exactly 0 never reaches the solver:
`choose_saved_values_set` returns `node_info.inputs` first.)  The knee search reads only the recorded knapsack
inputs (`evaluate_knapsack_output` with account_for_backward_pass=False), so a GraphInfoProvider without edges
reproduces the partitioner's call exactly.

Run: python findings/dynamic_budget_dp_exceeds_small_budget.py   Exits 1 while the bug is present, 0 once fixed.
"""

import torch
from torch._functorch._activation_checkpointing.graph_info_provider import GraphInfoProvider
from torch._functorch._activation_checkpointing.knapsack import dp_knapsack
from torch._functorch._activation_checkpointing.knapsack_evaluator import KnapsackEvaluator

if __name__ == "__main__":
    print("torch", torch.__version__)
    memory, runtimes, max_memory = [0.001, 0.5], [10.0, 1.0], 0.0005
    names = ["n0", "n1"]
    provider = GraphInfoProvider(graph_nodes_in_order=names, graph_edges=[], all_recomputable_banned_nodes=names,
                                 recorded_knapsack_input_memories=memory, recorded_knapsack_input_runtimes=runtimes)
    knee = KnapsackEvaluator(graph_info_provider=provider).get_knee_point_memory_budget(
        knapsack_algo=dp_knapsack, max_mem_budget=max_memory)
    _, saved, _ = dp_knapsack(memory, runtimes, knee)
    used = sum(memory[i] for i in saved)
    print(f"memory={memory} runtimes={runtimes} max_memory={max_memory}: knee budget {knee}, saved {saved} "
          f"(memory {used})")
    if used > max_memory:
        print(f"BUG: saved memory {used} > max_memory {max_memory} (knee {knee} above the budget)")
        raise SystemExit(1)
    print("fixed: the knee budget stays within max_memory")

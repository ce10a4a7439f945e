"""dp_knapsack_sliding_hirschberg returns saved sets heavier than max_memory (known upstream: pytorch#197871).

torch 2.13.0 (CPU; pure Python/torch, no device needed).
`torch/_functorch/_activation_checkpointing/knapsack.py::dp_knapsack_sliding_hirschberg` splits each segment at
``best_split = argmax(left[k] + right[capacity - 1 - k])`` after ``capacity = capacity + 1`` (the profile length),
then gives the halves ``left_capacity = best_split`` and ``right_capacity = capacity - best_split``: together one
quantum (1/10000 of the normalized budget range) more than the segment had.  Every split adds one, so the saved set
can exceed ``round(max_memory * 10000)`` by up to (number of items - 1) quanta, where ``dp_knapsack`` (same
quantization) never exceeds it.  The partitioner selects it with
``torch._functorch.config.activation_memory_budget_solver = "dp_knapsack_sliding_hirschberg"``.

Run: python findings/hirschberg_knapsack_exceeds_budget.py   Exits 1 while the bug is present, 0 once fixed.
"""

import random

import torch
from torch._functorch._activation_checkpointing.knapsack import dp_knapsack, dp_knapsack_sliding_hirschberg

S = 10000


def overshoot(memory, runtimes, max_memory, solver):
    _, saved, _ = solver(memory, runtimes, max_memory)
    q = [round(m * S) for m in memory]
    return sum(q[i] for i in saved) - round(max_memory * S), saved


if __name__ == "__main__":
    print("torch", torch.__version__)
    # Minimal: two items of one quantum each, capacity one quantum.
    memory, runtimes, cap = [1e-4, 1e-4], [1.0, 2.0], 1e-4
    over_h, saved_h = overshoot(memory, runtimes, cap, dp_knapsack_sliding_hirschberg)
    over_d, saved_d = overshoot(memory, runtimes, cap, dp_knapsack)
    print(f"minimal: memory={memory} runtimes={runtimes} max_memory={cap}")
    print(f"  dp_knapsack saves {saved_d} (overshoot {over_d} quanta); hirschberg saves {saved_h} (overshoot {over_h})")
    # How large it gets: random grid-aligned instances (weights exact multiples of 1/S, so no rounding involved).
    rng = random.Random(0)
    worst = (0, None)
    for n in (4, 16, 64):
        for _ in range(200):
            mem = [rng.randint(1, 50) / S for _ in range(n)]
            rt = [float(rng.randint(1, 100)) for _ in range(n)]
            c = rng.randint(0, sum(round(m * S) for m in mem)) / S
            o, _ = overshoot(mem, rt, c, dp_knapsack_sliding_hirschberg)
            assert overshoot(mem, rt, c, dp_knapsack)[0] <= 0
            if o > worst[0]:
                worst = (o, n)
    print(f"random grid-aligned instances (n in 4, 16, 64; 200 each): worst overshoot {worst[0]} quanta (n={worst[1]})")
    if over_h > 0 or worst[0] > 0:
        print("BUG: dp_knapsack_sliding_hirschberg exceeds max_memory (pytorch#197871)")
        raise SystemExit(1)
    print("fixed: hirschberg stays within max_memory")

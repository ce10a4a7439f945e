"""Synthetic faults for the meta tests: a torch function patched by the test stands in for a torch defect, so a test
that needs a failing check keeps its meaning once torch fixes the defect (a live torch bug would turn it red, or
worse, make it pass for another reason).  The user-plugin test loads this module in its subprocess too."""

from __future__ import annotations

import torch
import torch._functorch.partitioners as partitioners
from torch.utils.checkpoint import CheckpointPolicy

# A known-failure entry for the fault below, in known_failures.toml's format (select and torch range added by the test).
MUST_SAVE_IGNORED_ENTRY = '''
[[failure]]
id = "synthetic-must-save-ignored"
reason = "a fault planted by the test (tests/synthetic_faults.py must_save_ignored): min-cut saves only the graph inputs"
upstream = "none: a synthetic fault"
repro = "tests/synthetic_faults.py"
stage = "invariant:must_save_not_recomputed"
message = "policy MUST_SAVE\\\\) is recomputed in the backward"
'''


def must_save_ignored(monkeypatch) -> None:
    """Plant, at every budget, the defect of known failure budget-zero-ignores-must-save: wherever a SAC policy tagged
    a joint node MUST_SAVE, min-cut's choice of saved values (``partitioners.choose_saved_values_set``) is the graph
    inputs alone, what torch 2.11-2.14 returns at budget 0, so the MUST_SAVE nodes are recomputed in the backward.
    A graph without MUST_SAVE tags (no AC, plain AC) is partitioned as torch does, so baselines without AC keep their
    figures; the caller still turns the baseline cache off (``AC_BASELINE_CACHE=off``), whose key cannot see a
    patch made in the process."""
    real = partitioners.choose_saved_values_set

    def faulty(joint_graph, node_info, *args, **kwargs):
        if any(n.meta.get("recompute") == CheckpointPolicy.MUST_SAVE for n in joint_graph.nodes):
            return list(node_info.inputs)
        return real(joint_graph, node_info, *args, **kwargs)

    monkeypatch.setattr(partitioners, "choose_saved_values_set", faulty)
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")


def recompute_tag_ignored(monkeypatch) -> None:
    """A partitioner that also saves every forward node a checkpoint tagged PREFER_RECOMPUTE (as if the tag were
    ignored): breaks invariant recompute_tagged_not_saved, not the numerics.  Graphs without tags are untouched."""
    real = partitioners.choose_saved_values_set

    def faulty(joint_graph, node_info, *args, **kwargs):
        saved = list(real(joint_graph, node_info, *args, **kwargs))
        extra = [n for n in joint_graph.nodes if n.op == "call_function" and n not in saved
                 and n.meta.get("recompute") == CheckpointPolicy.PREFER_RECOMPUTE
                 and isinstance(n.meta.get("val"), torch.Tensor) and node_info.is_required_fw(n)]
        return saved + extra

    monkeypatch.setattr(partitioners, "choose_saved_values_set", faulty)
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")


def knapsack_slower_above(monkeypatch, capacity: float = 0.4) -> None:
    """A knapsack solver whose answer gets slower as the budget grows: above ``capacity`` it keeps nothing (every
    banned node recomputed, objective 0), below it answers as torch does.  Breaks invariant budget_knapsack_monotone
    wherever the knapsack is posed on both sides of ``capacity``; saves less, so budget_monotone still holds."""
    real = partitioners._optimize_runtime_with_given_memory

    def faulty(joint_graph, memory, runtimes, max_memory, *rest, **kwargs):
        if max_memory > capacity:
            return 0.0, [], list(range(len(memory)))
        return real(joint_graph, memory, runtimes, max_memory, *rest, **kwargs)

    monkeypatch.setattr(partitioners, "_optimize_runtime_with_given_memory", faulty)
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")

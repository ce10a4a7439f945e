"""activation_memory_budget=0.0 makes the min-cut partitioner recompute ops a SAC policy marked MUST_SAVE.

`torch/_functorch/partitioners.py::choose_saved_values_set` returns `node_info.inputs` as soon as
`memory_budget == 0`, before it collects `must_save_nodes`; for any budget in (0, 1) it returns
`node_info.inputs + must_save_nodes` (and at 1.0 min-cut honours the MUST_SAVE ban).  So at budget 0.0 a
CheckpointPolicy.MUST_SAVE mm is recomputed in the backward: the selective-checkpoint policy is silently ignored
(numerics stay right; memory and compute are not what the user asked for).

Run: python findings/budget_zero_ignores_must_save.py   (torch 2.13.0, CPU). Exits 1 while the bug is present.
"""

import functools

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.partitioners import min_cut_rematerialization_partition
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


def policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


def gn(x, y):
    return torch.sigmoid(torch.mm(x, y))


def fn(x, y):
    return checkpoint(gn, x, y, use_reentrant=False,
                      context_fn=functools.partial(create_selective_checkpoint_contexts, policy))


def bw_mm_count(budget: float) -> int:
    graphs = {}

    def keep(kind):
        def compiler(gm, _):
            graphs[kind] = gm
            return gm.forward
        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=min_cut_rematerialization_partition)
    x, y = torch.randn(4, 4, requires_grad=True), torch.randn(4, 4, requires_grad=True)
    with torch._functorch.config.patch(activation_memory_budget=budget):
        torch.compile(fn, backend=backend, fullgraph=True)(x, y).sum().backward()
    return sum(n.target is torch.ops.aten.mm.default for n in graphs["bw"].graph.nodes)


if __name__ == "__main__":
    # The backward needs 2 mm for the gradients; a recomputed MUST_SAVE mm makes it 3.
    counts = {b: bw_mm_count(b) for b in (1.0, 0.5, 0.0)}
    print("backward mm per budget:", counts)
    if counts[0.0] != 2:
        print(f"BUG: at activation_memory_budget=0.0 the MUST_SAVE mm is recomputed ({counts[0.0]} backward mm, expected 2)")
        raise SystemExit(1)
    print("fixed: MUST_SAVE is honoured at every budget")

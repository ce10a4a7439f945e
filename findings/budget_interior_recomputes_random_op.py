"""activation_memory_budget strictly between 0 and 1 recomputes a dropout in the backward with fresh randomness: the
gradient is silently wrong.  No checkpointing involved.

A 4-layer MLP with dropout after each layer, compiled (aot_eager, min-cut) under activation_memory_budget=0.5.  The
knapsack path of partitioners.py::choose_saved_values_set trades the banned random op back into recompute (the
recompute ban of random ops runs, but get_recomputable_banned_nodes has no RNG filter), and nothing replays the
forward's RNG state (functionalize_rng_ops only pairs ops tagged MUST/PREFER_RECOMPUTE), so the backward draws another
mask.  The forward output equals eager's (the same generator stream); the gradients do not.  Controls, same script:
budget 1.0 gives eager's gradients.  The budget-0 path (choose_saved_values_set returns the graph inputs before any
ban) is the other root cause, entry budget-zero-recomputes-random-op.

Upstream: https://github.com/pytorch/pytorch/issues/190758 (any budget < 1.0; open), fixes proposed in
https://github.com/pytorch/pytorch/pull/190759 and https://github.com/pytorch/pytorch/pull/191684 (open).

Run: python findings/budget_interior_recomputes_random_op.py -> exit 1 while the budget-0.5 gradient differs from
eager's (with equal forward outputs), 0 once it matches.
"""
import sys

import torch
import torch._functorch.config


class MLP(torch.nn.Module):
    def __init__(self, dims=(128, 512, 128, 512, 128), p=0.1):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.p = p

    def forward(self, x):
        for lin in self.layers:
            x = torch.nn.functional.dropout(torch.nn.functional.gelu(lin(x)), self.p, True)
        return x


def step(model, x, compiled_budget=None):
    fn = model
    if compiled_budget is not None:
        torch._dynamo.reset()
        fn = torch.compile(model, backend="aot_eager", fullgraph=True)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch._functorch.config.patch(activation_memory_budget=1.0 if compiled_budget is None else compiled_budget,
                                       enable_autograd_cache=False):
        out = fn(x)
        out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def main() -> int:
    torch.manual_seed(0)
    model, x = MLP(), torch.randn(64, 128)
    eager = step(model, x)
    print(f"torch {torch.__version__}")
    wrong = {}
    for budget in (1.0, 0.5):
        out, grads = step(model, x, budget)
        same_out = torch.allclose(out, eager[0], rtol=1e-5, atol=1e-5)
        err = max((g - e).abs().max().item() for g, e in zip(grads, eager[1]))
        wrong[budget] = same_out and err > 1e-4
        print(f"budget {budget}: forward output {'equals' if same_out else 'differs from'} eager's; "
              f"max gradient error vs eager {err:.3g}")
    if wrong[0.5] and not wrong[1.0]:
        print("DEFECT REPRODUCES: at budget 0.5 the backward redraws a dropout mask (same forward, other gradient)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Known failure inductor-float32-reduction-order: inductor sums a float32 reduction in another order than eager.

The real-model cells hf_gpt2_full / hf_llama_full under inductor fail numerics by ~2e-5 in a bias gradient (a sum over
batch x sequence) with full AC *and* compiled without AC (harness/core/attribution.py): not an AC defect.  This script
shows the mechanism with no checkpointing at all: the gradient of a bias over 65536 rows, eager vs inductor, differs
beyond torch's default float32 tolerance (rtol 1.3e-6, atol 1e-5: torch.testing.assert_close).  Reassociating a float
reduction is documented behaviour of compiled code, not a torch bug; the entry exists so the cells are attributed,
not silently loosened.  Run: python findings/inductor_float32_reduction_order.py
Exits 1 while some element differs beyond the default tolerance, 0 if inductor's result stays within it.
"""
import sys

import torch


def main() -> int:
    torch.manual_seed(0)
    n, d = 1 << 16, 64
    x = torch.randn(n, d) * 4
    w = torch.randn(d, d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    cot = torch.randn(n, d)

    def f(x, w, b):
        return torch.nn.functional.gelu(torch.addmm(b, x, w))

    def bias_grad(fn):
        w.grad = b.grad = None
        (fn(x, w, b) * cot).sum().backward()
        return b.grad.clone()

    eager = bias_grad(f)
    compiled = bias_grad(torch.compile(f, backend="inductor"))
    err = (compiled - eager).abs()
    over = int((err > 1e-5 + 1.3e-6 * eager.abs()).sum())
    print(f"torch {torch.__version__}: bias gradient, inductor vs eager (no checkpointing): max abs error "
          f"{err.max().item():.3g}, {over} of {d} elements beyond rtol=1.3e-06 atol=1e-05")
    if over:
        print("compile/backend difference, not an AC defect: the same reduction summed in another order")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

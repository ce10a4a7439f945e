"""torch 2.14.1: an input scaled by a literal 1 inside a checkpoint region breaks inductor's min-cut partition.

    torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:
    AssertionError: Node mul_1 was invalid, but is output

Found by the harness cell dynamo_does_not_trace_getattr_as_top_frame-min_cut-inductor-cpu-float32
(CheckpointWrapper(nn.Sequential(lin, lin)) on a (1, 1) input, which fails with "Node add_3 ...").
None of that is needed. Inductor decomposes an addmm with one row into ``sum(mul(...)) + mul(bias, 1)``,
and that ``bias * 1`` is the whole trigger. A hand-written ``b * 1`` (or ``b / 1``, ``b + 0``) inside a
checkpoint gives the same error. Passes on torch 2.13.0.

What the repro needs: torch.utils.checkpoint (no CheckpointWrapper, no module used twice, no multiply
outside the region), a second graph input ``b`` used only inside the region as ``b * 1``, and
backend="inductor". It needs no backward call: the error comes from the partitioner when the compiled
function is first called. aot_eager_decomp_partition (min-cut, no inductor joint passes) passes on 2.14.1.

Cause (read from the 2.14.1 sources):
1. torch/_inductor/fx_passes/joint_graph.py ``remove_no_ops`` now also removes no-ops with a Python
   scalar argument (``x * 1``, ``x / 1``, ``x + 0``, ``x - 0``). 2.13.0 only removed no-ops whose
   argument was a constant ones/zeros tensor node. ``replace_no_op`` still ends with
   ``replacement.meta.update(node.meta)``, so the removed ``mul`` gives *all* its meta to the
   surviving input. Here that input is the graph placeholder ``primals_2`` (``b``), and the meta it
   gets includes the checkpoint tags ``recompute=PREFER_RECOMPUTE`` and ``ac_graph_id``.
2. torch/_functorch/partitioners.py ``solve_min_cut`` checks ``must_recompute(node)`` (MUST_ or
   PREFER_RECOMPUTE) *before* ``_is_primal(node)``. For the tagged placeholder it only adds
   ``primals_2_in -> sink`` and then skips the node (``continue``). So the primal is not banned from
   recompute (no ``source -> primals_2_in``), and it has no ``primals_2_in -> primals_2_out``
   capacity edge, which means it can never be in the cut and so is never saved.
   ``saved_values`` is ``[primals_1]`` (2.13.0 saves ``[primals_1, primals_2]``).
3. The backward still recomputes ``add = x + b`` for ``sin``'s backward, but ``b`` is neither a
   backward input nor saved. ``_extract_graph_with_inputs_outputs(subgraph="backward")`` marks
   ``add`` and the gradient that uses it as InvalidNode and raises
   ``AssertionError: Node <grad> was invalid, but is output`` (partitioners.py, about line 690).
   If the tagged placeholder is the *only* primal (``checkpoint(lambda t: (t * 1).sin(), x)``), no
   ``source`` edge is ever added and the same cause shows up as
   ``NetworkXError: node source not in graph``.
The fix is either for remove_no_ops not to copy recompute/ac_graph_id (or any meta) onto
placeholders, or for solve_min_cut to check ``_is_primal`` before ``must_recompute``.

Related upstream: pytorch/pytorch#166551 ("Remove no-ops for Tensor Scalar add, subtract, multiply
and division") and PR #166552 ("Remove no ops for add, sub, mul and div"), which add the scalar
no-op removal that exposes this. No pytorch issue was found that reports this failure.

Run: python findings/torch-2.14.1-partitioner-invalid-output-node.py  -> exit 1 while the bug reproduces.
"""

import sys

import torch
from torch.utils.checkpoint import checkpoint

torch._inductor.config.force_disable_caches = True  # always run the partitioner, never a cached graph
x = torch.randn(4, requires_grad=True)
b = torch.randn(4)


def fn(x):
    return checkpoint(lambda t: (t + b * 1).sin(), x, use_reentrant=False)


try:
    out = torch.compile(fn, backend="inductor")(x)
    out.sum().backward()
except Exception as e:  # BackendCompilerFailed wrapping the partitioner's AssertionError
    print(f"torch {torch.__version__}: BUG reproduces: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    sys.exit(1)
expected = torch.cos(x.detach() + b)
ok = torch.allclose(x.grad, expected)
print(f"torch {torch.__version__}: compiled OK, grad matches eager: {ok}")
sys.exit(0 if ok else 2)

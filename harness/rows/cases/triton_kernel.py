"""Area "triton_kernel": a user Triton kernel inside a selectively checkpointed region (CATALOGUE.md item 23).

The kernel (``add_one_kernel``: a masked 1-D elementwise x + 1) is launched from a custom ``autograd.Function``
whose backward is the identity, as upstream does, and, as a second form, through ``torch.library.triton_op`` /
``wrap_triton`` with an identity autograd formula.  The body is sigmoid((add_one(sin x)·y)·y) * y under a SAC
policy that saves mm: fw mm = 2, bw mm = 4.  The point is that a user kernel in a SAC region compiles and runs.

On CUDA the cells are real (aot_eager and inductor).  On CPU they are emulated (``Emulation.TRITON_INTERPRETER``,
ids ending ``-triton_interpreted``): Dynamo captures the ``@triton.jit`` kernel as on a GPU and its launches run in
Triton's interpreter (harness/core/triton_emulation.py), under the backends that run captured graphs as traced
(aot_eager declared; aot_eager_decomp_partition and Dynamo-only eager in the nightly matrix), never inductor.  The
kernel is defined only when triton imports, so the module is collected (and its cells reported as skipped, with the
reason) on a machine without triton."""

from __future__ import annotations

import torch

from harness.core.case import STANDARD_BACKENDS, AxesSpec, Case, Checkpoint, Emulation, Expect, Requires, Selection
from harness.rows.cases.sac_policy import sac_context_fn, sac_program

try:
    import triton
    import triton.language as tl
except ImportError:  # a machine without triton: the cases below are skipped by their requirement
    triton = None

aten = torch.ops.aten
MM = "aten.mm.default"
BLOCK_SIZE = 4

if triton is not None:
    @triton.jit
    def add_one_kernel(in_ptr0, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(axis=0)
        offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        x = tl.load(in_ptr0 + offsets, mask=mask)
        tl.store(out_ptr + offsets, x + 1, mask=mask)

    @torch.library.triton_op("ac_conformance::add_one", mutates_args=())
    def add_one_op(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        n = out.numel()
        torch.library.wrap_triton(add_one_kernel)[(n,)](x, out, n, BLOCK_SIZE=BLOCK_SIZE)
        return out

    add_one_op.register_autograd(lambda ctx, grad: grad)


class AddOne(torch.autograd.Function):
    """x + 1 by the user kernel (upstream's grid: one program per element, BLOCK_SIZE 4, masked)."""

    @staticmethod
    def forward(ctx, x):
        out = torch.empty_like(x)
        n = out.numel()
        add_one_kernel[(n,)](x, out, n, BLOCK_SIZE=BLOCK_SIZE)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad


def _add_one_function(x):
    return AddOne.apply(x)


def _add_one_triton_op(x):
    return torch.ops.ac_conformance.add_one(x)


def sac_triton_kernel(add_one):
    """Builder: sigmoid((add_one(sin x)·y)·y) * y checkpointed with the SAC policy that saves mm (the context_fn made
    outside the compiled function, as upstream's test does: Dynamo cannot trace a checkpoint whose context_fn is a
    closure created inside the traced code)."""
    def body(x, y):
        return torch.sigmoid(torch.matmul(torch.matmul(add_one(torch.sin(x)), y), y)) * y

    return sac_program(body, 2, sac_context_fn([aten.mm.default]))


# Real on CUDA (aot_eager and inductor); emulated on CPU, where only aot_eager is declared (Emulation.backends).
TRITON = AxesSpec(backends=STANDARD_BACKENDS, devices=("cpu", "cuda"), emulation=Emulation.TRITON_INTERPRETER)
NEEDS_TRITON = Requires.triton("a user Triton kernel needs triton (on CPU its launches run in Triton's interpreter)")
SAVE_MM = Expect({"fw": {MM: 2}, "bw": {MM: 4}})
# make test runs the emulated min-cut cell of each form; the other emulated cells are nightly (slow).
FAST_EMULATED = Selection(fast_axes="min_cut-aot_eager-cpu-float32-triton_interpreted")

CASES = [
    Case("sac_user_triton_kernel_in_autograd_function", sac_triton_kernel(_add_one_function), catalogue=(23,),
         checkpoint=Checkpoint.SAC, axes=TRITON, requires=NEEDS_TRITON, expect=SAVE_MM, selection=FAST_EMULATED),
    Case("sac_user_triton_kernel_triton_op", sac_triton_kernel(_add_one_triton_op), catalogue=(23,),
         checkpoint=Checkpoint.SAC, axes=TRITON, requires=NEEDS_TRITON, expect=SAVE_MM, selection=FAST_EMULATED,
         notes="the kernel as a torch.library.triton_op launched with wrap_triton"),
]

"""Area "triton_kernel": a user Triton kernel inside a selectively checkpointed region (CATALOGUE.md item 23).

The kernel (``add_one_kernel``: a masked 1-D elementwise x + 1) is launched from a custom ``autograd.Function``
whose backward is the identity, as upstream does, and, as a second form, through ``torch.library.triton_op`` /
``wrap_triton`` with an identity autograd formula.  The body is sigmoid((add_one(sin x)·y)·y) * y under a SAC
policy that saves mm: fw mm = 2, bw mm = 4.  The point is that a user kernel in a SAC region compiles and runs.

CUDA-only: Triton kernels need a GPU.  The kernel is defined only when triton imports, so the module is collected
(and its cells reported as skipped, with the reason) on a machine without triton."""

from __future__ import annotations

import torch

from harness.core.case import STANDARD_BACKENDS, AxesSpec, Backend, BuildContext, Case, Checkpoint, Expect, Program, Requires
from harness.rows.cases.sac_policy import sac_context_fn

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only machines: the cases below are skipped by their requirement
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
    def build(ctx: BuildContext) -> Program:
        def body(x, y):
            return torch.sigmoid(torch.matmul(torch.matmul(add_one(torch.sin(x)), y), y)) * y

        def fn(x, y):
            return ctx.checkpoint(body, x, y, use_reentrant=False, context_fn=sac_context_fn([aten.mm.default]))

        return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))

    return build


TRITON = AxesSpec(backends=STANDARD_BACKENDS, devices="cuda")
NEEDS_TRITON = tuple(f("a user Triton kernel needs a GPU and triton") for f in (Requires.cuda, Requires.triton))
SAVE_MM = Expect({"fw": {MM: 2}, "bw": {MM: 4}})

CASES = [
    Case("sac_user_triton_kernel_in_autograd_function", sac_triton_kernel(_add_one_function), catalogue=(23,),
         checkpoint=Checkpoint.SAC, axes=TRITON, requires=NEEDS_TRITON, expect=SAVE_MM),
    Case("sac_user_triton_kernel_triton_op", sac_triton_kernel(_add_one_triton_op), catalogue=(23,),
         checkpoint=Checkpoint.SAC, axes=TRITON, requires=NEEDS_TRITON, expect=SAVE_MM,
         notes="the kernel as a torch.library.triton_op launched with wrap_triton"),
]

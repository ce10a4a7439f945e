"""Area "subclass": tensor subclasses through a SAC region under torch.compile: TwoTensor inputs are desugared into
their components, so every op (and the policy's decision) applies to both (CATALOGUE.md item 24)."""

from __future__ import annotations

import torch
from torch.testing._internal.two_tensor import TwoTensor

from harness.core.case import SAC_COMPOSITIONS, AxesSpec, BuildContext, Case, Checkpoint, Expect, Program
from harness.rows.cases.sac_policy import sac_context_fn

MM = "aten.mm.default"


def _gemm_sigmoid(x, y):
    return torch.sigmoid(torch.matmul(torch.matmul(x, y), y)) * y


def two_tensor_sac(ctx: BuildContext) -> Program:
    context_fn = sac_context_fn(no_recompute_list=[torch.ops.aten.mm.default])

    def fn(x, y):
        return ctx.checkpoint(_gemm_sigmoid, x, y, use_reentrant=False, context_fn=context_fn)

    r = ctx.randn(4, 4, requires_grad=False)
    x = TwoTensor(r, r.clone()).requires_grad_()
    y = TwoTensor(r.clone(), r.clone()).requires_grad_()
    return Program(fn, (x, y))


CASES = [
    # every composition a SAC program supports (issue 27 item 1, nightly): the subclass through compiled blocks
    Case("subclass_two_tensor_sac", two_tensor_sac, catalogue=(24,), checkpoint=Checkpoint.SAC,
         axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         expect=Expect({"fw": {MM: 4}, "bw": {MM: 8}}),
         notes="each TwoTensor mm is two mm; bw would have 12 mm without SAC (4 recomputed + 8 gradient mm)"),
]

"""Area "reference_models": programs whose costs are known in closed form, so the analysis (harness/core/analysis.py) is
checked against exact answers, and random-op programs for the dropout oracle (harness/core/invariants.py).

The transformer-style block (all operands n x n, so every matmul costs one unit, 2 n^3 FLOPs):

    h1 = x @ W1; a1 = relu(h1); h2 = a1 @ W2; a2 = relu(h2)       # MLP matmuls (aten.mm)
    s = bmm(a2, W3); a3 = relu(s)                                  # the attention-score matmul (aten.bmm)
    out = sigmoid(a3 @ W4)

Every matmul's backward costs 2 units (x and every W require grad): no AC, 8 units.  Full AC recomputes all four
forward matmuls (each output feeds a relu/sigmoid whose backward needs it): 12 units.  Selective AC that saves the
mm ops (as torchtitan's policy saves matmuls) recomputes only the bmm: 9 units.  These are the 8 / 9 / 12 that
torchtitan's activation-checkpoint tests assert; here they are asserted on the compiled backward graph and, as
torchtitan measures them, with FlopCounterMode around an eager backward.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
from torch.utils.flop_counter import FlopCounterMode

from harness.core.case import DTYPES, NON_REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, AxesSpec, BuildContext, Case, Checkpoint, Expect, Program
from harness.core import analysis
from harness.core.checks import dropout_oracle, expect_equal

N = 16
UNIT = 2 * N**3  # FLOPs of one n x n x n matmul


def _block(x, w1, w2, w3, w4):
    a1 = torch.relu(x @ w1)
    a2 = torch.relu(a1 @ w2)
    a3 = torch.relu(torch.bmm(a2.unsqueeze(0), w3.unsqueeze(0))).squeeze(0)
    return torch.sigmoid(a3 @ w4)


def _save_mm(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


def block(mode: str):
    def build(ctx: BuildContext) -> Program:
        def fn(x, w1, w2, w3, w4):
            if mode == "none":
                return _block(x, w1, w2, w3, w4)
            kwargs = {"context_fn": functools.partial(create_selective_checkpoint_contexts, _save_mm)} if mode == "sac" else {}
            return ctx.checkpoint(_block, x, w1, w2, w3, w4, use_reentrant=False, **kwargs)

        return Program(fn, tuple(ctx.randn(N, N) for _ in range(5)))

    return build


def backward_units(units: int):
    """Compiled backward FLOPs, and eager backward FLOPs under FlopCounterMode, are ``units`` matmuls exactly."""
    def check(run) -> None:
        __tracebackhide__ = True
        if run.cell.axes.budget is not None:
            return  # the figures are those of the declared axes; a budget changes them by design (the matrix)
        a = analysis.of(run)
        expect_equal(f"{run.cell.id}: compiled backward FLOPs in units of one {N}x{N}x{N} matmul", a.bw_flops / UNIT, units)
        expect_equal(f"{run.cell.id}: compiled forward FLOPs in matmul units", a.fw_flops / UNIT, 4)
        axes = run.cell.axes
        torch.manual_seed(0)
        prog = run.cell.case.build(BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=True))
        out = prog.fn(*prog.inputs)
        with FlopCounterMode(display=False) as counter:
            out.sum().backward()
        expect_equal(f"{run.cell.id}: eager backward FLOPs (FlopCounterMode) in matmul units",
                     counter.get_total_flops() / UNIT, units)
    return check


# --- random ops for the dropout oracle: output = elementwise(random mask applied to input 0) -----------------------

def _with_zeros(t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t.view(-1)[::7] = 0.0  # exact zeros in the input: kept or dropped, the output there is 0
    return t


def random_program(kind: str, sac: bool):
    ops = {
        "dropout": lambda x: torch.nn.functional.dropout(x, 0.5, training=True),
        "rand_like": lambda x: x * (torch.rand_like(x) > 0.5),
        "bernoulli": lambda x: x * torch.bernoulli(torch.full_like(x, 0.5)),
    }

    def body(x, w):
        return torch.sigmoid(w) * ops[kind](torch.sin(x) * 2.0)  # sin(x) * 2 is 0 only where x is 0 (|x| < pi)

    def build(ctx: BuildContext) -> Program:
        kwargs = {}
        if sac:
            kwargs["context_fn"] = functools.partial(
                create_selective_checkpoint_contexts,
                lambda c, op, *a, **k: CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.sigmoid.default
                else CheckpointPolicy.PREFER_RECOMPUTE)

        def fn(x, w):
            return ctx.checkpoint(body, x, w, use_reentrant=False, **kwargs)

        x = _with_zeros(ctx.randn(16, 16, requires_grad=False)).clamp(-3, 3).requires_grad_(True)
        return Program(fn, (x, ctx.randn(16, 16)))

    return build


CASES = [
    Case("reference_block_no_ac", block("none"), checkpoint=Checkpoint.NONE,
         expect=Expect({"bw": {"aten.mm.default": 6, "aten.bmm.default": 2}}, check=backward_units(8))),
    # Compositions (issue 27 item 1, nightly): the block checkpointed around or between compiled code.
    Case("reference_block_sac_save_mm", block("sac"), checkpoint=Checkpoint.SAC, axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         expect=Expect({"bw": {"aten.mm.default": 6, "aten.bmm.default": 3}}, check=backward_units(9))),
    Case("reference_block_full_ac", block("full"), axes=AxesSpec(compositions=NON_REENTRANT_COMPOSITIONS),
         expect=Expect({"bw": {"aten.mm.default": 9, "aten.bmm.default": 3}}, check=backward_units(12))),
]
for _kind in ("dropout", "rand_like", "bernoulli"):
    for _sac in (False, True):
        _name = f"reference_{_kind}_{'sac' if _sac else 'ac'}_oracle"
        CASES.append(Case(_name, random_program(_kind, _sac),
                          checkpoint=Checkpoint.SAC if _sac else Checkpoint.NON_REENTRANT,
                          expect=Expect(check=dropout_oracle(0, 0))))

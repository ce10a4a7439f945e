"""Area "rng_dropout": random ops inside checkpointed regions: the recomputation in backward must replay the forward's
randomness (CATALOGUE.md items 12-14, 30).

Where compiled numerics cannot follow eager's RNG stream, the cells check randomness consistency instead, with an
oracle that holds whatever the stream: the dropout mask is read off the compiled output, the program is replayed
eagerly with that mask fixed, and the compiled output and every gradient must equal the replay's.  A backward that
recomputed dropout with a different mask than the forward's fails it."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import create_selective_checkpoint_contexts

from harness.core.case import REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, AxesSpec, Backend, BuildContext, Case, Checkpoint, CompileSpec, Expect, Numerics, Program
from harness.core.checks import compare_outcomes, mask_replay, tolerance
from harness.rows.cases.sac_policy import custom_policy

aten = torch.ops.aten
SIGMOID, DROPOUT = "aten.sigmoid.default", "aten.native_dropout.default"
FALLBACK_RANDOM = {"inductor": {"fallback_random": True}}


def _rand_body(x, y):
    return torch.sigmoid(torch.rand_like(x) * y) * x


def recomputed_rand(ctx: BuildContext) -> Program:
    def fn(x, y):
        x = torch.sin(x)
        x = ctx.checkpoint(_rand_body, x, y, use_reentrant=True)
        x = torch.sin(x)
        return ctx.checkpoint(_rand_body, x, y, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


def tags_rand(ctx: BuildContext) -> Program:
    def body(x, y):
        return torch.mm(torch.mm(x, y), y)

    def fn(x, y):
        return torch.sin(ctx.checkpoint(body, torch.sin(x), y, use_reentrant=True))

    return Program(fn, (ctx.randn(4, 4), ctx.randn(4, 4)))


class _LinearDropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(10, 10)
        self.dropout = torch.nn.Dropout(0.2)

    def forward(self, x):
        return self.dropout(self.linear(x))


def dropout_module(ctx: BuildContext) -> Program:
    mod = ctx.module(_LinearDropout())

    def fn(x):
        return ctx.checkpoint(mod, x, use_reentrant=True)

    return Program(fn, (ctx.randn(10, 10),), module=mod)


def _sigmoid_dropout_sigmoid(x):
    return torch.sigmoid(torch.dropout(torch.sigmoid(x), p=0.5, train=True))


def sac_random_op(preserve_rng_state: bool):
    def context_fn():
        return create_selective_checkpoint_contexts(custom_policy(no_recompute_list=[aten.sigmoid.default]))

    def build(ctx: BuildContext) -> Program:
        def fn(x):
            return ctx.checkpoint(_sigmoid_dropout_sigmoid, x, use_reentrant=False,
                                  preserve_rng_state=preserve_rng_state, context_fn=context_fn)

        return Program(fn, (ctx.randn(4, 4),))

    return build


# --- the mask-replay oracle ----------------------------------------------------------------------------------

def _replay_dropout_module(prog: Program, mask):
    (x,) = prog.inputs
    return prog.module.linear(x) * mask / 0.8


def _replay_sac_random_op(prog: Program, mask):
    (x,) = prog.inputs
    return torch.sigmoid(torch.sigmoid(x) * mask / 0.5)


def _compiled_matches_no_ac_reference(run) -> None:
    """preserve_rng_state=False: eager checkpointing recomputes dropout with a fresh mask (its gradients are not
    the un-checkpointed ones), but compile always preserves the RNG state, so it must equal eager without AC."""
    __tracebackhide__ = True
    problems = compare_outcomes(run.compiled, run.reference, *tolerance(run))
    if problems:
        raise AssertionError(f"{run.cell.id}: compiled (which always preserves RNG state) differs from eager "
                             "without checkpointing:\n  " + "\n  ".join(problems))


def _all(*checks):
    def check(run) -> None:
        __tracebackhide__ = True
        for c in checks:
            c(run)
    return check


def _bernoulli_then_dropout(x):
    return torch.nn.functional.dropout(x * torch.bernoulli(torch.full_like(x, 0.5)), 0.5, training=True)


def sac_cached_random_op(ctx: BuildContext) -> Program:
    """A SAC region whose policy caches a random op (MUST_SAVE bernoulli) before another (dropout)."""
    def context_fn():
        return create_selective_checkpoint_contexts(custom_policy(no_recompute_list=[aten.bernoulli.default]))

    def fn(x):
        return ctx.checkpoint(_bernoulli_then_dropout, x, use_reentrant=False, context_fn=context_fn)

    return Program(fn, (ctx.randn(8, 8),))


SAC_RANDOM_EXPECT = {"fw": {SIGMOID: 2, DROPOUT: 1}, "bw": {SIGMOID: 0, DROPOUT: 1}}
_sac_random_oracle = mask_replay(lambda out: out != 0.5, _replay_sac_random_op)  # sigmoid(0) = 0.5 where dropped

CASES = [
    # Compositions (issue 27 item 1, nightly): the RNG of a region checkpointed around or between compiled code.
    # Not on rng_sac_random_op_no_preserve_rng_state, judged by its case check (a composition cell drops it).
    Case("rng_recomputed_rand", recomputed_rand, catalogue=(12,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR, compositions=REENTRANT_COMPOSITIONS), compile=CompileSpec(config=FALLBACK_RANDOM),
         notes="fallback_random makes inductor draw rand_like from eager's stream, so numerics are exact"),
    Case("rng_tags_rand", tags_rand, catalogue=(13,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR, compositions=REENTRANT_COMPOSITIONS), compile=CompileSpec(config=FALLBACK_RANDOM),
         notes="no RNG op despite the upstream name"),
    Case("rng_dropout_module", dropout_module, catalogue=(14,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(backends=Backend.INDUCTOR, compositions=REENTRANT_COMPOSITIONS), compile=CompileSpec(config=FALLBACK_RANDOM),
         expect=Expect(check=mask_replay(lambda out: out != 0, _replay_dropout_module)),
         notes="upstream skips numerics (rand decompositions differ from eager); with fallback_random they match on "
               "CPU, and the mask-replay oracle checks fwd/bw mask consistency whatever the stream"),
    Case("rng_sac_random_op_preserve_rng_state", sac_random_op(True), catalogue=(30,), checkpoint=Checkpoint.SAC,
         axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(config=FALLBACK_RANDOM), expect=Expect(SAC_RANDOM_EXPECT, check=_sac_random_oracle),
         notes="dropout is recomputed in bw (through the RNG wrapper HOPs)"),
    Case("rng_sac_random_op_no_preserve_rng_state", sac_random_op(False), catalogue=(30,), checkpoint=Checkpoint.SAC,
         compile=CompileSpec(config=FALLBACK_RANDOM),
         expect=Expect(SAC_RANDOM_EXPECT, check=_all(_compiled_matches_no_ac_reference, _sac_random_oracle)),
         numerics=Numerics.shape_only("with preserve_rng_state=False eager checkpointing recomputes dropout with a new "
                                      "mask, so eager-with-AC gradients are not the reference; compiled is checked "
                                      "against eager without AC and against the mask-replay oracle")),
    Case("rng_sac_cached_random_op_before_dropout", sac_cached_random_op, checkpoint=Checkpoint.SAC,
         axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(config=FALLBACK_RANDOM),
         notes="fuzz finding 7144c61e6a reduced: eager SAC does not redraw the cached bernoulli in the recompute, so "
               "the dropout after it draws another mask (findings/sac_cached_random_op_shifts_later_draws.py)"),
]

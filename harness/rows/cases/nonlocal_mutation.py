"""Area "nonlocal_mutation": Python side effects inside checkpointed regions (a closure counter, appends to a list
argument) under ``skip_fwd_side_effects_in_bwd_under_checkpoint``: the compiled backward must not replay them, and
a tensor leaked through a list becomes an extra output of the checkpoint HOP (CATALOGUE.md items 40-42)."""

from __future__ import annotations

import torch
import torch.fx as fx

from harness.core.case import REENTRANT_COMPOSITIONS, SAC_COMPOSITIONS, AxesSpec, Case, Partitioner, Checkpoint, CompileSpec, Decompositions, Expect, Program
from harness.core.checks import expect_equal
from harness.rows.cases import FORMER_CUSTOM

SKIP_SIDE_EFFECTS = {"dynamo": {"skip_fwd_side_effects_in_bwd_under_checkpoint": True}}

def counter_program(ctx) -> Program:
    """A checkpointed body that counts its calls in a closure; the count after forward+backward is the run's state."""
    counter = [0]

    def body(x):
        counter[0] += 1
        return torch.sin(x)

    def fn(x):
        return ctx.checkpoint(body, x, use_reentrant=True)

    return Program(fn, (ctx.randn(4, 4),), state=lambda: counter[0])


def _side_effect_counts(run) -> None:
    expect_equal(f"{run.cell.id}: times the checkpointed body's counter increment ran over forward+backward "
                 "(reentrant eager recompute replays it; compile with the flag does not)",
                 {"eager without AC": run.reference.state, "eager with AC": run.eager.state,
                  "compiled with AC": run.compiled.state},
                 {"eager without AC": 1, "eager with AC": 2, "compiled with AC": 1})


def _list_body(x, z):
    out = x.sin()
    z.append(out)
    return torch.cos(torch.sin(torch.matmul(x, x) @ x)), out


def list_mutation(ctx) -> Program:
    def fn(x):
        z = []
        out1, _ = ctx.checkpoint(_list_body, x, z, use_reentrant=False)
        return out1, z[0]

    return Program(fn, (ctx.randn(4, 4),))


def _hidden_body(x, z):
    o = torch.matmul(x, x) @ x
    out = x.sin()
    z.append(out)
    return torch.cos(torch.sin(o)), torch.sin(x)


def hidden_list_mutation(ctx) -> Program:
    def fn(x):
        z = []
        outs = ctx.checkpoint(_hidden_body, x, z, use_reentrant=False)
        return outs[0] + outs[-1], z[0]  # outs[-1]: the extra hidden output must not shift pytree indexing

    return Program(fn, (ctx.randn(4, 4),))


def _calls(gm: fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if n.op.startswith("call")]


def _returned(gm: fx.GraphModule) -> list[str]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return [a.name if isinstance(a, fx.Node) else repr(a) for a in out.args[0]]


def _hidden_output_graphs(run) -> None:
    cid = run.cell.id
    gm = run.graphs["dynamo"][0]
    tag = next(n for n in gm.graph.nodes if n.op == "call_function" and "tag_activation_checkpoint" in str(n.target))
    expect_equal(f"{cid}: outputs of tag_activation_checkpoint (cos, sin_2 and the list-appended sin)",
                 len(tag.meta["example_value"]), 3)
    getitems = {n.args[1]: n for n in tag.users}
    expect_equal(f"{cid}: indices of the HOP outputs the top level reads", sorted(getitems), [0, 1, 2])
    add = next(n for n in gm.graph.nodes if n.op == "call_function" and n.args[:2] == (getitems[0], getitems[1]))
    expect_equal(f"{cid}: Dynamo graph returns", _returned(gm), [add.name, getitems[2].name])
    body = getattr(gm, tag.args[0].name)
    expect_equal(f"{cid}: call nodes of the checkpointed body", _calls(body), ["matmul", "o", "out", "sin_1", "cos", "sin_2"])
    expect_equal(f"{cid}: checkpointed body returns", _returned(body), ["cos", "sin_2", "out"])
    fw = run.graphs["fw"][0]
    expect_equal(f"{cid}: call nodes of the AOT forward graph", _calls(fw), ["mm", "mm_1", "sin", "sin_1", "cos", "sin_2", "add"])
    expect_equal(f"{cid}: AOT forward graph returns (only the primal saved for backward)", _returned(fw),
                 ["add", "sin", "primals_1"])


CASES = [
    # Compositions (issue 27 item 1, nightly); the list mutations not reentrant: a reentrant checkpoint computes the
    # appended tensor under no_grad (its docstring), another program.
    Case("nonlocal_counter_mutation", counter_program, catalogue=(40,), checkpoint=Checkpoint.REENTRANT,
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=REENTRANT_COMPOSITIONS), goldens=("dynamo", "joint", "fw", "bw"), selection=FORMER_CUSTOM,
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR, config=SKIP_SIDE_EFFECTS),
         expect=Expect(check=_side_effect_counts), notes="upstream compiles with aot_eager_decomp_partition"),
    Case("nonlocal_list_mutation", list_mutation, catalogue=(41,),
         axes=AxesSpec(partitioners=Partitioner.MIN_CUT, compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(decompositions=Decompositions.INDUCTOR, config=SKIP_SIDE_EFFECTS),
         notes="upstream compiles with aot_eager_decomp_partition"),
    Case("nonlocal_list_mutation_hidden", hidden_list_mutation, catalogue=(42,), axes=AxesSpec(compositions=SAC_COMPOSITIONS),
         compile=CompileSpec(config=SKIP_SIDE_EFFECTS), expect=Expect(check=_hidden_output_graphs),
         notes="upstream records graphs with AotEagerAndRecordGraphs (aot_eager: default partition); min-cut gives the same graphs"),
]

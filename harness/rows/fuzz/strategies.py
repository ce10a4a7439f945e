"""Hypothesis strategies building :class:`~harness.rows.fuzz.program.Prog` values.  Shrinking goes towards fewer steps,
ops early in the vocabulary, arguments that are inputs, no regions beyond one, non-reentrant, min-cut, aot_eager, no
budget, float32."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from torch.utils.checkpoint import CheckpointPolicy

from harness.core.case import Backend, Checkpoint, Partitioner
from harness.rows.fuzz.program import POLICIES, VOCAB, Prog, Region, Step

# Simple ops first: shrinking moves towards the start of the list.
OPS = sorted(VOCAB, key=lambda k: (VOCAB[k].random, k not in ("sin", "cos", "mm", "mul", "add"), k))
BUDGETS = (None, 0.0, 0.1, 0.3, 0.5, 0.8, 1.0)
DEFAULT_POLICIES = (CheckpointPolicy.PREFER_RECOMPUTE, CheckpointPolicy.PREFER_SAVE, CheckpointPolicy.MUST_RECOMPUTE,
                    CheckpointPolicy.MUST_SAVE)


def _nested_or_disjoint(a: Region, b: Region) -> bool:
    if (a.start, a.end) == (b.start, b.end):
        return False
    return a.end <= b.start or b.end <= a.start or (a.start <= b.start and b.end <= a.end) \
        or (b.start <= a.start and a.end <= b.end)


def steps(ops: list[str], n_values: int, n_weights: int, n_biases: int) -> st.SearchStrategy[Step]:
    """One step on the ``n_values`` values so far; its arguments counted back from the newest value (shrinks towards
    chains)."""
    def on(op: str) -> st.SearchStrategy[Step]:
        back = st.integers(0, n_values - 1).map(lambda k: n_values - 1 - k)
        return st.builds(Step, st.just(op), st.tuples(*[back] * VOCAB[op].arity), st.integers(0, n_weights - 1),
                         st.integers(0, n_biases - 1))

    return st.sampled_from(ops).flatmap(on)


def _checkpoint(reentrant: bool) -> st.SearchStrategy[Checkpoint]:
    return st.just(Checkpoint.REENTRANT) if reentrant else st.booleans().map(
        lambda sac: Checkpoint.SAC if sac else Checkpoint.NON_REENTRANT)


def regions(n_steps: int) -> st.SearchStrategy[Region]:
    """One region of a program of ``n_steps`` steps: reentrant, or non-reentrant with or without a SAC policy."""
    return st.integers(0, n_steps - 1).flatmap(lambda start: st.builds(
        Region, st.just(start), st.integers(start + 1, n_steps), st.booleans().flatmap(_checkpoint)))


def _grad_free(prog: Prog, r: Region) -> bool:
    """Whether no input of the region requires grad: reentrant checkpoint would then silently give its closure's
    parameters no gradient (documented), so such a region is drawn non-reentrant."""
    _, produced, _ = prog.value_layout()
    defined = {v for i in range(r.start, r.end) for v in produced[i]}
    ins = {a for i in range(r.start, r.end) for a in prog.steps[i].args} - defined
    return not ins & prog.grad_values()


def policies(aten: list[str]) -> st.SearchStrategy[dict[str, CheckpointPolicy]]:
    """A SAC policy: some of the program's aten ops, each with a policy."""
    entries = [st.booleans().flatmap(lambda keep, a=a: st.sampled_from(POLICIES).map(lambda p: (a, p)) if keep
                                     else st.none()) for a in aten]
    return st.tuples(*entries).map(lambda picked: dict(e for e in picked if e is not None))


@st.composite
def programs(draw, max_steps: int = 7, inductor_one_in: int = 30, allow_random: bool = True, autocast_one_in: int = 5,
             partitioners: tuple[Partitioner, ...] = tuple(Partitioner)) -> Prog:
    ops = OPS if allow_random else [o for o in OPS if not VOCAB[o].random]
    shape = draw(st.fixed_dictionaries({
        "n": st.integers(1, 4), "d": st.sampled_from((4, 2, 6)),
        "input_grads": st.lists(st.booleans(), min_size=1, max_size=3).map(lambda g: [not x for x in g]),
        "n_weights": st.integers(1, 2), "n_biases": st.integers(1, 2),
        "weights_are_params": st.booleans().map(lambda x: not x)}))
    body = []
    n_values = len(shape["input_grads"])
    for _ in range(draw(st.integers(1, max_steps))):
        body.append(draw(steps(ops, n_values, shape["n_weights"], shape["n_biases"])))
        n_values += VOCAB[body[-1].op].outputs
    prog = Prog(**shape, steps=body)
    drawn: list[Region] = []
    for _ in range(draw(st.integers(1, 3))):
        r = draw(regions(len(body)))
        if r.reentrant and _grad_free(prog, r):
            r = Region(r.start, r.end, Checkpoint.NON_REENTRANT)
        if all(_nested_or_disjoint(r, q) for q in drawn):
            drawn.append(r)
    prog = dataclasses.replace(prog, regions=drawn)
    if any(r.sac for r in drawn):
        aten = sorted({a for s in body for a in VOCAB[s.op].aten})
        prog = dataclasses.replace(prog, policy=draw(policies(aten)),
                                   default_policy=draw(st.sampled_from(DEFAULT_POLICIES)))
    partitioner, backend = draw(st.sampled_from(tuple(Partitioner(p) for p in partitioners))), Backend.AOT_EAGER
    if inductor_one_in and draw(st.integers(0, inductor_one_in - 1)) == inductor_one_in - 1:
        partitioner, backend = Partitioner.MIN_CUT, Backend.INDUCTOR
    return dataclasses.replace(
        prog, partitioner=partitioner, backend=backend,
        budget=draw(st.sampled_from(BUDGETS)) if partitioner is Partitioner.MIN_CUT else None,
        autocast=bool(autocast_one_in) and draw(st.integers(1, autocast_one_in)) == autocast_one_in)

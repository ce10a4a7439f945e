"""Hypothesis strategies for :class:`~harness.rows.fuzz.program.Prog`.  Shrinking goes towards fewer steps, ops early in
the vocabulary, arguments that are inputs, no regions beyond one, non-reentrant, min-cut, aot_eager, no budget, float32."""

from __future__ import annotations

from hypothesis import strategies as st

from harness.rows.fuzz.program import POLICIES, VOCAB, Prog, Region, Step

# Simple ops first: shrinking moves towards the start of the list.
OPS = sorted(VOCAB, key=lambda k: (VOCAB[k][4], k not in ("sin", "cos", "mm", "mul", "add"), k))
BUDGETS = (None, 0.0, 0.1, 0.3, 0.5, 0.8, 1.0)


def _nested_or_disjoint(a: Region, b: Region) -> bool:
    if (a.start, a.end) == (b.start, b.end):
        return False
    return a.end <= b.start or b.end <= a.start or (a.start <= b.start and b.end <= a.end) \
        or (b.start <= a.start and a.end <= b.end)


@st.composite
def programs(draw, max_steps: int = 7, inductor_one_in: int = 30, allow_random: bool = True, autocast_one_in: int = 5,
             partitioners: tuple[str, ...] = ("min_cut", "default")) -> Prog:
    ops = OPS if allow_random else [o for o in OPS if not VOCAB[o][4]]
    p = Prog()
    p.n = draw(st.integers(1, 4))
    p.d = draw(st.sampled_from((4, 2, 6)))
    p.input_grads = draw(st.lists(st.booleans(), min_size=1, max_size=3).map(lambda g: [not x for x in g]))
    p.n_weights = draw(st.integers(1, 2))
    p.n_biases = draw(st.integers(1, 2))
    p.weights_are_params = draw(st.booleans().map(lambda x: not x))
    nv = len(p.input_grads)
    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from(ops))
        arity, nout = VOCAB[op][0], VOCAB[op][1]
        # Arguments counted back from the newest value: shrinks towards chains.
        args = [nv - 1 - draw(st.integers(0, nv - 1)) for _ in range(arity)]
        p.steps.append(Step(op, args, draw(st.integers(0, p.n_weights - 1)), draw(st.integers(0, p.n_biases - 1))))
        nv += nout
    n = len(p.steps)
    grads = p.grad_values()
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, n - 1))
        r = Region(start, draw(st.integers(start + 1, n)), reentrant=draw(st.booleans()))
        r.sac = not r.reentrant and draw(st.booleans())
        if r.reentrant:  # reentrant needs a grad-requiring input, or its closure params silently get no gradient (documented)
            _, produced, _ = p.value_layout()
            defined = {v for i in range(r.start, r.end) for v in produced[i]}
            ins = {a for i in range(r.start, r.end) for a in p.steps[i].args} - defined
            r.reentrant = bool(ins & grads)
        if all(_nested_or_disjoint(r, q) for q in p.regions):
            p.regions.append(r)
    if any(r.sac for r in p.regions):
        aten = sorted({a for s in p.steps for a in VOCAB[s.op][3]})
        p.policy = {a: draw(st.sampled_from(POLICIES)) for a in aten if draw(st.booleans())}
        p.default_policy = draw(st.sampled_from(("PREFER_RECOMPUTE", "PREFER_SAVE", "MUST_RECOMPUTE", "MUST_SAVE")))
    p.partitioner = draw(st.sampled_from(partitioners))
    if inductor_one_in and draw(st.integers(0, inductor_one_in - 1)) == inductor_one_in - 1:
        p.backend, p.partitioner = "inductor", "min_cut"
    if p.partitioner == "min_cut":
        p.budget = draw(st.sampled_from(BUDGETS))
    p.autocast = bool(autocast_one_in) and draw(st.integers(1, autocast_one_in)) == autocast_one_in
    return p

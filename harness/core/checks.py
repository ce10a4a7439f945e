"""Assertions on a recorded run.  Each hides itself from tracebacks and fails with a sentence that names
the cell, the thing checked, what was expected and what was seen."""

from __future__ import annotations

import dataclasses
import re

import torch

from harness.core.analysis import op_counts
from harness.core.case import AmbientState, NumericsMode
from harness.core.pipeline import Outcome, Run


class NotRun(Exception):  # noqa: N818 - a verdict, not an error
    """A check that could not run on this run (nothing it applies to, no analysable graphs, symbolic sizes, a
    baseline the run lacks): reported as "not run" with this reason, never counted as passed."""

# (rtol, atol) per dtype: torch's own defaults (torch/testing/_comparison.py _DTYPE_PRECISIONS, what
# torch.testing.assert_close uses); compiled graphs reorder and recompute, so bitwise equality is not promised.  A case
# that needs more states its tolerance and why (Numerics.tolerance).
TOLERANCES = {
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
}
# Compiled vs eager under bf16/fp16 autocast: torch's bf16 default for the relative part; the absolute part is bf16's
# own resolution at the outputs' scale (eps 7.8e-3 x |values| ~ 1): inductor fuses and keeps fp32 intermediates where
# eager rounds each op's result to bf16, and torch's 1e-5 default atol would judge near-zero outputs by an absolute
# precision no bf16 computation has.
AUTOCAST_TOLERANCE = (1.6e-2, 1e-2)

def mismatch(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> str | None:
    if actual is None or expected is None:
        if actual is None and expected is None:
            return None
        return f"{name}: one side has no gradient (compiled={'None' if actual is None else 'tensor'}, reference={'None' if expected is None else 'tensor'})"
    if type(actual) is not torch.Tensor and hasattr(actual, "__tensor_flatten__"):
        attrs, _ = actual.__tensor_flatten__()
        msgs = [mismatch(f"{name}.{a}", getattr(actual, a), getattr(expected, a), rtol, atol) for a in attrs]
        return "; ".join(m for m in msgs if m) or None
    if actual.shape != expected.shape:
        return f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"{name}: dtype {actual.dtype} != expected {expected.dtype}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if torch.equal(a, e):
        return None
    nan_mismatch = not torch.equal(a.isnan(), e.isnan())
    diff = (a - e).abs().nan_to_num(0.0)
    rel = diff / e.abs().clamp_min(1e-12)
    ok = (diff <= atol + rtol * e.abs()) | (a.isnan() & e.isnan())
    if ok.all() and not nan_mismatch:
        return None
    return (f"{name}: max abs error {diff.max().item():.3g}, max rel error {rel.max().item():.3g} "
            f"exceed rtol={rtol:g} atol={atol:g} ({int((~ok).sum())} of {ok.numel()} elements)")


def compare_outcomes(actual: Outcome, expected: Outcome, rtol: float, atol: float) -> list[str]:
    problems = []
    if len(actual.outputs) != len(expected.outputs):
        problems.append(f"number of outputs {len(actual.outputs)} != expected {len(expected.outputs)}")
    for i, (a, e) in enumerate(zip(actual.outputs, expected.outputs)):
        problems.append(mismatch(f"output[{i}]", a, e, rtol, atol))
    if set(actual.grads) != set(expected.grads):
        problems.append(f"gradient names {sorted(actual.grads)} != expected {sorted(expected.grads)}")
    for name in sorted(set(actual.grads) & set(expected.grads)):
        problems.append(mismatch(f"grad of {name}", actual.grads[name], expected.grads[name], rtol, atol))
    return [p for p in problems if p]


def tolerance(run: Run) -> tuple[float, float]:
    if run.cell.case.numerics.tolerance:
        return run.cell.case.numerics.tolerance
    return AUTOCAST_TOLERANCE if AmbientState(run.cell.axes.ambient).autocast else TOLERANCES[run.cell.axes.dtype]


def assert_numerics(run: Run) -> int:
    """Compiled-with-AC against eager with AC and eager without AC (outputs, input and parameter gradients), and
    eager with AC against eager without AC; plus the runner's own pairs (``run.comparisons``); per variant for a case
    with variants.  Returns the number of tensor comparisons made."""
    __tracebackhide__ = True
    case = run.cell.case
    if case.numerics.mode is NumericsMode.NONE:
        raise NotRun(f"numerics not compared: {case.numerics.reason}")
    n, problems = 0, []
    for label, part in (run.parts.items() if run.parts else [("", run)]):
        k, found = _numerics_of(part)
        n += k
        problems += [f"{label}: {p}" if label else p for p in found]
    if problems:
        raise AssertionError(f"{run.cell.id}: numerics mismatch:\n  " + "\n  ".join(problems))
    if n == 0:
        raise NotRun("the run produced no outputs to compare")
    return n


def _numerics_of(run: Run) -> tuple[int, list[str]]:
    case = run.cell.case
    rtol, atol = tolerance(run)
    problems: list[str] = []
    n = 0
    for name, actual, expected, *own in run.comparisons:  # a runner may give one its own (rtol, atol)
        n += 1
        r, a = own[0] if own else (rtol, atol)
        problems += [m for m in [mismatch(name, torch.as_tensor(actual), torch.as_tensor(expected), r, a)] if m]
    pairs = [(label, ref) for label, ref in (("eager with AC", run.eager), ("eager without AC", run.reference))
             if ref is not None]
    if run.compiled is not None and case.numerics.mode is NumericsMode.EXACT:
        for label, ref in pairs:
            found = compare_outcomes(run.compiled, ref, rtol, atol)
            n += len(ref.outputs) + len(ref.grads)
            problems += [f"{run.info.get('compiled_as', 'compiled')} vs {label}: {p}" for p in found]
    elif run.compiled is not None and case.numerics.mode is NumericsMode.SHAPE and run.eager is not None:
        for i, (a, e) in enumerate(zip(run.compiled.outputs, run.eager.outputs)):
            n += 1
            if a.shape != e.shape:
                problems.append(f"output[{i}]: shape {tuple(a.shape)} != eager {tuple(e.shape)}")
    if run.eager is not None and run.reference is not None and case.numerics.mode is NumericsMode.EXACT:
        # Eager with and without AC run the same kernels on the same values (the recompute replays the forward), so
        # they are held to torch's default tolerance for the dtype, never to a case's widened one.
        found = compare_outcomes(run.eager, run.reference, *TOLERANCES[run.cell.axes.dtype])
        problems += [f"eager with AC vs eager without AC: {p}" for p in found]
        n += len(run.reference.outputs) + len(run.reference.grads)
    return n, problems


def assert_op_counts(run: Run) -> int:
    """The case's exact (``Expect.ops``) and lower-bound (``Expect.at_least``) op counts per graph kind, and its
    exact compile counters (``Expect.counters``)."""
    __tracebackhide__ = True
    expect = run.cell.case.expect
    exact, at_least = expect.op_counts(run.cell.axes)
    problems = []
    n = 0
    for bound, table in (("==", exact), (">=", at_least)):
        for kind, ops in table.items():
            counts = op_counts(run.graphs.get(kind, []))
            for op, want in ops.items():
                n += 1
                got = counts.get(op, 0)
                if (got != want) if bound == "==" else (got < want):
                    problems.append(f"{kind} graph: expected {op} {bound} {want}, saw {got}")
    for name, want in expect.counters.items():
        n += 1
        got = run.counters.get(name)
        if got != want:
            problems.append(f"compile counter {name}: expected == {want}, saw {got}")
    if problems:
        graphs = "\n".join(f"--- {k} ---\n{run.texts.get(k, '(not recorded)')}" for k in sorted(set(exact) | set(at_least)))
        raise AssertionError(f"{run.cell.id}: op counts differ from the case's expectations:\n  " + "\n  ".join(problems)
                             + f"\n{graphs}")
    return n


@dataclasses.dataclass(frozen=True)
class NamedChecks:
    """What a check made of named parts returns (a contract clause's oracle: harness/rows/contract.py): each part is
    its own verdict, ``<stage>:<name>`` (harness/core/suite.py ``Verdicts.check``), so a known failure pins one part and
    every other part must still pass."""

    passed: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (name, what was expected and what was seen)


def assert_raises_as_documented(cell, exc: BaseException | None) -> None:
    __tracebackhide__ = True
    exc_type, pattern = cell.case.expect.raises
    if exc is None:
        raise AssertionError(f"{cell.id}: expected {exc_type.__name__} matching {pattern!r}, but nothing was raised")
    if not isinstance(exc, exc_type) or not re.search(pattern, str(exc)):
        raise AssertionError(f"{cell.id}: expected {exc_type.__name__} matching {pattern!r}, "
                             f"saw {type(exc).__name__}: {str(exc)[:2000]}")


def count_of(run: Run, kind: str, op: str) -> int:
    return op_counts(run.graphs.get(kind, [])).get(op, 0)


def first_missing_in_order(seen: list, expected: list) -> int | None:
    """The index of the first item of ``expected`` not found in ``seen`` after the items before it (``expected`` is
    a subsequence of ``seen`` when None)."""
    pos = 0
    for i, want in enumerate(expected):
        try:
            pos = seen.index(want, pos) + 1
        except ValueError:
            return i
    return None


def expect_equal(what: str, seen, expected) -> None:
    """For a case's extra ``check``: one readable sentence on mismatch."""
    __tracebackhide__ = True
    if seen != expected:
        raise AssertionError(f"{what}: expected {expected!r}, saw {seen!r}")



def mask_replay(infer_mask, replay):
    """A case ``check`` for randomness consistency whatever the RNG stream: ``mask = infer_mask(compiled output)``;
    ``replay(program, mask)`` recomputes the outputs eagerly with that mask fixed (the program rebuilt as the compiled
    run started, without AC); the compiled outputs, input and parameter gradients must match the replay's.  A backward
    that recomputed a random op with another mask than the forward's fails it."""
    def check(run) -> None:
        __tracebackhide__ = True
        from harness.core.case import DTYPES, BuildContext
        from harness.core.pipeline import BUILD_SEED, cotangent_loss, flat_tensors

        case, axes = run.cell.case, run.cell.axes
        torch.manual_seed(BUILD_SEED)  # the same inputs and parameters the compiled run started from
        prog = case.build(BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=False))
        mask = infer_mask(run.compiled.outputs[0])
        kept = int(mask.sum())
        if not 0 < kept < mask.numel():
            raise AssertionError(f"{run.cell.id}: expected a dropout mask that keeps some but not all of "
                                 f"{mask.numel()} elements, saw {kept} kept: the oracle would be vacuous")
        outputs = flat_tensors(replay(prog, mask))
        cotangent_loss(outputs).backward()
        grads = {f"input[{i}]": t.grad for i, t in enumerate(flat_tensors(prog.inputs)) if t.requires_grad}
        grads.update({f"param {n}": p.grad for n, p in prog.named_params().items()})
        expected = Outcome([o.detach() for o in outputs], grads)
        problems = compare_outcomes(run.compiled, expected, *tolerance(run))
        if problems:
            raise AssertionError(f"{run.cell.id}: compiled run differs from an eager replay with the dropout mask "
                                 f"of the compiled forward ({kept} of {mask.numel()} kept), so backward did not "
                                 "replay the forward's randomness:\n  " + "\n  ".join(problems))
    return check


def dropout_oracle(out_index: int, in_index: int):
    """A case ``check`` for ``output = dropout-like(input)`` (elementwise, derivative non-zero where kept): the input
    gradient is non-zero exactly where the forward output is non-zero (positions where the input is exactly 0
    excepted).  Rule: the backward of dropout multiplies by the forward's mask, so it holds whatever the RNG stream."""
    def check(run) -> None:
        __tracebackhide__ = True
        from harness.core.pipeline import input_tensors

        y = run.compiled.outputs[out_index]
        grad = run.compiled.grads[f"input[{in_index}]"]
        check_dropout_oracle(run.cell.id, input_tensors(run.cell)[in_index], y, grad)

    return check


def check_dropout_oracle(cell_id: str, x, y, grad) -> int:
    __tracebackhide__ = True
    live = x.detach().cpu() != 0
    kept, flows = (y.cpu() != 0) & live, (grad.cpu() != 0) & live
    if not 0 < int(kept.sum()) < int(live.sum()):
        raise AssertionError(f"{cell_id}: expected a dropout mask that keeps some but not all of the {int(live.sum())} "
                             f"non-zero inputs, saw {int(kept.sum())} kept: the oracle would be vacuous")
    bad = (kept != flows).nonzero().tolist()
    if bad:
        raise AssertionError(f"{cell_id}: expected the input gradient to be non-zero exactly where the forward output "
                             f"is non-zero (the backward replays the forward's mask); they differ at {len(bad)} "
                             f"positions, first {bad[:5]}: forward kept {int(kept.sum())}, gradient flows through "
                             f"{int(flows.sum())}")
    return 1

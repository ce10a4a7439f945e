"""Assertions on a recorded run.  Each hides itself from tracebacks and fails with a sentence that names
the cell, the thing checked, what was expected and what was seen."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

import torch
import torch.fx as fx

from harness.normalize import target_str
from harness.pipeline import Outcome, Run

# (rtol, atol) per dtype; compiled graphs reorder and recompute, so exact equality is not promised.
TOLERANCES = {
    "float32": (1e-5, 1e-5),
    "float16": (1e-3, 1e-3),
    "bfloat16": (1.6e-2, 1e-2),
}

# RNG-wrapping higher-order ops: an occurrence of the wrapped op counts as the op (as upstream's count_ops does).
_RNG_WRAPPERS = {"run_and_save_rng_state": 0, "run_with_rng_state": 1, "graphsafe_run_with_rng_state": 0}


def op_name(node: fx.Node) -> str | None:
    if node.op not in ("call_function", "call_method", "call_module"):
        return None
    name = target_str(node)
    for wrapper, idx in _RNG_WRAPPERS.items():
        if wrapper in node.name or name.endswith(wrapper):
            inner = node.args[idx] if len(node.args) > idx else None
            if isinstance(inner, torch._ops.OpOverload):
                return str(inner)
    return name


def op_counts(gms: Iterable[fx.GraphModule]) -> Counter:
    """Ops of every graph of one kind, HOP bodies (subgraphs) included."""
    counts: Counter = Counter()
    for gm in gms:
        for node in gm.graph.nodes:
            name = op_name(node)
            if name:
                counts[name] += 1
        for _, sub in gm.named_children():
            if isinstance(sub, fx.GraphModule):
                counts.update(op_counts([sub]))
    return counts


def _mismatch(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> str | None:
    if actual is None or expected is None:
        if actual is None and expected is None:
            return None
        return f"{name}: one side has no gradient (compiled={'None' if actual is None else 'tensor'}, reference={'None' if expected is None else 'tensor'})"
    if type(actual) is not torch.Tensor and hasattr(actual, "__tensor_flatten__"):
        attrs, _ = actual.__tensor_flatten__()
        msgs = [_mismatch(f"{name}.{a}", getattr(actual, a), getattr(expected, a), rtol, atol) for a in attrs]
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
        problems.append(_mismatch(f"output[{i}]", a, e, rtol, atol))
    if set(actual.grads) != set(expected.grads):
        problems.append(f"gradient names {sorted(actual.grads)} != expected {sorted(expected.grads)}")
    for name in sorted(set(actual.grads) & set(expected.grads)):
        problems.append(_mismatch(f"grad of {name}", actual.grads[name], expected.grads[name], rtol, atol))
    return [p for p in problems if p]


def tolerance(run: Run) -> tuple[float, float]:
    return run.cell.case.tolerance or TOLERANCES[run.cell.axes.dtype]


def assert_numerics(run: Run) -> int:
    """Compiled-with-AC against eager with AC and eager without AC (outputs, input and parameter gradients).

    Returns the number of tensor comparisons made."""
    __tracebackhide__ = True
    case = run.cell.case
    rtol, atol = tolerance(run)
    problems: list[str] = []
    n = 0
    if run.comparisons:
        for name, actual, expected in run.comparisons:
            n += 1
            problems += [m for m in [_mismatch(name, torch.as_tensor(actual), torch.as_tensor(expected), rtol, atol)] if m]
    if run.compiled is not None and run.eager is not None and case.numerics == "exact":
        for label, ref in (("eager with AC", run.eager), ("eager without AC", run.reference)):
            found = compare_outcomes(run.compiled, ref, rtol, atol)
            n += len(ref.outputs) + len(ref.grads)
            problems += [f"compiled vs {label}: {p}" for p in found]
        found = compare_outcomes(run.eager, run.reference, rtol, atol)
        problems += [f"eager with AC vs eager without AC: {p}" for p in found]
        n += len(run.reference.outputs) + len(run.reference.grads)
    elif run.compiled is not None and run.eager is not None and case.numerics == "shape":
        for i, (a, e) in enumerate(zip(run.compiled.outputs, run.eager.outputs)):
            n += 1
            if a.shape != e.shape:
                problems.append(f"output[{i}]: shape {tuple(a.shape)} != eager {tuple(e.shape)}")
    if problems:
        raise AssertionError(f"{run.cell.id}: numerics mismatch:\n  " + "\n  ".join(problems))
    return n


def assert_op_counts(run: Run) -> int:
    """The case's exact (``expect``) and lower-bound (``expect_ge``) op counts per graph kind."""
    __tracebackhide__ = True
    exact, at_least = run.cell.case.expectations(run.cell.axes)
    problems = []
    n = 0
    for bound, table in (("==", exact), (">=", at_least)):
        for kind, ops in table.items():
            if kind == "counters":
                continue
            counts = op_counts(run.graphs.get(kind, []))
            for op, want in ops.items():
                n += 1
                got = counts.get(op, 0)
                if (got != want) if bound == "==" else (got < want):
                    problems.append(f"{kind} graph: expected {op} {bound} {want}, saw {got}")
    for bound, table in (("==", exact), (">=", at_least)):
        for name, want in table.get("counters", {}).items():
            n += 1
            got = run.counters.get(name)
            if (got != want) if bound == "==" else (got is None or got < want):
                problems.append(f"compile counter {name}: expected {bound} {want}, saw {got}")
    if problems:
        graphs = "\n".join(f"--- {k} ---\n{run.texts.get(k, '(not recorded)')}" for k in sorted(set(exact) | set(at_least)) if k != "counters")
        raise AssertionError(f"{run.cell.id}: op counts differ from the case's expectations:\n  " + "\n  ".join(problems)
                             + f"\n{graphs}")
    return n


def assert_raises_as_documented(cell, exc: BaseException | None) -> None:
    __tracebackhide__ = True
    exc_type, pattern = cell.case.raises
    if exc is None:
        raise AssertionError(f"{cell.id}: expected {exc_type.__name__} matching {pattern!r}, but nothing was raised")
    if not isinstance(exc, exc_type) or not re.search(pattern, str(exc)):
        raise AssertionError(f"{cell.id}: expected {exc_type.__name__} matching {pattern!r}, "
                             f"saw {type(exc).__name__}: {str(exc)[:2000]}")


def count_of(run: Run, kind: str, op: str) -> int:
    return op_counts(run.graphs.get(kind, [])).get(op, 0)


def expect_equal(what: str, seen, expected) -> None:
    """For a case's extra ``check``: one readable sentence on mismatch."""
    __tracebackhide__ = True
    if seen != expected:
        raise AssertionError(f"{what}: expected {expected!r}, saw {seen!r}")


def mapping_str(m: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(m.items()))

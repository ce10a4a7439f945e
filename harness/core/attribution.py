"""Whose fault is a verdict: attribution of numerics failures, and the "AC had no effect" verdict, with the run-time
evidence both rest on.

**Numerics attribution** (:func:`attribute`).  ``assert_numerics`` compares the compiled AC program with eager with
and without AC.  A mismatch of the compiled program is an AC defect only when it does not also happen without AC
(DEVELOPERS.md: "call something an AC defect only when it does not also happen without AC").  So when a numerics check
failed and eager with AC agreed with eager without AC, the same program is compiled *without* AC (code generated, the
same backend and partitioner; only then: a passing cell never pays for it), or taken from the runner where it made
that run itself (``Run.no_ac``: the export runners), and compared with eager without AC.  Every
tensor whose AC mismatch the no-AC compile shows too, with an error no more than :data:`EXPLAINED_RATIO` times smaller,
is a compile/backend difference: the failure becomes stage :data:`BACKEND_STAGE`, its message both errors side by
side.  A tensor that mismatches only with AC keeps the cell's numerics failure (an AC defect), with the no-AC compile's
verdict beside it.

**AC had no effect** (:func:`ac_effect_check`).  A cell whose policy should checkpoint something, yet whose compiled
backward does no more work than the same program compiled without AC and which saves what that one saves, fails
stage :data:`EFFECT_STAGE` only when the run-time evidence agrees (:func:`eager_evidence`: the eager programs with and
without AC, the tensors packed for backward through saved-tensor hooks and the ops a dispatch mode sees executed during
backward); where eager AC did recompute, the compiled program equals no AC because min-cut rematerializes the same
cheap ops of its own accord, which is no defect.  Only cases that
declare the check (``Expect(check=ac_effect_check(...))``: the user path and the real-model rows) are judged: a
suite row whose policy legitimately checkpoints nothing is not flagged.  The message names the policy, what it
wrapped and why nothing happened (blocks never called, one block that is the whole model, a save list that matched
every op, ...).

The run-time oracles (:func:`saved_for_backward`, :func:`ops_executed`) are plain context managers, reusable by any
check that needs to know what eager autograd actually did.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.core import analysis
from harness.core.case import DTYPES, Axes, BuildContext, Case
from harness.core.pipeline import (BUILD_SEED, RUN_SEED, Outcome, Run, compiled_without_ac, config_patches,
                                   cotangent_loss, flat_tensors)

BACKEND_STAGE = "backend_difference"
EFFECT_STAGE = "ac_effect"
# A tensor's AC mismatch is explained by the no-AC compile when that one's error on it is at least 1/EXPLAINED_RATIO
# of the AC error: the same backend reordering, not a larger difference hiding behind a small one.
EXPLAINED_RATIO = 10.0


# ------------------------------------------------------------------------------------------- run-time evidence

@dataclasses.dataclass
class Saved:
    """What :func:`saved_for_backward` counted."""

    tensors: int = 0
    bytes: int = 0


@contextlib.contextmanager
def saved_for_backward() -> Iterator[Saved]:
    """Count the tensors (and their bytes) autograd packs for backward while the block runs, through
    ``torch.autograd.graph.saved_tensors_hooks``.  A non-reentrant checkpoint pushes hooks of its own for its region,
    so what it saves does not reach these: the count is what is saved outside checkpointed regions (documented:
    hooks are a stack, the innermost pair packs; torch/autograd/graph.py ``saved_tensors_hooks``)."""
    seen = Saved()

    def pack(t):
        seen.tensors += 1
        seen.bytes += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def ops_executed() -> Iterator[_OpCounter]:
    """Count the aten ops dispatched while the block runs (``.count``).  Around ``loss.backward()`` it counts the
    gradient formulas plus any recomputation: the autograd engine carries the caller's dispatch modes into the
    backward (``at::ThreadLocalState``), and ops a selective-checkpoint cache serves from its saved outputs never
    reach an outer mode.  Compared with the same program without AC, an equal count means nothing was recomputed."""
    with _OpCounter() as counter:
        yield counter


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What one eager execution did: tensors and bytes saved outside checkpointed regions, ops run in backward."""

    saved: int
    saved_bytes: int
    backward_ops: int


def eager_evidence(case: Case, axes: Axes, ac: bool) -> Evidence:
    """The case's program built (seeded, as the pipeline builds it) with or without AC, run forward under
    :func:`saved_for_backward` and backward under :func:`ops_executed`."""
    torch.manual_seed(BUILD_SEED)
    prog = case.build(BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=ac))
    with config_patches(case, axes):
        torch.manual_seed(RUN_SEED)
        with saved_for_backward() as saved:
            raw = prog.fn(*prog.inputs, **prog.kwargs)
        loss = cotangent_loss(flat_tensors(raw))
        with ops_executed() as ops:
            if loss is not None:
                loss.backward()
    return Evidence(saved.tensors, saved.bytes, ops.count)


# ------------------------------------------------------------------------------------------- numerics attribution

def _max_abs(a, e) -> float | None:
    if a is None or e is None or a.shape != e.shape:
        return None
    return (a.detach().double().cpu() - e.detach().double().cpu()).abs().nan_to_num(float("inf")).max().item() \
        if a.numel() else 0.0


def _pairs(actual: Outcome, expected: Outcome) -> dict[str, tuple]:
    out = {f"output[{i}]": (a, e) for i, (a, e) in enumerate(zip(actual.outputs, expected.outputs))}
    out.update({f"grad of {n}": (actual.grads[n], expected.grads[n]) for n in actual.grads if n in expected.grads})
    return out


def attribute(run: Run | None, failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``failed`` with its numerics failure attributed (see the module docstring); unchanged when no numerics check
    failed, when eager with AC already differs from eager without AC, or when the cell has no compiled outcome."""
    from harness.core.checks import mismatch, tolerance

    numerics = [(s, m) for s, m in failed if s == "numerics"]
    if run is None or not numerics or run.compiled is None or run.reference is None or run.eager is None:
        return failed
    message = numerics[0][1]
    if "eager with AC vs eager without AC" in message:
        return failed  # eager checkpointing itself changes the result: no compile to blame
    rtol, atol = tolerance(run)
    # the runner's own path without AC where it made one (export), else the same program compiled without AC
    how = run.info.get("attribution", f"the same program compiled without AC ({run.cell.axes.backend})")
    what = run.info.get("compiled_as", "compiled")  # what the runner made of the program ("exported")
    try:
        plain = run.no_ac.compiled if run.no_ac is not None and run.no_ac.compiled is not None else \
            compiled_without_ac(run.cell.case, run.cell.axes)
    except Exception as e:  # noqa: BLE001 - the no-AC compile fails: the AC verdict stands, with why
        note = f"\n  (attribution: compiling without AC raised {type(e).__name__}: {str(e)[:300]})"
        return [(s, m + note if s == "numerics" else m) for s, m in failed]
    with_ac = _pairs(run.compiled, run.reference)
    without = _pairs(plain, run.reference)
    rows, unexplained = [], []
    for name, (a, e) in with_ac.items():
        bad = mismatch(name, a, e, rtol, atol)
        if bad is None:
            continue
        err_ac = _max_abs(a, e)
        pa, pe = without.get(name, (None, None))
        bad_plain = mismatch(name, pa, pe, rtol, atol) if name in without else f"{name}: not produced without AC"
        err_plain = _max_abs(pa, pe)
        explained = (bad_plain is not None and err_ac is not None and err_plain is not None
                     and err_ac <= EXPLAINED_RATIO * err_plain)
        if not explained:
            unexplained.append(name)
        rows.append(f"{name}:\n      {what} with AC    vs eager without AC: {bad.partition(': ')[2]}\n"
                    f"      {what} without AC vs eager without AC: "
                    f"{bad_plain.partition(': ')[2] if bad_plain else 'matches'}")
    if not rows:
        return failed
    if unexplained:
        note = (f"\n  attribution: {what} without AC vs eager without AC "
                + (f"also differs on {len(rows) - len(unexplained)} of these tensors, but not (or far less) on "
                   if len(unexplained) < len(rows) else "matches on ")
                + f"{', '.join(unexplained[:5])}: the difference comes with AC\n    " + "\n    ".join(rows))
        return [(s, m + note if s == "numerics" else m) for s, m in failed]
    text = (f"{run.cell.id}: compile/backend difference, not an AC defect: {what} with AC differs from eager "
            f"without AC, and {how} differs from it the same way (rtol={rtol:g} atol={atol:g}); eager with AC "
            f"matches eager without AC.\n    " + "\n    ".join(rows))
    return [(BACKEND_STAGE, text) if s == "numerics" else (s, m) for s, m in failed]


# ------------------------------------------------------------------------------------------- AC had no effect

def graphs_show_no_effect(run: Run) -> tuple[bool, str] | None:
    """(no effect, the figures) from the compiled graphs: the backward does no more work (FLOPs) than the same program
    compiled without AC and the saved activation bytes are equal (min-cut recomputes cheap ops with or without AC, so
    "nothing recomputed" is measured against the no-AC program); None when the run has no analysable backward."""
    a = analysis.of(run)
    if a is None:
        return None
    tagged = sum(len(g.policies) for g in a.graphs)
    plain = run.no_ac_figures  # run_cell's no-AC baseline (Needs.no_ac, an invariant's need): judging compiles nothing
    if plain is None:
        if tagged == 0:  # no checkpointed region reached the graphs: they are the program without AC
            return True, (f"compiled: no joint-graph node in a checkpointed region, backward {a.bw_flops} FLOPs, "
                          f"saved activations {a.activation_bytes} B: the graphs of the program without AC")
        return None
    same = a.activation_bytes == plain.activation_bytes and a.bw_flops == plain.bw_flops
    figures = (f"compiled: {tagged} joint-graph nodes in checkpointed regions, backward {a.bw_flops} FLOPs with AC vs "
               f"{plain.bw_flops} without ({a.recompute_flops} FLOPs recomputed), saved activations "
               f"{a.activation_bytes} B with AC vs {plain.activation_bytes} B without")
    return same, figures


def ac_effect_check(policy: str, wrapped: str | Callable[[], str],
                    why: Callable[[Run, Evidence, Evidence], list[str]] | None = None):
    """A case ``check`` (stage :data:`EFFECT_STAGE`): fail when AC had no effect (see the module docstring).
    ``policy`` and ``wrapped`` (or a callable giving it once the case was built) name the policy and what it wrapped
    for the message; ``why(run, with_ac, without)`` returns the reasons the caller can tell (blocks never called, ...)."""

    def check(run: Run) -> int:
        __tracebackhide__ = True
        what = wrapped() if callable(wrapped) else wrapped
        graphs = graphs_show_no_effect(run)
        if graphs is None or not graphs[0]:
            return 1 if graphs is not None else 0
        axes = dataclasses.replace(run.cell.axes, budget=None)
        with_ac, without = eager_evidence(run.cell.case, axes, True), eager_evidence(run.cell.case, axes, False)
        runtime = (f"eager: {with_ac.backward_ops} ops ran in backward with AC vs {without.backward_ops} without, "
                   f"{with_ac.saved} tensors ({with_ac.saved_bytes} B) saved outside checkpointed regions vs "
                   f"{without.saved} ({without.saved_bytes} B)")
        if with_ac.backward_ops > without.backward_ops or with_ac.saved < without.saved:
            # Eager AC recomputed: the policy works; compiled, min-cut without AC already chose the same (it
            # rematerializes cheap ops of its own accord), which is no defect.
            return 1
        reasons = why(run, with_ac, without) if why is not None else []
        raise AssertionError(
            f"{run.cell.id}: AC had no effect: policy {policy} ({what}) recomputed nothing and saved what the "
            f"program without AC saves; " + (f"why: {'; '.join(reasons)}; " if reasons else "")
            + f"{graphs[1]}; {runtime}")

    check.stage = EFFECT_STAGE
    return check

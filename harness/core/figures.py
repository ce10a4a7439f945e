"""The figures of a recorded run, in one place: what verdicts compare, what reports and the "summary" golden show, and
how a byte count is written.

* :class:`Figures`: what a comparison reads off a run's analysis (saved tensors, backward FLOPs, activation bytes),
  the unit the baseline cache stores (harness/core/baselines.py) and the invariants compare with;
* :func:`of`: the figures reports compare (the nightly's "recorded"): op counts per graph kind and
  :data:`SUMMARY_FIGURES`;
* :func:`summary_text` / :func:`parse_summary`: the "summary" golden and its figures read back;
* :func:`must_save_bytes`: what a joint graph must save whatever the budget (MUST_SAVE by policy or as a region
  boundary), on the partitioner's own scale;
* :func:`fmt_bytes`: the one byte formatter (plain for goldens, human for consoles and reports).
"""

from __future__ import annotations

import dataclasses
import re

import torch.fx as fx

from harness.core import analysis
from harness.core.analysis import Analysis, Saved

SUMMARY_FIGURES = ("saved_bytes", "activation_bytes", "rng_state_bytes", "fw_flops", "bw_flops", "recompute_flops")


@dataclasses.dataclass(frozen=True)
class Figures:
    """What a comparison reads off a run's analysis (an :class:`harness.core.analysis.Analysis` has the same names)."""

    saved: tuple[Saved, ...]
    bw_flops: int | None
    activation_bytes: int | None
    # The knapsacks the partitioner posed for this compile (harness.core.pipeline.KnapsackCall, in call order; empty
    # where the budget took no knapsack): what invariants.budget_knapsack_monotone compares along a sweep.
    knapsack: tuple = ()

    @classmethod
    def of(cls, a: Analysis, knapsack=()) -> Figures:
        return cls(tuple(a.saved), a.bw_flops, a.activation_bytes, tuple(knapsack))


def fmt_bytes(b: int | float | None, human: bool = False, none: str = "?") -> str:
    """A byte count as text: plain (``"1024"``, what goldens hold) or ``human`` (``"1.0 KiB"``); ``none`` for an
    unknown (symbolic) size."""
    if b is None:
        return none
    if not human:
        return str(b)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def _summary_figures(a: Analysis) -> dict:
    return {k: getattr(a, k) for k in SUMMARY_FIGURES}


def of(run) -> dict:
    """The figures of one recorded run that reports compare (the nightly's "recorded"): op counts per graph kind
    (live graphs, HOP bodies included), and from the analysis saved and activation bytes and FLOPs."""
    a = analysis.of(run)
    out: dict = {"ops": {k: dict(sorted(analysis.op_counts(gms).items())) for k, gms in sorted(run.graphs.items())
                         if gms}}
    out.update(_summary_figures(a) if a is not None else dict.fromkeys(SUMMARY_FIGURES))
    return out


def parse_summary(text: str) -> dict:
    """The figures a "summary" golden (:func:`summary_text`) states, read back: the golden side of a report's deltas."""
    out = dict.fromkeys(SUMMARY_FIGURES)
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in out:
            out[key] = None if value == "?" else int(value)
    return out


def summary_text(a: Analysis) -> str:
    """The reviewable figures of one cell (the "summary" golden)."""
    sym = re.compile(r"\b[su]\d+\b")  # symbol names depend on process history; their presence does not

    def shape(ty: str) -> str:
        return re.sub(r"\[[^\]]*\]", lambda m: sym.sub("s?", m.group()), ty)
    lines = [f"{k}: {fmt_bytes(v)}" for k, v in _summary_figures(a).items()]
    for i, g in enumerate(a.graphs):
        if len(a.graphs) > 1:
            lines.append(f"## graph {i}")
        lines.append(f"saved ({len(g.saved)} tensors, {fmt_bytes(g.saved_bytes)} bytes):")
        for s in g.saved:
            lines.append(f"  {s.name}: {shape(s.type)} {fmt_bytes(s.bytes)} bytes ({s.kind})")
        lines.append(f"recomputed in backward ({len(g.recomputed)} ops, {g.recompute_flops} flops):")
        lines += [f"  {name}: {op}" for name, op in g.recomputed]
        lines.append(f"flops: fw {g.fw_flops}, bw {g.bw_flops}")
    return "\n".join(lines) + "\n"


def must_save_bytes(joint: fx.GraphModule) -> int:
    """Bytes of the joint nodes the partitioner saves whatever the budget: tagged MUST_SAVE by a policy, or a region
    boundary ``cleanup_recompute_tags`` makes MUST_SAVE (harness.core.analysis.boundaries), measured like
    ``partitioners._size_of`` (the scale ``activation_memory_budget`` is defined on)."""
    from torch._functorch.partitioners import _size_of

    must = {n.name for n in joint.graph.nodes if analysis.policy_name(n) == "MUST_SAVE"} | set(analysis.boundaries(joint))
    return sum(_size_of(n) for n in joint.graph.nodes if n.name in must and "val" in n.meta)

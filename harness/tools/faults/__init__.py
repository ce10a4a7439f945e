"""The fault-injection kit: plausible regressions of torch's activation-checkpointing pipeline, each a small in-process
patch of torch's source, to measure what the suites catch (issue 29).

``AC_FAULT=<fault id>`` applies one fault after ``import torch`` in every process of a run: the suites' plugin
(harness/tools/plugin.py: the pytest controller and each xdist worker) and the 2-rank workers of
harness/tools/distributed.py call :func:`apply_from_env`.  The faults are in :mod:`.catalogue` (each with the torch file
it lives in, the stage of the pipeline and a one-line description), their probes in :mod:`.probes`; ``make mutate``
(:mod:`.mutate`) runs a selection against every fault and writes the kill matrix.
"""

from __future__ import annotations

import os
from typing import Callable

ENV = "AC_FAULT"

from harness.tools.faults.fault import STAGES, Fault  # noqa: F401 - the kit's vocabulary, re-exported


def faults() -> dict[str, Fault]:
    from harness.tools.faults.catalogue import FAULTS

    return {f.id: f for f in FAULTS}


_applied: dict[str, Callable[[], None]] = {}  # fault id -> its undo, for this process


def apply_from_env() -> str | None:
    """Apply the fault named by ``AC_FAULT`` (once per process); returns its id, or None when the variable is unset.
    An unknown id is an error: a run that was meant to be patched must not run unpatched."""
    fault_id = os.environ.get(ENV, "").strip()
    if not fault_id:
        return None
    if fault_id not in _applied:
        known = faults()
        if fault_id not in known:
            raise RuntimeError(f"{ENV}={fault_id!r}: no such fault (python -m harness.tools.faults list)")
        _applied[fault_id] = known[fault_id].apply()
    return fault_id


def applied() -> list[str]:
    """The faults applied in this process."""
    return list(_applied)


def undo_all() -> None:
    while _applied:
        _applied.popitem()[1]()


def rank_applied(rank: int, world_size: int) -> list[str]:
    """A distributed target (harness/tools/distributed.py): the faults applied in this rank's process."""
    return applied()

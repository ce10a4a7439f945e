"""A fault of the kit (harness/tools/faults): one regression of torch's AC pipeline as edits of a torch function."""

from __future__ import annotations

import dataclasses
from typing import Callable

# The stages of the pipeline, in order (a fault's ``stage``).
STAGES = ("eager", "sac", "dynamo", "aot", "partitioner", "budget", "inductor", "export")


@dataclasses.dataclass(frozen=True)
class Fault:
    """One regression: ``edits`` (old text, new text) applied to the source of the function ``target``
    (``"module:attribute.path"``), or ``remove`` items taken out of the module-level container ``target``."""

    id: str
    stage: str
    file: str  # the torch file the regression lives in, relative to site-packages (torch/...)
    target: str
    doc: str  # one line: the regression it simulates
    probe: str  # the probe (harness.tools.faults.probes) that passes without the fault and fails with it
    edits: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"fault {self.id}: stage {self.stage!r} is not one of {STAGES}")
        if bool(self.edits) == bool(self.remove):
            raise ValueError(f"fault {self.id}: give either source edits or container items to remove")

    def apply(self) -> Callable[[], None]:
        """Patch torch; returns the undo."""
        from harness.tools.faults.patching import patch_container, patch_source

        if self.edits:
            return patch_source(self.target, self.edits)
        return patch_container(self.target, self.remove)

"""API differences between the torch releases the harness supports (2.11 ... 2.14.x), in one place.

Each difference is a named function or constant with a ``reason``: what differs, on which releases, and how the
harness copes.  Nothing here imports a private torch module at import time, so this module loads on every release.

``cannot_run_reason(message)`` is what the compatibility report uses to tell "this cell cannot run on this release"
(a config knob or API that does not exist there, a declared ``torch>=`` requirement) from a real failure.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Difference:
    name: str
    reason: str
    # A failure or skip message matching this pattern means the cell cannot run on the release (not an error).
    pattern: str | None = None


def release() -> tuple[int, ...]:
    """The installed torch release as a tuple, e.g. (2, 14, 1) (local suffixes such as +cpu dropped)."""
    import torch

    return tuple(int(p) for p in re.findall(r"\d+", torch.__version__.split("+")[0])[:3])


# The known differences.  Patterns are matched against a cell's failure or skip message.
DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "declared_torch_requirement",
        "a case declares requires='torch>=X' (conftest skips it with 'needs torch>=X (installed ...)'): the feature "
        "it tests does not exist before X",
        r"needs torch>=[\d.]+ \(installed [^)]*\)"),
    Difference(
        "declared_api_requirement",
        "a case declares requires='api:<dotted name>' and the name is missing in this torch (conftest skips it with "
        "'needs <name>, missing in torch ...')",
        r"needs [\w.]+, missing in torch "),
    Difference(
        "missing_config_knob",
        "a case patches a torch config knob (torch._dynamo.config, torch._functorch.config, torch._inductor.config) "
        "that this release does not have; torch's config module raises '<module>.<name> does not exist'",
        r"AttributeError: (torch\._\w+\.config|torch\.\w+\.config)\.\w+ does not exist"),
)


def cannot_run_reason(message: str | None) -> str | None:
    """The difference (name: matched text) a failure or skip message shows, or None when it is not one."""
    if not message:
        return None
    for d in DIFFERENCES:
        if d.pattern and (hit := re.search(d.pattern, message)):
            return f"{d.name}: {hit.group(0)}"
    return None

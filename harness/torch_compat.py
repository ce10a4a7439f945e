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
    Difference(
        "missing_torch_api",
        "a case calls a torch function this release does not have (e.g. torch.compiler._patch_engine_backward on "
        "2.12.1) without declaring it in requires; Python raises \"module 'torch...' has no attribute '...'\"",
        r"AttributeError: module 'torch(\.\w+)*' has no attribute '\w+'"),
)


# Named API differences observed by running the suite on 2.11.0 ... 2.14.1 (make compat; probe: python -m
# harness.torch_compat in each release's environment).  Each: the dotted name, since when it exists, and what it gates.
REGION_ACTIVATION_MEMORY_BUDGET = Difference(
    "torch.autograd.graph.region_activation_memory_budget",
    "per-region activation memory budgets: absent in torch 2.11.0 and 2.12.1, present from 2.13.0; the memory_budget cases and "
    "error cases that need it declare requires='api:...' and are 'cannot run' before")
NON_STRICT_PATCH_APIS = Difference(
    "torch.compiler._non_strict_tracing_context,torch.compiler._patch_autograd_grad,torch.compiler._patch_engine_backward",
    "non-strict tracing and its autograd.grad / Engine backward patches: torch 2.11.0 has none of the three, 2.12.1 "
    "lacks _patch_engine_backward, 2.13.0+ has all; the non_strict cases call them unconditionally, so without a gate "
    "they fail with AttributeError on 2.11/2.12 (harness/cases/non_strict.py now declares NON_STRICT_REQUIRES)")
MARK_AUTOGRAD_BACKWARD = Difference(
    "torch.fx.traceback._mark_autograd_backward",
    "the node.meta['autograd_backward'] tagging of traced backward nodes: absent in torch 2.11.0, present from 2.12.1 (the non_strict "
    "cases reading it are gated by NON_STRICT_PATCH_APIS)")
INLINE_SINGLE_USE_INVOKE_SUBGRAPH = Difference(
    "torch._dynamo.config.inline_single_use_invoke_subgraph",
    "the Dynamo config knob keeping a single-use invoke_subgraph as a subgraph: absent in torch 2.11.0 and 2.12.1; the cases "
    "patching it (budget_invoke_subgraph_*, error_budget_distinct_per_invoke_subgraph) also need "
    "REGION_ACTIVATION_MEMORY_BUDGET, so they are gated by it; without that gate patching it raises "
    "'AttributeError: torch._dynamo.config.inline_single_use_invoke_subgraph does not exist' (missing_config_knob)")
OPTIMIZATION_HINT = Difference(
    "symbolic_shapes.optimization_hint",
    "torch >= 2.12 has torch.fx.experimental.symbolic_shapes.optimization_hint (a hint without guards, what the "
    "partitioner's memory estimate uses); 2.11 has only size_hint (same answer for backed symbols, and a "
    "fallback for unbacked ones): harness/peak.py uses whichever exists.")
API_DIFFERENCES = (OPTIMIZATION_HINT, REGION_ACTIVATION_MEMORY_BUDGET, NON_STRICT_PATCH_APIS, MARK_AUTOGRAD_BACKWARD,
                   INLINE_SINGLE_USE_INVOKE_SUBGRAPH)

CONFIG_MODULES = {"dynamo": "torch._dynamo.config", "functorch": "torch._functorch.config",
                  "inductor": "torch._inductor.config"}


def optimization_hint(a, fallback: int | None = None) -> int:
    """``symbolic_shapes.optimization_hint`` where it exists, else ``size_hint`` (see OPTIMIZATION_HINT)."""
    from torch.fx.experimental import symbolic_shapes

    hint = getattr(symbolic_shapes, "optimization_hint", None) or symbolic_shapes.size_hint
    return hint(a, fallback=fallback)


def has_api(dotted: str) -> bool:
    """Whether a dotted name (module path, then attributes) exists in the installed torch."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


def missing_config_knobs(config) -> list[str]:
    """The knobs of a case's ``config`` ({"dynamo": {...}, "functorch": {...}, "inductor": {...}}) that this torch's
    config modules do not have, as dotted names."""
    import importlib

    missing = []
    for ns, patch in (config or {}).items():
        module = importlib.import_module(CONFIG_MODULES[ns])
        for knob in patch:
            if knob not in getattr(module, "_config", {}) and not hasattr(module, knob):
                missing.append(f"{CONFIG_MODULES[ns]}.{knob}")
    return missing


def unmet_config(config) -> str | None:
    """Why a case patching ``config`` cannot run on the installed torch (a knob it patches does not exist), in the
    words ``cannot_run_reason`` recognises, or None (harness.case.Case.unmet_requirement asks)."""
    import torch

    missing = missing_config_knobs(config)
    if missing:
        return f"cannot run on torch {torch.__version__}: " + ", ".join(f"AttributeError: {m} does not exist" for m in missing)
    return None


def probe() -> dict:
    """Which named differences hold on the installed torch: dotted name -> present?"""
    return {name: has_api(name) for d in API_DIFFERENCES for name in d.name.split(",")}


def cannot_run_reason(message: str | None) -> str | None:
    """The difference (name: matched text) a failure or skip message shows, or None when it is not one."""
    if not message:
        return None
    for d in DIFFERENCES:
        if d.pattern and (hit := re.search(d.pattern, message)):
            return f"{d.name}: {hit.group(0)}"
    return None


if __name__ == "__main__":  # python -m harness.torch_compat: the differences on this torch
    import torch

    print(f"torch {torch.__version__}")
    for name, present in probe().items():
        print(f"  {'present' if present else 'MISSING'}  {name}")

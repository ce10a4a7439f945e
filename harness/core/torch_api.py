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
    # A behaviour (not a name one can probe) that exists from this release on, "2.13"; the cells observing it declare
    # requires torch>=since (case rows; a contract Gate, harness/rows/contract.py, is that requirement of the cells it
    # covers), and are skipped before it.
    since: str | None = None


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
# harness.core.torch_api in each release's environment).  Each: the dotted name, since when it exists, and what it gates.
REGION_ACTIVATION_MEMORY_BUDGET = Difference(
    "torch.autograd.graph.region_activation_memory_budget",
    "per-region activation memory budgets: absent in torch 2.11.0 and 2.12.1, present from 2.13.0; the memory_budget cases and "
    "error cases that need it declare requires='api:...' and are 'cannot run' before")
NON_STRICT_PATCH_APIS = Difference(
    "torch.compiler._non_strict_tracing_context,torch.compiler._patch_autograd_grad,torch.compiler._patch_engine_backward",
    "non-strict tracing and its autograd.grad / Engine backward patches: torch 2.11.0 has none of the three, 2.12.1 "
    "lacks _patch_engine_backward, 2.13.0+ has all; the non_strict cases call them unconditionally, so without a gate "
    "they fail with AttributeError on 2.11/2.12 (harness/rows/cases/non_strict.py now declares NON_STRICT_APIS); the "
    "nested_compile case enters _non_strict_tracing_context and declares requires='api:' on it alone (it passes on "
    "2.12.1)")
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
    "torch.fx.experimental.symbolic_shapes.optimization_hint",
    "torch >= 2.12 has torch.fx.experimental.symbolic_shapes.optimization_hint (a hint without guards, what the "
    "partitioner's memory estimate uses); 2.11 has only size_hint (same answer for backed symbols, and a "
    "fallback for unbacked ones): harness/core/peak.py uses whichever exists.")
API_DIFFERENCES = (OPTIMIZATION_HINT, REGION_ACTIVATION_MEMORY_BUDGET, NON_STRICT_PATCH_APIS, MARK_AUTOGRAD_BACKWARD,
                   INLINE_SINGLE_USE_INVOKE_SUBGRAPH)

# Behaviour differences: what a release does, not a name one can look up (the marker named in each reason is what the
# source shows, for a reader; the gate is the release, so a later rename upstream cannot turn a cell into a silent
# skip).  Found by the 2.11.0 compat run; ranges checked against 2.11.0, 2.12.1, 2.13.0, 2.14.0 and 2.14.1.
REMAT_FINDS_BACKWARD_REGION = Difference(
    "remat_finds_backward_region",
    "the forward-loss-backward remat pass (torch._functorch.config.remat_using_tags_for_fwd_loss_bwd_graph) finding "
    "the backward region itself: from torch 2.12.1 it reads node.meta['autograd_backward'], which Dynamo sets on what "
    "it traces of torch.autograd.grad / Tensor.backward (trace_autograd_ops), or a user "
    "fx.traceback.annotate({'phase': 'backward'}), and raises on several disjoint backward regions and on RNG ops in "
    "recompute regions with the texts the remat cases expect (pytorch#179105; marker: _has_user_phase_annotation in "
    "torch/_functorch/_activation_checkpointing/remat_using_tags_for_fwd_loss_bwd_graph_pass.py). torch 2.11.0's pass "
    "only knows the legacy annotation custom['remat_pass_tag'] == 'is_backward': it finds no backward region, returns "
    "the graph unchanged (no _recomputed node, none of the documented errors), and its Dynamo cannot trace "
    "Tensor.requires_grad_() under trace_autograd_ops. Every case of harness/rows/cases/remat.py declares torch>=2.12",
    since="2.12")
REMAT_SEVERAL_BACKWARD_REGIONS = Difference(
    "remat_several_backward_regions",
    "the remat pass accepting several disjoint backward regions (a chunked loss) and rematerializing the one that "
    "needs recomputation, raising 'Detected N disjoint backward regions that require recomputation' only when more "
    "than one does: from torch 2.13.0 (pytorch#180534; marker: _collect_backward_regions in "
    "remat_using_tags_for_fwd_loss_bwd_graph_pass.py). torch 2.12.1 rejects any graph with more than one backward "
    "region ('Detected N disjoint backward regions in the graph but remat only supports a single backward region'); "
    "2.11.0 has no region detection at all (remat_finds_backward_region). remat_chunked_loss and "
    "remat_two_backward_regions_raises declare torch>=2.13",
    since="2.13")
SAC_POLICY_OP_OUTPUT = Difference(
    "sac_policy_op_output",
    "SelectiveCheckpointContext.op_output (the policy is called after the op, with its output): from torch 2.12.1 "
    "(pytorch#175348); torch 2.11.0's context has only is_recompute, so a policy reading ctx.op_output raises "
    "AttributeError, in eager and while compiling. Gates the compiled cells of the contract clause "
    "sac.policy.forward_only before 2.12",
    since="2.12")
SAC_POLICY_FORWARD_ONLY = Difference(
    "sac_policy_forward_only",
    "the SAC policy called only in the forward (the recompute finds cached values by index; is_recompute always "
    "False), as SelectiveCheckpointContext's docstring says from torch 2.13.0 (pytorch#176455; marker: "
    "torch.utils.checkpoint._sac_storage_key). torch 2.12.1 and 2.11.0 call the policy again during eager "
    "recomputation with is_recompute=True and no op_output (None on 2.12.1, no attribute on 2.11.0). Gates the eager "
    "cells of the contract clause sac.policy.forward_only before 2.13 (its compiled cells pass on 2.12.1: the policy "
    "runs only while the forward is traced)",
    since="2.13")
COMPILED_AC_THROUGH_CHECKPOINT = Difference(
    "compiled_ac_through_checkpoint",
    "under torch.compile, a plain (non-selective) checkpoint region is traced through torch.utils.checkpoint.checkpoint "
    "with an always-recompute policy, so checkpoint's argument checks (determinism_check) run and their ValueError "
    "surfaces through torch.compile: from torch 2.12.1 (torch/_higher_order_ops/wrap.py tag_activation_checkpoint_impl, "
    "marker: _always_prefer_recompute). torch 2.11.0 runs the region's graph with an fx Interpreter and never calls "
    "checkpoint() when there is no context_fn, so checkpoint's keyword arguments are dropped unchecked. Gates the "
    "compiled cells of the contract clause ckpt.determinism.invalid before 2.12",
    since="2.12")
CHECKPOINT_SAVES_INPUTS_DIRECTLY = Difference(
    "checkpoint_saves_inputs_directly",
    "non-reentrant checkpoint saving its inputs as SavedTensors of its own frame (_CheckpointFrame.save_inputs): from "
    "torch 2.12.1 (pytorch#174327, 'No longer use autograd.Function to save inputs'). torch 2.11.0 saves them through "
    "the _NoopSaveInputs autograd.Function together with a 0-element dummy tensor, so an ambient "
    "saved_tensors_hooks pack hook also sees that dummy besides the checkpoint's inputs (gradients and the "
    "recompute are unaffected; the region's intermediates are still hidden). Gates the eager non-reentrant "
    "counting_hooks cell of the contract clause ckpt.saved_tensor_hooks, whose oracle counts what the outer hook "
    "packs, before 2.12",
    since="2.12")
TRACED_DETACH_AS_ALIAS = Difference(
    "traced_detach_as_alias",
    "make_fx tracing a checkpointed program (the non_strict and nested_compile cases) records the detaches that "
    "checkpoint and autograd insert (the saved and the recomputed activations) as aten.alias.default from torch 2.14.0 "
    "(nodes alias, alias_1, ...); 2.11.0 to 2.13.0 record aten.detach.default (detach, detach_1, ...), the rest of the "
    "graph being the same (the compat run's traced graphs of 2.13.0 against 2.14.0 and 2.14.1). The cases' expected node "
    "names and targets follow the release through traced_detach()",
    since="2.14")
RELEASE_DIFFERENCES = (REMAT_FINDS_BACKWARD_REGION, REMAT_SEVERAL_BACKWARD_REGIONS, SAC_POLICY_OP_OUTPUT,
                       SAC_POLICY_FORWARD_ONLY, COMPILED_AC_THROUGH_CHECKPOINT, CHECKPOINT_SAVES_INPUTS_DIRECTLY,
                       TRACED_DETACH_AS_ALIAS)

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
    words ``cannot_run_reason`` recognises, or None (harness.core.case.Case.unmet_requirement asks)."""
    import torch

    missing = missing_config_knobs(config)
    if missing:
        return f"cannot run on torch {torch.__version__}: " + ", ".join(f"AttributeError: {m} does not exist" for m in missing)
    return None


def has_release(since: str) -> bool:
    """Whether the installed torch is ``since`` ("2.13") or later."""
    return release() >= tuple(int(p) for p in since.split("."))


def traced_detach(name: str) -> tuple:
    """(node name, target) that the traced detach ``name`` ("detach", "detach_1", ...) has on the installed torch
    (TRACED_DETACH_AS_ALIAS)."""
    import torch

    if has_release(TRACED_DETACH_AS_ALIAS.since):
        return name.replace("detach", "alias", 1), torch.ops.aten.alias.default
    return name, torch.ops.aten.detach.default


def unmet_release(d: Difference) -> str | None:
    """Why a cell observing the behaviour ``d`` (one of RELEASE_DIFFERENCES) cannot run on the installed torch, in the
    words of a declared torch requirement (``cannot_run_reason`` recognises them), or None when the release has it."""
    import torch

    if d.since is None or has_release(d.since):
        return None
    return f"needs torch>={d.since} (installed {torch.__version__}): {d.name} (harness/core/torch_api.py)"


def probe() -> dict:
    """Which named differences hold on the installed torch: dotted name -> present? (behaviour differences: name ->
    whether the release has it)"""
    return ({name: has_api(name) for d in API_DIFFERENCES for name in d.name.split(",")}
            | {d.name: has_release(d.since) for d in RELEASE_DIFFERENCES})


def cannot_run_reason(message: str | None) -> str | None:
    """The difference (name: matched text) a failure or skip message shows, or None when it is not one."""
    if not message:
        return None
    for d in DIFFERENCES:
        if d.pattern and (hit := re.search(d.pattern, message)):
            return f"{d.name}: {hit.group(0)}"
    return None


if __name__ == "__main__":  # python -m harness.core.torch_api: the differences on this torch
    import torch

    print(f"torch {torch.__version__}")
    for name, present in probe().items():
        print(f"  {'present' if present else 'MISSING'}  {name}")

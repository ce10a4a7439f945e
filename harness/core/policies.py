"""torchtitan-style activation-checkpointing policies as small, reusable, parameterised objects.

Each policy is a frozen dataclass; a name is a shortcut for its defaults (``get("every_other_mm")``,
``get("selective_layer", every=3)``).  A policy applies itself to a model whose transformer blocks are in
``model.layers`` (an ``nn.ModuleList`` or ``nn.ModuleDict``, as in torchtitan), the way torchtitan's
``apply_ac`` / ``_apply_ac_to_transformer_block`` does:

================  ===========================================================================================
``none``          no AC (the reference)
``full``          every block wrapped: everything inside is recomputed
``selective_op``  every block wrapped with a selective-checkpoint ``context_fn``: the ops of ``save`` (mm, the SDPA
                  variants, reduce-scatter, max) are ``MUST_SAVE``, everything else ``PREFER_RECOMPUTE``
``every_other_mm``  ``selective_op`` with ``mm_save_every=2``: of the mms of a block, only every second one is saved
                  (torchtitan's op-level SAC: the 1st, 3rd, ... mm are recomputed, the 2nd, 4th, ... saved); counted
                  separately in the forward and in the recomputation, so both make the same choices
``selective_layer``  full AC on every ``every``-th block (torchtitan ``selective_ac_option="N"``: blocks N, 2N, ...)
``memory_budget``  no wrapping; ``torch._functorch.config.activation_memory_budget = budget`` while compiling: the
                  min-cut partitioner chooses what to save (only meaningful under ``torch.compile``)
================  ===========================================================================================

How a wrapped block is made (``via``):

* ``"wrapper"``: ``torch.distributed.algorithms._checkpoint.checkpoint_wrapper.checkpoint_wrapper`` (torchtitan's way);
* ``"apply_ac"``: ``apply_activation_checkpointing(model, checkpoint_wrapper_fn=..., check_fn=...)`` in place;
* ``"function"``: a :class:`Checkpointed` module calling ``torch.utils.checkpoint.checkpoint`` on the block.

All three keep the block as a child named ``_checkpoint_wrapped_module``; :func:`clean_name` strips that and the
other wrapper prefixes (``_orig_mod.`` of compile, ``module.`` of DDP) so parameter names compare across variants.

``policy.context()`` is the config patch the policy needs while the program is compiled (the partition happens at
the first compiled forward): run the first forward/backward inside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import defaultdict
from typing import ClassVar

import torch
import torch.nn as nn

# torchtitan's op-level save list (torchtitan/distributed/activation_checkpoint.py, _save_list / _op_sac_save_list):
# matmuls, every SDPA backend, the reduce-scatter of tensor/sequence parallel, and max (float8 amax).
DEFAULT_SAVE = (
    "aten.mm.default",
    "aten._scaled_dot_product_efficient_attention.default",
    "aten._scaled_dot_product_flash_attention.default",
    "aten._scaled_dot_product_flash_attention_for_cpu.default",
    "aten._scaled_dot_product_cudnn_attention.default",
    "aten._scaled_dot_product_attention_math.default",
    "aten._scaled_dot_product_fused_attention_overrideable.default",
    "_c10d_functional.reduce_scatter_tensor.default",
    "aten.max.default",
)
MM = "aten.mm.default"
_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def resolve_op(name: str):
    """"aten.mm.default" -> torch.ops.aten.mm.default; None when this torch lacks it (an SDPA backend, say)."""
    ns, op, overload = name.split(".")
    try:
        return getattr(getattr(getattr(torch.ops, ns), op), overload)
    except (AttributeError, RuntimeError):
        return None


def clean_name(name: str) -> str:
    """A parameter name without the wrappers' prefixes (checkpoint_wrapper, torch.compile, DDP)."""
    if name.startswith("module."):
        name = name[len("module."):]
    for p in _PREFIXES:
        name = name.replace(p, "")
    return name


def blocks_of(model: nn.Module) -> nn.Module:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (nn.ModuleList, nn.ModuleDict)):
        raise TypeError(f"expected model.layers to be an nn.ModuleList or nn.ModuleDict of blocks; seen {type(layers).__name__}")
    return layers


class Checkpointed(nn.Module):
    """``torch.utils.checkpoint.checkpoint`` around a block, as a module (the ``via="function"`` variant)."""

    def __init__(self, block: nn.Module, **checkpoint_kwargs):
        super().__init__()
        self._checkpoint_wrapped_module = block
        self.checkpoint_kwargs = checkpoint_kwargs

    def forward(self, *args, **kwargs):
        return torch.utils.checkpoint.checkpoint(self._checkpoint_wrapped_module, *args, use_reentrant=False,
                                                 **self.checkpoint_kwargs, **kwargs)


@dataclasses.dataclass(frozen=True)
class Policy:
    name: ClassVar[str] = "?"

    # --- what a subclass decides
    def wraps(self, index: int) -> bool:
        """Whether block ``index`` (0-based) is checkpointed."""
        return False

    def context_fn(self):
        """The ``context_fn`` passed to checkpoint (None: plain full recompute)."""
        return None

    def context(self):
        """Config patch needed while compiling (and running the first step)."""
        return contextlib.nullcontext()

    # --- shared machinery
    preserve_rng_state: bool = True  # torchtitan passes False (no dropout in its models); True keeps dropout exact

    def checkpoint_kwargs(self) -> dict:
        kw = {"preserve_rng_state": self.preserve_rng_state}
        if self.context_fn() is not None:
            kw["context_fn"] = self.context_fn()
        return kw

    def wrap(self, block: nn.Module, via: str = "wrapper") -> nn.Module:
        if via == "function":
            return Checkpointed(block, **self.checkpoint_kwargs())
        if via == "wrapper":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

            return checkpoint_wrapper(block, **self.checkpoint_kwargs())
        raise ValueError(f"via must be 'wrapper', 'function' or 'apply_ac'; seen {via!r}")

    def apply(self, model: nn.Module, via: str = "wrapper") -> nn.Module:
        """Checkpoint the blocks this policy selects, in place; returns ``model``."""
        layers = blocks_of(model)
        keys = list(layers.keys()) if isinstance(layers, nn.ModuleDict) else list(range(len(layers)))
        chosen = [layers[k] for i, k in enumerate(keys) if self.wraps(i)]
        if via == "apply_ac":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
                apply_activation_checkpointing, checkpoint_wrapper)

            ids = {id(b) for b in chosen}
            if ids:
                apply_activation_checkpointing(model, checkpoint_wrapper_fn=functools.partial(
                    checkpoint_wrapper, **self.checkpoint_kwargs()), check_fn=lambda m: id(m) in ids)
            return model
        for i, k in enumerate(keys):
            if self.wraps(i):
                layers[k] = self.wrap(layers[k], via)
        return model

    @property
    def id(self) -> str:
        """A short readable id with the non-default parameters, e.g. ``selective_layer2``."""
        return self.name


@dataclasses.dataclass(frozen=True)
class NoAC(Policy):
    name: ClassVar[str] = "none"


@dataclasses.dataclass(frozen=True)
class Full(Policy):
    name: ClassVar[str] = "full"

    def wraps(self, index):
        return True


def _sac_policy(save: frozenset, mm_save_every: int):
    from torch.utils.checkpoint import CheckpointPolicy

    mm = resolve_op(MM)

    def make():
        counts: dict = defaultdict(int)

        def policy(ctx, func, *args, **kwargs):
            mode = "recompute" if ctx.is_recompute else "forward"
            if func is mm:
                counts[mode] += 1
                if mm_save_every > 1 and counts[mode] % mm_save_every != 0:
                    return CheckpointPolicy.PREFER_RECOMPUTE
            return CheckpointPolicy.MUST_SAVE if func in save else CheckpointPolicy.PREFER_RECOMPUTE

        return policy

    return make


@dataclasses.dataclass(frozen=True)
class SelectiveOp(Policy):
    """Save the outputs of the ops in ``save`` (op names like ``"aten.mm.default"``; missing ones ignored)."""

    name: ClassVar[str] = "selective_op"
    save: tuple[str, ...] = DEFAULT_SAVE
    mm_save_every: int = 1  # 2: torchtitan's "save every other mm"

    def wraps(self, index):
        return True

    def ops(self) -> frozenset:
        return frozenset(op for op in map(resolve_op, self.save) if op is not None)

    def context_fn(self):
        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        make = _sac_policy(self.ops(), self.mm_save_every)
        return lambda: create_selective_checkpoint_contexts(make())

    @property
    def id(self):
        base = "every_other_mm" if self.mm_save_every == 2 else self.name + (f"_mm{self.mm_save_every}" if self.mm_save_every != 1 else "")
        return base if self.save == DEFAULT_SAVE else base + "_custom"


@dataclasses.dataclass(frozen=True)
class SelectiveLayer(Policy):
    name: ClassVar[str] = "selective_layer"
    every: int = 2

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1; seen {self.every}")

    def wraps(self, index):
        return (index + 1) % self.every == 0  # torchtitan: counter incremented per block, wrap when count % N == 0

    @property
    def id(self):
        return f"selective_layer{self.every}"


@dataclasses.dataclass(frozen=True)
class MemoryBudget(Policy):
    name: ClassVar[str] = "memory_budget"
    budget: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.budget <= 1.0:
            raise ValueError(f"budget must be in [0, 1]; seen {self.budget}")

    def context(self):
        return torch._functorch.config.patch(activation_memory_budget=self.budget)

    @property
    def id(self):
        return f"memory_budget{self.budget:g}"


POLICIES: dict[str, type[Policy]] = {"none": NoAC, "full": Full, "selective_op": SelectiveOp,
                                     "every_other_mm": SelectiveOp, "selective_layer": SelectiveLayer,
                                     "memory_budget": MemoryBudget}
_DEFAULTS = {"every_other_mm": {"mm_save_every": 2}}


def get(name: str, **params) -> Policy:
    """A policy by name with its defaults, overridden by ``params``."""
    if name not in POLICIES:
        raise KeyError(f"unknown AC policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name](**{**_DEFAULTS.get(name, {}), **params})


ALL = ("none", "full", "selective_op", "every_other_mm", "selective_layer", "memory_budget")

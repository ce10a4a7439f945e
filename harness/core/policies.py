"""torchtitan-style activation-checkpointing policies as small, reusable, parameterised objects.

Each policy is a frozen dataclass; a name is a shortcut for its defaults (``get("every_other_mm")``,
``get("selective_layer", every=3)``).  A policy applies itself to a model whose transformer blocks are in
``model.layers`` (an ``nn.ModuleList`` or ``nn.ModuleDict``, as in torchtitan), the way torchtitan's
``apply_ac`` / ``_apply_ac_to_transformer_block`` does:

================  ===========================================================================================
``none``          no AC (the reference)
``full``          every block wrapped: everything inside is recomputed
``selective_op``  every block wrapped with a selective-checkpoint ``context_fn``: the ops of ``save`` (torchtitan 0.3.0's
                  list, :func:`torchtitan_save_list`) are ``MUST_SAVE``, everything else ``PREFER_RECOMPUTE``
``every_other_mm``  ``selective_op`` with ``mm_save_every=2``: of the mms of a block, only every second one is saved
                  (torchtitan 0.3.0's ``SelectiveAC``: the 1st, 3rd, ... mm/linear are saved, the 2nd, 4th, ... recomputed); counted
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

def torchtitan_save_list() -> tuple[str, ...]:
    """torchtitan 0.3.0's op-level save list (torchtitan/distributed/activation_checkpoint.py ``_get_default_save_ops``),
    as op names: the partitioner's compute-intensive ops of this torch (``get_default_op_list().compute_intensive_ops``:
    mm, addmm, bmm, convolution, the SDPA forward kernels, ...), the other SDPA variants, ``max`` (float8 amax),
    FlexAttention, ``linear``, ``topk`` (MoE routing), inductor's compiled-code HOP, and the reduce-scatter and
    all-to-all of tensor/expert parallelism.  Not in it (as in torchtitan): ``_scaled_dot_product_flash_attention_for_cpu``,
    so attention is recomputed on CPU.  torchtitan's optional deepep/hybridep/varlen ops are left out (extensions)."""
    from torch._functorch.partitioners import get_default_op_list

    intensive = sorted(f"{op}.default" for op in get_default_op_list().compute_intensive_ops)
    return tuple(dict.fromkeys(intensive + [
        "aten._scaled_dot_product_cudnn_attention.default",
        "aten._scaled_dot_product_attention_math.default",
        "aten._scaled_dot_product_fused_attention_overrideable.default",
        "aten.max.default",
        "higher_order.flex_attention",
        "aten.linear.default",
        "aten.topk.default",
        "higher_order.inductor_compiled_code",
        "_c10d_functional.reduce_scatter_tensor.default",
        "_c10d_functional.all_to_all_single.default",
    ]))


DEFAULT_SAVE = torchtitan_save_list()
MM = ("aten.mm.default", "aten.linear.default")  # what torchtitan counts for "every other mm"
_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def resolve_op(name: str):
    """"aten.mm.default" -> torch.ops.aten.mm.default, "higher_order.flex_attention" -> the HOP; None when this torch
    lacks it (an SDPA backend, say) or the name is malformed."""
    parts = name.split(".")
    if len(parts) not in (2, 3) or (len(parts) == 2) != (parts[0] == "higher_order"):
        return None
    try:
        obj = torch.ops
        for part in parts:
            obj = getattr(obj, part)
        return obj
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

    def apply(self, model: nn.Module, via: str = "wrapper", containers: list[nn.Module] | None = None) -> nn.Module:
        """Checkpoint the blocks this policy selects, in place; returns ``model``.  ``containers``: the ModuleLists,
        ModuleDicts or Sequentials holding the blocks, numbered across them in order (default: ``[model.layers]``)."""
        slots = [(c, k) for c in (containers if containers is not None else [blocks_of(model)])
                 for k in (list(c.keys()) if isinstance(c, nn.ModuleDict) else range(len(c)))]
        chosen = [(c, k) for i, (c, k) in enumerate(slots) if self.wraps(i)]
        if via == "apply_ac":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
                apply_activation_checkpointing, checkpoint_wrapper)

            ids = {id(c[k]) for c, k in chosen}
            if ids:
                apply_activation_checkpointing(model, checkpoint_wrapper_fn=functools.partial(
                    checkpoint_wrapper, **self.checkpoint_kwargs()), check_fn=lambda m: id(m) in ids)
            return model
        for c, k in chosen:
            c[k] = self.wrap(c[k], via)
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
    """torchtitan's ``SelectiveAC`` policy: the ops of ``save`` are MUST_SAVE, the rest PREFER_RECOMPUTE; of the
    mm/linear calls (counted apart in the forward and in the recomputation, so both choose alike) only the 1st,
    (N+1)th, ... are saved with ``mm_save_every=N`` (torchtitan, N=2: ``count % 2 == 0`` is recomputed)."""
    from torch.utils.checkpoint import CheckpointPolicy

    mms = tuple(filter(None, map(resolve_op, MM)))

    def make():
        counts: dict = defaultdict(int)

        def policy(ctx, func, *args, **kwargs):
            mode = "recompute" if ctx.is_recompute else "forward"
            if func in mms:
                counts[mode] += 1
                if mm_save_every > 1 and (counts[mode] - 1) % mm_save_every != 0:
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
        if self.save == DEFAULT_SAVE:
            return base
        import hashlib  # a custom save list: its digest, so two lists never share a cell id

        return f"{base}_save{len(self.save)}-{hashlib.sha1('+'.join(self.save).encode()).hexdigest()[:6]}"

    def unknown_ops(self) -> list[str]:
        """Names of ``save`` that name no op of this torch (bad input where a user wrote them)."""
        return [n for n in self.save if resolve_op(n) is None]


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

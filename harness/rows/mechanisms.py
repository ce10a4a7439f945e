"""Models' own activation-checkpointing mechanisms, as policies: how each turns AC on, off, and how to tell it is on.

Most users do not wrap blocks themselves: they call their library's switch.  Each :class:`Mechanism` here is one such
switch, read from the library's source (versions of the ``models`` dependency group, pyproject.toml):

==========================  ==========================================================================================
``hf``                      HuggingFace transformers 5.x ``activation_checkpointing_enable(activation_checkpointing_kwargs=
                            ...)`` (``gradient_checkpointing_enable`` is its deprecated alias); on: any module's
                            ``gradient_checkpointing`` flag; off: ``activation_checkpointing_disable()``.  It checkpoints
                            only while ``model.training`` (modeling_layers.GradientCheckpointingLayer).  ``hf_reentrant``:
                            the same with ``use_reentrant=True``.
``timm``                    timm ``set_grad_checkpointing(True/False)``; on: any module's ``grad_checkpointing`` flag.
``torchtitan_full``,        torchtitan 0.3.0 ``FullAC(FullAC.Config()).apply(model)`` / ``SelectiveAC``: each child of
``torchtitan_selective``    ``model.layers`` wrapped by ``checkpoint_wrapper`` (torchtitan/distributed/activation_checkpoint.py).
``checkpoint_sequential``   ``torch.utils.checkpoint.checkpoint_sequential(model, segments, x, use_reentrant=False)`` on an
                            ``nn.Sequential`` model (one positional input).
``own``                     the model as the factory returns it checkpoints itself (any mechanism above, or
                            ``checkpoint_wrapper`` / ``apply_activation_checkpointing`` applied by the factory); the
                            reference is the same model with that mechanism turned off.  A factory taking ``ac: bool``
                            is asked for both instead (``factory(ac=False)`` is the reference).
==========================  ==========================================================================================

:func:`detect` says which mechanisms are on in a model: the user path refuses a harness policy on top of them
(double AC) and uses them to build the reference of ``own``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn as nn


def _wrapper_types() -> tuple[type, ...]:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    from harness.core.policies import Checkpointed

    return (CheckpointWrapper, Checkpointed)


def unwrap(model: nn.Module) -> int:
    """Replace every checkpoint wrapper (``checkpoint_wrapper``, the harness's ``Checkpointed``) in ``model`` by the
    module it wraps, in place; returns how many.  A wrapper that is the model itself cannot be replaced: refused."""
    kinds = _wrapper_types()
    if isinstance(model, kinds):
        raise ValueError("the model itself is a checkpoint wrapper; return the module it wraps")
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                parent.register_module(name, child._checkpoint_wrapped_module)
                n += 1
    return n


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """A model's own AC switch.  ``enable``/``disable`` act in place and return the model (``checkpoint_sequential``
    returns a new one)."""

    name: ClassVar[str] = "?"

    def enable(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def disable(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def on(self, model: nn.Module) -> str | None:
        """What of this mechanism is on in ``model`` (None: it is off)."""
        return None

    @property
    def id(self) -> str:
        return self.name

    def wraps(self, index: int) -> bool:  # the harness Policy interface: the blocks are the library's to choose
        return False


@dataclasses.dataclass(frozen=True)
class HF(Mechanism):
    name: ClassVar[str] = "hf"
    use_reentrant: bool = False
    every_n_layers: int = 1

    def enable(self, model):
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(model).__name__} has no HF gradient checkpointing "
                             f"(supports_gradient_checkpointing is not True)")
        kwargs = {"use_reentrant": self.use_reentrant}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name warns there
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=self.every_n_layers)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return model

    def disable(self, model):
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        elif hasattr(model, "gradient_checkpointing_disable"):
            model.gradient_checkpointing_disable()
        return model

    def on(self, model):
        flagged = [type(m).__name__ for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
        if not flagged:
            return None
        return (f"HF gradient checkpointing on {len(flagged)} module(s) ({', '.join(sorted(set(flagged)))})"
                + ("" if model.training else "; the model is in eval mode, where HF does not checkpoint"))

    @property
    def id(self):
        return "hf" + ("_reentrant" if self.use_reentrant else "") + (
            f"_every{self.every_n_layers}" if self.every_n_layers != 1 else "")


@dataclasses.dataclass(frozen=True)
class Timm(Mechanism):
    name: ClassVar[str] = "timm"

    def enable(self, model):
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"{type(model).__name__} has no set_grad_checkpointing (not a timm model)")
        model.set_grad_checkpointing(True)
        return model

    def disable(self, model):
        if hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(False)
        return model

    def on(self, model):
        flagged = [type(m).__name__ for m in model.modules() if getattr(m, "grad_checkpointing", False) is True]
        return f"timm grad_checkpointing on {', '.join(sorted(set(flagged)))}" if flagged else None


@dataclasses.dataclass(frozen=True)
class Wrappers(Mechanism):
    """Checkpoint wrappers put in by the factory (``checkpoint_wrapper``, ``apply_activation_checkpointing``,
    torchtitan): off = unwrapped."""

    name: ClassVar[str] = "checkpoint_wrapper"

    def disable(self, model):
        unwrap(model)
        return model

    def on(self, model):
        kinds = _wrapper_types()
        found = [type(m._checkpoint_wrapped_module).__name__ for m in model.modules() if isinstance(m, kinds)]
        return f"{len(found)} checkpoint wrapper(s) around {', '.join(sorted(set(found)))}" if found else None


@dataclasses.dataclass(frozen=True)
class Torchtitan(Wrappers):
    """torchtitan's ``FullAC`` / ``SelectiveAC`` (``selective=True``) with their default configs."""

    name: ClassVar[str] = "torchtitan"
    selective: bool = False

    def enable(self, model):
        from torchtitan.distributed import activation_checkpoint as tt

        cls = tt.SelectiveAC if self.selective else tt.FullAC
        lru = torch._C._dynamo.eval_frame._set_lru_cache
        try:
            cls(cls.Config()).apply(model)
        finally:
            lru(True)  # apply() turns Dynamo's LRU cache off process-wide (a PP/flex workaround); keep cells isolated
        return model

    @property
    def id(self):
        return "torchtitan_selective" if self.selective else "torchtitan_full"


class _Sequential(nn.Module):
    def __init__(self, seq: nn.Sequential, segments: int):
        super().__init__()
        self._checkpoint_wrapped_module, self.segments = seq, segments  # the name clean_name strips

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint_sequential

        return checkpoint_sequential(self._checkpoint_wrapped_module, self.segments, x, use_reentrant=False)


@dataclasses.dataclass(frozen=True)
class Sequential(Mechanism):
    name: ClassVar[str] = "checkpoint_sequential"
    segments: int = 2

    def enable(self, model):
        if not isinstance(model, nn.Sequential):
            raise ValueError(f"checkpoint_sequential needs an nn.Sequential model; the factory returned a "
                             f"{type(model).__name__}")
        if not 1 <= self.segments <= len(model):
            raise ValueError(f"segments={self.segments} for a Sequential of {len(model)} modules")
        return _Sequential(model, self.segments)

    def disable(self, model):
        return model._checkpoint_wrapped_module if isinstance(model, _Sequential) else model

    @property
    def id(self):
        return f"checkpoint_sequential{self.segments}"


@dataclasses.dataclass(frozen=True)
class Own(Mechanism):
    """The model as the factory returns it (or ``factory(ac=True)``): the reference turns off what :func:`detect`
    finds on."""

    name: ClassVar[str] = "own"

    def enable(self, model):
        return model

    def disable(self, model):
        for mech in DETECTABLE:
            if mech.on(model):
                model = mech.disable(model)
        return model


DETECTABLE = (HF(), Timm(), Wrappers())
MECHANISMS: dict[str, type[Mechanism]] = {"hf": HF, "hf_reentrant": HF, "timm": Timm, "torchtitan_full": Torchtitan,
                                          "torchtitan_selective": Torchtitan, "checkpoint_sequential": Sequential,
                                          "own": Own}
_DEFAULTS = {"hf_reentrant": {"use_reentrant": True}, "torchtitan_selective": {"selective": True}}


def get(name: str, **params) -> Mechanism:
    return MECHANISMS[name](**{**_DEFAULTS.get(name, {}), **params})


def detect(model: nn.Module) -> list[str]:
    """What of every detectable mechanism is on in ``model`` (empty: it does not checkpoint itself, as far as its
    structure shows; a ``checkpoint`` call inside a forward shows only in its graphs)."""
    return [what for what in (m.on(model) for m in DETECTABLE) if what]

"""A case from a model factory and an AC policy: what the ``ac_conformance`` fixture, ``ac-conformance check`` and the
real-model rows (harness/rows/cases/real_models.py) all check.

The factory: ``factory()`` (or with ``device=``, ``dtype=``, ``ac=`` where it takes them) returns ``(model, inputs)``.
Inputs are a tensor, a tuple (or list) of positional arguments, a dict of keyword arguments (``model(**batch)``, the
HF convention) or ``(args, kwargs)``; their floating tensors require grad (``input_grads=False`` keeps them as given),
so their gradients are compared too.  Outputs may be a tensor, a tuple, a dict or a ``ModelOutput``-like object: the
program reduces them to their floating tensors (named, e.g. ``logits``; :attr:`Described.outputs` says which).

The policy is a harness policy (harness/core/policies.py), which wraps *blocks*, or the model's own mechanism
(harness/rows/mechanisms.py).  Blocks are found in the common layouts (:data:`KNOWN_BLOCKS`: ``layers``,
``model.layers``, ``transformer.h``, ``blocks``, ``encoder.layer``, ...), else every outermost ``ModuleList`` /
``ModuleDict`` / ``Sequential`` of two or more modules of one class (T5's ``encoder.block`` and ``decoder.block``,
ResNet's ``layer1``..``layer4``), or where ``blocks=("a.b", ...)`` says (``"."``: the whole model as one block).
No blocks found is bad input: the whole model is never wrapped silently.  :attr:`Described.wrapped` names what was.

The reference is always the model without AC: a harness policy on a model that already checkpoints itself is refused
(double AC); ``own`` turns the model's mechanism off for the reference, a factory taking ``ac`` is asked for both.
Bad input raises :class:`InputError` (exit 3 on the command line) with a sentence saying what to fix; a model whose eager
run without AC fails is bad input too ("cannot run"), with the eager error.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.utils._pytree as pytree

from harness.core import attribution, policies
from harness.core.case import DTYPES, AxesSpec, Case, Checkpoint, CompileSpec, Expect, Numerics, Program
from harness.rows import mechanisms

BACKENDS = ("aot_eager", "inductor")
PARTITIONERS = ("min_cut", "default")
POLICY_ALIASES = {"per_layer": "selective_layer", "selective": "selective_op", "budget": "memory_budget",
                  "no_ac": "none", "gradient_checkpointing": "hf", "titan_full": "torchtitan_full",
                  "titan_selective": "torchtitan_selective"}
KNOWN_BLOCKS = ("layers", "model.layers", "model.model.layers", "model.language_model.layers", "transformer.h",
                "transformer.layers", "blocks", "encoder.layer", "bert.encoder.layer", "roberta.encoder.layer",
                "model.decoder.layers", "h")
POLICY_NAMES = tuple(policies.ALL) + tuple(mechanisms.MECHANISMS)


class InputError(Exception):
    """The user's input cannot be checked (exit 3): the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------------- factory

def _user_frames(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/harness/" not in f.filename]
    return "".join(traceback.format_list(frames[-3:])).rstrip()


def load_factory(spec: str) -> Callable[..., Any]:
    """``path/to/model.py:factory`` (or ``package.module:factory``) -> the callable."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise InputError(f"expected MODEL as path/to/model.py:factory, saw {spec!r}")
    if path.endswith(".py") or os.sep in path or "/" in path:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"model file {path} does not exist")
        mod_name = "ac_user_" + re.sub(r"\W", "_", file.stem)
        spec_ = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[mod_name] = module
        try:
            spec_.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's module fails to import: say where
            raise InputError(f"importing {path} raised {type(e).__name__}: {e}\n{_user_frames(e)}") from e
    else:
        try:
            module = importlib.import_module(path)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot import module {path!r}: {type(e).__name__}: {e}") from e
    factory = getattr(module, name, None)
    if factory is None:
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                       and v.__module__ == module.__name__)
        raise InputError(f"{path} has no factory named {name!r}; functions defined there: {found}")
    if not callable(factory):
        raise InputError(f"{path}:{name} is a {type(factory).__name__}, not a callable factory")
    return factory


def _accepts(factory) -> set[str]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return {"device", "dtype"}
    return {p.name for p in params}


def takes_ac(factory) -> bool:
    """Whether the factory builds the model with or without AC itself (``factory(ac: bool)``)."""
    return "ac" in _accepts(factory)


def normalize_inputs(inputs, name: str = "factory") -> tuple[tuple, dict]:
    """A tensor, a tuple/list of positional arguments, a dict of keyword arguments or ``(args, kwargs)`` ->
    ``(args, kwargs)``."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, dict):
        bad = [k for k in inputs if not isinstance(k, str)]
        if bad:
            raise InputError(f"{name}: dict inputs are keyword arguments, so their keys must be strings; saw {bad[:3]}")
        return (), dict(inputs)
    if (isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], (tuple, list))
            and isinstance(inputs[1], dict)):
        return tuple(inputs[0]), dict(inputs[1])
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise InputError(f"{name}: inputs must be a tensor, a tuple of arguments, a dict of keyword arguments or "
                     f"(args, kwargs); saw {type(inputs).__name__}")


def call_factory(factory: Callable[..., Any], device: str, dtype: torch.dtype, ac: bool | None = None
                 ) -> tuple[nn.Module, tuple, dict]:
    """The factory's ``(model, args, kwargs)``, checked: the shape of what it returns is the user's contract."""
    accepts = _accepts(factory)
    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype), ("ac", ac)) if k in accepts and v is not None}
    name = getattr(factory, "__qualname__", repr(factory))
    try:
        made = factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's factory raised: report it as bad input
        raise InputError(f"factory {name}() raised {type(e).__name__}: {e}\n{_user_frames(e)}") from e
    if not (isinstance(made, tuple) and len(made) == 2):
        raise InputError(f"factory {name}() must return (model, inputs), saw {type(made).__name__}")
    model, inputs = made
    if not isinstance(model, nn.Module):
        raise InputError(f"factory {name}() returned a {type(model).__name__} as the model; expected an nn.Module")
    args, kw = normalize_inputs(inputs, f"factory {name}()")
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"factory {name}(): the model has no parameters that require grad, so there is no backward "
                         f"to checkpoint (AC trades backward recomputation for memory); return a trainable model")
    return model, args, kw


# --------------------------------------------------------------------------------------------- policy

def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve_policy(policy) -> policies.Policy | mechanisms.Mechanism:
    """A policy or mechanism object as given, or one from a name (``selective-op`` and ``selective_op`` alike) with
    its defaults, or the command line's ``name:key=value,...`` form (``selective_layer:every=3``,
    ``selective_op:save=aten.mm.default+aten.max.default``, ``hf:use_reentrant=True``)."""
    if isinstance(policy, (policies.Policy, mechanisms.Mechanism)):
        resolved = policy
    elif not isinstance(policy, str):
        raise InputError(f"policy must be a harness.core.policies.Policy, a mechanism or a name, "
                         f"saw {type(policy).__name__}")
    else:
        name, _, rest = policy.partition(":")
        key = name.strip().replace("-", "_").lower()
        key = POLICY_ALIASES.get(key, key)
        if key not in policies.POLICIES and key not in mechanisms.MECHANISMS:
            close = difflib.get_close_matches(key, list(POLICY_NAMES) + list(POLICY_ALIASES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown AC policy {name!r}{hint}; known: {', '.join(POLICY_NAMES)}")
        params: dict[str, Any] = {}
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            if not eq:
                raise InputError(f"policy parameter {item!r}: expected key=value")
            k = k.strip()
            params[k] = tuple(v.split("+")) if k == "save" else _parse_value(v.strip())
        cls = policies.POLICIES.get(key) or mechanisms.MECHANISMS[key]
        try:
            resolved = policies.get(key, **params) if key in policies.POLICIES else mechanisms.get(key, **params)
        except (TypeError, ValueError) as e:
            fields = [f.name for f in dataclasses.fields(cls)]
            raise InputError(f"policy {key!r} with {params}: {e} (its parameters: {fields})") from e
    if isinstance(resolved, policies.SelectiveOp) and resolved.save != policies.DEFAULT_SAVE:
        unknown = resolved.unknown_ops()
        if unknown:
            raise InputError(f"policy {resolved.id}: save list names no op of torch {torch.__version__}: {unknown} "
                             f"(write ops as namespace.op.overload, e.g. aten.mm.default)")
    return resolved


def describe_policy(policy) -> str:
    """The policy with its parameters, e.g. ``selective_op(save=(aten.mm.default,), mm_save_every=1)``."""
    fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}
    shown = {k: (f"<torchtitan 0.3.0 save list, {len(v)} ops>" if k == "save" and v == policies.DEFAULT_SAVE
                 else repr(v)) for k, v in fields.items()}
    return f"{policy.id}({', '.join(f'{k}={v}' for k, v in shown.items())})"


# --------------------------------------------------------------------------------------------- blocks

def _container(m) -> bool:
    return isinstance(m, (nn.ModuleList, nn.ModuleDict, nn.Sequential))


def _homogeneous(m: nn.Module) -> bool:
    kids = list(m.children())
    return (len(kids) >= 2 and len({type(k) for k in kids}) == 1
            and all(any(True for _ in k.parameters()) for k in kids))


def find_blocks(model: nn.Module, paths: Iterable[str] | None = None) -> list[str]:
    """The paths of the containers holding ``model``'s blocks (``"."``: the model itself is the one block)."""
    names = dict(model.named_modules())
    if paths:
        out = []
        for p in paths:
            if p in (".", ""):
                out.append(".")
                continue
            if p not in names:
                near = difflib.get_close_matches(p, [n for n, m in names.items() if _container(m)], n=3)
                raise InputError(f"--blocks {p}: the model has no submodule {p!r}"
                                 + (f"; containers it has: {near}" if near else ""))
            if not _container(names[p]):
                raise InputError(f"--blocks {p}: {type(names[p]).__name__} is not a ModuleList, ModuleDict or "
                                 f"Sequential of blocks")
            out.append(p)
        return out
    for p in KNOWN_BLOCKS:
        if p in names and _container(names[p]) and len(names[p]) > 0:
            return [p]
    if _container(model) and _homogeneous(model):
        return [""]  # the model is itself the list of blocks (an nn.Sequential of blocks)
    found: list[str] = []
    for n, m in names.items():
        if n and _container(m) and _homogeneous(m) and not any(n.startswith(f + ".") for f in found):
            found.append(n)
    if not found:
        raise InputError(f"found no blocks to checkpoint in {type(model).__name__}: no {', '.join(KNOWN_BLOCKS[:6])}, "
                         f"... and no ModuleList/ModuleDict/Sequential of two or more blocks of one class; pass "
                         f"--blocks ATTR.PATH (blocks=... in the fixture), or --blocks . to checkpoint the whole "
                         f"model as one block")
    return found


def block_names(model: nn.Module, paths: list[str]) -> list[str]:
    """Every block's qualified name, in the order policies number them."""
    out = []
    for p in paths:
        if p == ".":
            out.append(f"(the whole {type(model).__name__})")
            continue
        c = model.get_submodule(p)
        out += [f"{p}.{k}" if p else str(k) for k in (c.keys() if isinstance(c, nn.ModuleDict) else range(len(c)))]
    return out


def apply_policy(policy: policies.Policy, model: nn.Module, paths: list[str], via: str) -> nn.Module:
    """``policy`` on the blocks under ``paths`` of ``model``; returns the model (a new one for ``"."``)."""
    if paths == ["."]:
        holder = nn.ModuleList([model])
        policy.apply(model, via=via, containers=[holder])
        return holder[0]
    policy.apply(model, via=via, containers=[model.get_submodule(p) for p in paths])
    return model


# --------------------------------------------------------------------------------------------- the program

def floating_outputs(raw) -> tuple[list[torch.Tensor], list[str]]:
    """The floating tensors of a model's output (tensor, tuple, dict, ``ModelOutput``: pytree leaves), named."""
    leaves, _ = pytree.tree_flatten_with_path(raw)
    if len(leaves) == 1 and leaves[0][1] is raw and hasattr(raw, "keys") and hasattr(raw, "__getitem__"):
        leaves, _ = pytree.tree_flatten_with_path({k: raw[k] for k in raw.keys()})  # an unregistered Mapping-like
    tensors, names = [], []
    for path, leaf in leaves:
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            tensors.append(leaf)
            names.append(pytree.keystr(path).lstrip(".") or "output")
    return tensors, names


class UserProgram(Program):
    """Parameter names without the wrappers' prefixes, so the AC and no-AC programs' gradients pair up."""

    def named_params(self) -> dict[str, torch.Tensor]:
        return {policies.clean_name(n): p for n, p in self.module.named_parameters() if p.requires_grad}


@dataclasses.dataclass
class Described:
    """What the user's case does, for the console and the report."""

    policy: str  # describe_policy(...)
    wrapped: str  # what the policy wrapped, in words
    wrapped_blocks: list[str] = dataclasses.field(default_factory=list)
    blocks: list[str] = dataclasses.field(default_factory=list)  # every block found
    outputs: list[str] = dataclasses.field(default_factory=list)  # the floating outputs compared
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ModelCase:
    case: Case
    described: Described
    policy: Any


def _program(model: nn.Module, args: tuple, kwargs: dict, device, dtype, input_grads: bool, seen: Described):
    leaves, spec = pytree.tree_flatten((args, kwargs))
    tensors = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().to(device=device, dtype=dtype if leaf.is_floating_point() else leaf.dtype)
            t.requires_grad_(input_grads and t.is_floating_point())
            tensors.append(t)
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

    def fn(*flat):
        full = list(leaves)
        for i, t in zip(where, flat):
            full[i] = t
        a, kw = pytree.tree_unflatten(full, spec)
        outs, names = floating_outputs(model(*a, **kw))
        if not seen.outputs:
            seen.outputs[:] = names
        return tuple(outs)

    return UserProgram(fn, tuple(tensors), module=model)


def _blocks_of(policy, model: nn.Module, blocks, described: Described) -> list[str]:
    """The block containers of ``model`` and, into ``described``, every block and the ones ``policy`` wraps."""
    paths = find_blocks(model, blocks)
    names = block_names(model, paths)
    wrapped = [n for i, n in enumerate(names) if policy.wraps(i)]
    described.blocks, described.wrapped_blocks = names, wrapped
    kinds = sorted({type(b).__name__ for p in paths for b in ([model] if p == "." else model.get_submodule(p).children())})
    described.wrapped = (f"{len(wrapped)} of {len(names)} block(s) under {', '.join(p or '(the model)' for p in paths)} "
                         f"({', '.join(kinds)}): {', '.join(wrapped[:8])}{' ...' if len(wrapped) > 8 else ''}")
    described.warnings += _wrap_whole_warning(paths, names)
    if not wrapped:
        described.warnings.append(f"policy {policy.id} wraps none of the {len(names)} block(s)")
    return paths


def _wrap_whole_warning(paths, names) -> list[str]:
    return (["the whole model is one checkpointed block (--blocks .): everything, embeddings and head included, is "
             "recomputed; its peak can exceed the peak without AC"] if paths == ["."] else [])


def model_case(factory: Callable[..., Any], policy, *, name: str | None = None,
               backends: Iterable[str] = ("aot_eager",), budgets: Iterable[float | None] = (None,),
               partitioners: Iterable[str] = ("min_cut",), device: str = "cpu", dtype: str = "float32",
               tolerance: tuple[float, float] | None = None, via: str = "wrapper", input_grads: bool = True,
               blocks: Iterable[str] | None = None, area: str = "user", check_backends: Callable[[str], str | None]
               | None = None, preflight: bool = True, lazy: bool = False, **case_fields) -> ModelCase:
    """The case a factory and policy make (validated: raises :class:`InputError`).  ``lazy``: call nothing now (a
    case row, declared at import where the model's library may be missing); the blocks are found at the first build
    and a problem is the build's error."""
    policy = resolve_policy(policy)
    backends, partitioners = tuple(backends), tuple(partitioners)
    budgets = tuple(None if b is None else float(b) for b in budgets) or (None,)
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    for p in partitioners:
        if p not in PARTITIONERS:
            raise InputError(f"unknown partitioner {p!r}; use one of {PARTITIONERS}")
    for b in budgets:
        if b is not None and not 0.0 <= b <= 1.0:
            raise InputError(f"budget {b}: activation_memory_budget must be in [0, 1]")
    for backend in backends:
        problem = (check_backends or (lambda b: None if b in BACKENDS else f"unknown backend {b!r}"))(backend)
        if problem:
            raise InputError(problem)
    own_ac = takes_ac(factory)
    mechanism = isinstance(policy, mechanisms.Mechanism)
    fname = getattr(factory, "__name__", "model")
    described = Described(describe_policy(policy), "")
    wraps_blocks = not mechanism and not isinstance(policy, (policies.NoAC, policies.MemoryBudget))
    paths: list[str] = []
    if lazy:
        described.wrapped = f"{policy.id} (the blocks are found when the case is built)"
    else:
        torch.manual_seed(0)
        model, _, _ = call_factory(factory, device, DTYPES[dtype], ac=False if own_ac else None)
        on = mechanisms.detect(model)
    if not lazy and mechanism:
        if isinstance(policy, mechanisms.Own):
            if own_ac:
                described.wrapped = f"what {fname}(ac=True) checkpoints (the reference: {fname}(ac=False))"
            else:
                if not on:
                    raise InputError(f"policy own: the model {fname}() returns does not checkpoint itself (no HF "
                                     f"gradient checkpointing, timm grad_checkpointing or checkpoint wrapper found); "
                                     f"turn its AC on in the factory, give the factory an ac: bool parameter, or "
                                     f"use a harness policy (--policy full)")
                described.wrapped = "; ".join(on) + " (the reference: the same model with it turned off)"
        else:
            if on and not own_ac:
                raise InputError(f"the model already checkpoints itself ({'; '.join(on)}); policy {policy.id} would "
                                 f"turn AC on a second time and its reference would not be the model without AC: "
                                 f"check it with --policy own, or return the model without AC")
            try:
                probe = policy.enable(model)
            except (ValueError, TypeError, AttributeError, KeyError, ImportError) as e:
                raise InputError(f"policy {policy.id} cannot be applied to {type(model).__name__}: "
                                 f"{type(e).__name__}: {e}") from e
            described.wrapped = "; ".join(mechanisms.detect(probe)) or f"{policy.id} on {type(model).__name__}"
    elif not lazy:
        if on:
            raise InputError(f"the model already checkpoints itself ({'; '.join(on)}); policy {policy.id} on top would "
                             f"checkpoint twice and compare against a reference that still checkpoints: check the "
                             f"model's own AC with --policy own, or return the model without AC"
                             + (" (the factory takes ac: pass ac=False there)" if own_ac else ""))
        if not isinstance(policy, (policies.NoAC, policies.MemoryBudget)):
            paths = _blocks_of(policy, model, blocks, described)
            try:
                apply_policy(policy, model, paths, via)
            except (TypeError, ValueError) as e:
                raise InputError(f"policy {policy.id} cannot be applied to the model: {e}") from e
        else:
            described.wrapped = "no blocks (" + ("no AC)" if isinstance(policy, policies.NoAC) else
                                                "the partitioner chooses under the budget)")

    def build(ctx):
        model, args, kwargs = call_factory(factory, ctx.device, ctx.dtype, ac=ctx.ac if own_ac else None)
        model = model.to(device=ctx.device, dtype=ctx.dtype)
        if mechanism:
            if not own_ac:
                model = policy.enable(model) if ctx.ac else policy.disable(model)
        elif ctx.ac and wraps_blocks:
            if not paths:
                paths[:] = _blocks_of(policy, model, blocks, described)
            model = apply_policy(policy, model, paths, via)
        return _program(model, args, kwargs, ctx.device, ctx.dtype, input_grads, described)

    config = {"inductor": {"fallback_random": True}}  # inductor draws eager's random numbers: numerics comparable
    if isinstance(policy, policies.MemoryBudget):
        config["functorch"] = {"activation_memory_budget": policy.budget}
    kind = (Checkpoint.SAC if isinstance(policy, policies.SelectiveOp) else
            Checkpoint.NONE if not mechanism and not wraps_blocks else Checkpoint.CHECKPOINT_WRAPPER)
    should_checkpoint = mechanism or bool(described.wrapped_blocks) or (lazy and wraps_blocks)
    expect = Expect(check=attribution.ac_effect_check(described.policy, lambda: described.wrapped,
                                                      functools.partial(_why_no_effect, policy, paths, described))
                    ) if should_checkpoint else Expect()
    case = Case(f"{name or fname}_{policy.id}", build, checkpoint=kind,
                axes=AxesSpec(partitioners=partitioners, backends=backends, devices=(device,), dtypes=(dtype,),
                              budgets=budgets),
                compile=CompileSpec(config=config), numerics=Numerics(tolerance=tolerance), area=area, expect=expect,
                notes=f"policy {policy!r}", **case_fields)
    if preflight and not lazy:
        _preflight(case, device, dtype)
    return ModelCase(case, described, policy)


def _preflight(case: Case, device: str, dtype: str) -> None:
    """The eager run without AC (cached: the cells reuse it); failing, the model cannot be checked here."""
    from harness.core.pipeline import eager

    try:
        eager(case, device, dtype, False)
    except Exception as e:  # noqa: BLE001 - the model itself fails without AC: cannot run, not wrong
        first = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
        raise InputError(f"cannot run: the model fails in eager without AC on {device} ({type(e).__name__}: "
                         f"{first}); nothing about checkpointing can be judged\n{_user_frames(e)}") from e


# --------------------------------------------------------------------------------------------- what a run did

def _wrapper_calls(case: Case, axes) -> int:
    """How often the forward of the eager AC program called a checkpoint wrapper."""
    from harness.core.case import BuildContext

    kinds = mechanisms._wrapper_types()
    torch.manual_seed(0)
    prog = case.build(BuildContext(device=axes.device, dtype=DTYPES[axes.dtype], ac=True))
    calls = [0]
    handles = [m.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
               for m in prog.module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            prog.fn(*prog.inputs, **prog.kwargs)
    finally:
        for h in handles:
            h.remove()
    return calls[0]


def _why_no_effect(policy, paths: list[str], described: Described, run, with_ac, without) -> list[str]:
    reasons = []
    if isinstance(policy, policies.Policy) and paths:
        if not described.wrapped_blocks:
            reasons.append(f"{policy.id} selects none of the {len(described.blocks)} block(s) "
                           f"{described.blocks[:4]}")
        elif _wrapper_calls(run.cell.case, run.cell.axes) == 0:
            reasons.append(f"the {len(described.wrapped_blocks)} wrapped block(s) ({', '.join(described.wrapped_blocks[:4])}) "
                           f"were never called by the model's forward: it calls other modules (a list the forward "
                           f"does not use?); point --blocks at the blocks it calls")
        if paths == ["."]:
            reasons.append("the one block is the whole model")
    sel = saved_ops(run)
    if sel and sel["tagged"] and sel["tagged"] == sel["saved_tagged"]:
        reasons.append(f"the save list matched every op of the checkpointed region(s) ({sel['tagged']} ops saved)")
    if isinstance(policy, mechanisms.Mechanism) and "eval mode" in described.wrapped:
        reasons.append("the model is in eval mode, where its mechanism does not checkpoint")
    if not reasons:
        reasons.append("no structural cause found: the evidence below is all there is")
    return reasons


def saved_ops(run) -> dict | None:
    """For a selective policy: the ops of the joint graphs' checkpointed regions by op, how many the policy tagged
    to save ({op: (in regions, saved)}), and the totals; None without a joint graph."""
    joints = run.graphs.get("joint", []) if run is not None else []
    if not joints:
        return None
    from harness.core.analysis import op_name, policy_name

    per: dict[str, list[int]] = {}
    tagged = saved = 0
    for g in joints:
        for n in g.graph.nodes:
            p = policy_name(n)
            if p is None or n.op != "call_function":
                continue
            op = op_name(n) or str(n.target)
            row = per.setdefault(op, [0, 0])
            row[0] += 1
            tagged += 1
            if p in ("MUST_SAVE", "PREFER_SAVE"):
                row[1] += 1
                saved += 1
    return {"ops": per, "tagged": tagged, "saved_tagged": saved}


def save_list_summary(policy, run) -> tuple[str, bool] | None:
    """A selective policy's report: which of its save-list ops the model contains and how many it saved; (text,
    saved nothing)."""
    if not isinstance(policy, policies.SelectiveOp):
        return None
    sel = saved_ops(run)
    if sel is None:
        return None
    names = set(policy.save)
    found = {op: v for op, v in sel["ops"].items() if op in names or f"{op}.default" in names}
    total = sum(s for _, s in found.values())
    text = (f"save list ({len(policy.save)} ops): the model's checkpointed regions contain "
            + (", ".join(f"{op} x{n} ({s} saved)" for op, (n, s) in sorted(found.items())) or "none of them")
            + f"; {total} saved of {sel['tagged']} tagged ops")
    return text, total == 0


def op_histogram(names: Iterable[str]) -> str:
    return ", ".join(f"{op} x{c}" for op, c in sorted(Counter(names).items()))

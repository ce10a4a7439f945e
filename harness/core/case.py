"""The vocabulary of the case database: a `Case` is one declarative row per scenario, expanded over its axes into cells.

A case says *what* to run (a builder), *how it is checkpointed* (the builder calls ``ctx.checkpoint``,
which is the real ``torch.utils.checkpoint.checkpoint`` or a pass-through, so one definition yields the
program with and without AC), *where* it runs (its axes) and *what must hold* (expectations, errors,
extra checks).  Tests are templates expanded over cells; a cell's id is stable and readable:
``tags_function-min_cut-aot_eager-cpu-float32``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils.checkpoint as tuc

from harness.core import torch_api

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def no_checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check=None,
                  debug=None, preserve_rng_state=True, early_stop=None, **kwargs):
    """Drop-in for ``torch.utils.checkpoint.checkpoint`` that runs ``function`` plainly (the no-AC reference)."""
    return function(*args, **kwargs)


@dataclasses.dataclass
class BuildContext:
    """What a builder receives: where to put tensors, which checkpoint to call and (a program that compiles its own
    parts, ``Composition.COMPILE_INSIDE``) which compiler."""

    device: str
    dtype: torch.dtype
    ac: bool  # False: the same program with checkpointing removed (the no-AC reference)
    variant: str = ""  # which of the case's Case.variants to build ("" for a case without variants)
    compiler: Any = None  # the cell's recording backend where the program is compiled, None in eager runs
    fullgraph: bool = False  # for ctx.compile (CompileSpec.fullgraph)
    # Where compile sits relative to checkpointing (the cell's composition axis): ``ctx.checkpoint`` is that
    # composition's checkpoint, compiling with ``compiler`` (eager references: the same composition, nothing compiled).
    composition: Composition = None  # type: ignore[assignment]  # None: Composition.COMPILE_OUTSIDE
    # The cell's ambient state (AmbientState): one that enters autocast inside the region wraps the checkpointed
    # function, with and without AC alike.
    ambient: str = ""
    # compile_block's compiled functions, by function (equal bound methods share one): compiled once per program
    _blocks: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def checkpoint(self) -> Callable[..., Any]:
        chosen = self._checkpoint()
        if not AmbientState(self.ambient).inside:
            return chosen

        def checkpoint_inside(function, *args, **kwargs):
            return chosen(autocast_inside(function, self.device), *args, **kwargs)

        return checkpoint_inside

    def _checkpoint(self) -> Callable[..., Any]:
        if not self.ac and self.composition in EAGER_CHECKPOINT - {Composition.COMPILED_MODEL_EAGER_BLOCKS}:
            return functools.partial(_compiled_block_call, self.compile_block)  # the same compiled blocks, no AC
        if not self.ac and self.composition is Composition.COMPILED_MODEL_EAGER_BLOCKS:
            return _eager_checkpoint(no_checkpoint)  # the same eager blocks (a graph break around each), no AC
        if not self.ac:
            return no_checkpoint
        if self.composition in (None, Composition.COMPILE_OUTSIDE, Composition.COMPILE_INSIDE):
            return tuc.checkpoint  # unchanged: the Dynamo graphs of the default cells must not see a wrapper
        return functools.partial(composed_checkpoint, self.composition, self.compile_block)

    def compile_block(self, target):
        """``target`` (a module or function) wrapped by ``torch.compile`` with the cell's backend, not in place (a
        built-in module's ``.compile()`` compiles nothing on torch 2.13: findings/module_compile_skips_builtin_modules.py);
        itself in eager runs."""
        if self.compiler is None:
            return target
        if isinstance(target, torch.nn.Module):
            return torch.compile(target, backend=self.compiler, fullgraph=self.fullgraph)
        # A function is compiled once per program, as a user compiles it once: a fresh torch.compile of a bound method
        # (an autograd.Function's ``apply`` is a new object at every access) recompiles on every call from torch 2.14
        # (its cache entry is guarded on the wrapped callable, "L['fn'] got deallocated"), where 2.13 reused the code
        # object's entry.
        if target not in self._blocks:
            self._blocks[target] = torch.compile(target, backend=self.compiler, fullgraph=self.fullgraph)
        return self._blocks[target]

    def compile(self, target):
        """``target`` (a module, compiled in place, or a function) compiled with the cell's backend in the compiled
        run, as it is in the eager runs: ``ctx.compile`` is to ``torch.compile`` what ``ctx.checkpoint`` is to
        ``checkpoint``, so one definition yields the compiled program and its eager references."""
        if self.compiler is None:
            return target
        if isinstance(target, torch.nn.Module):
            target.compile(backend=self.compiler, fullgraph=self.fullgraph)
            return target
        return torch.compile(target, backend=self.compiler, fullgraph=self.fullgraph)

    def randn(self, *shape, requires_grad=True, dtype=None):
        t = torch.randn(*shape, device=self.device, dtype=dtype or self.dtype)
        return t.requires_grad_(requires_grad)

    def module(self, m: torch.nn.Module) -> torch.nn.Module:
        return m.to(device=self.device, dtype=self.dtype)


@dataclasses.dataclass
class Program:
    """A built program: ``fn(*inputs)`` is what gets compiled.

    ``params`` are the named tensors whose gradients are compared besides the inputs'
    (by default the parameters of ``module``).
    """

    fn: Callable[..., Any]
    inputs: tuple
    module: torch.nn.Module | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Further calls of the same (compiled) function after the first, each an inputs tuple: repeated calls, where
    # guards decide whether it recompiles.  Their outputs and gradients join the outcome's, labelled by call.
    calls: tuple[tuple, ...] = ()
    # State the program mutates outside its tensors (a closure counter, hook calls, a module's buffers): read after
    # the run into Outcome.state, for the case's check.
    state: Callable[[], Any] | None = None

    def named_params(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            return {}
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}


@dataclasses.dataclass(frozen=True)
class Axes:
    """One cell's point on the axes (plain strings compare equal to the enum members)."""

    partitioner: str = "min_cut"
    backend: str = "aot_eager"
    device: str = "cpu"
    dtype: str = "float32"
    budget: float | None = None  # torch._functorch.config.activation_memory_budget, None = untouched
    composition: str = "compile_outside"  # Composition: where compile sits relative to checkpoint
    compiled_autograd: bool = False  # the backward compiled by compiled autograd (the cell's backend)
    ambient: str = ""  # AmbientState around every run of the cell ("": none)
    emulation: str = ""  # Emulation: what the cell's run stands in for on this device ("": nothing)
    # ExportMode of a Runner.EXPORTED_PROGRAM cell ("": not exported): its program is torch.export'ed and the exported
    # module run eagerly, so no partitioner or backend applies and its id names the export mode in their place
    export: str = ""

    @property
    def id(self) -> str:
        if self.export:  # <mode>_export-<device>-<dtype>: nothing is compiled, partitioner and backend do not apply
            return "-".join([f"{self.export}_export", self.device, self.dtype])
        parts = [self.partitioner, self.backend, self.device, self.dtype]
        if self.budget is not None:
            parts.append(f"budget{float(self.budget)!r}")  # budget0.0, not budget0: a known-failure prefix must not match budget0.5
        if self.composition != "compile_outside":  # the default composition is absent, so existing ids stay
            parts.append(str(self.composition))
        if self.compiled_autograd:
            parts.append("compiled_autograd")
        if self.ambient:
            parts.append(str(self.ambient))
        if self.emulation:
            parts.append(str(self.emulation))
        return "-".join(parts)

    @property
    def eager_checkpoint(self) -> bool:
        """Whether the cell's checkpointing runs in eager autograd, not through a partitioner: a composition that
        checkpoints outside the compiled code, or a Dynamo-only backend (the ``tag_activation_checkpoint`` HOP runs
        ``torch.utils.checkpoint`` itself: torch/_higher_order_ops/wrap.py ``tag_activation_checkpoint_impl``)."""
        return Composition(self.composition) in EAGER_CHECKPOINT or self.backend == Backend.EAGER


class Checkpoint(enum.StrEnum):
    """How a case checkpoints (reported by the memory report; the builder does the checkpointing)."""

    NON_REENTRANT = "non_reentrant"
    REENTRANT = "reentrant"
    SAC = "sac"  # selective AC: context_fn / create_selective_checkpoint_contexts
    CHECKPOINT_WRAPPER = "checkpoint_wrapper"  # torch.distributed's checkpoint_wrapper
    EAGER_WRAPPER = "eager_wrapper"
    FUZZ = "fuzz"  # a generated program (harness.tools.fuzz)
    NONE = "none"


class Runner(enum.StrEnum):
    """How a cell's program is taken through torch.  A row says *what* it is with one of these; one runner per member
    (harness/core/pipeline.py) knows *how*, and is the only code that compiles or traces a case's program.  Where
    compile and checkpoint sit relative to each other (``compile(checkpoint(f))``, ``checkpoint(compile(f))``, ...) is
    not a runner but an axis of the standard one (issue 27), next to partitioner and backend."""

    STANDARD = "standard"  # eager without and with AC, then torch.compile(fn) through the recording backend
    EXPORT = "export"  # fn exported to torch IR (torch.export), then compiled like aot_eager_decomp_partition
    # torch.export.export of the program (strict or not: the cell's ExportMode axis), then the exported program's
    # module (``ep.module()``) run eagerly forward and backward against eager with and without AC (issue 27 item 5)
    EXPORTED_PROGRAM = "exported_program"
    TRACE = "trace"  # make_fx of a program that computes its own gradients, under non-strict tracing (Case.trace)
    REMAT = "remat"  # one forward-loss-backward graph (trace_autograd_ops) compiled with the remat pass on and off
    JOINT_PASSES = "joint_passes"  # that graph before and after inductor's joint-graph passes
    EAGER = "eager"  # no compile: the program's eager call, for errors raised in eager code
    MEMORY = "memory"  # each variant compiled (aot_eager) and measured: allocator bytes across a forward (CUDA)
    # A clause of the checkpoint contract (harness/rows/contract.py): ``build`` is the clause's own program, which drives
    # torch itself (eagerly, or through ``ctx.compile``: the cell's backend and partitioner, recording nothing) and
    # returns its observations; the row's ``expect.check`` judges them, one verdict per named check.  One cell per
    # case, named as the case.
    CONTRACT = "contract"


class ExportMode(enum.StrEnum):
    """How ``Runner.EXPORTED_PROGRAM`` exports a program: ``torch.export.export(module, args, strict=...)``
    (torch/export/__init__.py).  Strict export captures the program with Dynamo (a checkpoint becomes the
    ``tag_activation_checkpoint`` HOP, then traced by AOT's pre-dispatch tracing); non-strict traces the Python
    program itself with make_fx (checkpoint's own code runs under the tracer).  An axis of those cells, in their id as
    ``<mode>_export``."""

    STRICT = "strict"
    NON_STRICT = "non_strict"


class Composition(enum.StrEnum):
    """Where torch.compile sits relative to checkpointing in the standard runner: an axis of the cells (issue 27),
    declared per case (``AxesSpec.compositions``, the ones its program supports).  The builder's ``ctx.checkpoint``
    is the composition's checkpoint; the eager references run the same composition with nothing compiled, so "eager
    with AC" is always the program the compiled one must equal.  ``COMPILE_OUTSIDE`` is the default and is absent from
    cell ids; ``COMPILE_INSIDE`` is a program that compiles its own parts (``CompileSpec.composition``, not an axis)."""

    COMPILE_OUTSIDE = "compile_outside"  # torch.compile(fn), fn calls ctx.checkpoint: compile(checkpoint(f))
    COMPILE_INSIDE = "compile_inside"  # fn runs eagerly and compiles its own parts with ctx.compile
    # checkpoint(torch.compile(f), use_reentrant=False): an eager non-reentrant checkpoint of a compiled region
    CHECKPOINT_OF_COMPILE = "checkpoint_of_compile"
    # the same with use_reentrant=True (a case's context_fn does not apply: reentrant checkpoint has none)
    CHECKPOINT_OF_COMPILE_REENTRANT = "checkpoint_of_compile_reentrant"
    # checkpoint(torch.compile(f), context_fn=<the case's, else SAC_AROUND_COMPILED_POLICY>): SAC around compiled code
    SAC_AROUND_COMPILED = "sac_around_compiled"
    # an eager model whose checkpointed blocks are compiled one by one: torch.compile(block) for a module (compiled
    # once per block), torch.compile(f) for a function; the case's own checkpoint arguments kept
    EAGER_MODEL_COMPILED_BLOCKS = "eager_model_compiled_blocks"
    # the reverse: torch.compile(model) whose checkpointed blocks run eagerly (the checkpoint call is
    # torch.compiler.disable'd: a graph break around each block), fullgraph off
    COMPILED_MODEL_EAGER_BLOCKS = "compiled_model_eager_blocks"
    # torch.distributed's checkpoint_wrapper (NO_REENTRANT) around a compiled module (the block torch.compile'd)
    CHECKPOINT_WRAPPER_OF_COMPILED = "checkpoint_wrapper_of_compiled"

    @property
    def compiles_outside(self) -> bool:
        """Whether the runner compiles the program's own ``fn`` (else the program compiles its parts via ctx)."""
        return self in (Composition.COMPILE_OUTSIDE, Composition.COMPILED_MODEL_EAGER_BLOCKS)


# Compositions whose checkpoint runs in eager autograd around (or between) compiled code: no partitioner sees it.
EAGER_CHECKPOINT = frozenset({Composition.CHECKPOINT_OF_COMPILE, Composition.CHECKPOINT_OF_COMPILE_REENTRANT,
                              Composition.SAC_AROUND_COMPILED, Composition.EAGER_MODEL_COMPILED_BLOCKS,
                              Composition.COMPILED_MODEL_EAGER_BLOCKS, Composition.CHECKPOINT_WRAPPER_OF_COMPILED})
# What a case whose checkpoint is non-reentrant and selective-policy free supports (most function cases).
NON_REENTRANT_COMPOSITIONS = (Composition.COMPILE_OUTSIDE, Composition.CHECKPOINT_OF_COMPILE,
                              Composition.CHECKPOINT_OF_COMPILE_REENTRANT, Composition.SAC_AROUND_COMPILED,
                              Composition.EAGER_MODEL_COMPILED_BLOCKS, Composition.COMPILED_MODEL_EAGER_BLOCKS,
                              Composition.CHECKPOINT_WRAPPER_OF_COMPILED)


# What a case whose non-reentrant checkpoint has a selective policy (a context_fn) supports: all but reentrant.  Also
# what a non-reentrant program supports whose region the reentrant variant would change (a kwarg it refuses, an
# output appended to a list, which reentrant checkpoint computes under no_grad: its docstring's list of differences).
SAC_COMPOSITIONS = tuple(c for c in NON_REENTRANT_COMPOSITIONS if c is not Composition.CHECKPOINT_OF_COMPILE_REENTRANT)
# What a case whose checkpoint is reentrant supports keeping it reentrant: the compositions that pass the case's own
# checkpoint arguments (use_reentrant=True) and the reentrant checkpoint of a compiled region.  The others make the
# checkpoint non-reentrant, another program.
REENTRANT_COMPOSITIONS = (Composition.COMPILE_OUTSIDE, Composition.CHECKPOINT_OF_COMPILE_REENTRANT,
                          Composition.EAGER_MODEL_COMPILED_BLOCKS, Composition.COMPILED_MODEL_EAGER_BLOCKS)


def sac_around_compiled_policy():
    """The selective policy SAC_AROUND_COMPILED puts around a compiled region whose case has none: save every matmul,
    recompute the rest (torchtitan's "op" policy in small)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    def policy(ctx, op, *args, **kwargs):
        return (CheckpointPolicy.MUST_SAVE if op in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
                else CheckpointPolicy.PREFER_RECOMPUTE)

    return create_selective_checkpoint_contexts(policy)


_CHECKPOINT_KWARGS = ("use_reentrant", "context_fn", "determinism_check", "debug", "preserve_rng_state",
                      "early_stop")


@functools.cache
def _eager_checkpoint(checkpoint=tuc.checkpoint):
    """``torch.utils.checkpoint.checkpoint`` (or the no-AC pass-through) hidden from Dynamo: called inside a compiled
    function it is a graph break, and runs eagerly (torch.compiler.disable), so the compiled model's program without
    AC has the same eager blocks as with AC (a partitioner that recomputes cheap ops in a whole-model graph would
    otherwise be the reference of the run-time oracles)."""
    return torch.compiler.disable(checkpoint, recursive=True)


def _compile_block(compile, fn):
    """``fn`` compiled once: a module is compiled as a module (cached on it), a function as a function (cached by
    ``BuildContext.compile_block`` for the program)."""
    if isinstance(fn, torch.nn.Module):
        cached = fn.__dict__.get("_ac_compiled")
        if cached is None:
            cached = fn.__dict__["_ac_compiled"] = compile(fn)
        return cached
    return compile(fn)


class _AsModule(torch.nn.Module):
    """A function as a module, for checkpoint_wrapper (which wraps modules)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _compiled_block_call(compile, function, *args, **kwargs):
    """The no-AC program of a composition that compiles its blocks: the block compiled as with AC, not checkpointed."""
    return no_checkpoint(_compile_block(compile, function), *args, **kwargs)


def composed_checkpoint(composition: Composition, compile, function, *args, **kwargs):
    """``checkpoint(function, *args, **kwargs)`` as ``composition`` arranges compile and checkpoint; ``compile`` is
    the cell's (identity in the eager references)."""
    ckpt = {k: kwargs.pop(k) for k in _CHECKPOINT_KWARGS if k in kwargs}
    if composition is Composition.COMPILED_MODEL_EAGER_BLOCKS:
        return _eager_checkpoint()(function, *args, **ckpt, **kwargs)
    block = _compile_block(compile, function)
    if composition is Composition.EAGER_MODEL_COMPILED_BLOCKS:
        return tuc.checkpoint(block, *args, **ckpt, **kwargs)
    if composition is Composition.CHECKPOINT_OF_COMPILE_REENTRANT:
        if ckpt.get("context_fn") is not None:
            raise ValueError("a reentrant checkpoint takes no context_fn: the case does not support this composition")
        return tuc.checkpoint(block, *args, use_reentrant=True,
                              preserve_rng_state=ckpt.get("preserve_rng_state", True), **kwargs)
    ckpt["use_reentrant"] = False
    if composition is Composition.SAC_AROUND_COMPILED and ckpt.get("context_fn") is None:
        ckpt["context_fn"] = sac_around_compiled_policy
    if composition is Composition.CHECKPOINT_WRAPPER_OF_COMPILED:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

        ckpt.pop("use_reentrant")
        wrapped = checkpoint_wrapper(_AsModule(block), checkpoint_impl=CheckpointImpl.NO_REENTRANT, **ckpt)
        return wrapped(*args, **kwargs)
    return tuc.checkpoint(block, *args, **ckpt, **kwargs)


class Partitioner(enum.StrEnum):
    MIN_CUT = "min_cut"  # min_cut_rematerialization_partition
    DEFAULT = "default"  # default_partition


class Backend(enum.StrEnum):
    AOT_EAGER = "aot_eager"  # the recording aot_autograd backend
    INDUCTOR = "inductor"
    # Dynamo only: the captured graph runs as is, no AOTAutograd, no partitioner (the checkpoint HOP runs
    # torch.utils.checkpoint eagerly); the graph invariants do not apply, the run-time oracles judge.
    EAGER = "eager"
    # upstream's aot_eager_decomp_partition: inductor's decompositions and min-cut with compiler="inductor", graphs
    # run as traced (torch/_dynamo/backends/debugging.py), recorded like aot_eager's
    AOT_EAGER_DECOMP_PARTITION = "aot_eager_decomp_partition"

    @property
    def partitions(self) -> bool:
        """Whether a partitioner (hence the partitioner axis) applies."""
        return self is not Backend.EAGER

    @property
    def own_partitioner(self) -> bool:
        """Whether the backend fixes its partitioner (min-cut) whatever the partitioner axis says."""
        return self in (Backend.INDUCTOR, Backend.AOT_EAGER_DECOMP_PARTITION)


class AmbientState(enum.StrEnum):
    """State a cell's program runs under without saying so, as a training loop would set it around its step: an axis
    of the cells (issue 27 item 4), absent from ids when none.  Each value is combined with a case's compositions
    where the documentation says the combination works (the rule it relies on is next to each value); every run of the
    cell (eager references, the compile, the probes) is under it, so "eager with AC" is always the same program.
    No composition is excluded by these rules: each is checkpoint's own (it records and re-enters the autocast state,
    checks only ``torch.is_grad_enabled()``, pushes its hooks over the ambient ones) and holds wherever compile sits,
    compiled code being guarded on the grad mode and the autocast state it was compiled under (torch/_dynamo/guards.py
    ``GLOBAL_STATE``: ``torch._C._dynamo.guards.GlobalStateGuard`` holds ``grad_mode`` and ``autocast_state``).  Compiled autograd under a grad-disabled state would be vacuous (no backward): no case declares
    the two together.

    (``Case.ambient``, the older :class:`Ambient`, is not a value of this axis: it sets autocast for every cell of a
    case without naming it in ids, and the autocast cases' dtypes are float16 and bfloat16 on CUDA; folding it in
    would rename their cells and goldens.)"""

    NONE = ""
    # torch.autograd.graph.save_on_cpu(): saved-tensor hooks around the whole call, under which a non-reentrant
    # checkpoint pushes its own (the documented stack: the innermost pair packs, torch/autograd/graph.py)
    SAVE_ON_CPU = "save_on_cpu"
    # torch.autocast(<cell device>, bfloat16) outside the compiled call, as a training loop enters it (numerics with
    # checks.AUTOCAST_TOLERANCE).  Rule: checkpoint records the autocast state of the forward and recomputes under
    # it (torch/utils/checkpoint.py: ``_get_autocast_kwargs`` at the forward, ``recompute_fn`` / ``CheckpointFunction
    # .backward`` re-enter ``torch.amp.autocast(**those kwargs)``), so the recompute casts as the forward did.
    AUTOCAST_BF16 = "autocast_bf16"
    # torch.autocast(<cell device>, bfloat16) entered by the checkpointed function itself, around its body (the
    # region's own autocast; where the composition compiles the block, inside the compiled block).  Rule: checkpoint
    # recomputes "by re-invoking :attr:`function` in the backward pass" (its docstring), so the recompute enters the
    # same autocast; autocast contexts nest and are local to the code they wrap (torch.amp docs, "Autocasting":
    # "autocast ... can be nested"), and the backward runs outside them, as the docs ask ("Backward passes under
    # autocast are not recommended").
    AUTOCAST_BF16_INSIDE = "autocast_bf16_inside"
    # both: autocast outside the compiled call and again inside the region (the same dtype; nested autocast).
    AUTOCAST_BF16_BOTH = "autocast_bf16_both"
    # torch.no_grad() around each call of the (compiled) function, the program built outside it: an evaluation
    # pass.  Rule: a non-reentrant checkpoint with grad disabled runs the function plainly and installs no hooks
    # (torch/utils/checkpoint.py ``_checkpoint_without_reentrant_generator``: ``if not torch.is_grad_enabled():
    # yield; return``) and a reentrant one runs it under no_grad anyway ("the reentrant variant ... runs with the
    # forward pass under torch.no_grad"): nothing is saved, there is no backward to recompute in, and the outputs are
    # the same as without AC.  Dynamo guards the grad mode (torch/_dynamo/guards.py GLOBAL_STATE) and compiles an
    # inference graph under it.
    NO_GRAD = "no_grad"
    # torch.inference_mode() around each call: the same rule (grad is disabled in inference mode: torch.autograd.grad_mode
    # ``inference_mode``: "analogous to no_grad"; checkpoint reads only ``torch.is_grad_enabled()``); Dynamo traces a
    # frame called in inference mode and restores the mode around it (torch/_dynamo/convert_frame.py
    # ``maybe_disable_inference_mode`` / ``_enter_inference_mode``) and guards the grad mode it implies.
    INFERENCE_MODE = "inference_mode"

    @property
    def autocast(self) -> bool:
        """Whether the cell runs (partly) under bf16 autocast: numerics at checks.AUTOCAST_TOLERANCE."""
        return self in (AmbientState.AUTOCAST_BF16, AmbientState.AUTOCAST_BF16_INSIDE, AmbientState.AUTOCAST_BF16_BOTH)

    @property
    def grad_disabled(self) -> bool:
        """Whether the calls run with grad disabled (no backward: nothing saved, nothing recomputed)."""
        return self in (AmbientState.NO_GRAD, AmbientState.INFERENCE_MODE)

    @property
    def inside(self) -> bool:
        """Whether the checkpointed function enters autocast itself (``BuildContext.checkpoint`` wraps it)."""
        return self in (AmbientState.AUTOCAST_BF16_INSIDE, AmbientState.AUTOCAST_BF16_BOTH)

    def context(self, device: str):
        """Entered around the whole run (building the program included)."""
        if self is AmbientState.SAVE_ON_CPU:
            return torch.autograd.graph.save_on_cpu()
        if self in (AmbientState.AUTOCAST_BF16, AmbientState.AUTOCAST_BF16_BOTH):
            return torch.autocast(device_type=device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def call_context(self):
        """Entered around each call of the function (the program is built outside it, as a model is)."""
        if self is AmbientState.NO_GRAD:
            return torch.no_grad()
        if self is AmbientState.INFERENCE_MODE:
            return torch.inference_mode()
        return contextlib.nullcontext()


def autocast_inside(function, device: str):
    """``function`` entering ``torch.autocast(device, bfloat16)`` around its body (AmbientState.AUTOCAST_BF16_INSIDE);
    a module stays a module (wrapped once, cached on it, so a composition compiling blocks compiles it once)."""
    if isinstance(function, torch.nn.Module):
        wrapped = function.__dict__.get("_ac_autocast_inside")
        if wrapped is None:
            wrapped = function.__dict__["_ac_autocast_inside"] = _AutocastInside(function, device)
        return wrapped

    @functools.wraps(function)
    def region(*args, **kwargs):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return function(*args, **kwargs)

    return region


class _AutocastInside(torch.nn.Module):
    def __init__(self, block: torch.nn.Module, device: str):
        super().__init__()
        self.block, self.device = block, device

    def forward(self, *args, **kwargs):
        with torch.autocast(device_type=self.device, dtype=torch.bfloat16):
            return self.block(*args, **kwargs)


class Emulation(enum.StrEnum):
    """What a cell's run stands in for because its device cannot do it, declared per case (``AxesSpec.emulation``)
    and named in the cell's id, so an emulated cell never passes for the real thing (issue 27 item 6)."""

    NONE = ""
    # User Triton kernels on CPU: Dynamo captures the @triton.jit kernel as on a GPU, its launches (eager and from the
    # compiled graphs) run in Triton's interpreter (harness/core/triton_emulation.py).  Real: the kernel's capture,
    # tags, partitioning, numerics; not: the GPU launch path, and inductor, which cannot codegen a user kernel for CPU.
    TRITON_INTERPRETER = "triton_interpreted"

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices whose cells run emulated (elsewhere the case's cells are real)."""
        return ("cpu",) if self is Emulation.TRITON_INTERPRETER else ()

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The backends an emulated cell can run on: those that run the captured graphs as traced (no codegen)."""
        if self is Emulation.TRITON_INTERPRETER:
            return (Backend.AOT_EAGER, Backend.AOT_EAGER_DECOMP_PARTITION, Backend.EAGER)
        return tuple(Backend)

    def context(self):
        """Entered around every run of an emulated cell (eager references, compiles, baselines), undone after."""
        if self is Emulation.TRITON_INTERPRETER:
            from harness.core.triton_emulation import interpreted_launches

            return interpreted_launches()
        return contextlib.nullcontext()


# The backends cases declared before issue 27 mean by "every backend" (``tuple(Backend)`` grew Dynamo-only ones).
STANDARD_BACKENDS = (Backend.AOT_EAGER, Backend.INDUCTOR)


class Decompositions(enum.StrEnum):
    INDUCTOR = "inductor"  # torch._inductor.decomposition.select_decomp_table()

    def table(self) -> dict:
        from torch._inductor.decomposition import select_decomp_table

        return select_decomp_table()


def _tuple_of(kind, value) -> tuple:
    """A tuple of ``kind`` from a tuple or one value (``Partitioner.MIN_CUT`` means ``(Partitioner.MIN_CUT,)``)."""
    values = (value,) if isinstance(value, str) or value is None or isinstance(value, float) else tuple(value)
    return tuple(v if kind is None or v is None else kind(v) for v in values)


@dataclasses.dataclass(frozen=True)
class AxesSpec:
    """The axes a case is declared on; its cells are their product (inductor only with min-cut)."""

    partitioners: tuple[Partitioner, ...] = tuple(Partitioner)
    backends: tuple[Backend, ...] = (Backend.AOT_EAGER,)
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32",)
    budgets: tuple[float | None, ...] = (None,)  # torch._functorch.config.activation_memory_budget, None = untouched
    # The compositions the case's program supports (Composition), and whether compiled autograd takes its backward.
    compositions: tuple[Composition, ...] = (Composition.COMPILE_OUTSIDE,)
    compiled_autograd: tuple[bool, ...] = (False,)
    ambients: tuple[AmbientState, ...] = (AmbientState.NONE,)
    # On the devices it covers (Emulation.devices) the cells run emulated, on the backends it supports only.
    emulation: Emulation = Emulation.NONE
    # How a Runner.EXPORTED_PROGRAM case's program is exported (ExportMode); None: not exported (every other runner)
    exports: tuple[ExportMode | None, ...] = (None,)

    def __post_init__(self):
        object.__setattr__(self, "emulation", Emulation(self.emulation))
        if isinstance(self.compiled_autograd, bool):
            object.__setattr__(self, "compiled_autograd", (self.compiled_autograd,))
        for name, kind in (("partitioners", Partitioner), ("backends", Backend), ("devices", str), ("dtypes", str),
                           ("budgets", None), ("compositions", Composition), ("ambients", AmbientState),
                           ("exports", ExportMode)):
            object.__setattr__(self, name, _tuple_of(kind, getattr(self, name)))
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown:
            raise ValueError(f"unknown dtypes {unknown}; use {sorted(DTYPES)}")

    def emulation_on(self, device: str) -> Emulation:
        """What the cells on ``device`` emulate (``Emulation.NONE``: they are real)."""
        return self.emulation if device in self.emulation.devices else Emulation.NONE


# activation_memory_budget values of a sweep: the slow matrix's budget cells (harness/rows/collect.py), the memory
# report's configurations and the budgets invariants.budget_monotone compares.
BUDGET_SWEEP = (1.0, 0.5, 0.0)
# The budgets a sweep cell is partitioned at besides its own (Needs.sweep; issue 28 items 4-5): BUDGET_SWEEP's three
# anchors and the interior, the 0.9-0.99 end included, where the partitioner switches from its aggressive min-cuts to
# the knapsack.  Points of a sweep, not cells: the cells (and their ids) stay at BUDGET_SWEEP.
SWEEP_POINTS = (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1, 0.0)

CPU_ONLY = AxesSpec(devices=("cpu",))
# A Runner.EXPORTED_PROGRAM case's axes: both export modes; nothing is compiled, so one partitioner and backend (the
# defaults, absent from the cells' ids)
EXPORT_MODES = AxesSpec(partitioners=("min_cut",), backends=("aot_eager",), exports=tuple(ExportMode))
CUDA_ONLY = AxesSpec(devices=("cuda",))
MIN_CUT_ONLY = AxesSpec(partitioners=(Partitioner.MIN_CUT,))


@dataclasses.dataclass(frozen=True)
class CompileSpec:
    """How the program is compiled: ``torch.compile`` options, config patches around the cell, AOTAutograd extras."""

    fullgraph: bool = True
    backward: bool = True  # False: forward only (no loss.backward())
    # Config patches applied around the whole cell: {"dynamo": {...}, "functorch": {...}, "inductor": {...}}.
    config: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    decompositions: Decompositions | None = None  # for the recording (aot_eager) backend
    disable_functionalization: bool = False
    composition: Composition = Composition.COMPILE_OUTSIDE
    # The backward is compiled by compiled autograd (torch._dynamo.compiled_autograd, inductor), forward and backward
    # run inside it; the forward graph is the recorded one.
    compiled_autograd: bool = False

    def __post_init__(self):
        object.__setattr__(self, "composition", Composition(self.composition))
        if self.decompositions is not None:
            object.__setattr__(self, "decompositions", Decompositions(self.decompositions))
        unknown = set(self.config) - set(CONFIG_NAMESPACES)
        if unknown:
            raise ValueError(f"unknown config namespace(s) {sorted(unknown)}; use {sorted(CONFIG_NAMESPACES)}")


CONFIG_NAMESPACES = ("dynamo", "functorch", "inductor")

OpCounts = Mapping[str, Mapping[str, int]]  # graph kind ("fw", "bw", "joint", "dynamo", "inference") -> op -> count


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a verdict reads besides the cell's own recording.  Invariants (harness/core/invariants.py) and a case's
    ``Expect.check`` declare it; ``run_cell`` (harness/core/run.py) produces it into the run, so a verdict is a pure
    function of the run and never compiles.  What cannot be produced is named in ``Run.unavailable`` with the reason.

    ``no_ac``: the figures of the same program compiled without AC and without a budget (``Run.no_ac_figures``);
    ``sweep``: the figures of the cell at each budget of :data:`SWEEP_POINTS` (``Run.sweep``); ``budgets``: whole runs
    of the cell at these budgets (``Run.at_budget``), or a function of the cell's axes giving them; ``related``: whole
    runs of other cases on the cell's axes (``Run.related``, by case name)."""

    no_ac: bool = False
    sweep: bool = False
    budgets: tuple[float, ...] | Callable[[Axes], tuple[float, ...]] = ()
    related: tuple[Case, ...] = ()
    # the run-time evidence of harness/core/oracles.py (``Run.evidence``): eager with and without AC, and the same
    # composition compiled without AC, each probed (the cell's own compiled run is probed by its runner)
    evidence: bool = False

    def __or__(self, other: Needs) -> Needs:
        if callable(self.budgets) or callable(other.budgets):
            if self.budgets and other.budgets:
                raise ValueError("two budget needs, one of them a function: not combinable")
            budgets = self.budgets or other.budgets
        else:
            budgets = tuple(dict.fromkeys((*self.budgets, *other.budgets)))
        return Needs(self.no_ac or other.no_ac, self.sweep or other.sweep, budgets,
                     tuple(dict.fromkeys((*self.related, *other.related))), self.evidence or other.evidence)

    def budgets_for(self, axes: Axes) -> tuple[float, ...]:
        return tuple(self.budgets(axes) if callable(self.budgets) else self.budgets)


@dataclasses.dataclass(frozen=True)
class Expect:
    """What must hold of a cell besides numerics and the invariants.

    ``ops``: exact op counts per graph kind, e.g. ``{"fw": {"aten.mm.default": 1}}``; ``at_least``: lower bounds.
    Either may be a callable receiving the cell's :class:`Axes`, for counts that differ by partitioner.
    ``counters``: exact compile counters (``run.counters``: graphs, frames, recompiles, ...).
    ``check``: f(run) raising AssertionError with a readable message; what it reads besides the run is ``needs``.
    ``raises``: the cell must raise (exception type, regex); numerics and goldens are then not checked."""

    ops: OpCounts | Callable[[Axes], OpCounts] = dataclasses.field(default_factory=dict)
    at_least: OpCounts | Callable[[Axes], OpCounts] = dataclasses.field(default_factory=dict)
    counters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    raises: tuple[type[BaseException], str] | None = None
    needs: Needs = Needs()

    def op_counts(self, axes: Axes) -> tuple[OpCounts, OpCounts]:
        """The exact and lower-bound op counts for a cell on ``axes``."""
        def resolve(e):
            return e(axes) if callable(e) else e
        return resolve(self.ops), resolve(self.at_least)


class NumericsMode(enum.StrEnum):
    EXACT = "exact"  # outputs and every gradient against eager with and without AC
    SHAPE = "shape"  # output shapes only (a reason is required)
    NONE = "none"  # not compared: reported as a check not run, with the reason (required)


@dataclasses.dataclass(frozen=True)
class Numerics:
    """How outputs and gradients are compared; ``tolerance`` (rtol, atol) overrides the per-dtype default."""

    mode: NumericsMode = NumericsMode.EXACT
    reason: str = ""
    tolerance: tuple[float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "mode", NumericsMode(self.mode))
        if self.mode is not NumericsMode.EXACT and not self.reason:
            raise ValueError(f"{self.mode} numerics need a reason")

    @classmethod
    def shape_only(cls, reason: str, tolerance: tuple[float, float] | None = None) -> Numerics:
        return cls(NumericsMode.SHAPE, reason, tolerance)

    @classmethod
    def none(cls, reason: str) -> Numerics:
        return cls(NumericsMode.NONE, reason)


EXACT = Numerics()


class Need(enum.StrEnum):
    CUDA = "cuda"
    TRITON = "triton"
    DISTRIBUTED = "distributed"
    TORCH = "torch"  # argument: the least torch release, "2.14"
    API = "api"  # argument: a dotted name that must exist, "torch.autograd.graph.region_activation_memory_budget"
    MODULE = "module"  # argument: an importable top-level package, "transformers" (found, not imported)


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a case needs to run, with the reason next to it.  Build one with :class:`Requires`."""

    need: Need
    reason: str
    argument: str = ""

    def __post_init__(self):
        object.__setattr__(self, "need", Need(self.need))
        if not self.reason:
            raise ValueError(f"requirement {self.need}: a reason is required")
        if (self.need in (Need.TORCH, Need.API, Need.MODULE)) != bool(self.argument):
            raise ValueError(f"requirement {self.need}: argument {self.argument!r}")

    @property
    def label(self) -> str:
        """``cuda``, ``triton``, ``distributed``, ``torch>=2.14``, ``api:<dotted name>``."""
        return {Need.TORCH: f"torch>={self.argument}", Need.API: f"api:{self.argument}",
                Need.MODULE: f"module:{self.argument}"}.get(self.need, str(self.need))

    def unmet(self, device: str) -> str | None:
        """Why it is not met on ``device`` with the installed torch (None: it is)."""
        if self.need is Need.CUDA and device != "cuda":
            return f"CUDA-only: {self.reason} (runs under make test-cuda)"
        if self.need is Need.TRITON and importlib.util.find_spec("triton") is None:
            return f"needs triton: {self.reason}"
        if self.need is Need.DISTRIBUTED and not torch.distributed.is_available():
            return "needs torch.distributed"
        if self.need is Need.TORCH:
            want = tuple(int(x) for x in self.argument.split("."))
            have = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[: len(want)])
            if have < want:
                return f"needs {self.label} (installed {torch.__version__}): {self.reason}"
        if self.need is Need.MODULE and importlib.util.find_spec(self.argument) is None:
            return f"needs the Python package {self.argument} (not installed): {self.reason}"
        if self.need is Need.API and not torch_api.has_api(self.argument):
            return f"needs {self.argument}, missing in torch {torch.__version__}: {self.reason}"
        return None


class Requires:
    """Constructors of :class:`Requirement`: ``Requires.cuda("fused SDPA kernels are CUDA's")``."""

    @staticmethod
    def cuda(reason: str) -> Requirement:
        return Requirement(Need.CUDA, reason)

    @staticmethod
    def triton(reason: str) -> Requirement:
        return Requirement(Need.TRITON, reason)

    @staticmethod
    def distributed(reason: str) -> Requirement:
        return Requirement(Need.DISTRIBUTED, reason)

    @staticmethod
    def torch_at_least(release: str, reason: str) -> Requirement:
        return Requirement(Need.TORCH, reason, release)

    @staticmethod
    def release_of(difference: torch_api.Difference) -> Requirement:
        """torch>= the release a behaviour difference of harness/core/torch_api.py exists from, named after it (the
        words of ``torch_api.unmet_release``)."""
        return Requirement(Need.TORCH, f"{difference.name} (harness/core/torch_api.py)", difference.since)

    @staticmethod
    def api(dotted: str, reason: str) -> Requirement:
        return Requirement(Need.API, reason, dotted)

    @staticmethod
    def module(package: str, reason: str) -> Requirement:
        return Requirement(Need.MODULE, reason, package)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which pytest selection a case's cells belong to besides the defaults (budget cells are ``slow``).

    ``marker``: one more pytest marker on every cell (registered in pyproject.toml), e.g. ``budget_matrix``, a
    nightly selection of its own; ``fast``: the budgets whose cells stay in ``make test`` ("not slow") although they
    carry a budget, so that a handful of a large matrix runs on every change; ``matrix``: why the slow matrix leaves
    the case out, where the case is otherwise one it expands; ``slow``: every cell of the case is ``slow`` (the
    nightly's only)."""

    marker: str = ""
    fast: tuple[float, ...] = ()
    matrix: str = ""  # why the slow matrix (harness/rows/collect.py) leaves the case out ("": it does not)
    slow: bool = False
    # Cells on a composition, compiled autograd, a Dynamo-only backend or an export mode (issue 27's axes), and
    # emulated cells, are ``slow`` but for these axes ids (``Axes.id``), which stay in make test: a few seconds of
    # the product on every change.
    fast_axes: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "fast", tuple(float(b) for b in self.fast))
        object.__setattr__(self, "fast_axes", (self.fast_axes,) if isinstance(self.fast_axes, str)
                           else tuple(self.fast_axes))


@dataclasses.dataclass(frozen=True)
class Ambient:
    """State around every run of a cell (eager references, the compile, its baselines): what the program runs under
    without saying so.  ``autocast``: a dtype name; ``torch.autocast(<cell device>, dtype)`` is entered outside the
    compiled call, as a training loop does.  Issue 27 adds saved-tensor hooks and grad mode, and autocast inside the
    region."""

    autocast: str | None = None

    def __post_init__(self):
        if self.autocast is not None and self.autocast not in DTYPES:
            raise ValueError(f"ambient autocast {self.autocast!r}: use one of {sorted(DTYPES)}")

    def context(self, device: str):
        """The context manager to run under (a null one for the default)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device, dtype=DTYPES[self.autocast])


class Patch(enum.StrEnum):
    """What non-strict tracing patches so that make_fx sees the backward (torch.compiler's own context managers)."""

    AUTOGRAD_GRAD = "grad"  # torch.compiler._patch_autograd_grad
    ENGINE_BACKWARD = "engine"  # torch.compiler._patch_engine_backward


@dataclasses.dataclass(frozen=True)
class Trace:
    """How ``Runner.TRACE`` traces a program that computes its own gradients: ``make_fx`` under
    ``torch.compiler._non_strict_tracing_context()`` with ``patch`` (None: no patch), ``preserve_node_meta`` when
    ``node_meta``, on fake tensors in a ``FakeTensorMode`` and ``TracingContext`` when ``fake``, with the RNG seeded
    ``seed`` just before tracing (None: as built)."""

    patch: Patch | None = Patch.AUTOGRAD_GRAD
    node_meta: bool = True
    fake: bool = False
    seed: int | None = None

    def __post_init__(self):
        if self.patch is not None:
            object.__setattr__(self, "patch", Patch(self.patch))


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: cells are cached per case
class Case:
    """One scenario.  Fields left at their defaults mean "the ordinary AC pipeline"."""

    name: str
    build: Callable[[BuildContext], Program]
    # What the catalogue calls it (numbers in ../shared/CATALOGUE.md); used for the coverage table.
    catalogue: tuple[int, ...] = ()
    checkpoint: Checkpoint = Checkpoint.NON_REENTRANT
    runner: Runner = Runner.STANDARD  # how the program is taken through torch (the enum's docstring)
    axes: AxesSpec = AxesSpec()
    compile: CompileSpec = CompileSpec()
    expect: Expect = Expect()
    numerics: Numerics = EXACT
    requires: tuple[Requirement, ...] = ()  # or one Requirement
    ambient: Ambient = Ambient()  # state around every run of the cell (autocast)
    trace: Trace = Trace()  # how Runner.TRACE traces (read by that runner only)
    # Named programs checked side by side in one cell: the builder builds ``ctx.variant`` and the runner records each
    # variant's graphs as ``<kind>_<variant>`` (e.g. a program with and without a backward hook).
    variants: tuple[str, ...] = ()
    # Which graph kinds are snapshotted (None: all recorded, and the "summary" of the analysis).  A kind the runner
    # does not record but harness/core/golden.py derives from the run (DERIVED, e.g. "annotations") is made on request.
    goldens: tuple[str, ...] | None = None
    notes: str = ""
    selection: Selection = Selection()
    # The module's name under harness/rows/cases/, stamped by all_cases(); rows outside it (the fuzzer's) pass their own.
    area: str = ""
    # The identity of the program without AC, where several cases share one: fuzz programs that differ only in their
    # regions and policies are the same program once ``ctx.checkpoint`` passes through.  harness/core/baselines.py compiles
    # the no-AC baseline once per process for each key ("": every case its own).
    no_ac_key: str = ""

    def __post_init__(self):
        object.__setattr__(self, "checkpoint", Checkpoint(self.checkpoint))
        object.__setattr__(self, "runner", Runner(self.runner))
        if isinstance(self.requires, Requirement):
            object.__setattr__(self, "requires", (self.requires,))
        if self.trace != Trace() and self.runner is not Runner.TRACE:
            raise ValueError(f"case {self.name}: a trace spec is read by Runner.TRACE only (runner {self.runner})")
        if self.ambient != Ambient() and self.runner is not Runner.STANDARD:
            raise ValueError(f"case {self.name}: ambient state is entered by the standard runner only")
        if self.needs(Need.TRITON) and any(d != "cuda" and self.axes.emulation_on(d) is not Emulation.TRITON_INTERPRETER
                                           for d in self.axes.devices):
            raise ValueError(f"case {self.name}: a user Triton kernel runs off CUDA only emulated "
                             "(AxesSpec(emulation=Emulation.TRITON_INTERPRETER)), so its cells say so")
        if self.axes.compositions != (Composition.COMPILE_OUTSIDE,) and (
                self.runner is not Runner.STANDARD or self.compile.composition is not Composition.COMPILE_OUTSIDE
                or Composition.COMPILE_INSIDE in self.axes.compositions):
            raise ValueError(f"case {self.name}: the composition axis is the standard runner's, for a program that "
                             "calls ctx.checkpoint (not one that compiles its own parts)")
        exported = self.runner is Runner.EXPORTED_PROGRAM
        if exported != (None not in self.axes.exports) or exported and (
                self.axes.partitioners != (Partitioner.MIN_CUT,) or self.axes.backends != (Backend.AOT_EAGER,)
                or self.axes.budgets != (None,) or self.axes.compositions != (Composition.COMPILE_OUTSIDE,)
                or self.axes.compiled_autograd != (False,) or self.axes.ambients != (AmbientState.NONE,)):
            raise ValueError(f"case {self.name}: the export axis (AxesSpec.exports, ExportMode members) is "
                             "Runner.EXPORTED_PROGRAM's and that runner's only axis besides devices and dtypes "
                             f"(EXPORT_MODES); runner {self.runner}, axes {self.axes}")

    @classmethod
    def stand_in(cls, name: str, area: str, why: str, **fields) -> Case:
        """A case that names a program the pipeline cannot rebuild (a distributed scenario, a recorded training step),
        so known failures, verdicts and analyses can address it; building it raises ``why``."""
        def build(ctx):
            raise RuntimeError(f"{name}: {why}")

        return cls(name, build, area=area, **fields)

    def needs(self, need: Need) -> bool:
        return any(r.need is need for r in self.requires)

    def unmet_requirement(self, device: str) -> str | None:
        """Why this case cannot run on ``device`` with the installed torch (None: it can): an unmet requirement, or
        a config knob it patches that this release lacks (harness/core/torch_api.py)."""
        return (next(filter(None, (r.unmet(device) for r in self.requires)), None)
                or torch_api.unmet_config(self.compile.config))


@dataclasses.dataclass(frozen=True)
class Cell:
    case: Case
    axes: Axes

    @property
    def id(self) -> str:
        if self.case.runner is Runner.CONTRACT:  # one cell per case: the case names it (clause-program-mode-variant)
            return self.case.name
        return f"{self.case.name}-{self.axes.id}"

    def __str__(self) -> str:
        return self.id

"""The vocabulary of the case database: a `Case` is one declarative row per scenario, expanded over its axes into cells.

A case says *what* to run (a builder), *how it is checkpointed* (the builder calls ``ctx.checkpoint``,
which is the real ``torch.utils.checkpoint.checkpoint`` or a pass-through, so one definition yields the
program with and without AC), *where* it runs (its axes) and *what must hold* (expectations, errors,
extra checks).  Tests are templates expanded over cells; a cell's id is stable and readable:
``tags_function-min_cut-aot_eager-cpu-float32``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import importlib.util
import itertools
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
    """What a builder receives: where to put tensors and which checkpoint to call."""

    device: str
    dtype: torch.dtype
    ac: bool  # False: the same program with checkpointing removed (the no-AC reference)

    @property
    def checkpoint(self) -> Callable[..., Any]:
        return tuc.checkpoint if self.ac else no_checkpoint

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

    @property
    def id(self) -> str:
        parts = [self.partitioner, self.backend, self.device, self.dtype]
        if self.budget is not None:
            parts.append(f"budget{float(self.budget)!r}")  # budget0.0, not budget0: a known-failure prefix must not match budget0.5
        return "-".join(parts)


class Checkpoint(enum.StrEnum):
    """How a case checkpoints (reported by the memory report; the builder does the checkpointing)."""

    NON_REENTRANT = "non_reentrant"
    REENTRANT = "reentrant"
    SAC = "sac"  # selective AC: context_fn / create_selective_checkpoint_contexts
    CHECKPOINT_WRAPPER = "checkpoint_wrapper"  # torch.distributed's checkpoint_wrapper
    EAGER_WRAPPER = "eager_wrapper"
    FUZZ = "fuzz"  # a generated program (harness.tools.fuzz)
    NONE = "none"


class Partitioner(enum.StrEnum):
    MIN_CUT = "min_cut"  # min_cut_rematerialization_partition
    DEFAULT = "default"  # default_partition


class Backend(enum.StrEnum):
    AOT_EAGER = "aot_eager"  # the recording aot_autograd backend
    INDUCTOR = "inductor"


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

    def __post_init__(self):
        for name, kind in (("partitioners", Partitioner), ("backends", Backend), ("devices", str), ("dtypes", str),
                           ("budgets", None)):
            object.__setattr__(self, name, _tuple_of(kind, getattr(self, name)))
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown:
            raise ValueError(f"unknown dtypes {unknown}; use {sorted(DTYPES)}")


CPU_ONLY = AxesSpec(devices=("cpu",))
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

    def __post_init__(self):
        if self.decompositions is not None:
            object.__setattr__(self, "decompositions", Decompositions(self.decompositions))
        unknown = set(self.config) - set(CONFIG_NAMESPACES)
        if unknown:
            raise ValueError(f"unknown config namespace(s) {sorted(unknown)}; use {sorted(CONFIG_NAMESPACES)}")


CONFIG_NAMESPACES = ("dynamo", "functorch", "inductor")

OpCounts = Mapping[str, Mapping[str, int]]  # graph kind ("fw", "bw", "joint", "dynamo", "inference") -> op -> count


@dataclasses.dataclass(frozen=True)
class Expect:
    """What must hold of a cell besides numerics and the invariants.

    ``ops``: exact op counts per graph kind, e.g. ``{"fw": {"aten.mm.default": 1}}``; ``at_least``: lower bounds.
    Either may be a callable receiving the cell's :class:`Axes`, for counts that differ by partitioner.
    ``counters``: exact compile counters (``run.counters``: graphs, frames, recompiles, ...).
    ``check``: f(run) raising AssertionError with a readable message.
    ``raises``: the cell must raise (exception type, regex); numerics and goldens are then not checked."""

    ops: OpCounts | Callable[[Axes], OpCounts] = dataclasses.field(default_factory=dict)
    at_least: OpCounts | Callable[[Axes], OpCounts] = dataclasses.field(default_factory=dict)
    counters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    check: Callable[[Any], None] | None = None
    raises: tuple[type[BaseException], str] | None = None

    def op_counts(self, axes: Axes) -> tuple[OpCounts, OpCounts]:
        """The exact and lower-bound op counts for a cell on ``axes``."""
        def resolve(e):
            return e(axes) if callable(e) else e
        return resolve(self.ops), resolve(self.at_least)


class NumericsMode(enum.StrEnum):
    EXACT = "exact"  # outputs and every gradient against eager with and without AC
    SHAPE = "shape"  # output shapes only (a reason is required)


@dataclasses.dataclass(frozen=True)
class Numerics:
    """How outputs and gradients are compared; ``tolerance`` (rtol, atol) overrides the per-dtype default."""

    mode: NumericsMode = NumericsMode.EXACT
    reason: str = ""
    tolerance: tuple[float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "mode", NumericsMode(self.mode))
        if self.mode is NumericsMode.SHAPE and not self.reason:
            raise ValueError("shape-only numerics need a reason")

    @classmethod
    def shape_only(cls, reason: str, tolerance: tuple[float, float] | None = None) -> Numerics:
        return cls(NumericsMode.SHAPE, reason, tolerance)


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
    carry a budget, so that a handful of a large matrix runs on every change."""

    marker: str = ""
    fast: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "fast", tuple(float(b) for b in self.fast))


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: cells are cached per case
class Case:
    """One scenario.  Fields left at their defaults mean "the ordinary AC pipeline"."""

    name: str
    build: Callable[[BuildContext], Program]
    # What the catalogue calls it (numbers in ../shared/CATALOGUE.md); used for the coverage table.
    catalogue: tuple[int, ...] = ()
    checkpoint: Checkpoint = Checkpoint.NON_REENTRANT
    axes: AxesSpec = AxesSpec()
    compile: CompileSpec = CompileSpec()
    expect: Expect = Expect()
    numerics: Numerics = EXACT
    requires: tuple[Requirement, ...] = ()  # or one Requirement
    # Replace the standard pipeline: f(ctx: BuildContext, axes) -> harness.core.pipeline.CustomRun.
    custom: Callable[..., Any] | None = None
    # Which graph kinds are snapshotted (None: all recorded).
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
        if isinstance(self.requires, Requirement):
            object.__setattr__(self, "requires", (self.requires,))

    @classmethod
    def stand_in(cls, name: str, area: str, why: str, **fields) -> Case:
        """A case that names a program the pipeline cannot rebuild (a distributed scenario, a recorded training step),
        so known failures, verdicts and analyses can address it; building it raises ``why``."""
        def build(ctx):
            raise RuntimeError(f"{name}: {why}")

        return cls(name, build, area=area, **fields)

    def needs(self, need: Need) -> bool:
        return any(r.need is need for r in self.requires)

    def cell_axes(self, device: str) -> list[Axes]:
        """The declared cells' axes on ``device``."""
        spec = self.axes
        if device not in spec.devices:
            return []
        cells = []
        for backend, part, dtype, budget in itertools.product(spec.backends, spec.partitioners, spec.dtypes,
                                                              spec.budgets):
            if backend is Backend.INDUCTOR and part is not Partitioner.MIN_CUT:
                continue  # inductor always partitions with min-cut
            cells.append(Axes(part, backend, device, dtype, budget))
        return cells

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
        return f"{self.case.name}-{self.axes.id}"

    def __str__(self) -> str:
        return self.id

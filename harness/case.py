"""The case database: one declarative row per scenario, expanded over its axes into cells.

A case says *what* to run (a builder), *how it is checkpointed* (the builder calls ``ctx.checkpoint``,
which is the real ``torch.utils.checkpoint.checkpoint`` or a pass-through, so one definition yields the
program with and without AC), *where* it runs (its axes) and *what must hold* (expectations, errors,
extra checks).  Tests are templates expanded over cells; a cell's id is stable and readable:
``tags_function-min_cut-aot_eager-cpu-float32``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint as tuc

PARTITIONERS = ("min_cut", "default")
BACKENDS = ("aot_eager", "inductor")
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


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: cells are cached per case
class Case:
    """One scenario.  Fields left at their defaults mean "the ordinary AC pipeline"."""

    name: str
    area: str
    build: Callable[[BuildContext], Program]
    # What the catalogue calls it (numbers in ../shared/CATALOGUE.md); used for the coverage table.
    catalogue: tuple[int, ...] = ()
    checkpoint: str = "non_reentrant"  # reentrant | non_reentrant | sac | checkpoint_wrapper | none | ...
    partitioners: tuple[str, ...] = PARTITIONERS
    backends: tuple[str, ...] = ("aot_eager",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32",)
    budgets: tuple[float | None, ...] = (None,)
    fullgraph: bool = True
    backward: bool = True
    # Exact op counts per graph kind ("fw", "bw", "joint", "dynamo"), e.g. {"fw": {"aten.mm.default": 1}}.
    # A callable receives the Axes, for counts that differ by partitioner.
    expect: Mapping[str, Mapping[str, int]] | Callable[[Axes], Mapping] = dataclasses.field(default_factory=dict)
    expect_ge: Mapping[str, Mapping[str, int]] | Callable[[Axes], Mapping] = dataclasses.field(default_factory=dict)
    # Numerics: "exact" compares outputs and all gradients; "shape" only shapes (documented reason required).
    numerics: str = "exact"
    numerics_reason: str = ""
    tolerance: tuple[float, float] | None = None  # (rtol, atol) override
    # Config patches applied around the whole cell: {"dynamo": {...}, "functorch": {...}, "inductor": {...}}.
    config: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # aot_autograd extras for the recording backend: decompositions ("inductor" = select_decomp_table),
    # disable_functionalization.
    decompositions: str | None = None
    disable_functionalization: bool = False
    # The cell must raise: (exception type, regex).  Numerics and goldens are then not checked.
    raises: tuple[type[BaseException], str] | None = None
    # Extra checks: f(run) raising AssertionError with a readable message.
    check: Callable[[Any], None] | None = None
    # Replace the standard pipeline: f(ctx: BuildContext, axes) -> harness.pipeline.CustomRun.
    custom: Callable[..., Any] | None = None
    # Which graph kinds are snapshotted (None: all recorded).
    goldens: tuple[str, ...] | None = None
    requires: str = ""  # "cuda", "triton", "distributed", "torch>=2.14", "api:<dotted name that must exist>" ...
    requires_reason: str = ""
    notes: str = ""

    def axes(self, device: str) -> list[Axes]:
        if device not in self.devices:
            return []
        cells = []
        for backend, part, dtype, budget in itertools.product(self.backends, self.partitioners, self.dtypes, self.budgets):
            if backend == "inductor" and part != "min_cut":
                continue  # inductor always partitions with min-cut
            cells.append(Axes(part, backend, device, dtype, budget))
        return cells

    def unmet_requirement(self, device: str) -> str | None:
        """Why this case cannot run on ``device`` with the installed torch (None: it can)."""
        for req in filter(None, (r.strip() for r in self.requires.split(","))):
            if req == "cuda" and device != "cuda":
                return f"CUDA-only: {self.requires_reason or 'needs a CUDA device'} (runs under make test-cuda)"
            if req == "triton" and importlib.util.find_spec("triton") is None:
                return f"needs triton: {self.requires_reason}"
            if req == "distributed" and not torch.distributed.is_available():
                return "needs torch.distributed"
            if req.startswith("torch>="):
                want = tuple(int(x) for x in req[len("torch>="):].split("."))
                have = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[: len(want)])
                if have < want:
                    return f"needs {req} (installed {torch.__version__}): {self.requires_reason}"
            if req.startswith("api:") and not has_api(req[4:]):  # e.g. api:torch.autograd.graph.region_activation_memory_budget
                return f"needs {req[4:]}, missing in torch {torch.__version__}: {self.requires_reason}"
        return None

    def expectations(self, axes: Axes) -> tuple[Mapping, Mapping]:
        def resolve(e):
            return e(axes) if callable(e) else e
        return resolve(self.expect), resolve(self.expect_ge)


def has_api(dotted: str) -> bool:
    """Whether the dotted name (``torch.autograd.graph.region_activation_memory_budget``) exists in this torch."""
    obj = importlib.import_module(dotted.split(".")[0])
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Cell:
    case: Case
    axes: Axes

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.axes.id}"

    def __str__(self) -> str:
        return self.id


@functools.cache
def all_cases() -> tuple[Case, ...]:
    """Every case of every area module under ``harness.cases``, checked for unique names."""
    import pkgutil

    from harness import cases as pkg

    found: list[Case] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        found.extend(importlib.import_module(f"harness.cases.{info.name}").CASES)
    names = [c.name for c in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate case names in the case database: {dupes}")
    return tuple(found)


def find_case(name: str) -> Case:
    for c in all_cases():
        if c.name == name:
            return c
    raise KeyError(f"no case named {name!r} in the case database")

"""Conformance for the user's own model: the ``ac_conformance`` pytest fixture (a ``pytest11`` plugin installed with
the package) and what the ``ac-conformance check`` command line (harness/user/cli.py) runs.

Nothing here re-implements a check.  A user's factory and an AC policy (an object of :mod:`harness.core.policies`, or a
name for its defaults) become a :class:`~harness.core.case.Case`: its builder calls the factory, applies the policy to the
AC program and leaves the no-AC reference unwrapped, exactly as a case row's ``ctx.checkpoint`` does.  Each of its
cells (backend x budget x partitioner) goes through :func:`harness.core.suite.check_cell`: numerics against eager with
and without AC (outputs, input and parameter gradients), every invariant of :mod:`harness.core.invariants`, then the
goldens (compared only when every semantic check passed, so an update never blesses a wrong result).  The figures
come from :mod:`harness.core.analysis` and :mod:`harness.core.peak`.

The factory: ``factory()`` (or ``factory(device=..., dtype=...)`` when it takes them) returns ``(model, inputs)``:
an ``nn.Module`` and a tensor or tuple of tensors.  Blocks in ``model.layers`` (torchtitan's convention) are what the
policies wrap; a model without ``.layers`` is treated as one block.  Floating-point inputs are made to require grad
(``input_grads=False`` keeps them as given), so their gradients are compared as well.

Bad input (a missing or raising factory, a model without parameters that need grad, an unknown policy, a backend
that cannot compile here) raises :class:`InputError` with a sentence saying what to fix; the command line exits 3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from harness.core import analysis, figures, policies
from harness.core.case import (DTYPES, AxesSpec, Case, Cell, Checkpoint, CompileSpec, Numerics, Program, Runner)
from harness.core.golden import GoldenDrift, GoldenGraphExtension, Goldens, golden_text, split_golden, updating
from harness.core.pipeline import baseline
from harness.core.suite import check_cell
from harness.rows.collect import declared_cells

BACKENDS = ("aot_eager", "inductor")
PARTITIONERS = ("min_cut", "default")
CLEAN, DRIFT, WRONG, BAD_INPUT = 0, 1, 2, 3  # exit codes, as the nightly's (harness/tools/nightly.py)
POLICY_ALIASES = {"per_layer": "selective_layer", "selective": "selective_op", "budget": "memory_budget",
                  "no_ac": "none"}


class InputError(Exception):
    """The user's input cannot be checked (exit 3): the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------------- input: factory, policy

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


def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve_policy(policy: policies.Policy | str) -> policies.Policy:
    """A policy object as given, or one from a name (``selective-op`` and ``selective_op`` alike) with its defaults,
    or the command line's ``name:key=value,...`` form (``selective_layer:every=3``,
    ``selective_op:save=aten.mm.default+aten.max.default``)."""
    if isinstance(policy, policies.Policy):
        return policy
    if not isinstance(policy, str):
        raise InputError(f"policy must be a harness.core.policies.Policy or a name, saw {type(policy).__name__}")
    name, _, rest = policy.partition(":")
    key = name.strip().replace("-", "_").lower()
    key = POLICY_ALIASES.get(key, key)
    if key not in policies.POLICIES:
        close = difflib.get_close_matches(key, list(policies.POLICIES) + list(POLICY_ALIASES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown AC policy {name!r}{hint}; known: {', '.join(policies.ALL)}")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise InputError(f"policy parameter {item!r}: expected key=value")
        k = k.strip()
        params[k] = tuple(v.split("+")) if k == "save" else _parse_value(v.strip())
    try:
        return policies.get(key, **params)
    except (TypeError, ValueError) as e:
        fields = [f.name for f in dataclasses.fields(policies.POLICIES[key])]
        raise InputError(f"policy {key!r} with {params}: {e} (its parameters: {fields})") from e


@functools.cache
def backend_problem(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot compile on ``device`` here (None: it can): a one-op probe compile, once per process."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; the harness records graphs through {', '.join(BACKENDS)}"
    if device == "cuda" and not torch.cuda.is_available():
        return "device cuda: no CUDA device is visible (torch.cuda.is_available() is False)"
    if backend == "aot_eager":
        return None
    try:
        x = torch.randn(8, device=device, requires_grad=True)
        torch.compile(lambda t: (t.sin() * 2).sum(), backend=backend, fullgraph=True)(x).backward()
    except Exception as e:  # noqa: BLE001 - the probe is the test of "can compile here"
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return (f"backend {backend} cannot compile on {device} on this machine ({type(e).__name__}: {first}); "
                f"use --backend aot_eager, or install what it needs (a C++ compiler for inductor on CPU)")
    finally:
        torch._dynamo.reset()
    return None


def _user_frames(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/harness/" not in f.filename]
    return "".join(traceback.format_list(frames[-3:])).rstrip()


def call_factory(factory: Callable[..., Any], device: str, dtype: torch.dtype) -> tuple[nn.Module, tuple]:
    """The factory's ``(model, inputs)``, checked: the shape of what it returns is the user's contract."""
    try:
        sig = inspect.signature(factory)
        accepts = {n for n, p in sig.parameters.items()} if not any(
            p.kind is p.VAR_KEYWORD for p in sig.parameters.values()) else {"device", "dtype"}
    except (TypeError, ValueError):
        accepts = set()
    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if k in accepts}
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
    inputs = inputs if isinstance(inputs, tuple) else tuple(inputs) if isinstance(inputs, list) else (inputs,)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"factory {name}(): the model has no parameters that require grad, so there is no backward "
                         f"to checkpoint (AC trades backward recomputation for memory); return a trainable model")
    return model, inputs


def as_stack(model: nn.Module) -> nn.Module:
    """The model with its blocks in ``.layers`` (what the policies wrap); a model without them is one block."""
    if isinstance(getattr(model, "layers", None), (nn.ModuleList, nn.ModuleDict)):
        return model
    from harness.rows.models import Stack

    return Stack(lambda: model, 1)


class UserProgram(Program):
    """Parameter names without the wrappers' prefixes, so the AC and no-AC programs' gradients pair up."""

    def named_params(self) -> dict[str, torch.Tensor]:
        return {policies.clean_name(n): p for n, p in self.module.named_parameters() if p.requires_grad}


def user_case(factory: Callable[..., Any], policy: policies.Policy | str, *, name: str | None = None,
              backends: Iterable[str] = ("aot_eager",), budgets: Iterable[float | None] = (None,),
              partitioners: Iterable[str] = ("min_cut",), device: str = "cpu", dtype: str = "float32",
              tolerance: tuple[float, float] | None = None, via: str = "wrapper", input_grads: bool = True) -> Case:
    """The case a user's factory and policy make (validated: raises :class:`InputError`)."""
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
        problem = backend_problem(backend, device)
        if problem:
            raise InputError(problem)
    torch.manual_seed(0)
    model, _ = call_factory(factory, device, DTYPES[dtype])  # fail early and clearly, before any compile
    try:
        policy.apply(as_stack(model), via=via)
    except (TypeError, ValueError) as e:
        raise InputError(f"policy {policy.id} cannot be applied to the model: {e}") from e

    def build(ctx):
        model, inputs = call_factory(factory, ctx.device, ctx.dtype)
        model = as_stack(model.to(device=ctx.device, dtype=ctx.dtype))
        if ctx.ac:
            policy.apply(model, via=via)
        prepared = []
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t = t.detach().to(device=ctx.device, dtype=ctx.dtype if t.is_floating_point() else t.dtype)
                t.requires_grad_(input_grads and t.is_floating_point())
            prepared.append(t)
        return UserProgram(model, tuple(prepared), module=model)

    base = name or getattr(factory, "__name__", "model")
    config = {"inductor": {"fallback_random": True}}  # inductor draws eager's random numbers: numerics comparable
    if isinstance(policy, policies.MemoryBudget):
        config["functorch"] = {"activation_memory_budget": policy.budget}
    kind = (Checkpoint.SAC if isinstance(policy, policies.SelectiveOp) else Checkpoint.NONE
            if not any(policy.wraps(i) for i in range(64)) else Checkpoint.CHECKPOINT_WRAPPER)
    return Case(f"{base}_{policy.id}", build, checkpoint=kind,
                axes=AxesSpec(partitioners=partitioners, backends=backends, devices=(device,), dtypes=(dtype,),
                              budgets=budgets),
                compile=CompileSpec(config=config), numerics=Numerics(tolerance=tolerance), area="user",
                notes=f"policy {policy!r}")


# --------------------------------------------------------------------------------------------- goldens

class NoGoldens:
    """No golden comparison (goldens are optional)."""

    def assert_match(self, texts) -> int:
        return 0

    def keep_existing(self) -> None:
        pass


@functools.cache
def _extension(root: str, device: str, cell_id: str) -> type[GoldenGraphExtension]:
    def dirname(cls, *, test_location) -> str:
        # syrupy relates a snapshot to its test module by the file's parent folder: that one is the module's name
        return str(Path(root) / device / cell_id / test_location.basename)

    return type(f"UserGoldens_{abs(hash((root, device, cell_id)))}", (GoldenGraphExtension,),
                {"device": device, "dirname": classmethod(dirname), "update_hint": UserGoldens.update_hint})


class UserGoldens(Goldens):
    """The project's golden handle (syrupy: ``--snapshot-update`` writes, a missing golden fails) under the user's
    folder: ``<root>/<device>/<cell id>/<test module>/<test name>[<graph kind>].txt``."""

    update_hint = "pytest --snapshot-update"

    def __init__(self, snapshot, root: Path, cell_id: str, device: str, update: bool):
        self.snapshot = snapshot.use_extension(_extension(str(Path(root).resolve()), device, cell_id))
        self.cell_id, self.device, self.update = cell_id, device, update


class FileGoldens:
    """The command line's goldens (no pytest session): ``<root>/<device>/<case>/<cell id>/<graph kind>.txt``, the same
    header and body-only comparison; ``--update-goldens`` writes them (only for cells whose checks all passed:
    :func:`harness.core.suite.check_cell` compares goldens last)."""

    def __init__(self, root: Path, cell: Cell, update: bool):
        self.dir = Path(root) / cell.axes.device / cell.case.name / cell.id
        self.cell, self.update = cell, update
        self.written: list[Path] = []

    def assert_match(self, texts: dict[str, str]) -> int:
        problems = []
        for kind, body in sorted(texts.items()):
            path = self.dir / f"{kind}.txt"
            old = split_golden(path.read_text())[1] if path.exists() else None
            if old == body:
                continue
            if self.update:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                    f.write(golden_text(self.cell.id, kind, self.cell.axes.device, body, "ac-conformance check --update-goldens"))
                os.replace(tmp, path)
                self.written.append(path)
            elif old is None:
                problems.append(f"no golden for graph '{kind}' ({path}); create it with --update-goldens and review it")
            else:
                diff = difflib.unified_diff(old.splitlines(), body.splitlines(), "golden", "recorded", lineterm="")
                problems.append(f"graph '{kind}' drifted from {path}:\n" + "\n".join(diff))
        stale = sorted(p.stem for p in self.dir.glob("*.txt") if p.stem not in texts) if self.dir.is_dir() else []
        if stale and self.update:
            for kind in stale:
                (self.dir / f"{kind}.txt").unlink()
        elif stale:
            problems.append(f"goldens exist for graph kinds no longer recorded: {stale}; --update-goldens removes them")
        if problems:
            raise GoldenDrift(f"{self.cell.id}: graphs differ from goldens:\n" + "\n".join(problems))
        return len(texts)

    def keep_existing(self) -> None:
        pass


# --------------------------------------------------------------------------------------------- running, results

@dataclasses.dataclass
class CellResult:
    """One cell's verdict and figures."""

    cell: Cell
    verdict: str  # "pass", "drift" (graphs differ from goldens, every semantic check passed) or "wrong"
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (check, message)
    message: str = ""
    run: Any = None
    figures: dict = dataclasses.field(default_factory=dict)
    no_ac: dict = dataclasses.field(default_factory=dict)  # the same figures without AC (the invariants' baseline)
    checks: int = 0

    @property
    def id(self) -> str:
        return self.cell.id


@dataclasses.dataclass
class Report:
    results: list[CellResult]

    @property
    def exit_code(self) -> int:
        verdicts = {r.verdict for r in self.results}
        return WRONG if "wrong" in verdicts else DRIFT if "drift" in verdicts else CLEAN

    @property
    def ok(self) -> bool:
        return self.exit_code == CLEAN

    def __getitem__(self, cell_id: str) -> CellResult:
        return next(r for r in self.results if r.id == cell_id)

    def summary(self) -> str:
        lines = []
        for r in self.results:
            f = r.figures
            figs = (f"saved {fmt_bytes(f.get('activation_bytes'))} activations, peak {fmt_bytes(f.get('peak_bytes'))}, "
                    f"recomputed {f.get('recomputed_ops', '?')} ops ({f.get('recompute_flops', '?')} FLOPs)") if f else ""
            lines.append(f"{r.verdict.upper():5} {r.id}" + (f"  [{figs}]" if figs else ""))
        return "\n".join(lines)

    def message(self) -> str:
        """One readable failure message: every failing cell, each failing check with its sentence."""
        bad = [r for r in self.results if r.verdict != "pass"]
        head = (f"ac_conformance: {len(bad)} of {len(self.results)} cell(s) failed "
                f"({sum(r.verdict == 'wrong' for r in bad)} wrong, {sum(r.verdict == 'drift' for r in bad)} graph drift)")
        return "\n\n".join([head] + [r.message for r in bad])


def fmt_bytes(b) -> str:
    return figures.fmt_bytes(b, human=True)


def figures_of(run) -> dict:
    """The figures a report shows, from harness.core.analysis (and harness.core.peak for the peak estimate)."""
    if run is None:
        return {}
    out: dict = {"compile_seconds": round(run.compile_seconds, 2)}
    try:
        a = analysis.of(run)
    except Exception:  # noqa: BLE001 - a figure that cannot be computed is absent, not a verdict
        a = None
    if a is not None:
        out.update({k: getattr(a, k) for k in figures.SUMMARY_FIGURES})
        out["recomputed_ops"] = len(a.recomputed)
        out["recomputed"] = [op for _, op in a.recomputed]
        out["saved"] = [dataclasses.asdict(s) for s in a.saved]
    try:
        from harness.core import peak

        fws, bws = run.graphs.get("fw", []), run.graphs.get("bw", [])
        if fws and len(fws) == len(bws):
            ests = [peak.estimate(f, b) for f, b in zip(fws, bws)]
            out["peak_bytes"] = max(e.peak_bytes for e in ests)
    except Exception:  # noqa: BLE001
        pass
    return out


class _Record:
    """What :func:`harness.core.suite.check_cell` reports to: figures, the observed run, no known failures."""

    def __init__(self):
        self.known_failures: list = []
        self.props: dict[str, Any] = {}
        self.run = None

    def __call__(self, key, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.props[key] = self.props.get(key, 0) + value if key.endswith("_checks") else value
        else:
            self.props[key] = value

    def observe(self, run):
        self.run = run


def check_cell_of(cell: Cell, goldens) -> CellResult:
    """One cell through the suites' own template (harness.core.suite.check_cell): numerics, invariants, goldens last."""
    record = _Record()
    failures: list[tuple[str, str]] = []
    try:
        check_cell(cell, goldens, record)
        verdict, message = "pass", ""
    except GoldenDrift as e:
        verdict, message = "drift", str(e)
        failures = [("golden", str(e))]
    except Exception as e:  # noqa: BLE001 - CellFailure names every failing check; anything else is one
        verdict, message = "wrong", str(e)
        failures = list(getattr(e, "failures", [("harness", f"{type(e).__name__}: {e}")]))
    if verdict == "wrong":
        message += known_defects(cell, record.run, failures)
    result = CellResult(cell, verdict, failures, message, record.run, figures_of(record.run),
                        checks=sum(v for k, v in record.props.items() if k.endswith("_checks")))
    if record.run is not None and cell.case.runner is Runner.STANDARD:
        with contextlib.suppress(Exception):
            result.no_ac = figures_of(baseline(cell.case, dataclasses.replace(cell.axes, budget=None), False))
    return result


def known_defects(cell: Cell, run, failures: list[tuple[str, str]]) -> str:
    """A note naming the project's known torch defects (known_failures.toml) that explain a failing check: the user's
    cell still fails (their configuration hits the defect), but the message says it is known and where it is tracked."""
    from harness.core import known_failures

    try:
        entries = known_failures.matching(known_failures.load(), cell, run, torch.__version__)
    except Exception:  # noqa: BLE001 - the note is a courtesy; no known-failure file, no note
        return ""
    notes = [f"\n  note: [{stage}] is the known torch defect {e.id} ({e.upstream}): {e.reason.splitlines()[0][:200]}"
             for e in entries for stage, msg in failures if e.explains(stage, msg)]
    return "".join(dict.fromkeys(notes))


def run_case(case: Case, goldens_for: Callable[[Cell], Any] | None = None) -> list[CellResult]:
    device = case.axes.devices[0]
    return [check_cell_of(cell, goldens_for(cell) if goldens_for else NoGoldens()) for cell in declared_cells(case, device)]


# --------------------------------------------------------------------------------------------- the pytest plugin

class ACConformance:
    """The ``ac_conformance`` fixture: ``ac_conformance.check(build, policy=..., backends=..., budgets=...)``."""

    def __init__(self, request):
        self.request = request
        self.reports: list[Report] = []

    def check(self, build: Callable[..., Any], policy: policies.Policy | str = "full", *,
              backends: Iterable[str] = ("aot_eager",), budgets: Iterable[float | None] = (None,),
              partitioners: Iterable[str] = ("min_cut",), device: str | None = None, dtype: str = "float32",
              goldens: str | os.PathLike | None = None, tolerance: tuple[float, float] | None = None,
              via: str = "wrapper", input_grads: bool = True, name: str | None = None) -> Report:
        """Check ``build`` under ``policy`` on every backend x budget (x partitioner) cell; fails the test with one
        message naming every failing cell and check.  ``goldens``: a folder for golden graphs (relative to the test
        file), compared and updated like the project's (``pytest --snapshot-update``).  Returns the :class:`Report`
        (verdicts and figures per cell) when every cell passed."""
        __tracebackhide__ = True
        device = device or self.request.config.getoption("ac_device")
        try:
            case = user_case(build, policy, name=name, backends=backends, budgets=budgets, partitioners=partitioners,
                             device=device, dtype=dtype, tolerance=tolerance, via=via, input_grads=input_grads)
        except InputError as e:
            pytest.fail(f"ac_conformance: bad input: {e}", pytrace=False)
        goldens_for = None
        if goldens is not None:
            root = Path(goldens)
            if not root.is_absolute():
                root = Path(self.request.node.path).parent / root
            snapshot = self.request.getfixturevalue("snapshot")
            update = updating(self.request.config)
            goldens_for = lambda cell: UserGoldens(snapshot, root, cell.id, cell.axes.device, update)  # noqa: E731
        report = Report(run_case(case, goldens_for))
        self.reports.append(report)
        for r in report.results:
            self.request.node.user_properties.append((r.id, r.verdict))
        if not report.ok:
            pytest.fail(report.message(), pytrace=False)
        return report


def pytest_addoption(parser):
    group = parser.getgroup("ac-conformance-user", "activation-checkpointing conformance of your model")
    group.addoption("--ac-device", dest="ac_device", default=os.environ.get("AC_DEVICE", "cpu"),
                    help="device the ac_conformance fixture checks on by default (cpu or cuda)")


@pytest.fixture
def ac_conformance(request) -> ACConformance:
    """Checks your model under activation checkpointing with the harness's oracles; see harness/user/conformance.py."""
    return ACConformance(request)

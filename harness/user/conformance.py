"""Conformance for the user's own model: what the ``ac_conformance`` pytest fixture (:class:`ACConformance`, registered
by harness/user/pytest_plugin.py, a ``pytest11`` plugin installed with the package) and the ``ac-conformance check``
command line (harness/user/cli.py) run.

Nothing here re-implements a check.  A user's factory and an AC policy (a harness policy of
:mod:`harness.core.policies`, the model's own mechanism of :mod:`harness.rows.mechanisms`, or a name) become a
:class:`~harness.core.case.Case` through :func:`harness.rows.modelcase.model_case` (inputs, outputs, blocks, the
reference without AC: see there).  Each of its cells (backend x budget x partitioner) goes through
:func:`harness.core.suite.check_cell`: numerics against eager with and without AC (outputs, input and parameter
gradients; a mismatch that compiling without AC shows too is a backend difference, harness/core/attribution.py),
every invariant of :mod:`harness.core.invariants`, whether AC had any effect, then the goldens (compared only when
every semantic check passed, so an update never blesses a wrong result).  The figures come from
:mod:`harness.core.analysis` and :mod:`harness.core.peak`, each beside the same figure without AC.

Verdicts and exit codes (the nightly's 0-3, plus two of the user path's own):

  pass 0, drift 1 (graphs differ from goldens), wrong 2, bad input 3 (also: the model cannot run eagerly without AC,
  or its reference without AC still checkpoints), backend 4 (a compile/backend difference: compiled without AC
  differs from eager the same way), no-effect 5 (AC had no effect: nothing recomputed, the no-AC bytes saved).

Bad input found before any compile raises :class:`InputError` with a sentence saying what to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.core import analysis, attribution, figures, policies
from harness.core.case import Case, Cell, Runner
from harness.core.golden import GoldenDrift, GoldenGraphExtension, Goldens, golden_text, split_golden, updating
from harness.core.pipeline import baseline
from harness.core.suite import check_cell
from harness.rows.collect import declared_cells
from harness.rows.modelcase import (BACKENDS, PARTITIONERS, Described, InputError, ModelCase,  # noqa: F401 - API
                                    load_factory, model_case, resolve_policy, save_list_summary)

CLEAN, DRIFT, WRONG, BAD_INPUT, BACKEND, NO_EFFECT = 0, 1, 2, 3, 4, 5  # exit codes (0-3 as the nightly's)
VERDICT_EXIT = {"pass": CLEAN, "drift": DRIFT, "wrong": WRONG, "bad-input": BAD_INPUT, "backend": BACKEND,
                "no-effect": NO_EFFECT}
EXIT_WORDS = {CLEAN: "clean", DRIFT: "graph drift", WRONG: "wrong results", BAD_INPUT: "bad input",
              BACKEND: "compile/backend difference, not AC", NO_EFFECT: "AC had no effect"}
SEVERITY = ("wrong", "bad-input", "no-effect", "backend", "drift", "pass")  # the first present decides the exit code
FIRST_LINES_LIMIT = 6000  # characters of a cell's message on the console past every check's first line


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


def user_case(factory: Callable[..., Any], policy: policies.Policy | str, **kwargs) -> Case:
    """The case a user's factory and policy make (validated: raises :class:`InputError`); see :func:`model_case`."""
    return model_case(factory, policy, check_backends=lambda b: backend_problem(b, kwargs.get("device", "cpu")),
                      **kwargs).case


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
    verdict: str  # one of VERDICT_EXIT
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (check, message)
    message: str = ""
    run: Any = None
    figures: dict = dataclasses.field(default_factory=dict)
    no_ac: dict = dataclasses.field(default_factory=dict)  # the same figures without AC (the invariants' baseline)
    checks: int = 0
    described: Described | None = None  # what the policy wrapped, the outputs compared, warnings
    notes: list[str] = dataclasses.field(default_factory=list)  # what the cell's policy did (save list, ...)

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def warnings(self) -> list[str]:
        return list(self.described.warnings if self.described else []) + [n for n in self.notes if
                                                                            n.startswith("warning")]


def first_lines(result: CellResult, limit: int = FIRST_LINES_LIMIT, where: str = "report.html") -> str:
    """The cell's message for the console and JSON: every failing check's first lines (the comparison, the tensor,
    the errors) always, then the rest up to ``limit`` characters, any cut marked with where the whole text is."""
    head = [f"{result.id}: {result.verdict} ({len(result.failures)} failing check(s))"]
    for stage, msg in result.failures:
        lines = msg.splitlines() or [""]
        keep = [lines[0]] + [ln for ln in lines[1:8] if ln.startswith("  ")]  # the first line and its item lines
        head.append(f"[{stage}] " + "\n".join(keep))
    text = "\n".join(head)
    full = result.message
    if len(full) <= len(text) or full == text:
        return text
    if len(full) <= limit:  # it all fits: shown once, not its first lines and then again in full
        return full
    return (text + f"\n  --- the message's first {limit} characters ---\n" + full[:limit]
            + f"\n  [... cut: {len(full) - limit} of {len(full)} characters not shown; the whole message is in "
              f"{where}]")


@dataclasses.dataclass
class Report:
    results: list[CellResult]

    @property
    def exit_code(self) -> int:
        verdicts = {r.verdict for r in self.results}
        return next((VERDICT_EXIT[v] for v in SEVERITY if v in verdicts), CLEAN)

    @property
    def ok(self) -> bool:
        return self.exit_code == CLEAN

    def __getitem__(self, cell_id: str) -> CellResult:
        return next(r for r in self.results if r.id == cell_id)

    def summary(self) -> str:
        return "\n".join(map(summary_line, self.results))

    def message(self, limit: int = FIRST_LINES_LIMIT, where: str = "report.html") -> str:
        """One readable failure message: every failing cell, each failing check's first lines kept."""
        bad = [r for r in self.results if r.verdict != "pass"]
        words = {"drift": "graph drift", "backend": "backend difference", "no-effect": "AC without effect",
                 "bad-input": "bad input"}
        counts = ", ".join(f"{sum(r.verdict == v for r in bad)} {words.get(v, v)}" for v in SEVERITY[:-1]
                           if any(r.verdict == v for r in bad))
        head = f"ac_conformance: {len(bad)} of {len(self.results)} cell(s) failed ({counts})"
        return "\n\n".join([head] + [first_lines(r, limit, where) for r in bad])


def summary_line(r: CellResult) -> str:
    """A cell's verdict and figures, each beside the same figure without AC; its notes and warnings below."""
    f, n = r.figures, r.no_ac
    figs = (f"saved {fmt_bytes(f.get('activation_bytes'))} (no AC {fmt_bytes(n.get('activation_bytes'))}), "
            f"peak {fmt_bytes(f.get('peak_bytes'))} (no AC {fmt_bytes(n.get('peak_bytes'))}), "
            f"recomputed {f.get('recomputed_ops', '?')} ops ({fmt_flops(f.get('recompute_flops'))} FLOPs), "
            f"bw {fmt_flops(f.get('bw_flops'))} FLOPs (no AC {fmt_flops(n.get('bw_flops'))})") if f else ""
    return (f"{r.verdict.upper():5} {r.id}" + (f"  [{figs}]" if figs else "")
            + "".join(f"\n      {note}" for note in r.notes))


def fmt_bytes(b) -> str:
    return figures.fmt_bytes(b, human=True)


def fmt_flops(f) -> str:
    if f is None:
        return "?"
    return f"{f / 1e6:.2f} M" if f >= 1e6 else f"{f / 1e3:.1f} k" if f >= 1e3 else str(f)


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
        out["checkpointed_nodes"] = sum(len(g.policies) for g in a.graphs)
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


def verdict_of(failures: list[tuple[str, str]]) -> str:
    """The cell's category from its failing checks: any other failure is wrong; only backend differences: backend;
    only "AC had no effect" (with or without backend differences): no-effect."""
    stages = {s for s, _ in failures}
    if not stages:
        return "pass"
    if stages == {"golden"}:
        return "drift"
    if stages <= {attribution.BACKEND_STAGE}:
        return "backend"
    if stages <= {attribution.EFFECT_STAGE, attribution.BACKEND_STAGE}:
        return "no-effect"
    return "wrong"


def check_cell_of(cell: Cell, goldens, described: Described | None = None, policy=None) -> CellResult:
    """One cell through the suites' own template (harness.core.suite.check_cell): numerics, invariants, goldens last."""
    record = _Record()
    failures: list[tuple[str, str]] = []
    try:
        check_cell(cell, goldens, record)
        message = ""
    except GoldenDrift as e:
        message, failures = str(e), [("golden", str(e))]
    except Exception as e:  # noqa: BLE001 - CellFailure names every failing check; anything else is one
        message = str(e)
        failures = list(getattr(e, "failures", [("harness", f"{type(e).__name__}: {e}")]))
    verdict = verdict_of(failures)
    if verdict == "wrong":
        message += known_defects(cell, record.run, failures)
    result = CellResult(cell, verdict, failures, message, record.run, figures_of(record.run),
                        checks=sum(v for k, v in record.props.items() if k.endswith("_checks")), described=described)
    if record.run is not None and cell.case.runner is Runner.STANDARD:
        with contextlib.suppress(Exception):
            plain = baseline(cell.case, dataclasses.replace(cell.axes, budget=None), False)
            result.no_ac = figures_of(plain)
            if result.no_ac.get("checkpointed_nodes"):
                problem = ("the reference without AC still checkpoints: its compiled graph has "
                           f"{result.no_ac['checkpointed_nodes']} nodes tagged for recompute, so the model calls "
                           "checkpoint in its forward by a mechanism the harness cannot turn off; give the factory an "
                           "ac: bool parameter and build the model without AC for ac=False")
                result.failures.append(("reference", problem))
                result.verdict, result.message = "bad-input", (result.message + "\n" if result.message else "") + \
                    f"{cell.id}: bad input: {problem}"
    summary = save_list_summary(policy, record.run) if policy is not None else None
    if summary is not None:
        text, nothing = summary
        result.notes.append(("warning: the selective policy saved none of its ops (full AC under another name): "
                             if nothing else "") + text)
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


def run_case(case: Case | ModelCase, goldens_for: Callable[[Cell], Any] | None = None,
             on_result: Callable[[CellResult], None] | None = None) -> list[CellResult]:
    """Every cell of the case (a ModelCase carries what its policy wrapped into each result)."""
    mc = case if isinstance(case, ModelCase) else None
    case = mc.case if mc else case
    out = []
    for cell in declared_cells(case, case.axes.devices[0]):
        result = check_cell_of(cell, goldens_for(cell) if goldens_for else NoGoldens(),
                               mc.described if mc else None, mc.policy if mc else None)
        if on_result:
            on_result(result)
        out.append(result)
    return out


# -------------------------------------------------------------------------------------------- the pytest fixture

class ACConformance:
    """The ``ac_conformance`` fixture: ``ac_conformance.check(build, policy=..., backends=..., budgets=...)``."""

    def __init__(self, request):
        self.request = request
        self.reports: list[Report] = []

    def check(self, build: Callable[..., Any], policy: policies.Policy | str = "full", *,
              backends: Iterable[str] = ("aot_eager",), budgets: Iterable[float | None] = (None,),
              partitioners: Iterable[str] = ("min_cut",), device: str | None = None, dtype: str = "float32",
              goldens: str | os.PathLike | None = None, tolerance: tuple[float, float] | None = None,
              via: str = "wrapper", input_grads: bool = True, name: str | None = None,
              blocks: Iterable[str] | None = None) -> Report:
        """Check ``build`` under ``policy`` on every backend x budget (x partitioner) cell; fails the test with one
        message naming every failing cell and check.  ``goldens``: a folder for golden graphs (relative to the test
        file), compared and updated like the project's (``pytest --snapshot-update``).  Returns the :class:`Report`
        (verdicts and figures per cell) when every cell passed."""
        __tracebackhide__ = True
        device = device or self.request.config.getoption("ac_device")
        try:
            case = model_case(build, policy, name=name, backends=backends, budgets=budgets, partitioners=partitioners,
                              device=device, dtype=dtype, tolerance=tolerance, via=via, input_grads=input_grads,
                              blocks=blocks, check_backends=lambda b: backend_problem(b, device))
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
            pytest.fail(report.message(limit=1 << 30, where='the test output'), pytrace=False)
        return report

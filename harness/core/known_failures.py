"""Known failures as root causes: one reviewable TOML file (known_failures.toml), one entry per root cause.

An entry names the defect (``id``, ``reason``, ``upstream`` link or explanation, ``repro`` script), the cells it
concerns (a typed selector: case names, areas, axes predicates such as ``budget = [0.0]``, and case features read
off the recorded run such as ``must_save``), the one check it breaks (``stage`` and a ``message`` regex) and the torch
releases where it holds (``torch``, a PEP 440 specifier such as ``">=2.13,<2.14.1"``).  A root cause whose one
defect shows in two checks (a random op recomputed with fresh randomness breaks the replay invariant and, as its
consequence, the gradient) lists both under ``also = [[stage, message], ...]``; each must fail.

A matching cell runs every check (harness/core/suite.py): the named check must fail with that message and every other
check must pass; the cell is then an expected failure reported as "known failure <id> at <stage>; N other checks
passed".  Another failing check fails the cell, naming it; the named check passing is a strict XPASS (the fix
landed: remove the entry or narrow its release range).  Selectors are predicates, never id prefixes, so
``budget = [0.0]`` cannot match a ``budget0.05`` cell.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.core import paths
from harness.core.case import Cell

AXES = ("partitioner", "backend", "device", "dtype", "budget", "composition", "compiled_autograd", "ambient", "export")
# Case features read off a recorded run: name -> (description, predicate on the run's analysis).
FEATURES = {
    "must_save": "the joint graph has a node a SAC policy tagged MUST_SAVE",
    "must_save_view": "the joint graph has a view op (detach, alias, ...) tagged MUST_SAVE",
}


@dataclasses.dataclass(frozen=True)
class Selector:
    cases: tuple[str, ...] = ()
    areas: tuple[str, ...] = ()
    axes: tuple[tuple[str, tuple], ...] = ()  # (axis, allowed values)
    features: tuple[str, ...] = ()
    # Plain pytest tests (not cells): node-id globs; the test is a strict xfail whose AssertionError must match
    # ``message`` (stage "test"): harness/tools/plugin.py applies it.
    tests: tuple[str, ...] = ()

    def selects(self, cell: Cell) -> bool:
        """The static part: case, area and axes (features need the run: :meth:`KnownFailure.applies`)."""
        if self.tests and not (self.cases or self.areas or self.axes or self.features):
            return False  # an entry about plain tests only
        if self.cases and cell.case.name not in self.cases:
            return False
        if self.areas and cell.case.area not in self.areas:
            return False
        return all(getattr(cell.axes, axis) in allowed for axis, allowed in self.axes)

    def selects_test(self, nodeid: str) -> bool:
        """Whether a ``tests`` glob names the plain pytest test ``nodeid`` (``*`` and ``?``; brackets are literal,
        as in a parametrized id, not a character class)."""
        import fnmatch

        return any(fnmatch.fnmatchcase(nodeid, p.replace("[", "[[]")) for p in self.tests)


@dataclasses.dataclass(frozen=True)
class KnownFailure:
    id: str
    reason: str
    upstream: str  # a pytorch/pytorch issue or PR link, or "none: <why>"
    repro: str  # a script under findings/ that exits 1 while the defect reproduces, or ""
    # the check it breaks: run, numerics, expectations, case_check, case_check:<part> (a contract clause's named
    # check), invariant:<name>, error_check
    stage: str
    message: str  # regex the failing check's message must match
    torch: SpecifierSet
    select: Selector
    also: tuple[tuple[str, str], ...] = ()  # further (stage, message) the same defect breaks

    @property
    def breaks(self) -> tuple[tuple[str, str], ...]:
        return ((self.stage, self.message), *self.also)

    def holds_on(self, version: str) -> bool:
        return Version(version.split("+")[0]) in self.torch

    def applies(self, cell: Cell, run=None, version: str | None = None) -> bool:
        """Whether this entry covers ``cell`` (on ``run``'s features, when the entry names some) under ``version``."""
        if not self.select.selects(cell):
            return False
        if version is not None and not self.holds_on(version):
            return False
        return all(_feature(f, run) for f in self.select.features)

    def explains(self, stage: str, message: str) -> bool:
        return any(stage == s and re.search(m, message) is not None for s, m in self.breaks)


def _feature(name: str, run) -> bool:
    if run is None:
        return True  # static matching (coverage, rot warnings): a feature can only narrow
    from harness.core import analysis

    a = analysis.of(run)
    if name == "must_save":
        return a is not None and any(p == "MUST_SAVE" for g in a.graphs for p in g.policies.values())
    if name == "must_save_view":
        return a is not None and any(getattr(n.target, "is_view", False) for g in a.graphs for n in g.joint.graph.nodes
                                     if g.policies.get(n.name) == "MUST_SAVE")
    raise ValueError(f"unknown case feature {name!r}; known: {sorted(FEATURES)}")


def _entry(raw: dict, where: str) -> KnownFailure:
    required = ("id", "reason", "upstream", "stage", "message", "torch", "select")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{where}: known-failure entry lacks {missing}")
    extra = set(raw) - {*required, "repro", "also"}
    if extra:
        raise ValueError(f"{where} ({raw['id']}): unknown keys {sorted(extra)}")
    sel = dict(raw["select"])
    unknown = set(sel) - {"cases", "areas", "features", "tests", *AXES}
    if unknown:
        raise ValueError(f"{where} ({raw['id']}): unknown selector keys {sorted(unknown)}")
    for f in sel.get("features", ()):
        if f not in FEATURES:
            raise ValueError(f"{where} ({raw['id']}): unknown feature {f!r}; known: {sorted(FEATURES)}")
    if not sel:
        raise ValueError(f"{where} ({raw['id']}): an empty selector would match every cell")
    axes = tuple((axis, tuple(sel[axis])) for axis in AXES if axis in sel)
    also = tuple((str(st), str(msg)) for st, msg in raw.get("also", ()))
    for _, msg in ((raw["stage"], raw["message"]), *also):
        re.compile(msg)
    return KnownFailure(raw["id"], raw["reason"], raw["upstream"], raw.get("repro", ""), raw["stage"], raw["message"],
                        SpecifierSet(raw["torch"]),
                        Selector(tuple(sel.get("cases", ())), tuple(sel.get("areas", ())), axes,
                                 tuple(sel.get("features", ())), tuple(sel.get("tests", ()))), also)


def load(path: Path = paths.KNOWN_FAILURES) -> list[KnownFailure]:
    if not path.exists():
        return []
    doc = tomllib.loads(path.read_text())
    entries = [_entry(raw, f"{path.name}: failure #{i + 1}") for i, raw in enumerate(doc.get("failure", []))]
    ids = [e.id for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{path.name}: duplicate known-failure ids {dupes}")
    return entries


def matching(entries: Iterable[KnownFailure], cell: Cell, run=None, version: str | None = None) -> list[KnownFailure]:
    return [e for e in entries if e.applies(cell, run, version)]


def unmatched(entries: list[KnownFailure], cells: list[Cell]) -> list[KnownFailure]:
    """Entries whose selector matches no cell of the case database: they have rotted (test entries are checked
    against the collected tests by tests/test_known_failures.py)."""
    return [e for e in entries if not e.select.tests and not any(e.select.selects(c) for c in cells)]


def known_test(entries: Iterable[KnownFailure], nodeid: str, version: str) -> KnownFailure | None:
    """The entry covering the plain pytest test ``nodeid`` on torch ``version`` (:meth:`Selector.selects_test`)."""
    return next((e for e in entries if e.holds_on(version) and e.select.selects_test(nodeid)), None)

"""The golden store: a syrupy extension writing one plain-text file per (cell, graph kind) under ``golden/<device>/``.

Each file has a short header (case id, graph kind, torch version, device) and the canonical graph text.
Only the body is compared, so a golden blessed under one torch release still matches under another when the
graph did not change; the header says which release wrote it.  Writes are atomic (temp file + rename), so an
interrupted update leaves every golden either old or new.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from harness.core import analysis, figures
from harness.core.paths import GOLDEN_DIR, ROOT

HEADER_END = "# ---\n"
UPDATE_HINT = "make snapshot-update"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def split_golden(text: str) -> tuple[str, str]:
    """(header, body) of a golden file's text."""
    if HEADER_END in text:
        head, _, body = text.partition(HEADER_END)
        return head + HEADER_END, body
    return "", text


def golden_text(cell_id: str, kind: str, device: str, body: str, hint: str = UPDATE_HINT) -> str:
    header = (f"# case: {cell_id}\n# graph: {kind}\n# torch: {torch.__version__}\n# device: {device}\n"
              f"# written by `{hint}`; review diffs, never edit by hand\n")
    return header + HEADER_END + body


def annotations_text(run) -> str:
    """Each policy-tagged call node of the run's joint graphs, "name: target -> policy" (the "annotations" kind)."""
    return "\n".join(analysis.policy_lines(run.graphs.get("joint", []))) + "\n"


# Golden kinds a case may ask for (Case.goldens) that are read off the run rather than recorded as a graph.
DERIVED = {"annotations": annotations_text}


def texts_for(run) -> dict[str, str]:
    """The texts a cell compares with goldens, by kind: its recorded graphs (those the case snapshots), the derived
    kinds it asks for (DERIVED), plus the "summary" figures of its analysis (harness/core/figures.py) when it recorded
    any graph and snapshots every kind or names "summary".  A matrix cell snapshots none."""
    case = run.cell.case
    texts = run.texts if case.goldens is None else {k: v for k, v in run.texts.items() if k in case.goldens}
    texts = {**texts, **{k: DERIVED[k](run) for k in case.goldens or () if k in DERIVED}}
    summary = case.goldens is None or "summary" in case.goldens
    a = analysis.of(run) if texts and summary else None
    return {**texts, "summary": figures.summary_text(a)} if a is not None else dict(texts)


class Golden(NamedTuple):
    """What one golden file holds: the body (canonical text) and the header fields."""

    cell_id: str
    kind: str
    device: str
    body: str


class GoldenGraphExtension(SingleFileSnapshotExtension):
    """Stores goldens as ``golden/<device>/<suite module>/<test>[<cell id>][<kind>].txt``.

    syrupy's hooks do the work: ``serialize`` writes the header and body, ``matches`` compares bodies only (a golden
    blessed under one torch release matches under another when the graph did not change), ``diff_lines`` shows the
    body diff, ``write_snapshot_collection`` writes atomically."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"
    device = "cpu"
    update_hint = UPDATE_HINT  # what the header says wrote the file

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(GOLDEN_DIR / cls.device / test_location.basename)

    def serialize(self, data, **kwargs) -> str:
        return golden_text(*data, hint=self.update_hint) if isinstance(data, Golden) else str(data)

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        return split_golden(serialized_data)[1] == split_golden(snapshot_data)[1]

    def diff_lines(self, serialized_data, snapshot_data):
        old, new = split_golden(str(snapshot_data))[1], split_golden(str(serialized_data))[1]
        yield from difflib.unified_diff(old.splitlines(), new.splitlines(), "golden", "recorded", lineterm="")

    @classmethod
    def write_snapshot_collection(cls, *, snapshot_collection, name_order=None) -> None:
        path = Path(snapshot_collection.location)
        data = next(iter(snapshot_collection)).data
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def updating(config) -> bool:
    """The pytest run writes goldens (``--snapshot-update`` or ``--snapshot-update-new-only``)."""
    return bool(config.option.update_snapshots or getattr(config.option, "update_new_snapshots_only", False))


@functools.cache  # one class per device: syrupy discovers the golden tree once per extension class, not per test
def extension_for(device: str) -> type[GoldenGraphExtension]:
    return type(f"GoldenGraphExtension_{device}", (GoldenGraphExtension,), {"device": device})


class GoldenDrift(AssertionError):
    """Graphs differ from their goldens (or goldens are missing/stale) while every semantic check passed:
    information for a reviewer, not an alarm.  The nightly report tells it apart from semantic failures."""


class Goldens:
    """The per-test handle: compares each graph kind's text with its golden, or keeps the goldens untouched."""

    update_hint = UPDATE_HINT  # what a failure message tells to run (the user plugin says `pytest --snapshot-update`)

    def __init__(self, snapshot, cell_id: str, device: str, update: bool):
        self.snapshot = snapshot.use_extension(extension_for(device))
        self.cell_id, self.device, self.update = cell_id, device, update

    @classmethod
    def of_request(cls, snapshot, cell_id: str, device: str, config) -> "Goldens":
        """The handle for a test of this pytest run: writes under ``--snapshot-update``; under
        ``--snapshot-update-new-only`` syrupy writes the missing goldens and leaves existing ones as they are (a
        drifted existing golden still fails the cell), so the handle lets the missing ones through to syrupy."""
        return cls(snapshot, cell_id, device, update=updating(config))

    def path(self, kind: str) -> Path:
        return Path(self.snapshot.extension.get_location(test_location=self.snapshot.test_location, index=kind))

    def existing_kinds(self) -> list[str]:
        """The graph kinds this cell has goldens for (files ``<test>[<cell id>][<kind>].txt``)."""
        name = re.escape(self.path("KIND").name).replace("KIND", r"(?P<kind>[^\[\]]+)")
        return sorted(m["kind"] for p in self.path("KIND").parent.glob("*.txt") if (m := re.fullmatch(name, p.name)))

    def assert_match(self, texts: dict[str, str]) -> int:
        """Every recorded graph kind against its golden; the kinds recorded before but not now are reported."""
        __tracebackhide__ = True
        problems = []
        stale = sorted(set(self.existing_kinds()) - set(texts))
        for kind, body in sorted(texts.items()):
            if not self.update and not self.path(kind).exists():
                problems.append(f"no golden for graph '{kind}' ({_shown(self.path(kind))}); "
                                f"create it with `{self.update_hint}` and review it before committing")
                continue
            assertion = self.snapshot(name=kind)
            if not assertion == Golden(self.cell_id, kind, self.device, body):
                problems.append(f"graph '{kind}' drifted from {_shown(self.path(kind))}:\n"
                                + "\n".join(assertion.get_assert_diff()))
        if stale and not self.update:
            problems.append(f"goldens exist for graph kinds no longer recorded: {stale}; `{self.update_hint}` removes them")
        if problems:
            raise GoldenDrift(f"{self.cell_id}: graphs differ from goldens:\n" + "\n".join(problems))
        return len(texts)

    def drift(self, texts: dict[str, str]) -> list[str]:
        """How a failing cell's texts differ from its existing goldens, compared without writing anything (a failing
        cell is never blessed); a kind without a golden is not drift (a failing cell's goldens were never written)."""
        problems = []
        for kind, body in sorted(texts.items()):
            path = self.path(kind)
            if path.exists() and (old := split_golden(path.read_text())[1]) != body:
                diff = difflib.unified_diff(old.splitlines(), body.splitlines(), "golden", "recorded", lineterm="")
                problems.append(f"graph '{kind}' drifted from {_shown(path)}:\n" + "\n".join(diff))
        stale = sorted(set(self.existing_kinds()) - set(texts))
        if stale:
            problems.append(f"goldens exist for graph kinds no longer recorded: {stale}")
        return problems

    def keep_existing(self) -> None:
        """Keep this cell's goldens as they are (a failing cell must not lose or bless goldens).  syrupy counts a
        snapshot as used only when it is asserted, and an update deletes unused ones, so each existing golden is
        asserted against its own text."""
        for kind in self.existing_kinds():
            self.snapshot(name=kind) == self.path(kind).read_text()  # noqa: B015 (the comparison marks it used)


def tree_digest(root: Path = GOLDEN_DIR) -> dict[str, str]:
    """sha256 of every golden file, by path relative to ``root``: the before/after of an update."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.txt"))}

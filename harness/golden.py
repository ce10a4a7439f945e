"""The golden store: a syrupy extension writing one plain-text file per (cell, graph kind) under ``golden/<device>/``.

Each file has a short header (case id, graph kind, torch version, device) and the canonical graph text.
Only the body is compared, so a golden blessed under one torch release still matches under another when the
graph did not change; the header says which release wrote it.  Writes are atomic (temp file + rename), so an
interrupted update leaves every golden either old or new.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

ROOT = Path(__file__).resolve().parent.parent
# AC_GOLDEN_DIR points the store elsewhere (the harness's own tests use a temporary one).
GOLDEN_DIR = Path(os.environ.get("AC_GOLDEN_DIR", ROOT / "golden")).resolve()
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


def golden_text(cell_id: str, kind: str, device: str, body: str) -> str:
    header = (f"# case: {cell_id}\n# graph: {kind}\n# torch: {torch.__version__}\n# device: {device}\n"
              f"# written by `{UPDATE_HINT}`; review diffs, never edit by hand\n")
    return header + HEADER_END + body


class GoldenGraphExtension(SingleFileSnapshotExtension):
    """Stores goldens as ``golden/<device>/<suite module>/<test>[<cell id>][<kind>].txt``."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"
    device = "cpu"

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(GOLDEN_DIR / cls.device / test_location.basename)

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        return split_golden(serialized_data)[1] == split_golden(snapshot_data)[1]

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


@functools.cache  # one class per device: syrupy discovers the golden tree once per extension class, not per test
def extension_for(device: str) -> type[GoldenGraphExtension]:
    return type(f"GoldenGraphExtension_{device}", (GoldenGraphExtension,), {"device": device})


class GoldenDrift(AssertionError):
    """Graphs differ from their goldens (or goldens are missing/stale) while every semantic check passed:
    information for a reviewer, not an alarm.  The nightly report tells it apart from semantic failures."""


class Goldens:
    """The per-test handle: compares each graph kind's text with its golden, or keeps the goldens untouched."""

    def __init__(self, snapshot, cell_id: str, device: str, update: bool):
        self.snapshot = snapshot.use_extension(extension_for(device))
        self.cell_id, self.device, self.update = cell_id, device, update

    def path(self, kind: str) -> Path:
        return Path(self.snapshot.extension.get_location(test_location=self.snapshot.test_location, index=kind))

    def existing_kinds(self) -> list[str]:
        prefix = self.path("KIND").name.split("[KIND]")[0]
        return sorted(p.name[len(prefix) + 1:-len("].txt")] for p in self.path("x").parent.glob("*.txt")
                      if p.name.startswith(prefix + "[") and p.name[len(prefix) + 1:-len("].txt")].count("[") == 0)

    def assert_match(self, texts: dict[str, str]) -> int:
        """Every recorded graph kind against its golden; the kinds recorded before but not now are reported."""
        __tracebackhide__ = True
        problems = []
        stale = sorted(set(self.existing_kinds()) - set(texts))
        for kind, body in sorted(texts.items()):
            if not self.update and not self.path(kind).exists():
                problems.append(f"no golden for graph '{kind}' ({_shown(self.path(kind))}); "
                                f"create it with `{UPDATE_HINT}` and review it before committing")
                continue
            if not self.snapshot(name=kind) == golden_text(self.cell_id, kind, self.device, body):
                problems.append(self._diff(kind, body))
        if stale and not self.update:
            problems.append(f"goldens exist for graph kinds no longer recorded: {stale}; `{UPDATE_HINT}` removes them")
        if problems:
            raise GoldenDrift(f"{self.cell_id}: graphs differ from goldens:\n" + "\n".join(problems))
        return len(texts)

    def _diff(self, kind: str, body: str) -> str:
        import difflib

        old = split_golden(self.path(kind).read_text())[1] if self.path(kind).exists() else ""
        diff = difflib.unified_diff(old.splitlines(), body.splitlines(), f"golden {kind}", f"recorded {kind}", lineterm="")
        return f"graph '{kind}' drifted from {_shown(self.path(kind))}:\n" + "\n".join(diff)

    def keep_existing(self) -> None:
        """Mark this cell's goldens as used without writing them (a failing cell must not lose or bless goldens)."""
        for kind in self.existing_kinds():
            self.snapshot(name=kind) == self.path(kind).read_text()  # noqa: B015 (the comparison marks it used)


def tree_digest(root: Path = GOLDEN_DIR) -> dict[str, str]:
    """sha256 of every golden file, by path relative to ``root``: the before/after of an update."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.txt"))}

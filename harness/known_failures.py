"""Known failures: one reviewable file of cell-id prefixes, each with a reason (a torch issue or an explanation).

A matching cell is marked ``xfail(strict=True)``: it keeps running, and the day torch fixes it the cell
XPASSes, which fails the run and says to remove the entry.  Entries that match no cell are reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

FILE = Path(__file__).resolve().parent.parent / "known_failures.txt"


@dataclasses.dataclass(frozen=True)
class KnownFailure:
    prefix: str
    reason: str
    line: int


def load(path: Path = FILE) -> list[KnownFailure]:
    entries = []
    for i, raw in enumerate(path.read_text().splitlines(), 1) if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        prefix, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise ValueError(f"{path.name}:{i}: an entry needs a reason after '#': {raw!r}")
        entries.append(KnownFailure(prefix.strip(), reason.strip(), i))
    return entries


def match(cell_id: str, entries: list[KnownFailure]) -> KnownFailure | None:
    for e in entries:
        if cell_id.startswith(e.prefix):
            return e
    return None


def unmatched(entries: list[KnownFailure], cell_ids: list[str]) -> list[KnownFailure]:
    return [e for e in entries if not any(c.startswith(e.prefix) for c in cell_ids)]

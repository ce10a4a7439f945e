"""What a snapshot update did to ``golden/``: added, changed and removed files, and a diff to review."""

from __future__ import annotations

import difflib
from pathlib import Path

from harness.golden import GOLDEN_DIR, ROOT, split_golden, tree_digest

DIFF_FILE = ROOT / "reports" / "golden-review.diff"


def golden_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
        "removed": sorted(set(before) - set(after)),
    }


def review_diff(changes: dict[str, list[str]], old_texts: dict[str, str]) -> str:
    out = []
    for kind in ("changed", "added", "removed"):
        for rel in changes[kind]:
            old = split_golden(old_texts.get(rel, ""))[1].splitlines()
            path = GOLDEN_DIR / rel
            new = split_golden(path.read_text())[1].splitlines() if path.exists() else []
            out += difflib.unified_diff(old, new, f"a/golden/{rel}", f"b/golden/{rel}", lineterm="")
    return "\n".join(out) + ("\n" if out else "")


def report_golden_changes(terminalreporter, before: dict[str, str], old_texts: dict[str, str]) -> None:
    changes = golden_changes(before, tree_digest())
    if not any(changes.values()):
        return
    tr = terminalreporter
    tr.write_sep("-", "golden changes (review before committing)")
    for kind, paths in changes.items():
        tr.write_line(f"{kind}: {len(paths)}")
        for p in paths:
            tr.write_line(f"  {kind[0].upper()} golden/{p}")
    DIFF_FILE.parent.mkdir(exist_ok=True)
    DIFF_FILE.write_text(review_diff(changes, old_texts))
    tr.write_line(f"review diff: {DIFF_FILE.relative_to(ROOT)}")

"""What a snapshot update did to ``golden/``: added, changed and removed files, and a diff to review."""

from __future__ import annotations

import difflib
from pathlib import Path

from harness.core.golden import GOLDEN_DIR, ROOT, split_golden, tree_digest

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


def refused_cells(terminalreporter) -> list[tuple[str, str]]:
    """(cell id, reason) of every cell whose goldens an update refused to write: its test failed, so its existing
    goldens were kept as they were."""
    out = []
    for rep in terminalreporter.stats.get("failed", []):
        if not rep.nodeid.startswith("suites/") or "XPASS(strict)" in str(rep.longrepr):
            continue
        crash = getattr(rep.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else str(rep.longrepr).strip().splitlines()[-1:] or ["(no message)"]
        reason = reason if isinstance(reason, str) else reason[0]
        cell = rep.nodeid.split("[", 1)[-1].rstrip("]") if "[" in rep.nodeid else rep.nodeid
        out.append((cell, f"{rep.when}: " + " ".join(reason.split())[:300] if rep.when != "call" else " ".join(reason.split())[:300]))
    return out


def report_refused(terminalreporter) -> None:
    refused = refused_cells(terminalreporter)
    if not refused:
        return
    tr = terminalreporter
    tr.write_sep("-", f"goldens refused: {len(refused)} cell(s) failed a check; their goldens were kept as they were")
    for cell, reason in refused:
        tr.write_line(f"  REFUSED {cell}: {reason}")


def remove_orphans(root=None) -> list[str]:
    """Delete goldens whose cell is not in the case database (any device): the case or one of its axes was removed.

    syrupy removes a stale graph kind of a cell that ran, but not the files of a cell that no longer exists while its
    suite module still does; this does.  Called after a full (unfiltered by -k) ``--snapshot-update``."""
    import re

    from harness.rows.cases import all_cases
    from harness.rows.collect import all_cell_ids, skipped_cell_id

    root = GOLDEN_DIR if root is None else root
    pattern = re.compile(r"^test_\w+\[(?P<cell>[^\]]+)\]\[[^\]]+\]\.txt$")
    removed = []
    for device_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        known = set(all_cell_ids((device_dir.name,)))
        known |= {skipped_cell_id(c, device_dir.name) for c in all_cases()}
        for path in sorted(device_dir.glob("test_*/*.txt")):
            m = pattern.match(path.name)
            if m and m["cell"] not in known:
                path.unlink()
                removed.append(str(path.relative_to(root)))
    return removed

"""The project's root and well-known paths, in one place (the bottom layer: imports nothing of the harness).

``AC_GOLDEN_DIR`` points the golden store elsewhere (the harness's own tests use a temporary one);
``AC_NIGHTLY_VENVS`` points the per-torch environments elsewhere (e.g. a disk with room for CUDA wheels).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(os.environ.get("AC_GOLDEN_DIR", ROOT / "golden")).resolve()
KNOWN_FAILURES = ROOT / "known_failures.toml"
FINDINGS = ROOT / "findings"
REPORTS = ROOT / "reports"
RUNS_DIR = ROOT / "runs"
NIGHTLY_VENVS = Path(os.environ.get("AC_NIGHTLY_VENVS", ROOT / ".nightly-venv"))
SCHEMA = ROOT / "docs" / "nightly-schema.json"
CACHE = ROOT / ".cache"
CATALOGUE = ROOT.parent / "shared" / "CATALOGUE.md"


def shown(path: Path) -> str:
    """``path`` relative to ROOT when it is inside the project, else absolute (for messages)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

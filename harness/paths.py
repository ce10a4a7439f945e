"""The project's well-known paths, defined once (the bottom layer: imports nothing of the harness)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# AC_GOLDEN_DIR points the golden store elsewhere (the harness's own tests use a temporary one).
GOLDEN_DIR = Path(os.environ.get("AC_GOLDEN_DIR", ROOT / "golden")).resolve()
KNOWN_FAILURES = ROOT / "known_failures.toml"
FINDINGS = ROOT / "findings"
REPORTS = ROOT / "reports"
RUNS_DIR = ROOT / "runs"
NIGHTLY_VENVS = ROOT / ".nightly-venv"
SCHEMA = ROOT / "docs" / "nightly-schema.json"
CACHE = ROOT / ".cache"
CATALOGUE = ROOT.parent / "shared" / "CATALOGUE.md"

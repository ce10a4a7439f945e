"""Area "contract": the checkpoint contract's clauses (harness/rows/contract.py, docs/contract.md), one case per
clause x program x mode x variant, each run by ``Runner.CONTRACT`` and judged by its clause's oracle."""

from __future__ import annotations

from harness.rows import contract

CASES = contract.cases()

"""Non-strict: make_fx through eager activation checkpointing under the non-strict tracing context (cases in harness/rows/cases/non_strict.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""Errors: documented error types and messages (cases in harness/rows/cases/errors.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

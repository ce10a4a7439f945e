"""Errors: documented error types and messages (cases in harness/cases/errors.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

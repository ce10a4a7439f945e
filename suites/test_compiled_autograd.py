"""Compiled autograd: a backward hook inside a checkpointed region forces a save (cases in harness/rows/cases/compiled_autograd.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

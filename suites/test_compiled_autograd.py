"""Compiled autograd: a backward hook inside a checkpointed region forces a save (cases in harness/cases/compiled_autograd.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

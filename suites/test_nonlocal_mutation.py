"""Nonlocal mutation: Python side effects inside checkpointed regions under torch.compile (cases in harness/rows/cases/nonlocal_mutation.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""Module state: what a step leaves in the module besides outputs and gradients (cases in harness/rows/cases/module_state.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

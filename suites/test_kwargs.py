"""Kwargs: user keyword arguments and symbolic sizes reaching tag_activation_checkpoint (cases in harness/rows/cases/kwargs.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

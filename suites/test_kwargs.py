"""Kwargs: user keyword arguments and symbolic sizes reaching tag_activation_checkpoint (cases in harness/cases/kwargs.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

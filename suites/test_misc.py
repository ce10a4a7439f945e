"""Misc: graph breaks, list and dataclass I/O, duplicate outputs, record_function, compiled submodules under eager AC (cases in harness/rows/cases/misc.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

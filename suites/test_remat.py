"""Remat: the fwd-loss-bwd rematerialization pass and joint-graph passes on single forward+loss+backward graphs (cases in harness/rows/cases/remat.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

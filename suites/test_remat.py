"""Remat: the fwd-loss-bwd rematerialization pass and joint-graph passes on single forward+loss+backward graphs (cases in harness/cases/remat.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""Reference models with known costs (FLOPs 8/9/12 matmul units) and the dropout oracle programs (harness/rows/cases/reference_models.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""Nested compile: a torch.compile call inside an eager checkpoint, traced with make_fx in FakeTensorMode (cases in harness/rows/cases/nested_compile.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

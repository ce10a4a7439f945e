"""Triton kernel: a user Triton kernel inside a SAC region, CUDA only (cases in harness/rows/cases/triton_kernel.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

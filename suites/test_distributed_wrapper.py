"""Distributed wrapper: checkpoint_wrapper and CheckpointWrapper attribute forwarding (cases in harness/rows/cases/distributed_wrapper.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

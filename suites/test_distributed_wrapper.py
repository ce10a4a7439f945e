"""Distributed wrapper: checkpoint_wrapper and CheckpointWrapper attribute forwarding (cases in harness/cases/distributed_wrapper.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

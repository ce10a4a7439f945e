"""Subclass: tensor-subclass inputs through selective checkpointing under torch.compile (cases in harness/rows/cases/subclass.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

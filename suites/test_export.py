"""Export: checkpointed functions traced by torch.export to torch IR, then compiled (cases in harness/rows/cases/export.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

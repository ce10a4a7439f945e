"""Autocast and flash attention: checkpointed attention under autocast and the SDPA pattern matcher (cases in harness/rows/cases/autocast_flash_attention.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

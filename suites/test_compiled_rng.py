"""Compiled RNG: checkpointed dropout with inductor's / Philox RNG, fwd/bw randomness consistency (cases in harness/rows/cases/compiled_rng.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

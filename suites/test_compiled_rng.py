"""Compiled RNG: checkpointed dropout with inductor's / Philox RNG, fwd/bw randomness consistency (cases in harness/cases/compiled_rng.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

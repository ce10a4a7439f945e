"""RNG and dropout: random ops recomputed in backward replay the forward's randomness (cases in harness/rows/cases/rng_dropout.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

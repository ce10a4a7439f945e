"""SAC policy: what a selective-checkpoint policy saves or recomputes under torch.compile (cases in harness/rows/cases/sac_policy.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""SAC policy: what a selective-checkpoint policy saves or recomputes under torch.compile (cases in harness/cases/sac_policy.py)."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

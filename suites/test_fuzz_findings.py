"""Fuzz findings: programs the fuzzer found failing, promoted to cases (harness/rows/cases/fuzz_findings.py); each is a known failure until torch fixes it."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

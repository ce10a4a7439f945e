"""Fuzz findings: programs the fuzzer found failing, promoted to cases (harness/cases/fuzz_findings.py); each is a known failure until torch fixes it."""

from harness.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

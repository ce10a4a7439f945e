"""Memory budget: region_activation_memory_budget reduces saved activation bytes (CPU) and allocator memory (CUDA) (harness/rows/cases/memory_budget.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

"""Tags: tag_activation_checkpoint regions and the recompute/ac_graph_id tags of the joint graph (cases in harness/rows/cases/tags.py)."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

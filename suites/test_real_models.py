"""Real models of HF transformers, torchtitan, timm and torchvision, tiny and randomly initialised, under their own AC
mechanisms and the harness's policies (cases in harness/rows/cases/real_models.py; the models dependency group:
`make models`, which also runs the whole area).  Without the group every cell skips with that reason."""

from harness.core.suite import check_cell


def test_case(cell, goldens, record):
    check_cell(cell, goldens, record)

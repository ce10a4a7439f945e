"""The checkpoint contract (docs/contract.md): one cell per clause x program x mode x variant (cases in
harness/rows/contract.py, area "contract").

Eager cells check the promise with the clause's own oracle; compiled cells (aot_eager under both partitioners in
the default selection, inductor in `slow`) check the same behaviour or the documented difference.  Each named check
of the oracle is a verdict (harness/core/suite.py); known failures are known_failures.toml entries pinned to one of
them, and every other check of such a cell still runs and must pass.
"""

from harness.core.suite import check_cell


def test_contract(cell, goldens, record):
    check_cell(cell, goldens, record)

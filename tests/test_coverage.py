"""The coverage table (docs/coverage.md) is current, every case names real catalogue items, and every
known_failures.toml entry still matches a cell of the case database."""

import difflib
import warnings

import pytest

from harness.tools import coverage
from harness.core import known_failures
from harness.rows.collect import all_cells


@pytest.fixture(scope="module")
def fresh():
    try:
        return coverage.build()
    except coverage.CatalogueMissing as e:
        pytest.skip(str(e))


def test_committed_coverage_table_is_current(fresh):
    committed = coverage.OUTPUT.read_text() if coverage.OUTPUT.exists() else ""
    if committed != fresh.text:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.text.splitlines(True),
                                            "docs/coverage.md (committed)", "docs/coverage.md (regenerated)", n=1))
        raise AssertionError(f"docs/coverage.md is stale: expected the regenerated table, saw a different one; "
                             f"run `make coverage` and commit it. Difference:\n{diff[:6000]}")
    if fresh.unmapped:  # reported, not failed, until every area exists
        warnings.warn(f"catalogue tests without a case: {fresh.unmapped}", stacklevel=1)


def test_cases_name_only_catalogue_items_that_exist(fresh):
    assert fresh.unknown_numbers == {}, (
        f"expected every case's catalogue=(...) to name items of the catalogue (1..{len(coverage.parse_catalogue())}), "
        f"saw cases naming others: {fresh.unknown_numbers}")


def test_catalogue_summary_table_parses_into_76_tests(fresh):
    entries = coverage.parse_catalogue()
    assert [e.number for e in entries] == list(range(1, 77)), f"expected items 1..76, saw {[e.number for e in entries]}"
    assert entries[0].test == "test_tags_function" and entries[-1].test.startswith("test_checkpoint_recompute"), (
        f"expected the first and last tests test_tags_function / test_checkpoint_recompute_*, "
        f"saw {entries[0].test} / {entries[-1].test}")


def test_missing_catalogue_is_a_clear_error(tmp_path):
    with pytest.raises(coverage.CatalogueMissing, match="scenario catalogue is not at"):
        coverage.parse_catalogue(tmp_path / "CATALOGUE.md")


def test_every_known_failure_matches_a_cell():
    entries = known_failures.load()
    cells = all_cells(coverage.DEVICES)  # the slow matrix's budget cells included
    stale = [e.id for e in known_failures.unmatched(entries, cells)]
    assert stale == [], f"expected every known_failures.toml entry to select a cell (cpu or cuda), saw unmatched: {stale}"

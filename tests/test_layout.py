"""The README's layout table and docs/layout.md are what the folders say now (``make docs`` regenerates both)."""

from __future__ import annotations

import pytest

from harness.tools import layout


def test_readme_layout_table_matches_the_folders():
    text = layout.README.read_text()
    assert layout.readme_with_table(text) == text, ("expected the README's layout table to be generated from the "
                                                    "folders; it differs: run `make docs` and commit")


def test_layout_doc_matches_the_folders():
    assert layout.LAYOUT.read_text() == layout.layout_doc(), ("expected docs/layout.md to list every module of every "
                                                               "layer as the folders hold them: run `make docs`")


def test_a_new_module_makes_the_doc_stale(tmp_path, monkeypatch):
    """The check itself: a module added to a layer is missing from the committed doc."""
    (tmp_path / "harness" / "core").mkdir(parents=True)
    for layer in layout.harness.LAYERS:
        (tmp_path / "harness" / layer).mkdir(parents=True, exist_ok=True)
        (tmp_path / "harness" / layer / "__init__.py").write_text(f'"""Layer {layer}."""\n')
    monkeypatch.setattr(layout, "ROOT", tmp_path)
    before = layout.layout_doc()
    (tmp_path / "harness" / "core" / "new.py").write_text('"""A new module. More."""\n')
    after = layout.layout_doc()
    assert before != after and "| `new.py` | A new module |" in after, after


@pytest.mark.parametrize("broken", ["no markers at all\n"])
def test_readme_without_markers_is_an_error(broken):
    with pytest.raises(ValueError, match="layout markers"):
        layout.readme_with_table(broken)


def test_no_test_module_name_is_both_a_suite_and_a_meta_test():
    """pytest imports test modules by basename (rootdir-relative, no packages): a tests/ module named like a suites/
    module makes a run that collects both (in one process, as the sharding and in-process pytester tests do) fail
    with an import-file mismatch."""
    from harness.core.paths import ROOT

    shared = sorted({p.name for p in (ROOT / "tests").glob("test_*.py")} & {p.name for p in (ROOT / "suites").glob("test_*.py")})
    assert shared == [], f"expected no module name in both tests/ and suites/, saw {shared}"

"""The report modules on their own: the cell record type agrees with docs/nightly-schema.json (and the comparison
catches a disagreement), a cell that never reported becomes a valid failure record, environments are listed with
their disk size and pruned on request, JUnit files merge."""

from __future__ import annotations

import copy
import json

from harness.core import paths
from harness.tools.reports import envs, record
from harness.tools.reports.junit import merge_junit


def schema() -> dict:
    return json.loads(paths.SCHEMA.read_text())


def test_cell_record_type_and_schema_agree_field_by_field():
    problems = record.schema_mismatches(schema())
    assert problems == [], f"expected docs/nightly-schema.json $defs.cell to match CellRecord, saw: {problems}"


def test_schema_comparison_catches_each_kind_of_disagreement():
    s = copy.deepcopy(schema())
    cell = s["$defs"]["cell"]
    cell["properties"]["extra_field"] = {"type": "string"}
    del cell["properties"]["message"]
    cell["properties"]["compile_seconds"] = {"type": "number"}  # no longer nullable
    cell["properties"]["category"]["enum"] = ["semantic", "pass"]
    problems = record.schema_mismatches(s)
    for part in ("extra_field: a schema property CellRecord lacks", "message: a CellRecord field the schema lacks",
                 "compile_seconds: schema types ['number'], CellRecord types ['null', 'number']", "category: schema enum"):
        assert any(p.startswith(part) for p in problems), f"expected a problem starting {part!r}, saw {problems}"


def test_not_reported_cell_is_a_valid_semantic_failure(tmp_path):
    jsonl = tmp_path / "cells.jsonl"
    nodeid = "suites/test_tags.py::test_case[tags_function-min_cut-aot_eager-cpu-float32]"
    jsonl.write_text(json.dumps({"type": "env", "torch": "2.13.0"}) + "\n"
                     + json.dumps({"type": "collected", "ids": [nodeid]}) + "\n{\"type\": \"cell\", \"nodeid\n")
    env, collected, cells = record.read_cells(jsonl)
    assert (env, collected) == ({"torch": "2.13.0"}, [nodeid]), f"expected the env and one collected id, saw {env}, {collected}"
    assert len(cells) == 1 and cells[0]["category"] == "semantic" and cells[0]["failed_check"] == "not_reported", cells
    assert cells[0]["cell"] == "tags_function-min_cut-aot_eager-cpu-float32", f"expected the cell id, saw {cells[0]['cell']}"
    sch = schema()
    problems = record.validate({"cells": cells}, {"$defs": sch["$defs"], "type": "object",
                                                   "properties": {"cells": sch["properties"]["cells"]}})
    assert problems == [], f"the not-reported record should validate against the schema, saw {problems}"
    assert record.CellRecord.from_dict(cells[0]).to_dict() == cells[0], "from_dict/to_dict should round-trip"


def test_record_from_dict_refuses_unknown_keys():
    d = record.CellRecord.not_reported("s.py::t[c]").to_dict()
    d["surprise"] = 1
    try:
        record.CellRecord.from_dict(d)
    except ValueError as e:
        assert "surprise" in str(e), f"expected the unknown key named, saw {e}"
    else:
        raise AssertionError("expected ValueError for an unknown key, saw none")


def test_environments_listed_with_disk_size_and_pruned(tmp_path):
    for spec, complete in (("torch==2.11.0", True), ("torch==2.12.1", False), ("torch==2.14.1", True)):
        d = envs.env_dir(spec, tmp_path)
        (d / "lib").mkdir(parents=True)
        (d / "lib" / "blob").write_bytes(b"x" * 100_000)
        if complete:
            (d / envs.MARKER).write_text(spec + "\n")
    listed = {e.name: e for e in envs.list_envs(tmp_path)}
    assert sorted(listed) == ["torch-2.11.0", "torch-2.12.1", "torch-2.14.1"], f"saw {sorted(listed)}"
    assert listed["torch-2.12.1"].spec is None and listed["torch-2.11.0"].spec == "torch==2.11.0", listed
    assert all(e.bytes >= 100_000 for e in listed.values()), f"expected >= 100000 bytes each, saw {[e.bytes for e in listed.values()]}"
    removed = envs.prune(["torch==2.11.0", "torch==2.12.1"], tmp_path, keep=["torch==2.12.1"])
    assert [e.name for e in removed] == ["torch-2.11.0"], f"expected only 2.11.0 pruned (2.12.1 kept), saw {removed}"
    assert sorted(e.name for e in envs.list_envs(tmp_path)) == ["torch-2.12.1", "torch-2.14.1"]
    assert [e.name for e in envs.prune(None, tmp_path)] == ["torch-2.12.1", "torch-2.14.1"], "prune(None) removes all"
    assert envs.list_envs(tmp_path) == [], "nothing should be left"


def test_junit_files_merge_into_one_document(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_text("<testsuites><testsuite name='a' tests='1'><testcase name='x'/></testsuite></testsuites>")
    b.write_text("<testsuite name='b' tests='1'><testcase name='y'/></testsuite>")
    merge_junit([a, b, tmp_path / "missing.xml"], tmp_path / "out.xml")
    out = (tmp_path / "out.xml").read_text()
    assert out.count("<testsuite ") == 2 and "name=\"a\"" in out and "name=\"b\"" in out, f"saw {out}"

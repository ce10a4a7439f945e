"""The per-cell record of a nightly run, the run document (``run.json``) built from the records, its summary and exit
code, and validation against docs/nightly-schema.json.

``CellRecord`` is the one typed definition of a cell's record: the fields ``harness.tools.nightly_plugin.cell_record`` writes
(one JSON line per cell in ``cells.jsonl``) and ``run.json`` holds under ``cells``.  tests/test_reports.py checks the
schema's ``$defs.cell`` against it field by field (names, required, JSON types), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Literal, Optional, Union

CATEGORIES = ("semantic", "drift", "known_failure_passes", "known_failure", "pass", "skipped")
EXIT_CLEAN, EXIT_DRIFT, EXIT_SEMANTIC, EXIT_BROKEN = 0, 1, 2, 3

Category = Literal["semantic", "drift", "known_failure_passes", "known_failure", "pass", "skipped"]
Result = Literal["pass", "fail", "not run"]


@dataclasses.dataclass
class CellRecord:
    """One cell of one run.  Field order and names are the JSON keys."""

    nodeid: str
    cell: str                       # <case>-<partitioner>-<backend>-<device>-<dtype>[-budgetX]
    case: Optional[str]
    suite: str
    category: Category
    failed_check: Optional[str]     # run | numerics | expectations | case_check | invariant:<name> | error_check | golden | ...
    message: Optional[str]
    numerics: Result
    expectations: Result
    invariants: dict[str, Result]
    error_check: Optional[Result]   # only for cells that must raise
    graphs: dict[str, dict]         # graph kind -> {"status": same|changed|missing|stale, "golden"?, "recorded"?}
    recorded: Optional[dict]        # figures of the recorded run (harness/core/analysis.py figures: ops per kind, bytes, FLOPs)
    golden: Optional[dict]          # figures stated by the summary golden (harness/core/figures.py parse_summary)
    compile_seconds: Optional[float]
    duration_seconds: float
    # The ids of the known_failures.toml entries that explained its failing checks (space-separated), or None.
    known_failure: Optional[str] = None

    @classmethod
    def from_dict(cls, d: dict) -> "CellRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - names
        if extra:
            raise ValueError(f"cell record {d.get('nodeid')!r} has keys the record type lacks: {sorted(extra)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        order = ["nodeid", "cell", "case", "suite", "category", "failed_check", "message", "known_failure"]
        return {**{k: d[k] for k in order}, **{k: v for k, v in d.items() if k not in order}}

    @classmethod
    def not_reported(cls, nodeid: str) -> "CellRecord":
        """A collected cell that never reported (its run was killed or crashed): a failure, not a silent gap."""
        return cls(nodeid=nodeid, cell=nodeid.split("[", 1)[-1].rstrip("]"), case=None, suite=nodeid.split("::")[0],
                   category="semantic", failed_check="not_reported",
                   message="the run ended before this cell reported (killed or crashed)", known_failure=None,
                   numerics="not run", expectations="not run", invariants={}, error_check=None, graphs={},
                   recorded=None, golden=None, compile_seconds=None, duration_seconds=0.0)


def _json_types(tp) -> set[str]:
    """The JSON Schema types a Python annotation allows."""
    origin = typing.get_origin(tp)
    if origin is Union:
        return set().union(*(_json_types(a) for a in typing.get_args(tp)))
    if origin is Literal:
        return {_json_types(type(a)).pop() if a is not None else "null" for a in typing.get_args(tp)}
    if tp is type(None):
        return {"null"}
    base = origin or tp
    return {str: {"string"}, int: {"integer"}, float: {"number"}, bool: {"boolean"}, dict: {"object"},
            list: {"array"}}[base]


def _enum(tp) -> list | None:
    args = [a for a in (typing.get_args(tp) if typing.get_origin(tp) is Union else (tp,))]
    values = []
    for a in args:
        if typing.get_origin(a) is Literal:
            values += list(typing.get_args(a))
        elif a is type(None):
            values.append(None)
        else:
            return None
    return values


def record_fields() -> dict[str, dict]:
    """Per field of CellRecord: its JSON types, its enum (for Literal fields) and whether the plugin always writes it."""
    hints = typing.get_type_hints(CellRecord)
    return {f.name: {"types": _json_types(hints[f.name]), "enum": _enum(hints[f.name])}
            for f in dataclasses.fields(CellRecord)}


def schema_mismatches(schema: dict) -> list[str]:
    """Where ``schema['$defs']['cell']`` disagrees with CellRecord (names, JSON types, enums); each says both sides."""
    defs = schema["$defs"]
    cell = defs["cell"]
    props = cell["properties"]
    fields = record_fields()
    problems = []
    for name in sorted(set(fields) - set(props)):
        problems.append(f"{name}: a CellRecord field the schema lacks")
    for name in sorted(set(props) - set(fields)):
        problems.append(f"{name}: a schema property CellRecord lacks")
    for name in sorted(set(props) & set(fields)):
        sch = props[name]
        if "$ref" in sch:
            sch = defs[sch["$ref"].rsplit("/", 1)[-1]]
        t = sch.get("type")
        types = {t} if isinstance(t, str) else set(t or [])
        want = fields[name]["types"]
        if types != want and not (want == {"number"} and types == {"number"}):
            problems.append(f"{name}: schema types {sorted(types)}, CellRecord types {sorted(want)}")
        enum = fields[name]["enum"]
        if enum is not None and "enum" in sch and set(map(str, sch["enum"])) != set(map(str, enum)):
            problems.append(f"{name}: schema enum {sch['enum']}, CellRecord Literal {enum}")
        elif enum is not None and "enum" not in sch and not (isinstance(sch.get("additionalProperties"), dict)):
            problems.append(f"{name}: CellRecord restricts it to {enum}, the schema does not")
    if set(cell.get("required", [])) != set(fields):
        problems.append(f"required: schema {sorted(cell.get('required', []))}, CellRecord fields {sorted(fields)}")
    return problems


# --- run documents --------------------------------------------------------------------------------------------------

def read_cells(jsonl: Path) -> tuple[dict, list[str], list[dict]]:
    """(environment, collected node ids, cell records) of a plugin's JSON-lines file; a collected cell that never
    reported becomes a ``not_reported`` semantic failure."""
    env, collected, cells = {}, [], {}
    for line in jsonl.read_text().splitlines() if jsonl.exists() else []:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        kind = obj.pop("type", None)
        if kind == "env":
            env = obj
        elif kind == "collected":
            collected += [i for i in obj["ids"] if i not in collected]
        elif kind == "cell":
            cells[obj["nodeid"]] = obj
    for nodeid in collected:
        if nodeid not in cells:
            cells[nodeid] = CellRecord.not_reported(nodeid).to_dict()
    return env, collected, list(cells.values())


def summarize(cells: list[dict]) -> dict:
    counts = {c: sum(1 for x in cells if x["category"] == c) for c in CATEGORIES}
    drift_kinds: dict[str, int] = {}
    for x in cells:
        for kind, g in x["graphs"].items():
            if g["status"] != "same":
                drift_kinds[kind] = drift_kinds.get(kind, 0) + 1
    figures = [x["recorded"] for x in cells if x.get("recorded")]
    return {"cells": len(cells), **counts, "drifting_graphs_by_kind": dict(sorted(drift_kinds.items())),
            "saved_bytes": sum(f["saved_bytes"] or 0 for f in figures),
            "flops": sum((f["fw_flops"] or 0) + (f["bw_flops"] or 0) for f in figures)}


def exit_code(summary: dict) -> int:
    if summary["semantic"]:
        return EXIT_SEMANTIC
    if summary["drift"] or summary["known_failure_passes"]:
        return EXIT_DRIFT
    return EXIT_CLEAN


def build_document(run_id: str, env: dict, cells: list[dict], *, torch_spec: str, started: str, seconds: float,
                   pytest_exit: int | None, args: list[str], shards: int = 1) -> dict:
    summary = summarize(cells)
    return {"schema_version": 1, "run_id": run_id, "torch_spec": torch_spec, "started": started,
            "duration_seconds": round(seconds, 1), "pytest_args": args, "pytest_exit_code": pytest_exit,
            "shards": shards, "environment": env, "summary": summary, "exit_code": exit_code(summary),
            "cells": sorted(cells, key=lambda c: c["nodeid"])}


def history_line(doc: dict) -> dict:
    s = doc["summary"]
    return {"run_id": doc["run_id"], "started": doc["started"], "torch": doc["environment"].get("torch"),
            "torch_spec": doc["torch_spec"], "exit_code": doc["exit_code"],
            **{k: s[k] for k in ("cells", *CATEGORIES, "saved_bytes", "flops")}}


def validate(doc, schema: dict, path: str = "$") -> list[str]:
    """The subset of JSON Schema that docs/nightly-schema.json uses (type, enum, required, properties,
    additionalProperties, items, $ref to #/$defs).  Returns the problems found, each naming where."""
    root = schema
    problems: list[str] = []

    def check(value, sch, where):
        if "$ref" in sch:
            sch = root["$defs"][sch["$ref"].rsplit("/", 1)[-1]]
        types = sch.get("type")
        if types:
            types = [types] if isinstance(types, str) else types
            pytypes = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                       "integer": int, "number": (int, float)}
            ok = any(isinstance(value, pytypes[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                     for t in types)
            if not ok:
                problems.append(f"{where}: expected {'/'.join(types)}, saw {type(value).__name__} {str(value)[:60]!r}")
                return
        if "enum" in sch and value not in sch["enum"]:
            problems.append(f"{where}: expected one of {sch['enum']}, saw {value!r}")
        if isinstance(value, dict):
            for key in sch.get("required", []):
                if key not in value:
                    problems.append(f"{where}: missing required key {key!r}")
            props = sch.get("properties", {})
            extra = sch.get("additionalProperties", True)
            for key, v in value.items():
                if key in props:
                    check(v, props[key], f"{where}.{key}")
                elif extra is False:
                    problems.append(f"{where}: unexpected key {key!r}")
                elif isinstance(extra, dict):
                    check(v, extra, f"{where}.{key}")
        if isinstance(value, list) and "items" in sch:
            for i, v in enumerate(value):
                check(v, sch["items"], f"{where}[{i}]")

    check(doc, schema, path)
    return problems

"""The release compatibility report on fixtures (no torch release installed): categories per release including
"cannot run on this release", the release x area table, per-cell timelines, drifting goldens with consecutive-release
diffs, the known-failure range check, resumability of the state, and the HTML rendered in headless Chromium."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_nightly import png_pixels

from harness.tools import compat
from harness.core import torch_api
from harness.tools.reports.releases import KnownFailureEntry, build_compat, release_key
from harness.tools.reports.html import render_compat, render_compat_diff
from harness.tools.reports.record import CellRecord

R1, R2, R3, R4 = "2.11.0", "2.12.1", "2.13.0", "2.14.0"
GOLD, NEW = "graph():\n  mm = aten.mm(x, y)\n  return mm\n", "graph():\n  mm = aten.mm(x, y)\n  s = aten.sin(mm)\n  return s\n"


def rec(cell: str, area: str, category: str, **kw) -> dict:
    r = CellRecord.not_reported(f"suites/test_{area}.py::test_case[{cell}]").to_dict()
    r.update(case=cell.split("-")[0], category=category, failed_check=None, message=None, numerics="pass",
             expectations="pass", graphs={"fw": {"status": "same"}}, duration_seconds=1.0)
    r.update(kw)
    return r


def doc(cells: list[dict], torch: str) -> dict:
    return {"environment": {"torch": torch}, "cells": cells}


def fixture_docs() -> dict:
    a = "tags_a-min_cut-aot_eager-cpu-float32"
    drift = {"fw": {"status": "changed", "golden": GOLD, "recorded": NEW}}
    kf = "sac_b-"
    d_cell = "newapi_d-min_cut-aot_eager-cpu-float32"
    docs = {
        R1: doc([rec(a, "tags", "pass"),
                 rec("sac_b-min_cut-aot_eager-cpu-float32", "sac_policy", "known_failure", known_failure=kf, failed_check="invariant:x",
                     graphs={"fw": {"status": "missing", "golden": None, "recorded": NEW}}),
                 rec("sac_c-min_cut-aot_eager-cpu-float32", "sac_policy", "semantic", failed_check="exception",
                     message="AttributeError: torch._functorch.config.new_knob does not exist"),
                 rec("newapi_d-cpu", "misc", "skipped", case=None, message="needs torch>=2.12 (installed 2.11.0+cu126): new API"),
                 rec("cuda_e-cpu", "misc", "skipped", case=None, message="CUDA-only: needs a CUDA device"),
                 rec("old_f-min_cut-aot_eager-cpu-float32", "misc", "known_failure", known_failure="old_f"),
                 rec("kf_api_h-min_cut-aot_eager-cpu-float32", "non_strict", "known_failure", known_failure="kf_h",
                     message="AttributeError: module 'torch.compiler' has no attribute '_patch_engine_backward'")], R1),
        R2: doc([rec(a, "tags", "pass"),
                 rec("sac_b-min_cut-aot_eager-cpu-float32", "sac_policy", "known_failure", known_failure=kf),
                 rec("sac_c-min_cut-aot_eager-cpu-float32", "sac_policy", "pass"),
                 rec(d_cell, "misc", "pass"),
                 rec("cuda_e-cpu", "misc", "skipped", case=None, message="CUDA-only: needs a CUDA device"),
                 rec("old_f-min_cut-aot_eager-cpu-float32", "misc", "semantic", failed_check="numerics",
                     message="AssertionError: grad x differs")], R2),
        R3: doc([rec(a, "tags", "drift", graphs=drift),
                 rec("sac_b-min_cut-aot_eager-cpu-float32", "sac_policy", "known_failure_passes", known_failure=kf),
                 rec("sac_c-min_cut-aot_eager-cpu-float32", "sac_policy", "pass"),
                 rec(d_cell, "misc", "pass"),
                 rec("cuda_e-cpu", "misc", "skipped", case=None, message="CUDA-only: needs a CUDA device"),
                 rec("old_f-min_cut-aot_eager-cpu-float32", "misc", "pass")], R3),
        R4: None,
    }
    entries = [KnownFailureEntry("sac_b-", lambda r: True, "any release"),
               KnownFailureEntry("old_f", lambda r: release_key(r) < release_key("2.12"), "torch < 2.12"),
               KnownFailureEntry("gone_g-", lambda r: True, "any release")]
    info = {r: {"status": "done" if docs[r] else "pending", "wall_seconds": 60.0 if docs[r] else None, "env_bytes": 2 ** 30,
                "run_dir": f"runs/{r}" if docs[r] else None} for r in docs}
    return build_compat(info, docs, entries)


def cats(c: dict) -> list:
    return [(o or {}).get("category", "not_run") for o in c["releases"].values()]


def test_categories_per_release_including_cannot_run_and_not_run():
    d = fixture_docs()
    cells = d["cells"]
    want = {"tags_a-min_cut-aot_eager-cpu-float32": ["pass", "pass", "drift", "not_run"],
            "sac_b-min_cut-aot_eager-cpu-float32": ["known_failure", "known_failure", "known_failure_passes", "not_run"],
            "sac_c-min_cut-aot_eager-cpu-float32": ["cannot_run", "pass", "pass", "not_run"],
            "newapi_d-min_cut-aot_eager-cpu-float32": ["cannot_run", "pass", "pass", "not_run"],
            "cuda_e-cpu": ["skipped", "skipped", "skipped", "not_run"],
            "old_f-min_cut-aot_eager-cpu-float32": ["known_failure", "semantic", "pass", "not_run"],
            "kf_api_h-min_cut-aot_eager-cpu-float32": ["cannot_run", "cannot_run", "cannot_run", "not_run"]}
    assert {c: cats(v) for c, v in cells.items()} == want, f"expected {want}, saw { {c: cats(v) for c, v in cells.items()} }"
    assert "newapi_d-cpu" not in cells, "a one-per-case placeholder should fold into the case's real cells"
    c_reason = cells["sac_c-min_cut-aot_eager-cpu-float32"]["releases"][R1]["reason"]
    assert c_reason.startswith("missing_config_knob:"), f"expected the config-knob difference named, saw {c_reason!r}"
    d_reason = cells["newapi_d-min_cut-aot_eager-cpu-float32"]["releases"][R1]["reason"]
    assert d_reason.startswith("declared_torch_requirement: needs torch>=2.12"), f"saw {d_reason!r}"


def test_area_table_and_release_summaries():
    d = fixture_docs()
    assert d["areas"]["sac_policy"][R3] == {"known_failure_passes": 1, "pass": 1}, d["areas"]["sac_policy"][R3]
    assert d["areas"]["misc"][R1] == {"cannot_run": 1, "skipped": 1, "known_failure": 1}, d["areas"]["misc"][R1]
    assert d["areas"]["tags"][R4] == {"not_run": 1}, f"a release not run yet should say so, saw {d['areas']['tags'][R4]}"
    by = {r["release"]: r for r in d["releases"]}
    assert by[R3]["summary"]["drift"] == 1 and by[R3]["summary"]["pass"] == 3, by[R3]["summary"]
    assert by[R4]["summary"] is None, f"expected no summary for a release not run, saw {by[R4]['summary']}"
    assert [r["release"] for r in d["releases"]] == [R1, R2, R3, R4], "releases in version order"


def test_timeline_first_failure_and_last_pass():
    cells = fixture_docs()["cells"]
    t = cells["tags_a-min_cut-aot_eager-cpu-float32"]["timeline"]
    assert (t["first_bad"], t["last_pass"]) == (R3, R2), f"expected drift first on {R3}, last pass {R2}, saw {t}"
    assert t["changes"] == [{"release": R3, "from": "pass", "to": "drift"}], t["changes"]
    t = cells["old_f-min_cut-aot_eager-cpu-float32"]["timeline"]
    assert (t["first_bad"], t["last_pass"]) == (R1, R3), f"saw {t}"
    t = cells["cuda_e-cpu"]["timeline"]
    assert (t["first_bad"], t["last_pass"]) == (None, None), f"a skipped cell has neither, saw {t}"


def test_drifting_golden_has_consecutive_release_steps_and_texts():
    g = fixture_docs()["drifting_goldens"]
    assert [(x["cell"], x["kind"]) for x in g] == [("tags_a-min_cut-aot_eager-cpu-float32", "fw")], \
        f"expected only the changed golden (a known failure without golden is no drift), saw {g}"
    assert g[0]["differs_on"] == [R3] and g[0]["steps"] == [{"from": R2, "to": R3}], g[0]
    assert g[0]["texts"] == {R1: GOLD, R2: GOLD, R3: NEW}, f"the golden stands for releases that matched it, saw {g[0]['texts']}"
    page = render_compat_diff(g[0])
    assert f"id='{R2}-{R3}'" in page and "aten.sin" in page, "the diff page should anchor the step and show the new op"


def test_known_failure_ranges_checked_against_observations():
    k = {e["id"]: e for e in fixture_docs()["known_failures"]}
    assert k["sac_b-"]["mismatches"] == [f"{R3}: passes"], f"declared everywhere but passes on {R3}: saw {k['sac_b-']}"
    assert [k["old_f"]["releases"][r]["status"] for r in (R1, R2, R3)] == ["failing", "fails undeclared", "fine"], k["old_f"]
    assert k["old_f"]["mismatches"] == [f"{R2}: fails undeclared"], k["old_f"]["mismatches"]
    assert k["gone_g-"]["mismatches"] == [f"{r}: no cell" for r in (R1, R2, R3)], k["gone_g-"]["mismatches"]


def test_compat_html_names_every_section_and_category():
    d = fixture_docs()
    d["drifting_goldens"][0]["page"] = "diffs/x--fw.html"
    page = render_compat(d)
    for part in ("id='releases'", "id='areas'", "id='timeline'", "id='drift'", "id='known'", "cannot run on this release",
                 "known failure now passing", "release not run yet", f"diffs/x--fw.html#{R2}-{R3}", "1.0 GiB", "fails undeclared",
                 f"href='runs/{R1}/report.html'"):
        assert part in page, f"expected {part!r} in compat.html"


def test_cannot_run_reasons_name_each_difference():
    for d in torch_api.DIFFERENCES:
        assert d.reason, f"difference {d.name} needs a reason"
    examples = {"declared_torch_requirement": "needs torch>=2.14 (installed 2.13.0+cpu): x",
                "declared_api_requirement": "needs torch.foo.bar, missing in torch 2.11.0: x",
                "missing_config_knob": "AttributeError: torch._inductor.config.knob does not exist",
                "missing_torch_api": "AttributeError: module 'torch.compiler' has no attribute '_patch_engine_backward'"}
    for name, msg in examples.items():
        got = torch_api.cannot_run_reason(msg)
        assert got and got.startswith(name + ":"), f"expected {name} for {msg!r}, saw {got!r}"
    assert torch_api.cannot_run_reason("AssertionError: grad x differs") is None, "a real failure is not a difference"
    assert torch_api.cannot_run_reason("CUDA-only: needs a CUDA device") is None, "a CUDA skip is a plain skip"


def pixel_colours(png: bytes, w: int, h: int, raw: bytes) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit RGB/RGBA PNG (rows unfiltered: None, Sub, Up, Average, Paeth)."""
    bpp = {2: 3, 6: 4}[png[25]]
    stride, prev, out = w * bpp, bytearray(w * bpp), set()
    for y in range(h):
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.update(tuple(row[j:j + 3]) for j in range(0, stride, bpp))
        prev = row
    return out


def test_missing_config_knobs_make_a_cannot_run_reason():
    case = type("C", (), {"config": {"dynamo": {"inline_single_use_invoke_subgraph": False, "no_such_knob_xyz": 1},
                                     "functorch": {"activation_memory_budget": 0.5}}})()
    assert torch_api.missing_config_knobs(case.config) == ["torch._dynamo.config.no_such_knob_xyz"], \
        f"expected only the invented knob missing, saw {torch_api.missing_config_knobs(case.config)}"
    why = torch_api.unmet_config(case.config)
    got = torch_api.cannot_run_reason(why)
    assert got and got.startswith("missing_config_knob:") and "no_such_knob_xyz" in got, f"saw {why!r} -> {got!r}"
    assert torch_api.unmet_config({}) is None, "no patches, nothing missing"
    assert torch_api.has_api("torch.utils.checkpoint.checkpoint") and not torch_api.has_api("torch.no_such_api_xyz")


def test_release_differences_skip_older_releases_as_cannot_run(monkeypatch):
    """A behaviour difference holds from its release on: before it, unmet_release (and a case row's torch>= requirement
    naming it) gives a skip message cannot_run_reason reads as a declared torch requirement; from it on, nothing."""
    import torch

    from harness.rows.cases import find_case

    assert torch_api.RELEASE_DIFFERENCES, "expected the behaviour differences to be listed"
    for d in torch_api.RELEASE_DIFFERENCES:
        assert d.reason and d.since, f"difference {d.name} needs a reason and the release it exists from"
        major, minor = (int(p) for p in d.since.split("."))
        monkeypatch.setattr(torch, "__version__", f"{major}.{minor - 1}.1+cpu")
        why = torch_api.unmet_release(d)
        got = torch_api.cannot_run_reason(why)
        assert got and got.startswith("declared_torch_requirement:") and d.name in why, f"{d.name}: {why!r} -> {got!r}"
        monkeypatch.setattr(torch, "__version__", f"{major}.{minor}.0+cpu")
        assert torch_api.unmet_release(d) is None, f"{d.name}: expected no gate on {d.since}"
    # the remat rows: all cannot run on 2.11.0, the two several-region ones also not on 2.12.1, none on 2.13.0
    remat = ("remat_simple_forward_backward", "joint_graph_passes_view_optimization", "remat_chunked_loss",
             "remat_two_backward_regions_raises")
    for version, expected in (("2.11.0", set(remat)), ("2.12.1", set(remat[2:])), ("2.13.0", set())):
        monkeypatch.setattr(torch, "__version__", version)
        unmet = {name: find_case(name).unmet_requirement("cpu") for name in remat}
        assert {n for n, why in unmet.items() if why} == expected, f"torch {version}: {unmet}"
        assert all(torch_api.cannot_run_reason(why) for why in unmet.values() if why), unmet


def write_done_state(out: Path) -> None:
    docs = {R1: [rec("tags_a-min_cut-aot_eager-cpu-float32", "tags", "pass")],
            R2: [rec("tags_a-min_cut-aot_eager-cpu-float32", "tags", "drift",
                     graphs={"fw": {"status": "changed", "golden": GOLD, "recorded": NEW}})]}
    state = {"releases": {}}
    for r, cells in docs.items():
        (out / "runs" / r).mkdir(parents=True)
        (out / "runs" / r / "run.json").write_text(json.dumps(doc(cells, r)))
        state["releases"][r] = {"status": "done", "run_dir": f"runs/{r}", "wall_seconds": 12.0, "env_bytes": 1000}
    (out / "state.json").write_text(json.dumps(state))


def test_done_releases_are_not_rerun_and_the_report_is_written(tmp_path, monkeypatch):
    write_done_state(tmp_path)
    ran = []
    monkeypatch.setattr(compat, "run_release", lambda r, *a, **k: ran.append(r))
    rc = compat.main(["--out", str(tmp_path), "run", "--releases", f"{R2} {R1}"])
    assert rc == 0 and ran == [], f"expected exit 0 and no release rerun, saw rc={rc}, reran {ran}"
    out = json.loads((tmp_path / "compat.json").read_text())
    assert [r["release"] for r in out["releases"]] == [R1, R2], out["releases"]
    assert (tmp_path / "diffs" / "tags_a-min_cut-aot_eager-cpu-float32--fw.html").exists(), "the diff page should be written"
    assert f"torch {R1}: done already" in (tmp_path / "progress.log").read_text()
    rc = compat.main(["--out", str(tmp_path), "run", "--releases", f"{R1} {R2}", "--rerun", R2])
    assert ran == [R2], f"--rerun {R2} should rerun exactly {R2}, saw {ran}"
    st = json.loads((tmp_path / "state.json").read_text())["releases"][R2]
    assert st == {"status": "running"} and rc == 3, \
        f"a rerun starts from a clean 'running' state and, not finished (the stub runs nothing), exits 3: saw rc={rc}, {st}"


def test_an_unfinished_release_reports_what_it_reached(tmp_path):
    write_done_state(tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    state["releases"][R3] = {"status": "running"}  # killed midway: no run.json, no run_dir recorded yet
    (tmp_path / "state.json").write_text(json.dumps(state))
    run = tmp_path / "runs" / f"20260101T000000Z-torch-{R3}+cpu"
    run.mkdir(parents=True)
    reached = rec("tags_a-min_cut-aot_eager-cpu-float32", "tags", "pass")
    ids = [reached["nodeid"], "suites/test_tags.py::test_case[tags_b-min_cut-aot_eager-cpu-float32]"]
    (run / "cells.jsonl").write_text("\n".join(json.dumps(x) for x in (
        {"type": "env", "torch": R3}, {"type": "collected", "ids": ids}, {"type": "cell", **reached})) + "\n")
    assert compat.main(["--out", str(tmp_path), "report"]) == 0
    out = json.loads((tmp_path / "compat.json").read_text())
    rel = {r["release"]: r for r in out["releases"]}[R3]
    assert rel["partial"] == "1 of 2 cells" and rel["summary"]["pass"] == 1 and rel["summary"]["semantic"] == 0, rel
    assert out["cells"]["tags_a-min_cut-aot_eager-cpu-float32"]["releases"][R3]["category"] == "pass", "the reached cell"
    assert "tags_b-min_cut-aot_eager-cpu-float32" not in out["cells"], "a cell no release reported is not in the table"
    k = {e["id"]: e for e in out["known_failures"]}
    statuses = {e["releases"][R3]["status"] for e in k.values()}
    assert "not reached" in statuses and statuses <= {"not reached", "fine"} and all(e["releases"][R3]["ok"] for e in k.values()), \
        f"an unfinished run gives no known-failure verdict (entries outside their range: fine), saw { {i: e['releases'][R3] for i, e in k.items()} }"
    assert "(partial: 1 of 2 cells)" in (tmp_path / "compat.html").read_text(), "the page should say the run is partial"


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="headless Chromium is not installed (/usr/bin/chromium; `apt-get install -y chromium`)")
def test_compat_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "compat.html"
    page.write_text(render_compat(fixture_docs()))
    shot = tmp_path / "compat.png"
    proc = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1000,800", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"Chromium wrote no screenshot (rc={proc.returncode}):\n{proc.stderr[-2000:]}"
    w, h, raw = png_pixels(shot)
    assert (w, h) == (1000, 800), f"expected a 1000x800 screenshot, saw {w}x{h}"
    colours = pixel_colours(shot.read_bytes(), w, h, raw)
    # the category colours of the tables (drift yellow, cannot-run lilac, pass green) must be on screen
    for name, rgb in (("drift", (0xfd, 0xe9, 0xa8)), ("cannot run", (0xd8, 0xd0, 0xf0)), ("pass", (0xcd, 0xec, 0xcd))):
        assert rgb in colours, f"expected the {name} colour {bytes(rgb).hex()} in the screenshot, saw {len(colours)} colours"


def test_reattribution_turns_only_covered_semantic_cells_into_known_failures():
    """An entry added or widened after a release ran covers that release's semantic cells it explains; a passing cell,
    a drift and a semantic cell no entry explains stay what the run said."""
    from harness.tools.reports.releases import reattribute

    cells = [rec("a-x", "tags", "semantic", failed_check="case_check", message="CellFailure: a-x: 1 check(s) failed:\n[case_check] old"),
             rec("b-x", "tags", "semantic", failed_check="run", message="CellFailure: b-x: 1 check(s) failed:\n[run] other"),
             rec("c-x", "tags", "pass"), rec("d-x", "tags", "drift"), rec("e-x", "contract", "known_failure")]
    covered = {("2.11.0", "a-x"), ("2.11.0", "c-x"), ("2.11.0", "d-x"), ("2.11.0", "e-x")}
    out = reattribute({R1: doc(cells, R1), R2: None},
                      lambda r, c: "entry" if (r, c["cell"]) in covered else None)
    seen = {c["cell"]: (c["category"], c.get("known_failure"), c.get("reattributed", False)) for c in out[R1]["cells"]}
    assert seen == {"a-x": ("known_failure", "entry", True), "b-x": ("semantic", None, False),
                    "c-x": ("pass", None, False), "d-x": ("drift", None, False),
                    "e-x": ("known_failure", "entry", False)}, seen
    assert out[R2] is None
    doc_ = build_compat({R1: {}}, {R1: doc(cells, R1)}, [KnownFailureEntry("entry", lambda r: True)],
                        covers=lambda r, c: "entry" if (r, c["cell"]) in covered else None)
    assert doc_["releases"][0]["reattributed"] == 1 and doc_["known_failures"][0]["mismatches"] == [], doc_["releases"]


def test_failing_checks_read_every_check_or_none_from_a_cut_message():
    from harness.tools.reports.releases import failing_checks

    two = "CellFailure: a-x: 2 check(s) failed:\n[run] boom\n  trace\n[invariant:y] rank 0: node z"
    assert failing_checks({"message": two}) == [("run", "boom\n  trace\n"), ("invariant:y", "rank 0: node z")]
    cut = "CellFailure: a-x: 2 check(s) failed:\n[run] boom\n  trace ..."
    assert failing_checks({"message": cut}) == [], "a message cut before its second check must give no verdict"
    contract = "ContractViolation: [ckpt.kwargs] check 'reentrant_rejects_kwargs': expected X\n[ckpt.kwargs] check 'b': y"
    assert failing_checks({"message": contract}) == [("case_check:reentrant_rejects_kwargs", "expected X"),
                                                     ("case_check:b", "y")], "an older harness's contract record"
    now = "CellFailure: ckpt.kwargs-reentrant-inductor: 1 check(s) failed:\n[case_check:reentrant_rejects_kwargs] x"
    assert failing_checks({"message": now}) == [("case_check:reentrant_rejects_kwargs", "x")]
    assert failing_checks({"message": "AssertionError: hirschberg: saw 2"}) == [("test", "hirschberg: saw 2")]


def test_nightly_message_keeps_every_check_of_a_long_cell_failure():
    """A CellFailure over the record's size keeps each ``[stage]`` line (head and tail of each check's message)."""
    from harness.tools.nightly_plugin import MESSAGE_CHARS, _message
    from harness.tools.reports.releases import failing_checks
    from harness.core.suite import CellFailure

    exc = CellFailure("c-x", [("invariant:a", "node d (policy MUST_SAVE)\n" + "g" * 9000),
                              ("runs", "Traceback\n" + "t" * 9000 + "\nTypeError: unhashable")])
    msg = _message(exc)
    checks = failing_checks({"message": msg})
    assert len(msg) <= MESSAGE_CHARS and [c for c, _ in checks] == ["invariant:a", "runs"], (len(msg), checks)
    assert "node d (policy MUST_SAVE)" in checks[0][1] and checks[1][1].rstrip().endswith("TypeError: unhashable"), checks


def test_verdict_changes_group_consecutive_releases_by_cause():
    ch = fixture_docs()["changes"]
    rows = {(c["from_release"], c["to_release"], c["from"], c["to"], c["why"]): c["cells"] for c in ch}
    assert rows[(R1, R2, "cannot_run", "pass", "missing_config_knob")] == ["sac_c-min_cut-aot_eager-cpu-float32"], rows
    assert rows[(R1, R2, "known_failure", "semantic", "old_f")] == ["old_f-min_cut-aot_eager-cpu-float32"], rows
    assert rows[(R2, R3, "pass", "drift", "graphs differ")] == ["tags_a-min_cut-aot_eager-cpu-float32"], rows
    assert rows[(R2, R3, "known_failure", "known_failure_passes", "sac_b-")] == ["sac_b-min_cut-aot_eager-cpu-float32"], rows
    assert not any(c["to_release"] == R4 for c in ch), "a release not run yet changes nothing"


def test_a_patch_run_replaces_the_cells_it_reran(tmp_path):
    """`run --patch`: the cells a patch run reran replace the full run's records in the report; the others stay."""
    base = doc([rec("a-x", "tags", "semantic", failed_check="run", message="old harness"), rec("b-x", "tags", "pass"),
                rec("gated-min_cut-aot_eager-cpu-float32", "remat", "semantic", case="gated")], R3)
    patch = doc([rec("a-x", "tags", "pass"), rec("c-x", "tags", "pass"),
                 rec("gated-cpu", "remat", "skipped", case=None, message="needs torch>=2.14 (installed 2.13.0): x")], R3)
    for name, d in (("full", base), ("patch", patch)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text(json.dumps(d))
    (tmp_path / "state.json").write_text(json.dumps({"releases": {R3: {
        "status": "done", "run_dir": "runs/full", "patches": [{"run_dir": "runs/patch"}]}}, "order": [R3]}))
    assert compat.main(["--out", str(tmp_path), "report"]) == 0
    out = json.loads((tmp_path / "compat.json").read_text())
    seen = {c: v["releases"][R3]["category"] for c, v in out["cells"].items()}
    assert seen == {"a-x": "pass", "b-x": "pass", "c-x": "pass", "gated-cpu": "cannot_run"} and \
        out["releases"][0]["patched"] == 3, (seen, out["releases"])


def test_release_environments_get_the_models_group_and_a_broken_pip_check_fails():
    """Issue 26 item 6: the real-model suite runs in the nightly and the release matrix, so their environments install
    the models group (envs.ensure_env calls install_models on a build and on a dependency update); `pip check` may only
    report torchtitan's trainer needs and torchvision's pin of another torch (the shim stands in for its ops)."""
    import inspect

    from harness.tools.reports import envs

    source = inspect.getsource(envs.ensure_env)
    assert source.count("install_models(py, pip_args)") == 2, \
        f"expected ensure_env to install the models group on a build and on an update, saw:\n{source}"
    allowed = ["torchtitan 0.3.0 requires datasets, which is not installed.",
               "torchvision 0.28.0 has requirement torch==2.13.0, but you have torch 2.14.1."]
    broken = ["transformers 5.23.0 has requirement tokenizers<0.23, but you have tokenizers 0.30.0."]
    assert envs.broken_requirements("\n".join(allowed + broken)) == broken, \
        f"expected only {broken} reported, saw {envs.broken_requirements(chr(10).join(allowed + broken))}"
    assert envs.broken_requirements("No broken requirements found.\n") == [], "expected a clean pip check to pass"


def test_known_failures_selection_takes_each_entrys_tests_and_nothing_else(monkeypatch, tmp_path):
    """``compat run --known-failures`` runs what the entries address: a cell an entry's selector selects, a model
    test named by an entry's case, a plain test by glob; a cell no entry selects stays out."""
    from harness.core import known_failures
    from harness.rows import collect

    cells = collect.all_cells(("cpu",))
    chosen = next(c for c in cells if c.case.area == "budget_sweep")
    free = next(c for c in cells if c.case.area == "tags")
    (tmp_path / "kf.toml").write_text(f"""
[[failure]]
id = "synthetic-cell"
reason = "r"
upstream = "none: synthetic"
stage = "numerics"
message = "x"
torch = ">=2.11"
select = {{ cases = ["{chosen.case.name}", "hf_gpt2_full"], budget = [{chosen.axes.budget}] }}

[[failure]]
id = "synthetic-test"
reason = "r"
upstream = "none: synthetic"
stage = "test"
message = "x"
torch = ">=2.11"
select = {{ tests = ["suites/test_knapsack_solvers.py::test_hirschberg_*"] }}
""")
    real_load = known_failures.load
    monkeypatch.setattr(known_failures, "load", lambda path=None: real_load(tmp_path / "kf.toml"))
    listed = [f"suites/test_budget_sweep.py::test_case[{chosen.id}]", f"suites/test_tags.py::test_case[{free.id}]",
              "suites/test_real_models.py::test_case[hf_gpt2_full-cpu]",
              "suites/test_knapsack_solvers.py::test_hirschberg_minimal_case", "suites/test_knapsack_solvers.py::test_other"]
    monkeypatch.setattr(compat.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "\n".join(listed), ""))
    got = compat.known_failure_nodeids()
    assert got == [listed[0], listed[2], listed[3]], f"expected the selected cell, the model test and the globbed test; got {got}"


def test_a_cell_breaking_two_entries_counts_for_both():
    """A cell whose failing checks two entries explain records both ids (space-separated), and the range check finds
    its cells under each entry (with one id recorded, the second entry read 'no cell' on every release)."""
    cell = "state_bn-min_cut-aot_eager-cpu-float32"
    docs = {R3: doc([rec(cell, "module_state", "known_failure", known_failure="eager_twice compiled_once")], R3)}
    entries = [KnownFailureEntry(i, lambda r: True, "torch >=2.11") for i in ("eager_twice", "compiled_once")]
    k = {e["id"]: e for e in build_compat({R3: {"status": "done"}}, docs, entries)["known_failures"]}
    for i in ("eager_twice", "compiled_once"):
        assert k[i]["releases"][R3]["status"] == "failing" and k[i]["cells"] == [cell], (
            f"expected {i} failing on {cell}, saw {k[i]}")

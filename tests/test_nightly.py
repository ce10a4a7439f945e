"""The nightly run on a small selection with injected problems lands each in its category, exit code and history line:
a wrong compiled gradient (semantic), a crashing worker (semantic, the report is still written), an altered golden
(graph-only drift), a known failure that passes; the JSON validates against docs/nightly-schema.json; shards merge;
the HTML report renders in headless Chromium."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from project_copy import ROOT, make_project, run_in

from harness.tools.reports.record import validate

SEL = ["--", "suites", "-m", "not slow", "-k", "tags_function or planted"]
DRIFTED = "tags_function-default-aot_eager-cpu-float32"
FIXED = "tags_function_with_kwargs-min_cut-aot_eager-cpu-float32"


def nightly(project: Path, *args: str, env: dict | None = None):
    return run_in(project, "run", "--python", __import__("sys").executable, "--runs-dir", str(project / "runs"),
                  "--workers", "1", "--quiet", *args, env=env, module="harness.tools.nightly")


def NIGHTLY_RUNS(test):
    """The tests on the two nightly runs of ``runs`` (a project copy, an update and two whole nightly runs: minutes):
    ``make meta-slow`` and ``make nightly``; one xdist group, so that one worker makes ``runs`` once."""
    return pytest.mark.meta_slow(pytest.mark.xdist_group("nightly_runs")(test))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("nightly"))
    made = run_in(project, "suites/test_planted.py", "-m", "not slow", "--snapshot-update")
    assert made.returncode == 0, made.stdout[-3000:]
    fw = project / "golden" / "cpu" / "test_tags" / f"test_case[{DRIFTED}][fw].txt"
    assert "aten.sigmoid.default" in fw.read_text(), "the golden to alter should contain a sigmoid"
    fw.write_text(fw.read_text().replace("aten.sigmoid.default", "aten.tanh.default"))
    (project / "known_failures.toml").write_text(
        '[[failure]]\nid = "pretend-fixed"\nreason = "pretend upstream bug, fixed by now"\nupstream = "none"\n'
        f'stage = "numerics"\nmessage = "."\ntorch = ">=2.0"\nselect = {{ cases = ["{FIXED.split("-")[0]}"], '
        'partitioner = ["min_cut"], composition = ["compile_outside"] }\n')  # FIXED's one cell, not its compositions
    bad = nightly(project, *SEL, env={"PLANTED_WRONG": "1", "PLANTED_CRASH": "1"})
    good = nightly(project, *SEL)
    return project, bad, good


def run_dirs(project: Path) -> list[Path]:
    return sorted(p for p in (project / "runs").iterdir() if p.is_dir())


def doc_of(d: Path) -> dict:
    return json.loads((d / "run.json").read_text())


@NIGHTLY_RUNS
def test_injected_failures_land_in_their_categories_and_exit_codes(runs):
    project, bad, good = runs
    assert bad.returncode == 2, f"expected exit 2 (semantic failures), saw {bad.returncode}:\n{bad.stdout[-3000:]}\n{bad.stderr[-3000:]}"
    assert good.returncode == 1, f"expected exit 1 (graph-only drift), saw {good.returncode}:\n{good.stdout[-3000:]}"
    first, second = (doc_of(d) for d in run_dirs(project)[:2])
    by_cell = {c["cell"]: c for c in first["cells"]}
    wrong = by_cell["planted-min_cut-aot_eager-cpu-float32"]
    assert (wrong["category"], wrong["failed_check"], wrong["numerics"]) == ("semantic", "numerics", "fail"), \
        f"a wrong gradient must be a semantic numerics failure, saw {wrong['category']}/{wrong['failed_check']}/{wrong['numerics']}"
    crash = by_cell["planted_crash-min_cut-aot_eager-cpu-float32"]
    assert (crash["category"], crash["failed_check"]) == ("semantic", "crash"), f"a dead worker must be the cell's failure, saw {crash}"
    for doc in (first, second):
        drift = {c["cell"]: c for c in doc["cells"]}[DRIFTED]
        assert drift["category"] == "drift" and drift["numerics"] == "pass", f"altered golden: expected drift, saw {drift['category']}"
        assert drift["graphs"]["fw"]["status"] == "changed" and drift["graphs"]["bw"]["status"] == "same", drift["graphs"]
        assert "aten.tanh.default" in drift["graphs"]["fw"]["golden"] and drift["recorded"]["ops"]["fw"].get("aten.sigmoid.default"), \
            "the drift record should carry the golden (tanh) and the recorded op counts (sigmoid)"
        assert drift["golden"]["bw_flops"] == drift["recorded"]["bw_flops"], "figures read back from the summary golden"
        fixed = {c["cell"]: c for c in doc["cells"]}[FIXED]
        assert fixed["category"] == "known_failure_passes", f"a known failure that passes must be reported, saw {fixed['category']}"
    others = [c for c in first["cells"] if c["cell"] not in (DRIFTED, FIXED) and not c["cell"].startswith("planted")]
    assert others and all(c["category"] == "pass" for c in others), [(c["cell"], c["category"]) for c in others]
    assert second["summary"]["semantic"] == 0 and second["exit_code"] == 1, second["summary"]

    history = [json.loads(x) for x in (project / "runs" / "history.jsonl").read_text().splitlines()]
    assert [(h["exit_code"], h["semantic"], h["drift"], h["known_failure_passes"]) for h in history[:2]] == [(2, 2, 1, 1), (1, 0, 1, 1)], history
    trend = (project / "runs" / "trend.html").read_text()
    assert trend.count("<tr>") >= 3 and "<svg" in trend, "the trend view should have a row per run and a chart"
    total = doc_of(run_dirs(project)[0])["summary"]["cells"]
    assert f"[nightly] {total}/{total} cells" in bad.stdout, f"expected progress lines (done/total), saw:\n{bad.stdout[-2000:]}"


@NIGHTLY_RUNS
def test_run_json_matches_the_documented_schema_and_the_check_catches_violations(runs):
    project, _, _ = runs
    schema = json.loads((ROOT / "docs" / "nightly-schema.json").read_text())
    for d in run_dirs(project):
        problems = validate(doc_of(d), schema)
        assert not problems, f"{d.name}/run.json violates the schema: {problems[:5]}"
    broken = doc_of(run_dirs(project)[0])
    del broken["environment"]["torch"]
    broken["cells"][0]["category"] = "fine"
    broken["cells"][1]["numerics"] = 3
    problems = validate(broken, schema)
    for part in ("$.environment: missing required key 'torch'", "$.cells[0].category: expected one of", "$.cells[1].numerics: expected string"):
        assert any(p.startswith(part) for p in problems), f"expected a problem starting {part!r}, saw {problems}"


@NIGHTLY_RUNS
def test_junit_and_report_are_written_and_shards_merge(runs):
    project, _, _ = runs
    first, second = run_dirs(project)[:2]
    junit = (first / "junit.xml").read_text()
    assert "planted-min_cut-aot_eager-cpu-float32" in junit and "crashed" in junit, "JUnit XML should name the failures"
    html = (first / "report.html").read_text()
    for part in ("semantic failures", "graph-only drift", "known failures that now pass", DRIFTED, "golden fw", "tanh",
                 "aten.sigmoid.default (now)"):
        assert part in html, f"expected {part!r} in report.html"
    merged = run_in(project, "merge", str(first), str(second), "--out", str(project / "merged"), "--no-history",
                    module="harness.tools.nightly")
    assert merged.returncode == 1, f"merging keeps the later shard's result per cell (drift only): rc={merged.returncode}\n{merged.stdout}"
    doc = doc_of(project / "merged")
    cells = doc_of(first)["summary"]["cells"]  # both runs select the same cells: merged, each once
    assert doc["shards"] == 2 and doc["summary"]["cells"] == cells > 0, doc["summary"]
    assert (project / "merged" / "junit.xml").read_text().count("<testsuite ") == 2, "merged JUnit should hold both shards' suites"


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    w, h = struct.unpack(">II", data[16:24])
    idat, i = b"", 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        if data[i + 4:i + 8] == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    return w, h, zlib.decompress(idat)


@NIGHTLY_RUNS
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="headless Chromium is not installed (/usr/bin/chromium; `apt-get install -y chromium`)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    project, _, _ = runs
    report = run_dirs(project)[0] / "report.html"
    shot = tmp_path / "report.png"
    proc = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1280,1600", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"Chromium wrote no screenshot (rc={proc.returncode}):\n{proc.stderr[-2000:]}"
    w, h, raw = png_pixels(shot)
    assert (w, h) == (1280, 1600), f"expected a 1280x1600 screenshot, saw {w}x{h}"
    rows = [raw[r * (len(raw) // h) + 1:(r + 1) * (len(raw) // h)] for r in range(0, h, 40)]
    distinct = {bytes(row[j:j + 3]) for row in rows for j in range(0, len(row) - 2, 12)}
    assert len(distinct) > 8, f"the screenshot looks blank ({len(distinct)} distinct sampled pixel values)"


def test_empty_kernels_a_killed_compile_left_are_pruned(tmp_path):
    from harness.tools.plugin import prune_empty_kernels

    (tmp_path / "3s").mkdir()
    empty, good = tmp_path / "3s" / "a.main.so", tmp_path / "3s" / "b.main.so"
    empty.write_bytes(b"")
    good.write_bytes(b"\x7fELF")
    assert prune_empty_kernels(tmp_path) == [empty] and good.exists() and not empty.exists(), list(tmp_path.rglob("*"))

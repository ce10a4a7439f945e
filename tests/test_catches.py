"""The harness catches what it must: a perturbed gradient, a changed op count, a changed graph, a missing golden.
(That a snapshot update refuses to bless a case with wrong numerics and keeps its old goldens is
tests/test_snapshot_update.py::test_refused_cell_is_listed_with_reason_and_keeps_goldens.)"""

from pathlib import Path

import pytest

from harness.core.case import Axes, Cell
from harness.rows.cases import find_case
from harness.core.checks import assert_numerics, assert_op_counts
from harness.core.run import run_cell
from project_copy import goldens_of, make_project, run_in

CELL = "tags_function-min_cut-aot_eager-cpu-float32"


def test_perturbed_parameter_gradient_is_reported_with_name_error_and_tolerance():
    run = run_cell(Cell(find_case("tags_module"), Axes()))
    assert_numerics(run)  # sane before the perturbation
    run.compiled.grads["param linear.weight"] = run.compiled.grads["param linear.weight"] * 1.001
    with pytest.raises(AssertionError) as info:
        assert_numerics(run)
    msg = str(info.value)
    for part in ("grad of param linear.weight", "max abs error", "rtol=1.3e-06", "compiled vs eager with AC"):
        assert part in msg, f"expected {part!r} in the mismatch message, saw:\n{msg}"


def test_changed_op_count_is_reported_with_expected_and_seen():
    run = run_cell(Cell(find_case("tags_function"), Axes()))
    assert_op_counts(run)
    run.graphs["bw"] = run.graphs["fw"]  # as if the backward stopped recomputing the mm
    with pytest.raises(AssertionError) as info:
        assert_op_counts(run)
    msg = str(info.value)
    assert "bw graph: expected aten.mm.default == 3, saw 1" in msg, f"unexpected message:\n{msg}"


@pytest.fixture
def project(tmp_path):
    """A copy of the project (tests/project_copy.py) with a planted case and an empty golden dir."""
    return make_project(tmp_path, tags_goldens=False)


def pytest_in(project: Path, *args: str, env: dict | None = None):
    return run_in(project, *args, env=env)


def goldens_in(project: Path, suite: str) -> dict[str, bytes]:
    return {k: v for k, v in goldens_of(project).items() if k.startswith(f"cpu/{suite}/")}


def test_missing_and_changed_goldens_fail_with_the_fix(project):
    sel = [f"suites/test_tags.py::test_case[{CELL}]"]  # the one cell (-k CELL would also run its 6 composition cells)
    first = pytest_in(project, *sel)
    assert first.returncode == 1, f"expected a failure with no goldens, saw rc={first.returncode}:\n{first.stdout[-3000:]}"
    assert "no golden for graph 'fw'" in first.stdout and "make snapshot-update" in first.stdout, first.stdout[-3000:]

    update = pytest_in(project, *sel, "--snapshot-update")
    assert update.returncode == 0, update.stdout[-3000:]
    written = goldens_in(project, "test_tags")
    assert len(written) == 5, f"expected dynamo/joint/fw/bw/summary goldens, saw {sorted(written)}"

    fw = next(p for p in (project / "golden" / "cpu" / "test_tags").glob("*[[]fw].txt"))
    fw.write_text(fw.read_text().replace("aten.sigmoid.default", "aten.tanh.default"))
    drift = pytest_in(project, *sel)
    assert drift.returncode == 1, drift.stdout[-3000:]
    assert "graph 'fw' drifted" in drift.stdout and "+sigmoid" in drift.stdout.replace(" ", ""), drift.stdout[-3000:]

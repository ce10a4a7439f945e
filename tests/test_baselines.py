"""The baseline cache (harness/core/baselines.py): a warm cache gives the figures a fresh compile gives, a changed torch
(or harness source) misses it, and a faulty cell still fails on a warm cache (only baselines are cached)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.core import analysis, baselines, pipeline, suite
from harness.tools import training
from harness.core.analysis import Analysis, Saved
from harness.core.case import Axes, Cell
from harness.core.figures import Figures
from harness.core.run import run_cell
from harness.rows.cases import find_case

CASE = find_case("sac_no_recompute_mm")
AXES = Axes("min_cut", "aot_eager", "cpu", "float32")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AC_BASELINE_CACHE", str(tmp_path))
    compiles = []
    real = pipeline.baseline.__wrapped__

    def counted(case, axes, ac):
        compiles.append((case.name, axes, ac))
        return real(case, axes, ac)

    monkeypatch.setattr(baselines, "baseline", counted)  # no in-process lru cache: every miss compiles
    return tmp_path, compiles


def test_a_warm_cache_gives_the_figures_of_a_fresh_compile(cache):
    where, compiles = cache
    cold = baselines.figures(CASE, AXES, False)
    warm = baselines.figures(CASE, AXES, False)
    fresh = Figures.of(analysis.of(pipeline.compile_and_record(CASE, AXES, ac=False)))
    assert len(compiles) == 1 and len(list(where.glob("*.json"))) == 1, (
        f"expected one compile and one cache file for two lookups; saw {len(compiles)} compiles, "
        f"{sorted(p.name for p in where.glob('*.json'))}")
    assert cold == warm == fresh, f"expected equal figures cold / warm / fresh; saw {cold} / {warm} / {fresh}"


def test_another_torch_its_files_or_harness_source_misses_the_cache(cache, monkeypatch):
    _, compiles = cache
    baselines.figures(CASE, AXES, False)
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".changed")
    baselines.figures(CASE, AXES, False)
    monkeypatch.setattr(baselines, "torch_digest", lambda: "partitioners.py edited in place")
    baselines.figures(CASE, AXES, False)
    monkeypatch.setattr(baselines, "harness_digest", lambda: "edited")
    baselines.figures(CASE, AXES, False)
    assert len(compiles) == 4, f"expected a compile per torch version / torch files / harness identity (4); saw {len(compiles)}"


def test_the_cache_is_off_on_request_and_for_cases_outside_the_database(cache, monkeypatch):
    where, compiles = cache
    baselines.figures(dataclasses.replace(CASE, area=""), AXES, False)  # e.g. a fuzz program or a user's model
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    baselines.figures(CASE, AXES, False)
    assert len(compiles) == 2 and not list(where.glob("*.json")), (
        f"expected 2 compiles and no cache file; saw {len(compiles)} compiles, {list(where.glob('*.json'))}")


def test_a_faulty_cell_still_fails_on_a_warm_cache(cache, monkeypatch):
    """The cell's own compile is never cached: a partitioner that saves a region intermediate (simulated on the
    recorded analysis) fails the invariant with every baseline served from the cache."""
    _, compiles = cache
    cell = Cell(CASE, AXES)

    class Goldens:
        def keep_existing(self):
            pass

        def assert_match(self, texts):
            return len(texts)

    record = lambda k, v: None  # noqa: E731
    suite.check_cell(cell, Goldens(), record)  # fills the cache
    n = len(compiles)
    real = run_cell

    def faulty(c):
        run = real(c)
        g = analysis.of(run).graphs[0]
        name = next(n for n, p in g.policies.items() if p == "PREFER_RECOMPUTE" and n not in g.boundaries)
        run.analysis = Analysis([dataclasses.replace(g, saved=g.saved + [Saved(name, "f32[4, 4]", 64, "activation")])])
        return run

    monkeypatch.setattr(suite, "run_cell", faulty)
    with pytest.raises(suite.CellFailure) as info:
        suite.check_cell(cell, Goldens(), record)
    assert len(compiles) == n, f"expected every baseline from the warm cache; saw {len(compiles) - n} more compiles"
    assert "invariant:recompute_tagged_not_saved" in [s for s, _ in info.value.failures], info.value.failures


@pytest.mark.parametrize("name", ["rng_recomputed_rand", "sac_no_recompute_mm"])
@pytest.mark.parametrize("ac", [False, True], ids=["no_ac", "ac"])
def test_an_inductor_baseline_without_kernels_has_the_figures_of_a_full_compile(name, ac):
    """pipeline.baseline records inductor's graphs and runs them eagerly (codegen=False): the figures must be those
    of the full compile, which generates and runs kernels (an RNG case: the partitioner functionalizes its dropout)."""
    case, axes = find_case(name), Axes("min_cut", "inductor", "cpu", "float32")
    full = pipeline.compile_and_record(case, axes, ac=ac)
    graphs_only = pipeline.compile_and_record(case, axes, ac=ac, codegen=False)
    assert full.cache, f"expected the full compile to go through inductor's FX graph cache; saw counters {full.cache}"
    assert graphs_only.cache == {}, f"expected no inductor code generated without codegen; saw {graphs_only.cache}"
    seen = [Figures.of(analysis.of(r)) for r in (full, graphs_only)]
    assert seen[0] == seen[1], f"expected equal figures with and without kernels; saw {seen[0]} vs {seen[1]}"


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_another_budget_partitioned_again_has_the_figures_of_a_compile_at_that_budget(cache, backend):
    """budget_monotone's other budgets come from the cell's own joint graphs partitioned again (pipeline.repartition):
    without compiling, and with the figures a compile at that budget gives."""
    where, compiles = cache
    case, axes = find_case("reference_block_full_ac"), Axes("min_cut", backend, "cpu", "float32", 1.0)
    run = pipeline.compile_and_record(case, axes, ac=True)
    for budget in (0.5, 0.0):
        other = dataclasses.replace(axes, budget=budget)
        again = baselines.figures(case, other, True, from_run=run)
        compiled = Figures.of(analysis.of(pipeline.compile_and_record(case, other, ac=True, codegen=False)))
        assert again == compiled, f"expected budget {budget} partitioned again == compiled; saw {again} vs {compiled}"
    assert compiles == [], f"expected no baseline compile when the cell's joints are partitioned again; saw {compiles}"


def test_a_cells_runs_at_other_budgets_are_its_joints_partitioned_again(monkeypatch):
    """Needs.budgets (the budget solvers' oracles) gets the case's runs at other budgets from the cell's own joints
    partitioned again, not compiled: the same figures as a compile at that budget (all 570 such runs of the
    database's budget cells compared equal; the 18 with a random op are compiled)."""
    from harness.core import run as run_module
    from harness.rows.cases.budget_solvers import figures_of

    compiled = []
    real = run_module.baseline.__wrapped__
    monkeypatch.setattr(run_module, "baseline", lambda c, a, ac: compiled.append(a.budget) or real(c, a, ac))
    monkeypatch.setattr(run_module, "_RECENT", {})
    case = find_case("bs_mlp4_wide_plain__ilp__flops")
    cell = Cell(case, Axes("min_cut", "aot_eager", "cpu", "float32", 0.5))
    run = run_cell(cell, needs=case.expect.needs)
    others = (0.0, 0.3, 1.0)  # budget_solvers._needed_budgets: the sweep's ends and the budget below
    assert sorted(run.at_budget) == list(others) and compiled == [], (
        f"expected the runs at {others} without a compile; saw budgets {sorted(run.at_budget)}, compiles at {compiled}")
    for b in others:
        fresh = pipeline.compile_and_record(case, dataclasses.replace(cell.axes, budget=b), ac=True, codegen=False)
        assert figures_of(run.at_budget[b]) == figures_of(fresh), (
            f"budget {b}: expected the partitioned-again figures == compiled; saw {figures_of(run.at_budget[b])} vs "
            f"{figures_of(fresh)}")


@pytest.mark.parametrize("name", ["sac_no_recompute_mm", "reference_block_full_ac"])
def test_a_default_partitioner_baseline_is_the_min_cut_joints_partitioned_again(cache, name):
    """The no-AC baseline at the default partitioner comes from the min-cut no-AC baseline's joints partitioned with
    default_partition (the joint is traced before the partitioner runs): one trace for both partitioners' cells, and
    the figures a compile at the default partitioner gives (checked on all 162 such database programs: the closing
    note of issue 30)."""
    _, compiles = cache
    case, axes = find_case(name), Axes("default", "aot_eager", "cpu", "float32")
    derived = baselines.figures(case, axes, False)
    compiled = Figures.of(analysis.of(pipeline.compile_and_record(case, axes, ac=False)))
    traced = [(c, a.partitioner, ac) for c, a, ac in compiles]
    assert traced == [(name, "min_cut", False)], f"expected only the min-cut baseline traced; saw {traced}"
    assert derived == compiled, f"expected the derived default-partitioner figures == compiled; saw {derived} vs {compiled}"


@pytest.mark.parametrize("name,why", [("rng_recomputed_rand", "a random op"),
                                      ("budget_invoke_subgraph_none", "an invoke_subgraph body")])
def test_a_joint_that_cannot_be_partitioned_again_is_compiled(cache, name, why):
    """A joint holding a random op (its RNG is functionalized inside the compile) or a subgraph (partitioned inside
    the compile by the compile's partitioner) is not partitioned again: the baseline is compiled at its partitioner."""
    _, compiles = cache
    case = find_case(name)
    axes = Axes("default", "aot_eager", "cpu", "float32")
    baselines.figures(case, axes, False)
    traced = [(a.partitioner, ac) for _, a, ac in compiles]
    assert traced == [("min_cut", False), ("default", False)], (
        f"expected a compile at the default partitioner after the min-cut one ({why}); saw {traced}")


def _customize(tmp_path, name, body):
    where = tmp_path / f"site-{name}"
    where.mkdir()
    (where / f"{name}.py").write_text(body)
    return where


@pytest.mark.parametrize("change", [
    "PYTHONPATH", "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCHDYNAMO_INLINE_INBUILT_NN_MODULES", "TORCH_LOGS",
    "TORCH_COMPILE_DISABLE", "PYTORCH_NO_CUDA_MEMORY_CACHING", "AC_FAULT", "LD_PRELOAD",
    "sitecustomize", "usercustomize", "sitecustomize edited", "pth file"])
def test_whatever_changes_the_torch_that_runs_misses_the_cache(change, tmp_path, monkeypatch):
    """The key holds every way to change the torch a process runs without touching its files: the import path, a
    sitecustomize / usercustomize (or a .pth file) that patches torch at start-up, torch's, inductor's and dynamo's
    configuration variables, and AC_FAULT (the fault kit's in-process patch of torch)."""
    import sys

    for var in ("PYTHONPATH", "AC_FAULT", "LD_PRELOAD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = baselines.key(CASE, AXES, False)
    if change == "sitecustomize edited":
        where = _customize(tmp_path, "sitecustomize", "import torch\n")
        monkeypatch.setattr(sys, "path", [str(where), *sys.path])
        before = baselines.key(CASE, AXES, False)
        (where / "sitecustomize.py").write_text("import torch\ntorch._functorch.config.activation_memory_budget = 0.5\n")
    elif change in ("sitecustomize", "usercustomize"):
        where = _customize(tmp_path, change, "import torch\ntorch.utils.checkpoint.checkpoint = None\n")
        monkeypatch.setattr(sys, "path", [str(where), *sys.path])
    elif change == "pth file":
        site_dir = tmp_path / "site"
        site_dir.mkdir()
        monkeypatch.setattr(sys, "path", [str(site_dir), *sys.path])  # as a site-packages directory is
        before = baselines.key(CASE, AXES, False)
        (site_dir / "patch.pth").write_text("import patch_torch\n")
    else:
        monkeypatch.setenv(change, str(tmp_path) if change == "PYTHONPATH" else "1")
    after = baselines.key(CASE, AXES, False)
    assert after != before, f"expected {change} to change the baseline cache key; saw the same key {after}"


def test_the_key_ignores_what_does_not_change_torch(monkeypatch):
    """The key is stable: where inductor keeps its caches, or an unrelated variable, serves the same figures."""
    before = baselines.key(CASE, AXES, False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    monkeypatch.setenv("AC_CONFORMANCE_UNRELATED", "1")
    assert baselines.key(CASE, AXES, False) == before, "expected cache locations and unrelated variables to keep the key"


def test_a_steps_key_holds_its_parts_the_thread_count_and_the_cpu_capability(tmp_path, monkeypatch):
    """A cached training step (a distributed rank's step without AC) is compared bitwise, so its key holds what changes
    its bits and not its graphs -- the intra-op thread count, the CPU capability -- beside all of :func:`key`'s parts
    (torch, harness, environment: the tests above) and its own; ``AC_BASELINE_CACHE=off`` turns it off."""
    monkeypatch.setenv("AC_BASELINE_CACHE", str(tmp_path))
    path = baselines.step_path("distributed", "scenario", "rank=0")
    assert path is not None and path.parent == tmp_path / "steps", f"expected a path under {tmp_path}/steps; seen {path}"
    assert baselines.step_path("distributed", "scenario", "rank=0") == path, "expected the same key twice"
    seen = {"another rank": baselines.step_path("distributed", "scenario", "rank=1")}
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        seen["another thread count"] = baselines.step_path("distributed", "scenario", "rank=0")
    finally:
        torch.set_num_threads(threads)
    with monkeypatch.context() as m:
        m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ANOTHER_ISA")
        seen["another CPU capability"] = baselines.step_path("distributed", "scenario", "rank=0")
    with monkeypatch.context() as m:
        m.setattr(baselines, "torch_digest", lambda: "an edited torch")
        seen["another torch"] = baselines.step_path("distributed", "scenario", "rank=0")
    same = [what for what, other in seen.items() if other == path]
    assert not same, f"expected each of {sorted(seen)} to change the step's key; these kept it: {same}"
    monkeypatch.setenv("AC_BASELINE_CACHE", "off")
    assert baselines.step_path("distributed", "scenario", "rank=0") is None, "expected no step cache when it is off"


def test_a_stored_step_reads_back_bitwise_and_a_damaged_one_is_a_miss(tmp_path):
    path = tmp_path / "steps" / "k.pt"
    fig = Figures((Saved("mm", "f32[4, 4]", 64, "activation"),), 128, 64)
    step = {"result": {"loss": 0.5, "grads": {"w": torch.randn(3, 3)}, "dynamo_graphs": 1, "saved_producers": None},
            "figures": baselines.figures_doc(fig)}
    baselines.store_step(path, step)
    back = baselines.load_step(path)
    assert back is not None and torch.equal(back["result"]["grads"]["w"], step["result"]["grads"]["w"]), (
        f"expected the stored gradient back bitwise; seen {back}")
    assert baselines.figures_of_doc(back["figures"]) == fig, f"expected the figures {fig}; seen {back['figures']}"
    assert [p.name for p in path.parent.iterdir()] == ["k.pt"], "expected no temporary file left beside the step"
    path.write_bytes(path.read_bytes()[:20])
    assert baselines.load_step(path) is None, "expected a truncated step to read as a miss (the step runs again)"
    assert baselines.load_step(tmp_path / "absent.pt") is None and baselines.load_step(None) is None


@pytest.mark.meta_slow  # two gloo ranks, four compiled steps: ~10 s idle
def test_a_ranks_step_without_ac_comes_from_the_cache_bitwise_and_its_ac_step_runs(tmp_path):
    """A distributed rank's step without AC (training.rank_program) is a cached baseline: on a second run each rank
    takes it from the cache, with the same gradients (bitwise), counts and figures, while the AC step runs again and
    is judged the same: the same gradients, invariant checks and summary golden as against a fresh no-AC step."""
    from harness.rows import scenarios
    from harness.tools import distributed as D

    key = "ddp-whole-checkpoint_fn-full-fp32-1layer"
    with D.RankPool(world_size=2, env={"AC_BASELINE_CACHE": str(tmp_path)}) as pool:
        first, second = (pool.run("harness.tools.training:rank_program", timeout=300, scenario=scenarios.ALL[key],
                                  key=key, with_reference=False) for _ in range(2))
    assert [r["no_ac_cached"] for r in first] == [False, False], "expected the first run to run the no-AC step"
    assert [r["no_ac_cached"] for r in second] == [True, True], "expected the second run to take it from the cache"
    assert len(list((tmp_path / "steps").glob("*.pt"))) == 2, "expected one cached step per rank"
    for r, (a, b) in enumerate(zip(first, second)):
        for label in ("no_ac", "ac"):
            problems = training.mismatches(b[label]["grads"], a[label]["grads"], exact=True)
            assert not problems, f"rank {r} {label}: expected the same gradients on both runs; seen {problems}"
            same = {k: v for k, v in a[label].items() if k != "grads"}
            assert {k: v for k, v in b[label].items() if k != "grads"} == same, (
                f"rank {r} {label}: expected the same counts and figures {same}; seen {b[label]}")
        assert b["verdicts"] == a["verdicts"] and a["verdicts"]["invariant_checks"] > 0, (
            f"rank {r}: expected the AC step judged the same against the cached step; first {a['verdicts']}, "
            f"second {b['verdicts']}")


def test_a_policy_cells_compiled_step_without_ac_comes_from_the_cache_bitwise(tmp_path, monkeypatch):
    """suites/test_ac_policies.py's compiled no-AC reference (training.no_ac_step) is a cached baseline: the second call
    takes it from the cache with the gradients bitwise, the counts and the figures of the compile; eager is never
    cached."""
    monkeypatch.setenv("AC_BASELINE_CACHE", str(tmp_path))
    first = training.no_ac_step("llama", "whole", n_layers=1)
    second = training.no_ac_step("llama", "whole", n_layers=1)
    assert (first["cached"], second["cached"]) == (False, True), (
        f"expected a compile, then the cache; seen cached={first['cached']}, {second['cached']}")
    problems = training.mismatches(second["grads"], first["grads"], exact=True)
    assert not problems and torch.equal(second["loss"], first["loss"]), f"expected the same step bitwise; seen {problems}"
    assert first["figures"] == Figures.of(analysis.of(first["run"])) == second["figures"], (
        f"expected the figures of the compile back; compiled {first['figures']}, cached {second['figures']}")
    assert ((second["saved_activation_bytes"], second["dynamo_graphs"])
            == (first["saved_activation_bytes"], first["dynamo_graphs"])), f"expected the same counts; {second}"
    eager = [training.no_ac_step("llama", "none", n_layers=1)["cached"] for _ in range(2)]
    assert eager == [False, False], f"expected the eager step never cached; seen cached={eager}"

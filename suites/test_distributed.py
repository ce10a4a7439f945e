"""Distributed compositions with AC under torch.compile: FSDP2, DDP, tensor (+ sequence) parallel, 2 gloo ranks.

Each scenario (harness/rows/scenarios.py) is one step of a small Llama-style model (harness/rows/models.py) on 2 CPU ranks
(harness/tools/distributed.py), twice: without AC and with the AC policy (same parallelization, same compile).  The step
without AC is a baseline: a rank that ran it before under the same torch, harness and environment takes it from the
baseline cache (harness/core/baselines.py; property ``no_ac_from_cache``); the AC step always runs.  Checks,
every one on every rank (a failing check does not stop the others; harness/core/suite.py ``Verdicts``):

* ``runs``: the step ran on every rank;
* ``numerics``: every parameter gradient, gathered to a full tensor, matches the single-process eager no-AC reference
  on the full batch within the dtype's tolerance (harness/tools/training.py ``TOLERANCES``), and in fp32 the AC program's
  gradients equal the no-AC program's bitwise;
* ``compiled`` and ``saved_activations``: the AC program was compiled (>= 1 Dynamo graph), a policy that recomputes
  saves fewer activation bytes than no AC, and under sequence parallel the save list's reduce-scatter is saved;
* ``invariant:<name>``: every invariant of harness/core/invariants.py on the rank's compiled AC step, against the same
  rank's no-AC step (recorded scenarios: the pipeline's recording backend);
* then, all passed, each rank's summary golden (``rank<N>.summary``: saved tensors, recomputed ops, FLOPs).

Known failures come from known_failures.toml (area ``distributed``, the scenario key as the case name).
Every cell is one task of the session's rank pool (harness/tools/distributed.py ``RankPool``: 2 gloo ranks started
once per session and xdist worker, one start-up and compile warm-up for all cells; a crashed or hung rank fails its
cell with its stack and the pool restarts for the next).  The default selection (``not slow``) is at most 4 cells, in
one xdist group so that they share one pool; every other cell is ``slow`` (nightly).
"""

from __future__ import annotations

import time

import pytest
import torch

from harness.tools import distributed as D
from harness.core import known_failures
from harness.rows import scenarios
from harness.tools import training as T
from harness.core.golden import Goldens
from harness.core.invariants import INVARIANTS
from harness.core.suite import Verdicts

# One scenario (2 compiles per rank on 2 shared cores), plus the pool's start-up when its task starts the ranks.
FAST_TIMEOUT = 300
SLOW_TIMEOUT = 600


def _numerics(key: str, sc: scenarios.Scenario, ranks: list[dict]) -> int:
    ref = ranks[0]["reference"]["grads"]
    problems = []
    for r, out in enumerate(ranks):
        problems += [f"rank {r} AC vs single-process no-AC reference ({sc.dtype}): {m}"
                     for m in T.mismatches(out["ac"]["grads"], ref, sc.dtype)]
        if sc.dtype == "float32":
            if sc.parallel == "ddp" and out["no_ac"]["dynamo_graphs"] != out["ac"]["dynamo_graphs"]:
                # DDPOptimizer splits the no-AC program at bucket boundaries but never inside a checkpoint region
                # (one HOP node): the gradient accumulation order differs, so only the tolerance applies.
                problems += [f"rank {r} AC vs no-AC (split differently by DDPOptimizer): {m}"
                             for m in T.mismatches(out["ac"]["grads"], out["no_ac"]["grads"], "float32")]
            else:
                problems += [f"rank {r} AC vs the same distributed program without AC: {m}"
                             for m in T.mismatches(out["ac"]["grads"], out["no_ac"]["grads"], exact=True)]
    assert not problems, f"{key}:\n  " + "\n  ".join(problems)
    return len(ranks) * len(ref)


def _compiled(key: str, sc: scenarios.Scenario, ranks: list[dict]) -> int:
    seen = [out["ac"]["dynamo_graphs"] for out in ranks]
    assert all(g >= 1 for g in seen), (f"{key}: expected the AC program to be compiled (>= 1 Dynamo graph) on every "
                                       f"rank; seen {seen} graphs: the checkpointed blocks ran eagerly")
    return len(ranks)


def _saved_activations(key: str, sc: scenarios.Scenario, ranks: list[dict]) -> int:
    problems = []
    for r, out in enumerate(ranks):
        if sc.parallel == "tp_sp" and sc.policy in ("selective_op", "every_other_mm"):
            prod = out["ac"]["saved_producers"]
            if not any("reduce_scatter" in k for k in prod):
                problems.append(f"rank {r}: expected the save list's reduce-scatter output among the saved activations "
                                f"under sequence parallel; seen producers {prod}")
        ac_b, no_b = out["ac"]["saved_activation_bytes"], out["no_ac"]["saved_activation_bytes"]
        if sc.policy in ("full", "selective_op", "every_other_mm"):
            if sc.model == "moe" and (ac_b is None or no_b is None):
                pass  # unbacked token counts: symbolic sizes, no byte figure (the graph-count check applies)
            elif not (ac_b is not None and no_b is not None and ac_b < no_b):
                problems.append(f"rank {r}: expected fewer saved activation bytes with {sc.policy} than without AC; "
                                f"seen AC {ac_b} vs no-AC {no_b}")
    assert not problems, f"{key}:\n  " + "\n  ".join(problems)
    return len(ranks)


def check(key: str, ranks: list[dict] | D.RankFailure, record, goldens: Goldens) -> None:
    """Every check of one scenario (see the module docstring), concluded against known_failures.toml; goldens last."""
    __tracebackhide__ = True
    sc, cell = scenarios.ALL[key], scenarios.cell(key)
    verdicts = Verdicts(cell)
    if isinstance(ranks, D.RankFailure):
        # The first failing rank's own stderr since the task began (its traceback or stack) is the failure; the
        # summary line names every rank's state.
        bad = ranks.outcomes[ranks.first_bad]
        verdicts.failed.append(("runs", f"{key}: expected the distributed step to run on every rank; seen rank "
                                        f"{bad.rank} fail ({bad.state}):\n{bad.stderr[-4000:]}\n"
                                        f"{str(ranks).splitlines()[0]}"))
    else:
        verdicts.passed.append("runs")
        record("no_ac_from_cache", [out["no_ac_cached"] for out in ranks])  # each rank's no-AC step: from the cache?
        for r, out in enumerate(ranks):
            record(f"rank{r}_seconds", {k: round(v, 1) for k, v in out["seconds"].items()})
            record(f"rank{r}_saved_activation_bytes", {"ac": out["ac"]["saved_activation_bytes"],
                                                       "no_ac": out["no_ac"]["saved_activation_bytes"]})
            record(f"rank{r}_dynamo_graphs", {"ac": out["ac"]["dynamo_graphs"], "no_ac": out["no_ac"]["dynamo_graphs"]})
        record("numerics_checks", verdicts.check("numerics", _numerics, key, sc, ranks))
        if sc.recorded:
            verdicts.check("compiled", _compiled, key, sc, ranks)
            verdicts.check("saved_activations", _saved_activations, key, sc, ranks)
            for inv in INVARIANTS:
                failed = [f"rank {r}: {msg}" for r, out in enumerate(ranks)
                          for name, msg in out["verdicts"]["invariant_failures"] if name == inv.__name__]
                not_run = [f"rank {r}: {why}" for r, out in enumerate(ranks)
                           for name, why in out["verdicts"].get("invariant_not_run", ()) if name == inv.__name__]
                stage = f"invariant:{inv.__name__}"
                if failed:
                    verdicts.failed.extend((stage, m) for m in failed)
                elif len(not_run) == len(ranks):  # run on no rank: not passed
                    verdicts.not_run.append((stage, "; ".join(not_run)))
                else:
                    verdicts.passed.append(stage)
            record("invariant_checks", sum(out["verdicts"]["invariant_checks"] for out in ranks))
            verdicts.record_not_run(record)
    try:
        verdicts.conclude(known_failures.load(), None, record)
    except BaseException:
        goldens.keep_existing()
        raise
    crashed = isinstance(ranks, D.RankFailure)
    texts = {} if crashed or not sc.recorded else {f"rank{r}.summary": out["verdicts"]["summary"]
                                                  for r, out in enumerate(ranks) if out["verdicts"]["summary"]}
    record("graphs_compared", goldens.assert_match(texts))


@pytest.fixture(scope="session")
def rank_pool():
    """The session's 2 gloo ranks (one pool per xdist worker), closed when the session ends."""
    with D.RankPool(world_size=2) as pool:
        yield pool


def run_scenario(pool: D.RankPool, key: str, timeout: float, record) -> list[dict] | D.RankFailure:
    """One scenario as one task of the pool: the per-rank results, or the failure (the pool restarts for the next)."""
    sc = scenarios.ALL[key]
    t, starts = time.monotonic(), pool.starts
    try:
        ranks = pool.run("harness.tools.training:rank_program", timeout=timeout, scenario=sc, key=key)
    except D.RankFailure as e:
        ranks = e
    record("task_seconds", round(time.monotonic() - t, 1))
    record("pool_started", pool.starts > starts)  # this task paid the ranks' start-up
    return ranks


@pytest.mark.xdist_group("distributed_fast")
@pytest.mark.parametrize("key", list(scenarios.FAST))
def test_distributed_fast(key, rank_pool, record, snapshot, request):
    check(key, run_scenario(rank_pool, key, FAST_TIMEOUT, record), record,
          Goldens.of_request(snapshot, key, "cpu", request.config))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(scenarios.SLOW))
def test_distributed(key, rank_pool, record, snapshot, request):
    check(key, run_scenario(rank_pool, key, SLOW_TIMEOUT, record), record,
          Goldens.of_request(snapshot, key, "cpu", request.config))

"""The rank pool (harness/tools/distributed.py): ranks started once and reused; a crashed or hung rank fails its task
with its stack, within the timeout, and the pool restarts for the next; no process (rank or grandchild) is left behind,
after a task, a session or a killed controller; the ranks share the controller's compile caches."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.core.paths import ROOT
from harness.tools import distributed as D

pytest_plugins = ("pytester",)

OK = "harness.tools.distributed:selftest_ok"


def _none_alive(pids):
    time.sleep(0.2)  # init reaps orphans asynchronously
    left = [p for p in pids if D.alive(p)]
    assert not left, f"expected no process left; seen still alive: {left}"


def test_ok_returns_each_ranks_result():
    pids = []
    res = D.launch(OK, timeout=60, last_pids=pids, value=10)
    assert [r["rank"] for r in res] == [0, 1], f"expected results of ranks [0, 1]; seen {res}"
    assert [r["sum"] for r in res] == [21.0, 21.0], f"expected all_reduce sum 10+11=21 on both ranks; seen {res}"
    _none_alive(pids)


def test_crashed_rank_fails_with_its_traceback_and_peer_is_killed():
    pids = []
    t = time.monotonic()
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_crash", timeout=60, grace=3, last_pids=pids, bad_rank=1)
    took = time.monotonic() - t
    msg = str(ei.value)
    assert ei.value.first_bad == 1, f"expected first failing rank 1; seen {ei.value.first_bad}\n{msg}"
    assert "rank 1 crashes on purpose" in msg, f"expected the crashed rank's exception in the failure; seen:\n{msg}"
    assert "rank 1 exit 1" in msg, f"expected 'rank 1 exit 1' in the failure; seen:\n{msg}"
    # rank 0 blocks in all_reduce on the dead peer: either gloo notices (exit != 0) or the pool kills it
    assert ei.value.outcomes[0].returncode != 0, f"expected rank 0 not to succeed; seen {ei.value.outcomes[0]}"
    assert took < 45, f"expected the crash to end the task within grace, well before the 60 s timeout; seen {took:.1f} s"
    _none_alive(pids)


def test_hung_rank_fails_with_its_python_stack_within_timeout():
    pids = []
    t = time.monotonic()
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_hang_in_python", timeout=4, grace=1, last_pids=pids, bad_rank=1)
    took = time.monotonic() - t
    msg = str(ei.value)
    assert ei.value.outcomes[1].returncode is None, f"expected rank 1 reported hung; seen {ei.value.outcomes[1]}"
    assert "_spin_forever_here" in msg and "selftest_hang_in_python" in msg, (
        f"expected rank 1's Python stack (faulthandler dump naming _spin_forever_here) in the failure; seen:\n{msg}")
    assert took < 15, f"expected the pool to give up at the 4 s timeout (+ dump and kill); seen {took:.1f} s"
    _none_alive(pids)


def test_hung_ranks_grandchildren_are_killed_too(tmp_path):
    pids = []
    stem = str(tmp_path / "child")
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_hang_with_child", timeout=4, grace=1, last_pids=pids,
                 env={"ACDIST_CHILD_PIDS": stem})
    assert all(o.returncode is None for o in ei.value.outcomes), f"expected both ranks hung; seen {ei.value.outcomes}"
    children = [int(open(f"{stem}.{r}").read()) for r in range(2)]
    _none_alive(pids + children)


def test_a_rank_that_exits_0_without_a_result_is_a_failure():
    """A rank that exits 0 but wrote no result (os._exit(0) inside the program) must not pass silently."""
    pids = []
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_exit0_without_result", timeout=30, last_pids=pids)
    assert ei.value.first_bad == 0, f"expected rank 0 (no result file) named first; seen {ei.value.first_bad}:\n{ei.value}"
    _none_alive(pids)


def test_pool_reuses_its_ranks_and_restarts_after_a_crash_and_a_hang():
    with D.RankPool() as pool:
        first = [r["pid"] for r in pool.run(OK, timeout=60)]
        again = [r["pid"] for r in pool.run(OK, timeout=60, value=2)]
        assert first == again == pool.pids and pool.starts == 1, (
            f"expected the second task on the same ranks {first}, started once; seen {again}, {pool.starts} starts")
        with pytest.raises(D.RankFailure, match="rank 1 crashes on purpose"):
            pool.run("harness.tools.distributed:selftest_crash", timeout=60, grace=2)
        assert pool.pids == [], f"expected the pool closed after the crash; seen ranks {pool.pids}"
        _none_alive(first)
        after_crash = [r["pid"] for r in pool.run(OK, timeout=60)]
        with pytest.raises(D.RankFailure, match="_spin_forever_here"):
            pool.run("harness.tools.distributed:selftest_hang_in_python", timeout=3, grace=1)
        _none_alive(after_crash)
        last = [r["sum"] for r in pool.run(OK, timeout=60, value=5)]
        assert last == [11.0, 11.0] and pool.starts == 3 and pool.tasks == 6, (
            f"expected fresh ranks to answer after the hang (5+6=11), 3 starts for 6 tasks; seen {last}, "
            f"{pool.starts} starts, {pool.tasks} tasks")
        pids = list(pool.started_pids)
    assert len(set(pids)) == 6, f"expected 3 starts x 2 ranks, all distinct pids; seen {pids}"
    _none_alive(pids)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ranks_share_the_controllers_compile_caches(method, tmp_path, monkeypatch):
    for var in D.CACHE_VARS:
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir

    with D.RankPool(start_method=method) as pool:
        seen = pool.run("harness.tools.distributed:selftest_caches", timeout=120)
    want = {"env": {v: str(tmp_path / v.lower()) for v in D.CACHE_VARS}, "inductor": cache_dir(),
            "triton": triton_cache_dir(0)}
    for r, got in enumerate(seen):
        assert {k: got[k] for k in want} == want, f"{method}: expected rank {r} on the controller's caches {want}; seen {got}"
        assert got["ppid"] == os.getpid(), f"{method}: expected rank {r} a child of the controller; seen parent {got['ppid']}"


@pytest.mark.meta_slow  # two inductor compiles without caches (~15 s); the hang it guards appeared in the nightly
def test_a_rank_forked_after_the_controller_compiled_can_compile():
    """A rank forked from a controller whose inductor compile thread pool exists (it compiled before the fork) compiles
    with inductor itself instead of waiting forever on the inherited pool's dead threads."""
    import torch
    from torch._inductor.async_compile import AsyncCompile

    with torch._inductor.config.patch(force_disable_caches=True):
        torch.compile(lambda x: (x.sin() + 1).cos() * 2, backend="inductor")(torch.randn(8))
    assert AsyncCompile.pool.cache_info().currsize == 1, "expected the controller's compile thread pool to exist"
    with D.RankPool(start_method="fork") as pool:
        seen = pool.run("harness.tools.distributed:selftest_inductor_compile", timeout=240)
    assert len(seen) == 2 and seen[0] == seen[1], f"expected both ranks to compile and agree; seen {seen}"


SESSION = '''
import json
import os

import pytest

from harness.tools import distributed as D


@pytest.fixture(scope="session")
def rank_pool():
    with D.RankPool() as pool:
        yield pool


def _log(pool):
    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(json.dumps(pool.started_pids) + "\\n")


def test_ok(rank_pool):
    rank_pool.run("harness.tools.distributed:selftest_ok", timeout=60)
    _log(rank_pool)


def test_crash(rank_pool):
    with pytest.raises(D.RankFailure):
        rank_pool.run("harness.tools.distributed:selftest_crash", timeout=60, grace=1)
    _log(rank_pool)


def test_hang(rank_pool):
    with pytest.raises(D.RankFailure):
        rank_pool.run("harness.tools.distributed:selftest_hang_with_child", timeout=3, grace=1)
    _log(rank_pool)


def test_ok_again_and_left_open(rank_pool):
    rank_pool.run("harness.tools.distributed:selftest_ok", timeout=60)
    _log(rank_pool)
'''


def test_a_session_leaves_no_rank_running_after_a_crash_and_a_hang(pytester, tmp_path, monkeypatch):
    """A pytest session whose pool saw a crash and a hang (with grandchildren) and ends with its ranks still up:
    when the session is over, no rank and no grandchild is alive."""
    pids_file, stem = tmp_path / "pids.jsonl", str(tmp_path / "child")
    monkeypatch.setenv("PIDS_FILE", str(pids_file))
    monkeypatch.setenv("ACDIST_CHILD_PIDS", stem)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=300)
    result.assert_outcomes(passed=4)
    import json

    pids = json.loads(pids_file.read_text().splitlines()[-1])
    children = [int(open(f"{stem}.{r}").read()) for r in range(2)]
    assert len(pids) == 6, f"expected 3 starts of 2 ranks (first, after the crash, after the hang); seen {pids}"
    _none_alive(pids + children)


def test_ranks_die_with_a_killed_controller(tmp_path):
    """The controller is SIGKILLed (no finalizer, no atexit) while its ranks idle: the kernel kills them too."""
    script = textwrap.dedent('''
        import os, signal, sys
        from harness.tools import distributed as D
        pool = D.RankPool()
        pool.run("harness.tools.distributed:selftest_ok", timeout=60)
        print(" ".join(map(str, pool.pids)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, f"expected the controller killed; seen {proc.returncode}:\n{proc.stderr[-2000:]}"
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2, f"expected the 2 rank pids printed; seen {proc.stdout!r}"
    deadline = time.monotonic() + 10
    while any(D.alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    _none_alive(pids)

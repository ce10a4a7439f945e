"""The 2-rank launcher (harness/tools/distributed.py): a crashed or hung rank fails its cell with its stack, within the
timeout, and no process (rank or grandchild) is left behind."""

import os
import time

import pytest

from harness.tools import distributed as D


def _none_alive(pids):
    left = [p for p in pids if D.alive(p)]
    assert not left, f"expected no process left after launch; seen still alive: {left}"


def test_ok_returns_each_ranks_result():
    pids = []
    res = D.launch("harness.tools.distributed:selftest_ok", timeout=60, last_pids=pids, value=10)
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
    # rank 0 blocks in all_reduce on the dead peer: either gloo notices (exit != 0) or the launcher kills it
    assert ei.value.outcomes[0].returncode != 0, f"expected rank 0 not to succeed; seen {ei.value.outcomes[0]}"
    assert took < 45, f"expected the crash to end the cell within grace, well before the 60 s timeout; seen {took:.1f} s"
    _none_alive(pids)


def test_hung_rank_fails_with_its_python_stack_within_timeout():
    pids = []
    t = time.monotonic()
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_hang_in_python", timeout=12, grace=2, last_pids=pids, bad_rank=1)
    took = time.monotonic() - t
    msg = str(ei.value)
    assert ei.value.outcomes[1].returncode is None, f"expected rank 1 reported hung; seen {ei.value.outcomes[1]}"
    assert "_spin_forever_here" in msg and "selftest_hang_in_python" in msg, (
        f"expected rank 1's Python stack (faulthandler dump naming _spin_forever_here) in the failure; seen:\n{msg}")
    assert took < 25, f"expected the launcher to give up at the 12 s timeout (+ dump and kill); seen {took:.1f} s"
    _none_alive(pids)


def test_hung_ranks_grandchildren_are_killed_too(tmp_path):
    pids = []
    stem = str(tmp_path / "child")
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_hang_with_child", timeout=10, grace=1, last_pids=pids,
                 env={"ACDIST_CHILD_PIDS": stem})
    assert all(o.returncode is None for o in ei.value.outcomes), f"expected both ranks hung; seen {ei.value.outcomes}"
    children = [int(open(f"{stem}.{r}").read()) for r in range(2)]
    time.sleep(0.2)  # init reaps orphans asynchronously
    _none_alive(pids + children)


def test_a_rank_that_exits_0_without_a_result_is_a_failure():
    """A rank that exits 0 but wrote no result (os._exit(0) inside the program) must not pass silently."""
    pids = []
    with pytest.raises(D.RankFailure) as ei:
        D.launch("harness.tools.distributed:selftest_exit0_without_result", timeout=30, last_pids=pids)
    assert ei.value.first_bad == 0, f"expected rank 0 (no result file) named first; seen {ei.value.first_bad}:\n{ei.value}"
    _none_alive(pids)

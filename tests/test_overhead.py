"""The suite's processes leave out the compile work that only measures or logs (harness/tools/overhead.py): Dynamo's
guard-latency profile, and pytest's capture of torch's structured trace; ``AC_COMPILE_OVERHEAD=torch`` keeps both."""

from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo.guards as guards
from _pytest.logging import LogCaptureHandler

from harness.tools import distributed as D
from harness.tools import overhead

KEPT = pytest.mark.skipif(overhead.kept(), reason="AC_COMPILE_OVERHEAD=torch: this run keeps torch's behaviour")
REAL_PROFILE = torch._C._dynamo.guards.profile_guard_manager


def _pytest_handlers(logger: logging.Logger) -> list[str]:
    return [type(h).__name__ for h in logger.handlers if overhead.from_pytest(h)]


@pytest.fixture
def trace_handlers_at_setup():
    return _pytest_handlers(logging.getLogger("torch.__trace"))


@KEPT
def test_no_pytest_handler_on_torchs_trace_log_in_setup_or_call(trace_handlers_at_setup):
    """pytest attaches its capture handlers to every non-propagating logger for each phase (the root logger has them
    now: the precondition); the plugin removes them from ``torch.__trace`` at the start of each phase."""
    root = _pytest_handlers(logging.getLogger())
    assert "LogCaptureHandler" in root, f"expected pytest's log capture on the root logger in this phase; seen {root}"
    call = _pytest_handlers(logging.getLogger("torch.__trace"))
    assert trace_handlers_at_setup == [] and call == [], (
        f"expected no pytest handler on torch's structured-trace logger; seen {trace_handlers_at_setup} at setup, "
        f"{call} in the call")


def test_quiet_trace_log_removes_only_pytests_handlers(monkeypatch):
    monkeypatch.delenv("AC_COMPILE_OVERHEAD", raising=False)
    trace_log = logging.getLogger("torch.__trace")
    before = list(trace_log.handlers)
    captured, users = LogCaptureHandler(), logging.NullHandler()
    trace_log.addHandler(captured)
    trace_log.addHandler(users)
    try:
        overhead.quiet_trace_log()
        after = list(trace_log.handlers)
    finally:
        trace_log.removeHandler(captured)
        trace_log.removeHandler(users)
    kept = [h for h in before if not overhead.from_pytest(h)] + [users]
    assert after == kept, f"expected torch's and the user's handlers kept, pytest's removed: {kept}; seen {after}"


@pytest.mark.parametrize("setting", [None, "torch"])
def test_the_guard_latency_profile_is_skipped_unless_torchs_behaviour_is_asked_for(setting, monkeypatch):
    if setting:
        monkeypatch.setenv("AC_COMPILE_OVERHEAD", setting)
    else:
        monkeypatch.delenv("AC_COMPILE_OVERHEAD", raising=False)
    monkeypatch.setattr(guards, "profile_guard_manager", REAL_PROFILE)  # restored to this process's choice after
    skipped = overhead.skip_guard_latency_profile()
    assert skipped == (setting is None) and (guards.profile_guard_manager is REAL_PROFILE) == (setting == "torch"), (
        f"AC_COMPILE_OVERHEAD={setting}: expected the profile {'kept' if setting else 'skipped'}; seen skipped="
        f"{skipped}, {guards.profile_guard_manager}")


def test_the_patch_never_imports_dynamo():
    """Importing Dynamo costs ~1.6 s: an xdist controller, or a rank whose task does not compile, never pays it."""
    import subprocess
    import sys

    code = ("import sys, harness.tools.overhead as o; "
            "print(o.skip_guard_latency_profile(), 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], (
        f"expected no patch and no Dynamo imported in a process that had not imported it; seen {out.stdout!r} "
        f"{out.stderr[-1000:]}")


@KEPT
def test_guards_still_decide_without_the_latency_profile():
    """Only the timing is left out: a compiled frame is reused while its guards hold and recompiled when they fail."""
    from torch._dynamo.testing import CompileCounter

    assert guards.profile_guard_manager is overhead._no_guard_latency_profile, "expected this process to skip it"
    counter = CompileCounter()
    fn = torch.compile(lambda x: x.sin() + 1, backend=counter, dynamic=False)
    fn(torch.ones(3))
    fn(torch.ones(3))
    fn(torch.ones(4))
    assert counter.frame_count == 2, (f"expected 2 compiles (a hit, then a shape guard failing); "
                                      f"seen {counter.frame_count}")


@KEPT
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ranks_hold_no_pytest_log_handler_and_skip_the_profile(method):
    """A rank forked inside a test phase would inherit pytest's handlers (logging its warnings into a buffer nobody
    reads instead of its stderr); a spawned one never had them.  Both skip the guard-latency profile once Dynamo is
    imported: a forked rank inherits this process's patch, a spawned one patches before its next task."""
    assert _pytest_handlers(logging.getLogger()), "expected pytest's handlers on this process's root logger to inherit"
    with D.RankPool(start_method=method) as pool:
        pool.run("harness.tools.distributed:selftest_overhead", timeout=120)  # imports Dynamo in a spawned rank
        seen = pool.run("harness.tools.distributed:selftest_overhead", timeout=120)
    for r, got in enumerate(seen):
        handlers = got["pytest_handlers"]
        assert handlers == [] and got["guard_profile_skipped"], (
            f"{method}: expected rank {r} with no pytest log handler and the guard-latency profile skipped; seen "
            f"{len(handlers)} handlers ({handlers[:4]}...), skipped={got['guard_profile_skipped']}")

"""Compile work that only measures or logs, left out of the suite's processes (``AC_COMPILE_OVERHEAD=torch`` keeps it).

Those processes are the pytest processes of the project's plugin (harness/tools/plugin.py) and the distributed ranks
(harness/tools/distributed.py).  Neither item changes a graph, a saved tensor or a step's bits:

* **The guard-latency profile.**  Once Dynamo has built a frame's guards and checked them against the frame (a failed
  check is an error), ``CheckFunctionManager.__init__`` (torch/_dynamo/guards.py, torch 2.11 to 2.14) evicts the CPU
  caches and times one more evaluation (``profile_guard_manager``) for the ``guard_latency_us`` compile metric and a
  debug log line.  That costs ~20 ms a compile on this machine, about a fifth of a small aot_eager compile; no cell
  reads the metric.  :func:`skip_guard_latency_profile` makes it return 0.0; the check before it still runs.
* **The structured trace.**  ``torch._logging.trace_structured`` builds each payload (graph listings, guard listings,
  compile events as JSON) only while the ``torch.__trace`` logger has a handler; torch's own handler removes itself on
  the first event unless ``TORCH_TRACE`` asks for a trace.  pytest (9.1 here) attaches its log-capture handlers to
  every logger that does not propagate, this one included, for each test phase: every compile then built every
  payload, and pytest kept each as an empty captured log line.  :func:`quiet_trace_log` removes pytest's handlers
  from that logger (the plugin calls it at the start of each phase); torch's own handler, and any a user added, stay.
"""

from __future__ import annotations

import logging
import os
import sys


def kept() -> bool:
    """``AC_COMPILE_OVERHEAD=torch``: torch's behaviour, nothing left out."""
    return os.environ.get("AC_COMPILE_OVERHEAD") == "torch"


def _no_guard_latency_profile(root, f_locals, n_iters):
    """In place of ``torch._C._dynamo.guards.profile_guard_manager(root, f_locals, n_iters)``: no latency measured."""
    return 0.0


def skip_guard_latency_profile() -> bool:
    """Dynamo stops timing each frame's guards after compiling it (see the module docstring).  Returns whether it did:
    not under ``AC_COMPILE_OVERHEAD=torch``, nor on a torch without ``profile_guard_manager`` in its guards module,
    nor before this process imported Dynamo.  It never imports Dynamo itself (~1.6 s): callers call it again (the
    plugin before each test, a rank before each task), and a process whose first test or task imports Dynamo times
    only that test's or task's guards."""
    guards = sys.modules.get("torch._dynamo.guards")
    if kept() or guards is None or not hasattr(guards, "profile_guard_manager"):
        return False
    guards.profile_guard_manager = _no_guard_latency_profile
    return True


def from_pytest(handler: logging.Handler) -> bool:
    """A handler of pytest's logging plugin (log capture, log file, live logging)."""
    return type(handler).__module__.startswith("_pytest")


def quiet_trace_log() -> None:
    """Remove pytest's handlers from torch's structured-trace logger (see the module docstring)."""
    if kept():
        return
    trace_log = logging.getLogger("torch.__trace")
    for handler in [h for h in trace_log.handlers if from_pytest(h)]:
        trace_log.removeHandler(handler)


def pytest_log_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    """pytest's handlers on the root logger and on every other logger of this process, with their loggers."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [(lg, h) for lg in loggers for h in lg.handlers if from_pytest(h)]


def drop_pytest_log_handlers() -> None:
    """In a process forked from a pytest process (a distributed rank): remove the log handlers pytest had attached to
    the root logger and to every logger that does not propagate.  A rank then logs as a spawned one does (warnings to
    its stderr, which a failed cell shows), instead of into a capture buffer nobody reads, and builds no
    structured-trace payload."""
    for logger, handler in pytest_log_handlers():
        logger.removeHandler(handler)

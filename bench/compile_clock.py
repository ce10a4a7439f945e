"""pytest plugin for ``make bench``'s side-by-side runs (``-p compile_clock``, bench/ on PYTHONPATH): how many frames
Dynamo compiled in this process and the wall seconds spent inside those compiles (Dynamo's tracing, AOTAutograd, the
partitioner and the backend's forward compile: everything under ``torch._dynamo.convert_frame._compile``, outermost
calls only), written at the end of the session to ``$BENCH_COMPILE_CLOCK/<pid>.json``.  Summed over a run's processes
(the xdist workers) it is the compile work a run cannot avoid while it keeps every compile: divided by the workers, a
floor under its wall time.  Lazy backward compiles and the distributed ranks' processes are not counted, so the floor
is a lower bound.  Measurement only: nothing a test checks depends on it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

_clock = {"compiles": 0, "seconds": 0.0}


def pytest_configure(config):
    import torch._dynamo.convert_frame as convert_frame

    real = convert_frame._compile
    depth = [0]

    def timed(*args, **kwargs):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                _clock["compiles"] += 1
                _clock["seconds"] += time.perf_counter() - start

    convert_frame._compile = timed


def pytest_sessionfinish(session):
    out = os.environ.get("BENCH_COMPILE_CLOCK")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{os.getpid()}.json").write_text(json.dumps(_clock))


def read(out: Path) -> dict:
    """The clocks of one run's processes, summed."""
    clocks = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return {"compiles": sum(c["compiles"] for c in clocks), "seconds": round(sum(c["seconds"] for c in clocks), 3),
            "processes": len(clocks)}

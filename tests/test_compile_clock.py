"""bench/compile_clock.py, the compile clock of make bench's side-by-side runs: it counts each Dynamo frame compile
once (the outermost call), times it, and the per-process files it writes sum to the run's figure."""

import importlib.util
import json

import torch
import torch._dynamo.convert_frame as convert_frame

from harness.core import paths


def _clock_module():
    spec = importlib.util.spec_from_file_location("compile_clock", paths.ROOT / "bench" / "compile_clock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_and_times_each_frame_compile_and_sums_the_processes(tmp_path, monkeypatch):
    clock = _clock_module()
    real = convert_frame._compile
    try:
        clock.pytest_configure(None)
        torch._dynamo.reset()

        def one_graph(x):
            return torch.sin(x) + 1

        def two_frames(x):
            y = torch.cos(x)
            torch._dynamo.graph_break()
            return y * 2

        torch.compile(one_graph, backend="eager")(torch.ones(3))
        assert clock._clock["compiles"] == 1, f"expected one frame compiled; seen {clock._clock}"
        torch.compile(two_frames, backend="eager")(torch.ones(3))
        # the break resumes in a second frame (torch_dynamo_resume_in_two_frames_at_...), compiled on its own
        assert clock._clock["compiles"] == 3, f"expected two more frames compiled; seen {clock._clock}"
        assert clock._clock["seconds"] > 0, f"expected the compiles timed; seen {clock._clock}"
    finally:
        convert_frame._compile = real
        torch._dynamo.reset()
    monkeypatch.setenv("BENCH_COMPILE_CLOCK", str(tmp_path))
    clock.pytest_sessionfinish(None)
    (tmp_path / "other-worker.json").write_text(json.dumps({"compiles": 4, "seconds": 1.5}))
    summed = clock.read(tmp_path)
    assert summed["compiles"] == 7 and summed["processes"] == 2, f"expected 3 + 4 compiles over 2 processes; seen {summed}"
    assert summed["seconds"] >= 1.5, f"expected at least the other process's 1.5 s; seen {summed}"

"""PyTorch's own ``test/dynamo/test_activation_checkpointing.py``, made to run on CPU: the reference ``make bench``
times ``make test`` against (issue 30).

The upstream file is not part of this repository (code retrieved from public repositories for reference stays out
of its commits).  ``make bench`` reads it from ``BENCH_UPSTREAM_FILE``, by default
``bench/upstream/test_activation_checkpointing.py`` (git-ignored): pytorch/pytorch at commit
0069a4184a83906c61f844b32e90e3a87705344a, the version ../shared/CATALOGUE.md describes (76 test methods, 96 generated
cases on one device), 131,797 characters, sha256 below.  It carries no license header of its own (PyTorch's test
files have none); it is PyTorch's code under PyTorch's BSD-3-Clause license (the LICENSE file of pytorch/pytorch).
Get it with the ``search`` tool's ``read_file`` (repo pytorch/pytorch, path test/dynamo/test_activation_checkpointing.py,
that commit), or from any checkout of pytorch/pytorch at that commit.

:func:`prepare` writes a copy with the changes below and nothing else; each must match exactly as often as stated, or
the benchmark stops (another version of the file would need its own review).  They lift the CPU exclusion and the
GPU gates, as the measurement in issue 30 did, so that every generated case runs on a CPU-only machine -- the ones
that cannot (CUDA-only ops, ``.cuda()``, ``torch.cuda.memory_stats``, a user Triton kernel, a feature newer than
torch 2.13) fail, and are timed like the rest:

1. ``requires_gpu_and_triton`` (35 uses) becomes a decorator that does nothing, instead of the import from
   ``torch.testing._internal.triton_utils`` (a skip without a GPU and triton);
2. ``requires_cuda_and_triton`` (1 use, never imported upstream: a NameError when the module loads) is defined the
   same way;
3. the five ``unittest.skipIf(not torch.cuda.is_available(), ...)`` and the one
   ``unittest.skipIf(not HAS_GPU_AND_TRITON, ...)`` decorators are removed;
4. ``instantiate_device_type_tests(ActivationCheckpointingViaTagsTests, globals(), except_for="cpu")`` instantiates
   the class for CPU (``only_for="cpu"``): upstream never runs it on a CPU-only machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "bench" / "upstream" / "test_activation_checkpointing.py"
COMMIT = "0069a4184a83906c61f844b32e90e3a87705344a"
SHA256 = "9ac6cba5b3392dcaded6dfd1ff0bda0fe16f8e405b1fe2ffed4aeb5ff75e712d"
NOOP = "def {name}(fn):  # bench/upstream.py: GPU gate lifted\n    return fn\n"

# (text, replacement, how often it must occur, which change of the docstring)
EDITS = [
    ("from torch.testing._internal.triton_utils import requires_gpu_and_triton\n",
     NOOP.format(name="requires_gpu_and_triton") + "\n\n" + NOOP.format(name="requires_cuda_and_triton"), 1, "1, 2"),
    ('    @unittest.skipIf(not torch.cuda.is_available(), "requires CUDA")\n', "", 3, "3"),
    ('    @unittest.skipIf(not torch.cuda.is_available(), "CUDA not available")\n', "", 2, "3"),
    ('    @unittest.skipIf(not HAS_GPU_AND_TRITON, "GPU not available")\n', "", 1, "3"),
    ('ActivationCheckpointingViaTagsTests, globals(), except_for="cpu"', 'ActivationCheckpointingViaTagsTests, globals(), only_for="cpu"',
     1, "4"),
]


def source() -> Path:
    return Path(os.environ.get("BENCH_UPSTREAM_FILE", DEFAULT))


def prepare(dest: Path, src: Path | None = None) -> Path:
    """Write the CPU copy of the upstream file into directory ``dest``; return its path."""
    src = src or source()
    if not src.exists():
        raise FileNotFoundError(f"bench: the upstream file is missing: {src} (set BENCH_UPSTREAM_FILE); get "
                                f"pytorch/pytorch test/dynamo/test_activation_checkpointing.py at {COMMIT} "
                                f"(bench/upstream.py says how)")
    text = src.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != SHA256:
        raise ValueError(f"bench: {src} is not the reviewed upstream version (sha256 {digest}, expected {SHA256} "
                         f"= pytorch/pytorch {COMMIT}); review the changes of bench/upstream.py for it first")
    for old, new, count, change in EDITS:
        seen = text.count(old)
        if seen != count:
            raise ValueError(f"bench: change {change} of bench/upstream.py expects {count} occurrence(s) of {old!r} "
                             f"in {src}; seen {seen}")
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "test_activation_checkpointing.py"
    out.write_text(text)
    return out


if __name__ == "__main__":
    import sys
    import tempfile

    print(prepare(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="upstream-"))))

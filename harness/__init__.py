"""Conformance harness for activation checkpointing under torch.compile.

The folders are the layers, bottom first (``LAYERS``); a module imports only from its own folder or the ones below
(tests/test_layers.py).  docs/layout.md lists every module (``make docs``).
"""

LAYERS = ("core", "rows", "tools", "user")

MIN_TORCH = (2, 11)


def _check_torch() -> None:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the environment is broken, say how to fix it
        raise ImportError("the harness needs torch: run `make install` (pins torch==2.13.0)") from e
    release = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if release < MIN_TORCH:
        raise ImportError(
            f"torch {torch.__version__} is older than the harness's minimum "
            f"{'.'.join(map(str, MIN_TORCH))}; install a newer torch (make install pins 2.13.0)"
        )


_check_torch()

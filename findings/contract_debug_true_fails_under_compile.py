"""checkpoint(..., debug=True) (or set_checkpoint_debug_enabled(True)) cannot be compiled.

Found on torch 2.13.0 (CPU) by the checkpoint contract (clauses ckpt.debug and ckpt.debug.global,
docs/contract.md), with aot_eager under both partitioners and with inductor.

Eager accepts debug=True without a context_fn.  Under torch.compile the traced checkpoint supplies its own
context_fn, and _checkpoint_without_reentrant_generator then raises
"ValueError: debug=True is incompatible with non-default context_fn" (as BackendCompilerFailed), although the
user passed no context_fn; the same happens for every checkpoint compiled inside
set_checkpoint_debug_enabled(True), and for use_reentrant=True with debug=True (where eager's error is the
documented "Passing `context_fn` or `debug` is only supported when use_reentrant=False.").

Upstream: no issue found for the compile symptom; the related change "Allow debug mode with context_fn in
checkpoint()" is https://github.com/pytorch/pytorch/pull/185285 (and https://github.com/pytorch/pytorch/pull/175338),
both closed.

Run: python findings/contract_debug_true_fails_under_compile.py  -> exit 1 while compiling fails, 0 once the
compiled program runs as eager does.
"""
import sys

import torch
from torch.utils.checkpoint import checkpoint, set_checkpoint_debug_enabled


def main() -> int:
    print(f"torch {torch.__version__}")
    failures = []
    for label, debug, ctx in (("debug=True", True, None), ("set_checkpoint_debug_enabled(True)", False, True)):
        x = torch.randn(4, requires_grad=True)
        fn = lambda x, debug=debug: checkpoint(torch.sin, x, use_reentrant=False, debug=debug)  # noqa: E731
        with set_checkpoint_debug_enabled(ctx):
            fn(x).sum().backward()  # eager: fine
            torch._dynamo.reset()
            try:
                torch.compile(fn, backend="aot_eager", fullgraph=True)(x).sum().backward()
                print(f"{label}: compiled ok")
            except Exception as e:  # noqa: BLE001
                print(f"{label}: compiled {type(e).__name__}: {' '.join(str(e).split())[:160]}")
                failures.append(label)
    if failures:
        print("DEFECT REPRODUCES: eager runs these checkpoints, torch.compile fails on them")
        return 1
    print("fixed: debug checkpoints compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())

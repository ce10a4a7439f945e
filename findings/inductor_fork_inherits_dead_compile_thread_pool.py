"""A process forked after inductor compiled waits forever on its first inductor compile (no checkpointing involved).

torch/_inductor/async_compile.py registers ``after_fork`` with ``os.register_at_fork(after_in_child=...)`` to "Reset
pools to initial state" in a forked child, but it clears only ``AsyncCompile.process_pool``.  ``AsyncCompile.pool()``
(a ``functools.lru_cache``'d ``ThreadPoolExecutor`` of ``compile_threads`` workers) survives the fork as an object
whose worker threads do not: an executor that already started its ``max_workers`` threads starts no new ones, so
work submitted in the child never runs and the compile waits forever.  Found by the harness's forked distributed
ranks (harness/tools/distributed.py resets the pool itself, ``_reset_inherited_compile_threads``).  Needs
``compile_threads`` > 1 (the default on a machine with more than one CPU).  Caches are off so both compiles compile.
Run: python findings/inductor_fork_inherits_dead_compile_thread_pool.py
Exits 1 while the child hangs (killed after 120 s), 0 when it compiles.
"""
import os
import signal
import sys

import torch
import torch._inductor.config as inductor_config
from torch._inductor.async_compile import AsyncCompile, get_compile_threads


def main() -> int:
    inductor_config.force_disable_caches = True
    if get_compile_threads() <= 1:
        print("compile_threads is 1 here: inductor uses no thread pool; nothing to show")
        return 0
    torch.compile(lambda x: (x.sin() + 1).cos() * 2, backend="inductor")(torch.randn(8))
    if AsyncCompile.pool.cache_info().currsize != 1:
        print("the parent's compile did not create AsyncCompile.pool(); nothing to show")
        return 0
    pid = os.fork()
    if pid == 0:
        signal.alarm(120)
        fn = torch.compile(lambda x: (x.tan() - 3).exp() / 5 + x.sigmoid(), backend="inductor")
        fn(torch.randn(16))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
        print("BUG: the forked child's inductor compile hung (killed after 120 s): it waits on the inherited "
              "AsyncCompile.pool() whose threads did not survive the fork (after_fork resets process_pool only)")
        return 1
    print(f"child compiled and exited with status {status}")
    return 0 if status == 0 else 2


if __name__ == "__main__":
    sys.exit(main())

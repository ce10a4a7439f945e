"""A pool of 2 gloo ranks for distributed cells, started once and reused; and a one-shot launcher on top of it.

``RankPool(world_size=2)`` starts ``world_size`` processes of ``python -m harness.tools.distributed --serve ...``
(each a session leader), which join one gloo process group on 127.0.0.1 (a free port found by binding port 0) and
then wait for tasks, as PyTorch's ``MultiProcContinuousTest`` does (torch/testing/_internal/common_distributed.py).
``pool.run("pkg.module:function", timeout=60, **kwargs)`` sends one task to every rank: each calls
``function(rank, world_size, **kwargs)`` and writes its return value (pickled); ``run`` returns the list of
per-rank results or raises :class:`RankFailure`.  The suites hold one pool per test session (and per xdist worker:
the :func:`rank_pool` fixture); :func:`launch` is one pool, one task, closed.

The ranks inherit the controller's environment, so the compile caches the plugin points them at
(``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``, ``AC_BASELINE_CACHE``) are the same directories.

Failure handling, so that a distributed cell can fail but never hang the run or leave processes behind:

* **crashed rank** (exception, ``os._exit``, signal): its exit status and stderr since the task began (the
  traceback) go into the failure; the other ranks get ``grace`` seconds to finish (they usually block in a
  collective waiting for the dead rank), then they are dumped and killed like hung ranks;
* **hung rank** (no result at ``timeout``): the pool sends ``SIGUSR1``, on which the rank's ``faulthandler``
  writes every thread's Python stack to stderr; then the rank's whole process group (its session: compile workers,
  subprocesses) is killed with ``SIGKILL`` and the stack is in the failure.  Each task also arms
  ``faulthandler.dump_traceback_later(timeout + grace)`` with ``exit=True`` in the rank, should the controller be
  stopped;
* **after a failure** the pool is closed (its process group cannot be trusted: a peer may be half-way through a
  collective); the next ``run`` starts fresh ranks;
* **teardown**: :meth:`RankPool.close` (the fixture's finalizer, ``atexit``, the end of :func:`launch`) kills every
  rank's process group and reaps it; a rank whose controller dies gets ``SIGKILL`` from the kernel
  (``PR_SET_PDEATHSIG``) and an idle rank also sees its task pipe close.  :func:`alive` lets a test check that no
  pid is left.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import faulthandler
import importlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from harness.core.paths import ROOT


CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "AC_BASELINE_CACHE")  # what the ranks share


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class RankOutcome:
    rank: int
    pid: int
    returncode: int | None  # None: hung (killed at the timeout); 0 also for a rank that returned its result
    stderr: str
    seconds: float

    @property
    def state(self) -> str:
        if self.returncode is None:
            return "hung (killed at the timeout; stack dumped)"
        if self.returncode == 0:
            return "ok"
        if self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        return f"exit {self.returncode}"


class RankFailure(AssertionError):
    """One or more ranks crashed or hung; the message names each rank, its state and its stderr tail (stack)."""

    def __init__(self, target: str, outcomes: list[RankOutcome], first_bad: int, timeout: float, tail: int = 6000):
        self.target, self.outcomes, self.first_bad = target, outcomes, first_bad
        lines = [f"distributed target {target}: expected every rank to return within {timeout:.0f} s; "
                 f"seen: " + ", ".join(f"rank {o.rank} {o.state}" for o in outcomes)
                 + f"; first failing rank: {first_bad}"]
        for o in sorted(outcomes, key=lambda o: (o.rank != first_bad, o.rank)):
            if o.returncode == 0:
                continue
            text = o.stderr if len(o.stderr) <= tail else "[...]\n" + o.stderr[-tail:]
            lines.append(f"---- rank {o.rank} (pid {o.pid}, {o.state}, {o.seconds:.1f} s) stderr ----\n{text.rstrip()}")
        super().__init__("\n".join(lines))


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    # Each rank is a session leader (start_new_session), so its pgid is its pid: this reaches the rank and
    # anything it started (inductor compile workers), and nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()


class RankPool:
    """``world_size`` gloo ranks started once (lazily, by the first :meth:`run`) and reused for every task.

    ``starts`` counts how often the ranks were started (1 for a session without failures), ``tasks`` the tasks run;
    ``started_pids`` lists every rank pid this pool ever started (for tests that nothing is left running)."""

    def __init__(self, world_size: int = 2, env: dict | None = None, pg_timeout: float = 1800.0,
                 start_method: str = "auto"):
        if start_method not in ("auto", "fork", "spawn"):
            raise ValueError(f"start_method must be auto, fork or spawn; seen {start_method!r}")
        self.world_size, self.env, self.pg_timeout = world_size, dict(env or {}), pg_timeout
        self.start_method = start_method
        self.starts = self.tasks = 0
        self.started_pids: list[int] = []
        self._procs: list[subprocess.Popen] = []
        self._errs: list = []
        self._work: Path | None = None
        _POOLS.add(self)

    @property
    def pids(self) -> list[int]:
        """The pids of the running ranks (empty when the pool is closed)."""
        return [p.pid for p in self._procs]

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- controller side ------------------------------------------------------------------------------------------

    def _start(self, target: str, deadline: float, timeout: float, grace: float) -> None:
        port = free_port()
        self._work = work = Path(tempfile.mkdtemp(prefix="acdist-"))
        env = dict(os.environ)
        env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(self.world_size),
                    "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONFAULTHANDLER": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
        env.pop("PYTEST_XDIST_WORKER", None)
        env.update(self.env)
        self.starts += 1
        fork = self.start_method == "fork" or (self.start_method == "auto" and _can_fork())
        for rank in range(self.world_size):
            err = open(work / f"rank{rank}.err", "w+")
            self._errs.append(err)
            renv = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
            if fork:
                self._procs.append(self._fork(rank, work, renv, err))
            else:
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-m", "harness.tools.distributed", "--serve", str(rank), str(self.world_size),
                     str(work), str(os.getpid()), str(self.pg_timeout)],
                    cwd=ROOT, env=renv, stdin=subprocess.PIPE, stdout=err, stderr=subprocess.STDOUT,
                    start_new_session=True, text=True))
        self.started_pids += self.pids
        # Ready: the process group is initialised on every rank.  Start-up counts against the first task's timeout.
        self._wait(lambda r: (work / f"rank{r}.ready").exists(), target, deadline, timeout, grace, [0] * self.world_size)

    def _fork(self, rank: int, work: Path, env: dict, err) -> _Forked:
        """A rank forked from this (warm) process: torch, the harness and the compiler's lazy imports and first-use
        set-up are inherited instead of paid again in every rank."""
        parent = os.getpid()
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the rank: never returns into the caller (os._exit on every path)
            code = 1
            try:
                os.setsid()
                os.close(write)
                for p in self._procs:  # the other ranks' task pipes: only the controller may hold them
                    os.close(p.stdin.fileno())
                os.dup2(read, 0)
                os.dup2(err.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdin = open(0, closefd=False)
                sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.environ.clear()
                os.environ.update(env)
                _serve(rank, self.world_size, work, parent, self.pg_timeout, forked=True)
            except BaseException:
                with contextlib.suppress(BaseException):
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(read)
        return _Forked(pid, open(write, "w"))

    def run(self, target: str, timeout: float = 60.0, grace: float = 5.0, **kwargs):
        """Run ``target`` ("module:function") on every rank; return the per-rank results, or raise
        :class:`RankFailure` (the pool is then closed; the next run starts fresh ranks).

        ``timeout``: seconds for the task (plus the ranks' start-up when this run starts them); ``grace``: seconds the
        other ranks get after one failed."""
        start = time.monotonic()
        deadline = start + timeout
        if self._procs and any(p.poll() is not None for p in self._procs):
            self.close()  # a rank died between tasks (no cell of its own to fail): start afresh
        if not self._procs:
            self._start(target, deadline, timeout, grace)
        self.tasks += 1
        work, n = self._work, self.tasks
        (work / f"task{n}.pkl").write_bytes(pickle.dumps((target, kwargs, timeout + grace)))
        offsets = [self._size(r) for r in range(self.world_size)]
        for p in self._procs:
            with contextlib.suppress(BrokenPipeError, OSError):
                p.stdin.write(f"{n}\n")
                p.stdin.flush()
        results = self._wait(lambda r: (work / f"task{n}.rank{r}.pkl").exists(), target, deadline, timeout, grace,
                             offsets, n)
        out = [pickle.loads((work / f"task{n}.rank{r}.pkl").read_bytes()) for r in results]
        for f in work.glob(f"task{n}.*"):
            f.unlink(missing_ok=True)
        return out

    def _wait(self, done, target: str, deadline: float, timeout: float, grace: float, offsets: list[int],
              task: int | None = None) -> list[int]:
        """Poll until ``done(rank)`` holds for every rank; on a crash, a hang or the deadline: dump, close, raise."""
        start = time.monotonic()
        finished: dict[int, float] = {}
        ended: dict[int, float] = {}
        first_bad = None
        while True:
            now = time.monotonic()
            for r, p in enumerate(self._procs):
                if r not in finished and done(r):
                    finished[r] = now - start
                elif r not in finished and r not in ended and p.poll() is not None:
                    ended[r] = now - start
                    deadline = min(deadline, now + grace)  # an exited rank never answers: the others get grace
                    if p.returncode != 0 and first_bad is None:
                        first_bad = r
            if len(finished) == self.world_size:
                return list(range(self.world_size))
            if len(finished) + len(ended) == self.world_size or now >= deadline:
                break
            time.sleep(0.02)
        hung = [r for r in range(self.world_size) if r not in finished and r not in ended]
        for r in hung:  # dump every thread's stack, then (close) kill its whole session
            with contextlib.suppress(ProcessLookupError):
                self._procs[r].send_signal(signal.SIGUSR1)
        t = time.monotonic()
        while hung and time.monotonic() - t < 2.0 and not all(self._dumped(r, offsets[r]) for r in hung):
            time.sleep(0.05)
        # Ranks that raised stamped when (wall clock, comparable across processes): the earliest is the first to
        # fail, whatever order one poll saw the exits in (a peer blocked in a collective on it fails right after).
        stamps = {r: float(s.read_text()) for r in range(self.world_size)
                  if (s := self._work / f"task{task}.rank{r}.failed_at").exists()}
        if stamps:
            first_bad = min(stamps, key=stamps.get)
        missing = [r for r in range(self.world_size) if r not in finished]
        if first_bad is None:
            first_bad = min(hung) if hung else missing[0]
        texts = [self._text(r, offsets[r]) for r in range(self.world_size)]
        procs = list(self._procs)
        self.close()
        outcomes = [RankOutcome(r, p.pid, 0 if r in finished else None if r in hung else p.returncode, texts[r],
                                finished.get(r, ended.get(r, time.monotonic() - start))) for r, p in enumerate(procs)]
        raise RankFailure(target, outcomes, first_bad, timeout)

    def _size(self, rank: int) -> int:
        try:
            return (self._work / f"rank{rank}.err").stat().st_size
        except OSError:
            return 0

    def _text(self, rank: int, offset: int) -> str:
        try:
            with open(self._work / f"rank{rank}.err", errors="replace") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return ""

    def _dumped(self, rank: int, offset: int) -> bool:
        return "most recent call first" in self._text(rank, offset)

    def close(self) -> None:
        """Kill every rank's process group (the rank and anything it started), reap it, remove the work directory."""
        for p in self._procs:
            _killpg(p, signal.SIGKILL)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
            with contextlib.suppress(OSError):
                p.stdin.close()
        for e in self._errs:
            e.close()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
        self._procs, self._errs, self._work = [], [], None


def _can_fork() -> bool:
    """Ranks may be forked from this process: Linux, no CUDA context and no process group of its own to inherit."""
    if not sys.platform.startswith("linux"):
        return False
    torch = sys.modules.get("torch")
    if torch is None:
        return True
    if torch.cuda.is_initialized():
        return False
    dist = sys.modules.get("torch.distributed")
    return not (dist is not None and dist.is_available() and dist.is_initialized())


class _Forked:
    """The ``subprocess.Popen`` surface the pool uses, for a rank started with ``os.fork``."""

    def __init__(self, pid: int, stdin):
        self.pid, self.stdin, self.returncode = pid, stdin, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, status unknown
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"rank {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def launch(target: str, world_size: int = 2, timeout: float = 60.0, grace: float = 5.0, env: dict | None = None,
           last_pids: list | None = None, **kwargs):
    """Run ``target`` once on fresh ranks (a pool of one task, closed before returning); see :meth:`RankPool.run`.

    ``timeout`` includes the ranks' start-up; ``last_pids``, if given, receives the rank pids (for tests)."""
    with RankPool(world_size, env=env) as pool:
        try:
            return pool.run(target, timeout=timeout, grace=grace, **kwargs)
        finally:
            if last_pids is not None:
                last_pids[:] = pool.started_pids


# -- rank side ----------------------------------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """SIGKILL this rank when its controller dies (Linux ``PR_SET_PDEATHSIG``), and exit if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:
        os._exit(1)


def _reset_inherited_compile_threads() -> None:
    """Drop the inductor compile thread pool a forked rank inherits from a parent that compiled before the fork.

    ``AsyncCompile.pool()`` is a cached ``ThreadPoolExecutor``; fork copies the object but not its threads, and an
    executor that already has its ``max_workers`` threads starts no new ones, so work submitted in the child never
    runs and the rank's first inductor compile waits forever (seen: the nightly's fsdp2 per-block inductor cell hung on
    both ranks after the xdist worker had compiled other inductor cells; alone it passed).  torch's own fork handler
    (torch/_inductor/async_compile.py ``after_fork``) resets ``process_pool`` only, so the rank resets ``pool`` the
    same way: the next compile builds a fresh executor.  A parent that never imported inductor's async_compile holds
    no pool; importing it here would only cost the rank ~1.5 s of start-up."""
    async_compile = sys.modules.get("torch._inductor.async_compile")
    if async_compile is None:
        return
    pool = getattr(async_compile.AsyncCompile, "pool", None)
    if hasattr(pool, "cache_clear"):
        pool.cache_clear()


def _serve(rank: int, world_size: int, work: Path, parent: int, pg_timeout: float, forked: bool = False) -> None:
    """A rank of a :class:`RankPool`: join the process group once, then run each task number read from stdin."""
    import datetime
    import traceback

    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    _die_with(parent)
    import torch
    import torch.distributed as dist

    if forked:
        # One intra-op thread, as OMP_NUM_THREADS=1 gives a spawned rank; the parent's OpenMP pool is not this
        # process's (torch's own fork handlers reset inductor's compile-worker process pools).
        torch.set_num_threads(1)
        _reset_inherited_compile_threads()

    from harness.tools import faults, overhead

    if forked:
        overhead.drop_pytest_log_handlers()

    faults.apply_from_env()  # AC_FAULT=<id> (the fault-injection kit): every rank patches torch as its parent did (once)

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=pg_timeout))
    (work / f"rank{rank}.ready").touch()
    for line in sys.stdin:  # EOF: the controller closed the pool (or died)
        n = int(line)
        target, kwargs, hard_timeout = pickle.loads((work / f"task{n}.pkl").read_bytes())
        print(f"[rank {rank}] task {n}: {target}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(hard_timeout, exit=True, file=sys.stderr)  # should the controller stop
        overhead.skip_guard_latency_profile()  # once a task imported Dynamo (a forked rank inherits its parent's)
        try:
            mod, fn = target.split(":")
            result = getattr(importlib.import_module(mod), fn)(rank, world_size, **kwargs)
        except BaseException:
            # When it failed: a peer blocked on this rank then fails too, often within the controller's same poll.
            (work / f"task{n}.rank{rank}.failed_at").write_text(repr(time.time()))
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)  # the process group cannot be trusted after a failed task: the pool starts afresh
        finally:
            faulthandler.cancel_dump_traceback_later()
        tmp = work / f"task{n}.rank{rank}.tmp"
        tmp.write_bytes(pickle.dumps(result))
        tmp.rename(work / f"task{n}.rank{rank}.pkl")
        sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (gloo / compile worker threads); destroy_process_group can block


# Programs for the pool's own tests (tests/test_distributed_launcher.py).
def selftest_ok(rank, world_size, value=1):
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value + rank)])
    dist.all_reduce(t)
    return {"rank": rank, "sum": t.item(), "pid": os.getpid()}


def selftest_inductor_compile(rank, world_size):
    """An inductor compile on each rank, caches off (so it really compiles): hangs in a rank forked from a parent whose
    compile thread pool was not reset."""
    import torch

    with torch._inductor.config.patch(force_disable_caches=True):
        fn = torch.compile(lambda x: (x.tan() - 3).exp() / 5 + x.sigmoid(), backend="inductor")
        return float(fn(torch.ones(16)).sum())


def selftest_caches(rank, world_size):
    """Where this rank's compile caches are: the environment variables and the directories torch resolves."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir

    return {"env": {k: os.environ.get(k) for k in CACHE_VARS}, "inductor": cache_dir(), "triton": triton_cache_dir(0),
            "pid": os.getpid(), "ppid": os.getppid()}


def selftest_overhead(rank, world_size):
    """The pytest log handlers this rank holds; whether it skips the guard-latency profile (tools/overhead.py)."""
    import torch._dynamo.guards as guards

    from harness.tools import overhead

    return {"pytest_handlers": sorted({f"{lg.name}: {type(h).__name__}" for lg, h in overhead.pytest_log_handlers()}),
            "guard_profile_skipped": guards.profile_guard_manager is overhead._no_guard_latency_profile}


def selftest_crash(rank, world_size, bad_rank=1):
    import torch
    import torch.distributed as dist

    if rank == bad_rank:
        raise RuntimeError(f"rank {rank} crashes on purpose")
    dist.all_reduce(torch.ones(1))  # blocks: the crashed peer never joins
    return rank


def selftest_hang_in_python(rank, world_size, bad_rank=1):
    import torch
    import torch.distributed as dist

    if rank == bad_rank:
        _spin_forever_here()
    dist.all_reduce(torch.ones(1))
    return rank


def selftest_exit0_without_result(rank, world_size):
    import torch.distributed as dist

    dist.barrier()  # both ranks are past the store handshake (rank 0 hosts it): neither fails for the other's exit
    os._exit(0)


def _spin_forever_here():
    while True:
        time.sleep(0.1)


def selftest_hang_with_child(rank, world_size):
    """Every rank starts a grandchild (like an inductor compile worker) and then hangs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(os.environ["ACDIST_CHILD_PIDS"] + f".{rank}", "w") as f:
        f.write(str(child.pid))
    _spin_forever_here()


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit("usage: python -m harness.tools.distributed --serve RANK WORLD WORKDIR PARENT_PID PG_TIMEOUT")

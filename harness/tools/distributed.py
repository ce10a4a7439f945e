"""A 2-rank gloo launcher for distributed cells: every rank is a fresh process in its own session.

``launch("pkg.module:function", world_size=2, timeout=60, **kwargs)`` starts ``world_size`` processes of
``python -m harness.tools.distributed --worker ...``; each joins a gloo process group on 127.0.0.1 at a free port
(found by binding port 0), calls ``function(rank, world_size, **kwargs)`` and writes its return value with
``torch.save``.  ``launch`` returns the list of per-rank results or raises :class:`RankFailure`.

Failure handling, so that a distributed cell can fail but never hang the run or leave processes behind:

* **crashed rank** (exception, ``os._exit``, signal): its exit status and stderr (the traceback) go into the
  failure; the other ranks get ``grace`` seconds to finish (they usually block in a collective waiting for the dead
  rank), then they are dumped and killed like hung ranks;
* **hung rank** (still running at ``timeout``): the launcher sends ``SIGUSR1``, on which the worker's
  ``faulthandler`` writes every thread's Python stack to stderr; then the rank's whole process group
  (its session: compile workers, subprocesses) is killed with ``SIGKILL`` and the stack is in the failure.
  Each worker also arms ``faulthandler.dump_traceback_later(timeout + grace)`` with ``exit=True`` as a second
  line of defence, should the launcher itself be killed.
* **teardown**: whatever happens (including ``KeyboardInterrupt`` in the launcher), every rank's process group is
  killed and reaped before ``launch`` returns or raises; :func:`alive` lets a test check that no pid is left.
"""

from __future__ import annotations

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
from pathlib import Path

from harness.core.paths import ROOT


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
    returncode: int | None  # None: hung (killed by the launcher at the timeout)
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
        lines = [f"distributed target {target}: expected every rank to exit 0 within {timeout:.0f} s; "
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


def launch(target: str, world_size: int = 2, timeout: float = 60.0, grace: float = 5.0, env: dict | None = None,
           last_pids: list | None = None, **kwargs):
    """Run ``target`` ("module:function") on ``world_size`` gloo ranks; return the per-rank results.

    ``timeout``: seconds for the whole program (process start and ``import torch`` included); ``grace``: seconds the
    other ranks get after one failed.  ``last_pids``, if given, receives the rank pids (for tests)."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="acdist-"))
    (work / "kwargs.pkl").write_bytes(pickle.dumps(kwargs))
    base_env = dict(os.environ)
    base_env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                     "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), base_env.get("PYTHONPATH")])),
                     "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONFAULTHANDLER": "1"})
    base_env.pop("PYTEST_XDIST_WORKER", None)
    base_env.update(env or {})
    procs, errs, start = [], [], time.monotonic()
    ended: dict[int, float] = {}
    hung: set[int] = set()
    try:
        for rank in range(world_size):
            err = open(work / f"rank{rank}.err", "w+")
            errs.append(err)
            e = dict(base_env, RANK=str(rank), LOCAL_RANK=str(rank))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "harness.tools.distributed", "--worker", target, str(rank), str(world_size), str(work),
                 str(timeout + grace)],
                cwd=ROOT, env=e, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, start_new_session=True))
        if last_pids is not None:
            last_pids[:] = [p.pid for p in procs]
        deadline = start + timeout
        first_bad = None
        while True:
            now = time.monotonic()
            for r, p in enumerate(procs):
                if r not in ended and p.poll() is not None:
                    ended[r] = now - start
                    if p.returncode != 0 and first_bad is None:
                        first_bad = r
                        deadline = min(deadline, now + grace)
            if len(ended) == world_size or now >= deadline:
                break
            time.sleep(0.05)
        for r, p in enumerate(procs):
            if r not in ended:  # hung: dump every thread's stack, then kill its whole session
                hung.add(r)
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGUSR1)
        if hung:
            t = time.monotonic()
            while time.monotonic() - t < 2.0 and any(_stderr_size(work, r) == 0 or not _dumped(work, r) for r in hung):
                time.sleep(0.05)
        # Ranks that raised stamped when (wall clock, comparable across processes): the earliest is the first to
        # fail, whatever order one poll saw the exits in (a peer blocked in a collective on it fails right after).
        stamps = {r: float((work / f"rank{r}.failed_at").read_text()) for r in range(world_size)
                  if (work / f"rank{r}.failed_at").exists()}
        if stamps:
            first_bad = min(stamps, key=stamps.get)
        if first_bad is None and hung:
            first_bad = min(hung)
    finally:
        for p in procs:
            _killpg(p, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for e in errs:
            e.close()
    outcomes = [RankOutcome(r, p.pid, None if r in hung else p.returncode, (work / f"rank{r}.err").read_text(errors="replace"),
                            ended.get(r, time.monotonic() - start)) for r, p in enumerate(procs)]
    missing = [r for r in range(world_size) if not (work / f"rank{r}.result.pkl").exists()]
    results = [pickle.loads((work / f"rank{r}.result.pkl").read_bytes()) for r in range(world_size) if r not in missing]
    shutil.rmtree(work, ignore_errors=True)
    if first_bad is not None or missing:
        raise RankFailure(target, outcomes, first_bad if first_bad is not None else missing[0], timeout)
    return results


def _stderr_size(work: Path, rank: int) -> int:
    try:
        return (work / f"rank{rank}.err").stat().st_size
    except OSError:
        return 0


def _dumped(work: Path, rank: int) -> bool:
    try:
        return "most recent call first" in (work / f"rank{rank}.err").read_text(errors="replace")
    except OSError:
        return False


def _worker(target: str, rank: int, world_size: int, work: Path, hard_timeout: float) -> None:
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    faulthandler.dump_traceback_later(hard_timeout, exit=True, file=sys.stderr)  # should the launcher die
    import datetime

    import torch.distributed as dist

    from harness.tools import faults

    faults.apply_from_env()  # AC_FAULT=<id> (the fault-injection kit): every rank patches torch as its parent did

    kwargs = pickle.loads((work / "kwargs.pkl").read_bytes())
    mod, fn = target.split(":")
    func = getattr(importlib.import_module(mod), fn)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=max(hard_timeout, 30)))
    try:
        try:
            result = func(rank, world_size, **kwargs)
        except BaseException:
            # When it failed: a peer blocked on this rank then fails too, often within the launcher's same poll.
            (work / f"rank{rank}.failed_at").write_text(repr(time.time()))
            raise
        tmp = work / f"rank{rank}.result.tmp"
        tmp.write_bytes(pickle.dumps(result))
        tmp.rename(work / f"rank{rank}.result.pkl")
        dist.barrier()
    finally:
        # destroy_process_group can block on a dead peer; the launcher's timeout covers that case.
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (gloo / compile worker threads)


# Programs for the launcher's own tests (tests/test_distributed_launcher.py).
def selftest_ok(rank, world_size, value=1):
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value + rank)])
    dist.all_reduce(t)
    return {"rank": rank, "sum": t.item(), "pid": os.getpid()}


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
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit("usage: python -m harness.tools.distributed --worker module:function RANK WORLD WORKDIR HARD_TIMEOUT")

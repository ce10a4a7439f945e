"""The fuzz campaign: hypothesis drives :func:`programs`, :func:`oracles.check` judges, failures shrink and land as
standalone repro scripts under ``findings/fuzz/<hash>.py``; ``promote`` turns one into a regular case."""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Verbosity, event, given, note, reject, settings, target
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.rows.fuzz import oracles, repro
from harness.rows.fuzz.program import VOCAB, Prog
from harness.rows.fuzz.strategies import programs
from harness.core.paths import CACHE, KNOWN_FAILURES, ROOT
from harness.core.paths import FINDINGS as ALL_FINDINGS

FINDINGS = ALL_FINDINGS / "fuzz"
DATABASE = CACHE / "hypothesis"
CASES_FILE = ROOT / "harness" / "rows" / "cases" / "fuzz_findings.py"
INDEX_FILE = ALL_FINDINGS / "index.toml"


@dataclasses.dataclass
class Stats:
    tried: int = 0
    invalid: int = 0
    passed: int = 0
    failing_calls: int = 0
    op_mixes: set = dataclasses.field(default_factory=set)
    ops: Counter = dataclasses.field(default_factory=Counter)
    policies: Counter = dataclasses.field(default_factory=Counter)
    axes: Counter = dataclasses.field(default_factory=Counter)
    invalid_reasons: Counter = dataclasses.field(default_factory=Counter)
    known_hits: Counter = dataclasses.field(default_factory=Counter)
    # per backend: programs judged (every oracle ran, or an invalid program rejected) and the seconds they took
    judged: Counter = dataclasses.field(default_factory=Counter)
    judge_seconds: Counter = dataclasses.field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        """Add another worker's statistics to these."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, set):
                mine |= theirs
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    def figures(self, seconds: float, workers: int, findings: dict) -> dict:
        """The campaign's throughput as numbers (``--stats-json``; make bench reports them)."""
        return {"seconds": round(seconds, 1), "workers": workers, "tried": self.tried, "passed": self.passed,
                "invalid": self.invalid, "failing_calls": self.failing_calls, "findings": sorted(findings),
                "programs_per_second": round(self.tried / seconds, 3) if seconds else None,
                "judged": dict(self.judged), "judge_seconds": {k: round(v, 1) for k, v in self.judge_seconds.items()}}

    def report(self, findings: dict, seconds: float, workers: int = 1) -> str:
        lines = [
            f"fuzz: {self.tried} programs tried in {seconds:.0f}s{f' by {workers} worker processes' if workers > 1 else ''} ({self.passed} passed every oracle, {self.invalid} invalid/"
            f"documented errors, {self.failing_calls} failing calls incl. shrinking)",
            f"  distinct op mixes: {len(self.op_mixes)}; ops covered: {len(self.ops)}/{len(VOCAB)}"
            + (f" (never drawn: {', '.join(sorted(set(VOCAB) - set(self.ops)))})" if set(VOCAB) - set(self.ops) else ""),
            f"  SAC policies drawn (aten op x policy): {sum(1 for k in self.policies if ':' in k)} distinct; per policy: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.policies.items()) if ":" not in k),
            "  axes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.axes.items())),
            f"  throughput: {self.tried / seconds if seconds else 0:.2f} programs/s overall (shrinking included); "
            f"judging per backend{' (per worker process)' if workers > 1 else ''}: " + ", ".join(f"{b} {self.judged[b]} in {self.judge_seconds[b]:.0f}s = "
                                                f"{self.judged[b] / self.judge_seconds[b]:.2f}/s"
                                                for b in sorted(self.judged) if self.judge_seconds[b]),
        ]
        if self.invalid_reasons:
            lines.append("  invalid / documented errors: " + "; ".join(f"{k} x{v}" for k, v in self.invalid_reasons.most_common(8)))
        if self.known_hits:
            lines.append("  known findings hit again: " + "; ".join(f"{k} x{v}" for k, v in self.known_hits.most_common()))
        lines.append(f"  findings: {len(findings)}")
        for sig, (prog, path) in findings.items():
            lines.append(f"    {path.relative_to(ROOT) if path else '(not written)'}: {sig}\n      {prog.describe()}")
        return "\n".join(lines)


def known_signatures() -> dict[str, Path]:
    """The findings on file by key (:func:`oracles.signature_key` of each script's signature, recorded message and
    program): a new failure with one of these keys is a known finding."""
    out = {}
    for path in sorted(FINDINGS.glob("*.py")) if FINDINGS.exists() else []:
        try:
            prog, sig = repro.read_spec(path)
        except ValueError:
            continue
        out.setdefault(oracles.signature_key(sig, repro.read_message(path), prog), path)
    return out


def _label(prog: Prog, stats: Stats) -> None:
    """Every draw is labelled: hypothesis events (statistics) and our own counters."""
    stats.tried += 1
    stats.op_mixes.add(tuple(sorted(set(prog.ops()))))
    for op in prog.ops():
        stats.ops[op] += 1
        event("op", op)
    for r in prog.regions:
        stats.axes[f"region:{r.checkpoint}"] += 1
        event("region", str(r.checkpoint))
    if any(r.sac for r in prog.regions):
        for op, pol in prog.policy:
            stats.policies[f"{op}:{pol.name}"] += 1
            stats.policies[pol.name] += 1
            event("policy", pol.name)
        stats.policies[f"default {prog.default_policy.name}"] += 1
    nested = any(i != j and a.start <= b.start and b.end <= a.end
                 for i, a in enumerate(prog.regions) for j, b in enumerate(prog.regions))
    for key, val in (("partitioner", prog.partitioner), ("backend", prog.backend), ("budget", prog.budget),
                     ("autocast", prog.autocast), ("params", prog.weights_are_params), ("nested", nested),
                     ("random", prog.has_random())):
        stats.axes[f"{key}:{val}"] += 1
        event(key, str(val))
    target(float(len(prog.steps) + 2 * len(prog.regions)), label="program size")
    note(prog.describe())
    note(prog.module_source())


class _FailureTypes:
    """One exception type per signature, so hypothesis shrinks each distinct failure on its own."""

    def __init__(self):
        self.types: dict[str, type] = {}

    def __call__(self, sig: str) -> type:
        if sig not in self.types:
            self.types[sig] = type(f"Finding_{re.sub(r'[^A-Za-z0-9]', '_', sig)[:60]}", (AssertionError,), {})
        return self.types[sig]


def fuzz(*, seconds: float | None = None, max_examples: int = 20, seed: int = 0, derandomize: bool = False,
         known: dict[str, Path] | None = None, write: bool = True, chunk: int = 20, database: bool = True,
         strategy=None, verbose: bool = True, cheap: bool = False, worker: int = 0,
         workers: int = 1) -> tuple[Stats, dict[str, tuple[Prog, Path | None]]]:
    """Run the campaign for ``seconds`` (or ``max_examples`` programs when seconds is None).

    Returns the statistics and the findings {key: (minimal program, repro path)} (:func:`oracles.signature_key`).
    Keys in ``known`` are not failures (they are findings already on file).  ``cheap`` leaves out the invariants that
    recompile each program (harness.core.invariants.RECOMPILING): the smoke run and the meta tests use it.  The campaign runs in chunks of
    ``chunk`` programs, chunk k seeded by (``seed``, k); ``worker`` of ``workers`` runs chunks worker, worker +
    workers, ...: the workers of :func:`campaign` together draw the chunks one process would."""
    stats, found_now, findings, reported = Stats(), {}, {}, set()
    known = dict(known_signatures() if known is None else known)
    failure_type = _FailureTypes()
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    grace = None if seconds is None else start + seconds * 1.25 + 60  # shrinking may run past the budget, a bit

    def body(prog: Prog) -> None:
        if grace is not None and time.monotonic() > grace:
            return
        _label(prog, stats)
        t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                failure = oracles.check(prog, cheap)
        except oracles.Invalid as e:
            stats.judged[prog.backend] += 1
            stats.judge_seconds[prog.backend] += time.monotonic() - t0
            stats.invalid += 1
            stats.invalid_reasons[re.sub(r"\d+", "N", str(e))[:110]] += 1
            event("outcome", "invalid")
            reject()
        stats.judged[prog.backend] += 1
        stats.judge_seconds[prog.backend] += time.monotonic() - t0
        if failure is None:
            stats.passed += 1
            event("outcome", "pass")
            return
        key = oracles.signature_key(failure.signature, failure.message, prog)
        one = oracles.signature_key(failure.signature, failure.message)
        # Known: on file (the key, budget regime included), or a failure this campaign already reported at another
        # regime (reported again by the next campaign, if it is a cause of its own).
        if key in known or one in reported:
            stats.known_hits[key] += 1
            event("outcome", "known finding")
            return
        stats.failing_calls += 1
        event("outcome", "finding")
        # Hypothesis shrinks each failure type on its own: the failure's own context (message, op), not the program's
        # knobs (its budget), which shrinking moves -- a type per budget regime would leave half-shrunk findings.
        found_now[one] = (prog, failure)  # the last call per type is hypothesis' final (minimal) replay
        raise failure_type(one)(f"{failure.signature}\n{failure.message}")

    strategy = programs() if strategy is None else strategy
    n_chunk = 0
    while True:
        if deadline is None and n_chunk * chunk >= max_examples:
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        size = chunk if deadline is not None else min(chunk, max_examples - n_chunk * chunk)
        test = given(strategy)(body)
        test = settings(max_examples=size, deadline=None, derandomize=derandomize, report_multiple_bugs=True,
                        suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False,
                        database=DirectoryBasedExampleDatabase(str(DATABASE)) if database else None)(test)
        if not derandomize:
            test._hypothesis_internal_use_seed = seed * 100_003 + worker + n_chunk * workers
        found_now.clear()
        try:
            test()
        except Exception as e:  # noqa: BLE001 - hypothesis re-raises the (shrunk) failures, grouped
            if not found_now:
                raise
            if verbose and not any(isinstance(x, AssertionError) for x in getattr(e, "exceptions", [e])):
                print(f"fuzz: unexpected {type(e).__name__}: {e}")
        for one, (prog, failure) in found_now.items():
            key = oracles.signature_key(failure.signature, failure.message, prog)
            reported.add(one)
            path = write_finding(prog, failure.signature, failure.message) if write else None
            findings[key] = (prog, path)
            known[key] = path
            if verbose:
                rc = _script_exit(path) if path else None
                print(f"fuzz: finding {key}\n  {prog.describe()}\n  -> {path}"
                      + ("" if rc is None else f" (standalone script exit {rc}{'' if rc == 1 else ': does not reproduce'})"),
                      flush=True)
        n_chunk += 1
    return stats, findings


def _worker_fuzz(kwargs: dict) -> tuple[Stats, dict]:
    import os

    import torch

    from harness.rows.fuzz.strategies import programs

    # The CPUs shared out: W processes each running OpenMP on every CPU oversubscribe them, and the spinning threads
    # cost more than the tiny tensors of a fuzz program gain from intra-op parallelism.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // kwargs["workers"]))

    return fuzz(strategy=programs(**kwargs.pop("strategy_kwargs")), **kwargs)


def campaign(*, seconds: float, seed: int = 0, workers: int = 1, strategy_kwargs: dict | None = None,
             **kwargs) -> tuple[Stats, dict[str, tuple[Prog, Path | None]]]:
    """:func:`fuzz` for ``seconds`` in ``workers`` processes (spawned: each has its own torch and compile caches),
    statistics and findings merged.  The workers split the chunk seeds of one process (see :func:`fuzz`), so the
    same seed draws the same programs whatever the number of workers, as far as the time allows."""
    strategy_kwargs = dict(strategy_kwargs or {})
    if workers <= 1:
        from harness.rows.fuzz.strategies import programs

        return fuzz(seconds=seconds, seed=seed, strategy=programs(**strategy_kwargs), **kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = [dict(kwargs, seconds=seconds, seed=seed, worker=i, workers=workers, strategy_kwargs=strategy_kwargs)
            for i in range(workers)]
    stats, findings = Stats(), {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part_stats, part_findings in pool.map(_worker_fuzz, jobs):
            stats.merge(part_stats)
            for sig, found in part_findings.items():
                findings.setdefault(sig, found)  # two workers shrinking the same failure: the first one's program
    return stats, findings


def write_finding(prog: Prog, signature: str, message: str) -> Path:
    FINDINGS.mkdir(parents=True, exist_ok=True)
    path = FINDINGS / f"{prog.digest()}.py"
    path.write_text(repro.render(prog, signature, message, str(path.relative_to(ROOT))))
    return path


def _script_exit(path: Path) -> int:
    """The exit status of a finding's standalone script (1: it reproduces)."""
    import subprocess
    import sys

    try:
        return subprocess.run([sys.executable, str(path)], capture_output=True, timeout=900, cwd=ROOT).returncode
    except subprocess.TimeoutExpired:
        return 124


def _rule_regex(text: str) -> str:
    """A regex for the sentence that states what broke (before its details), node names and numbers generalised."""
    text = re.split(r"[;:\[]", text, maxsplit=1)[0].strip()
    text = re.sub(r"\b(node|op|replay) \w+", r"\1 <node>", text)
    return re.sub(r"\bN\b|\d+", r"\\d+", re.escape(text)).replace(re.escape("<node>"), r"\w+")


def _stage_of(signature: str, message: str = "") -> tuple[str, str]:
    """The check a finding's signature breaks, as a known-failure entry pins it: (stage, a message regex naming the
    defect, never one that matches anything)."""
    kind, _, rest = signature.partition(":")
    if kind == "invariant":  # the message: "<cell id>: node mm (policy MUST_SAVE) is recomputed ...; expected ..."
        first = (message.splitlines() or [""])[0]
        return f"invariant:{rest}", _rule_regex(first.split(": ", 1)[1] if ": " in first else first)
    if kind == "crash":  # crash:<where>:<exception type>:<first line, digits as N>
        _, etype, line = rest.split(":", 2)
        return "run", re.escape(etype) + ": " + _rule_regex(line)
    return "case_check", re.escape(signature.split(":")[0])


def promote(path: str, reason: str | None = None, python: str | None = None) -> str:
    """Add the finding as a case of harness/rows/cases/fuzz_findings.py, a known-failure entry and an index line, but only
    after its standalone script reproduces it (exit 1) on the torch it was found on."""
    import subprocess
    import sys

    import torch

    p = Path(path).resolve()
    prog, sig = repro.read_spec(p)
    digest = p.stem
    found_on = re.search(r"on torch (\S+?);", p.read_text())
    if found_on and found_on.group(1) != torch.__version__:
        raise SystemExit(f"{p.name} was found on torch {found_on.group(1)}; promote it under that torch "
                         f"(this is {torch.__version__})")
    proc = subprocess.run([python or sys.executable, str(p)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 1:
        raise SystemExit(f"{p.name} does not reproduce on torch {torch.__version__} (exit {proc.returncode}, expected 1): "
                         f"not promoted\n{(proc.stdout + proc.stderr)[-1500:]}")
    text = CASES_FILE.read_text()
    if f'"{digest}"' in text:
        return f"{digest} is already promoted"
    marker = "    # promoted findings go above this line"
    CASES_FILE.write_text(text.replace(marker, f'    "{digest}",  # {sig[:90]}\n{marker}'))
    reason = reason or f"fuzz finding {sig}"
    stage, message = _stage_of(sig, repro.read_message(p))
    rel = p.relative_to(ROOT)
    with KNOWN_FAILURES.open("a") as f:
        f.write(f'\n[[failure]]\nid = "fuzz-{digest}"\nreason = """{reason}"""\n'
                f'upstream = "none yet: search pytorch/pytorch issues before filing"\nrepro = "{rel}"\n'
                f'stage = "{stage}"\nmessage = {message!r}\ntorch = ">={torch.__version__.split("+")[0]}"\n'
                f'select = {{ cases = ["fuzz_{digest}"] }}\n')
    with INDEX_FILE.open("a") as f:
        f.write(f'\n[[finding]]\nscript = "{rel}"\nstatus = "defect"\nknown_failure = "fuzz-{digest}"\n')
    return (f"promoted {digest} (reproduces on torch {torch.__version__}): case fuzz_{digest} in "
            f"{CASES_FILE.relative_to(ROOT)}, known failure fuzz-{digest} at {stage}; review both entries")

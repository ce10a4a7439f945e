"""Oracles for a generated program, on top of the harness pipeline: the numerics checks and the invariants of
harness/core/invariants.py themselves (one definition of each rule, shared with the suites).

``check(prog)`` returns None when every oracle holds, raises :class:`Invalid` when the program is not a valid
program (eager without checkpointing rejects it), and returns a :class:`Failure` (a stable signature for
de-duplication plus a readable message) otherwise.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from harness.core import pipeline
from harness.core.case import Axes, AxesSpec, BuildContext, Case, Cell, Checkpoint, Expect, Needs, Numerics, Program
from harness.core.checks import assert_numerics, compare_outcomes
from harness.core.invariants import violations
from harness.core.run import run_cell
from harness.rows.fuzz.program import DEEP_AUTOCAST_TOLERANCE, Prog



class Invalid(Exception):
    """The program is not valid torch (eager without AC rejects it): not a finding."""


@dataclasses.dataclass
class Failure:
    signature: str  # stable across programs hitting the same problem (used to de-duplicate findings)
    message: str


# Errors a user can read and act on (documented limitations); anything else raised while compiling is a finding.
DOCUMENTED_ERRORS = (
    (torch._dynamo.exc.Unsupported, r"."),
    (torch.utils.checkpoint.CheckpointError, r"."),
    # torch/_functorch/partitioners.py: RNG ops in recompute regions need functionalized RNG (CUDA) or joint graph mode
    (RuntimeError, r"does not support RNG ops in recompute regions"),
    # torch/utils/checkpoint.py: SAC caches outputs; mutating one afterwards is rejected in eager
    (RuntimeError, r"Tensor cached during selective activation checkpoint has been mutated"),
)


def root_cause(e: BaseException) -> BaseException:
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "inner_exception", None) or e.__cause__
        if inner is None:
            break
        e = inner
    return e


def error_signature(where: str, e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    first = re.sub(r"\b[a-z_]+_\d+\b", "<node>", first)
    first = re.sub(r"\d+", "N", first)[:140]
    return f"crash:{where}:{type(e).__name__}:{first}"


_TENSOR_TYPES = {"torch.Tensor", "torch.nn.parameter.Parameter"}


def _budget_regime(budget: float | None) -> str:
    return "default" if budget is None else "0" if budget == 0 else "1" if budget == 1 else "(0, 1)"


def signature_key(signature: str, message: str = "", prog: Prog | None = None) -> str:
    """What two failures must share to be one finding: the signature with its list of Python types cut out (each
    program saves its own mix, and the signatures on file are cut at 140 characters, often inside the list), plus the
    failing op/graph context read off the full message and the program -- the types in the message's list that are
    not tensors (the tuple a multi-output op left, a DeviceMesh), the op and policy of the node an invariant names
    (node numbers aside), and the program's partitioner, backend and budget regime (0, between, 1, default).  So a
    different cause with a similar message is a new finding; the same cause in another program is not."""
    parts = [re.sub(r"\[<class '.*?(\]|$)", "[<types>]", signature)]
    others = sorted(set(re.findall(r"<class '([\w.]+)'>", message)) - _TENSOR_TYPES)
    if others:
        parts.append("saved " + ", ".join(others))
    node = re.search(r"(?:node|random op) (\w+?)(?:_\d+)? \((?:([\w.]+), )?policy (\w+)\)", message)
    if node:
        parts.append(f"{node.group(2) or node.group(1)} {node.group(3)}")
    if prog is not None:
        parts.append(f"{prog.partitioner}/{prog.backend}/budget {_budget_regime(prog.budget)}")
    return " | ".join(parts)


def is_documented(e: BaseException) -> bool:
    return any(isinstance(x, t) and re.search(rx, str(x)) for x in (e, root_cause(e)) for t, rx in DOCUMENTED_ERRORS)


def case_for(prog: Prog, area: str = "fuzz", name: str | None = None, replay=None) -> Case:
    """A harness Case whose builder runs the generated program through ``ctx.checkpoint``."""
    ns = prog.namespace()

    def build(ctx: BuildContext) -> Program:
        xs, ws = prog.tensors(ctx.device)
        if prog.weights_are_params:
            module = torch.nn.Module()
            names = [f"w{i}" for i in range(prog.n_weights)] + [f"b{i}" for i in range(prog.n_biases)]
            for nm, t in zip(names, ws):
                module.register_parameter(nm, torch.nn.Parameter(t.detach()))
            params = [getattr(module, nm) for nm in names]
            return Program(lambda *a: ns["program"](ctx.checkpoint, replay, *a, *params), tuple(xs), module)
        return Program(lambda *a: ns["program"](ctx.checkpoint, replay, *a), tuple(xs + ws))

    random = prog.has_random()
    tolerance = DEEP_AUTOCAST_TOLERANCE if prog.autocast else None
    return Case(name or f"fuzz_{prog.digest()}", build, area=area, checkpoint=Checkpoint.FUZZ,
                axes=AxesSpec(partitioners=prog.partitioner, backends=prog.backend, devices="cpu", budgets=prog.budget),
                numerics=(Numerics.shape_only("random ops: checked against a replay of the compiled run's draws",
                                              tolerance) if random else Numerics(tolerance=tolerance)),
                goldens=(), expect=Expect(check=(lambda run: assert_oracles(prog, run)) if area != "fuzz" else None),
                notes=prog.describe(), no_ac_key=f"fuzz {prog.no_ac_digest()}" if replay is None else "")


def cell_for(prog: Prog, **kw) -> Cell:
    return Cell(case_for(prog, **kw), Axes(prog.partitioner, prog.backend, "cpu", "float32", prog.budget))


# ---- oracles on a recorded run ---------------------------------------------------------------------------------------

def replay_numerics(prog: Prog, run) -> list[str]:
    """Random programs: eager with AC must equal eager without AC (same RNG stream, preserved RNG state), and the
    compiled run must equal eager without AC *replaying the compiled run's own draws* (RNG-independent oracle:
    the backward is consistent with the forward's masks)."""
    draws = tuple(t.clone() for t in run.compiled.outputs[len(run.compiled.outputs) - prog.n_draws():])
    replay = pipeline.execute(case_for(prog, replay=draws), run.cell.axes, ac=False)
    rtol, atol = DEEP_AUTOCAST_TOLERANCE if prog.autocast else (1e-5, 1e-5)
    problems = [f"eager with AC vs eager without AC: {p}" for p in compare_outcomes(run.eager, run.reference, rtol, atol)]
    problems += [f"compiled vs eager replaying the compiled draws: {p}" for p in compare_outcomes(run.compiled, replay, rtol, atol)]
    return problems


def failures(prog: Prog, run, cheap: bool = False) -> list[Failure]:
    """Every oracle's failure on a recorded run; ``cheap`` leaves out the invariants that compile the program again
    (without AC, along a budget sweep: 4 more compiles per program)."""
    out = []
    if prog.has_random():
        problems = replay_numerics(prog, run)
        if problems:
            out.append(Failure(f"numerics-random:{prog.backend}:{problems[0].split(':')[0]}",
                               "numerics mismatch:\n  " + "\n  ".join(problems)))
    else:
        try:
            assert_numerics(run)
        except AssertionError as e:
            which = "compiled" if "compiled vs" in str(e) else "eager-ac"
            out.append(Failure(f"numerics:{which}:{prog.backend}:{prog.partitioner}{':autocast' if prog.autocast else ''}", str(e)))
    out += [Failure(f"invariant:{name}", message) for name, message in violations(run, cheap).failed]
    return out


def assert_oracles(prog: Prog, run) -> None:
    """For a promoted case's ``check``: the fuzz oracles beyond the standard numerics."""
    found = failures(prog, run) if prog.has_random() else [f for f in failures(prog, run) if not f.signature.startswith("numerics")]
    found = [f for f in found if not f.signature.startswith("invariant:")]  # check_cell runs those itself
    if found:
        raise AssertionError("\n".join(f"{f.signature}: {f.message}" for f in found))


def check(prog: Prog, cheap: bool = False) -> Failure | None:
    """Run every oracle on ``prog`` (``cheap``: see :func:`failures`); the first failure (or None)."""
    try:
        return _check(prog, cheap)
    finally:
        pipeline.eager.cache_clear()  # a program's eager runs are of no use to the next program


def _check(prog: Prog, cheap: bool) -> Failure | None:
    cell = cell_for(prog)
    case = cell.case
    # Each eager run happens once per program: the cell's run below reuses them (pipeline.eager is cached).
    try:
        pipeline.eager(case, "cpu", "float32", False)
    except Exception as e:
        raise Invalid(f"eager without AC rejects the program: {type(e).__name__}: {e}") from e
    try:
        pipeline.eager(case, "cpu", "float32", True)
    except Exception as e:
        if is_documented(e):
            raise Invalid(f"eager checkpoint rejects the program (documented): {type(e).__name__}") from e
        return Failure(error_signature("eager-ac", e), f"eager with checkpointing raised {type(e).__name__}: {e}")
    try:
        run = run_cell(cell, needs=Needs() if cheap else None)  # cheap: no baseline compiles
    except Exception as e:
        if is_documented(e):
            raise Invalid(f"documented compile error: {type(root_cause(e)).__name__}: {str(root_cause(e))[:200]}") from e
        return Failure(error_signature("compile", root_cause(e)),
                       f"torch.compile raised {type(e).__name__} (root cause {type(root_cause(e)).__name__}): {root_cause(e)}")
    found = failures(prog, run, cheap)
    if found and sac_with_inplace(prog):
        raise Invalid("documented limitation: SAC region with an in-place op (torch.compile warns: 'Please make sure "
                      f"the checkpointed region does not contain in-place ops'); would have been {found[0].signature}")
    return found[0] if found else None


def sac_with_inplace(prog: Prog) -> bool:
    return any(r.sac and any(prog.steps[i].op.endswith("_") for i in range(r.start, r.end)) for r in prog.regions)

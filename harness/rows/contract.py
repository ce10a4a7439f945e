"""The checkpoint contract (issue 13): each promise of torch/utils/checkpoint.py's docstrings as a clause with an
oracle of its own, checked in eager and under torch.compile; its cells are rows of the case database.

A *clause* (docs/contract.md) is one promise, quoted from the docstring (or, where the issue requires behaviour the
docstring does not spell out, from the code that implements it; the quote says so).  Its *cells* are
clause x program x mode (use_reentrant=True/False, where it applies) x variant, each one case of area ``contract``
(:func:`cases`; harness/rows/cases/contract.py) run by ``Runner.CONTRACT`` and named ``<clause>[-<program>]-<mode>-
<variant>``:

- ``eager``: plain torch.utils.checkpoint; the oracle checks the promise itself (call counts of a counted custom op
  in forward and backward, the autocast dtype each recomputed op saw, the policy's calls and ``is_recompute``
  values, error types and texts, gradients against a no-AC reference);
- ``aot_eager_min_cut`` / ``aot_eager_default``: ``torch.compile(fullgraph=True)`` through
  ``aot_autograd(partition_fn=min_cut_rematerialization_partition | default_partition)``;
- ``inductor``: ``torch.compile(backend="inductor", fullgraph=True)``.
The compiles are the runner's (harness/core/runners.py ``contract``: ``ctx.compile``, the oracle's ``obs.compile``).

Compiled cells check either the same observable behaviour or a documented difference (``Clause.compiled``, shown
in docs/contract-coverage.md) that the oracle asserts.  Each named check of an oracle is a verdict of its own
(``case_check:<check>``, harness/core/suite.py), so cells that disagree with the contract on the pinned torch are
ordinary known_failures.toml entries selecting their cases by name and pinned to the one check that fails, with the
repro under findings/ and the upstream reference.

The observables work the same in every variant: custom ops (``ac_contract::*``) are opaque to the compiler and
count their executions in Python, so "recomputed in backward" is "executed while backward runs", whatever graph
the partitioner produced.

The oracles always reach torch's checkpoint API through the module object ``cp`` so that the meta tests
(tests/test_contract_meta.py) can break torch with monkeypatch and see the oracles fail.

``python -m harness.tools.contract_coverage`` writes docs/contract-coverage.md.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import warnings
from typing import Callable

import torch
import torch.utils.checkpoint as cp

from harness.core import torch_api
from harness.core.case import (AxesSpec, Backend, BuildContext, Case, Checkpoint, CompileSpec, Expect, Partitioner,
                               Requirement, Requires, Runner, Selection)
from harness.core.checks import NamedChecks
from harness.core.paths import ROOT

CLAUSES_DOC = ROOT / "docs" / "contract.md"

MODES = {True: "reentrant", False: "nonreentrant"}


# --------------------------------------------------------------------------------------------------------------
# observables: counted custom ops
# --------------------------------------------------------------------------------------------------------------

COUNTS: collections.Counter = collections.Counter()  # (op name, phase) -> executions
DTYPES: list = []  # (op name, phase, input dtype)
_PHASE = ["forward"]


@contextlib.contextmanager
def phase(name: str):
    prev, _PHASE[0] = _PHASE[0], name
    try:
        yield
    finally:
        _PHASE[0] = prev


def reset_counts() -> None:
    COUNTS.clear()
    DTYPES.clear()


def _note(op: str, x: torch.Tensor) -> None:
    COUNTS[(op, _PHASE[0])] += 1
    DTYPES.append((op, _PHASE[0], x.dtype))


@torch.library.custom_op("ac_contract::csin", mutates_args=())
def csin(x: torch.Tensor) -> torch.Tensor:
    """sin that counts its executions; saves its input for backward."""
    _note("csin", x)
    return torch.sin(x)


@csin.register_fake
def _(x):
    return torch.empty_like(x)


def _csin_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _csin_bw(ctx, g):
    (x,) = ctx.saved_tensors
    return g * torch.cos(x)


csin.register_autograd(_csin_bw, setup_context=_csin_setup)


@torch.library.custom_op("ac_contract::cdouble", mutates_args=())
def cdouble(x: torch.Tensor) -> torch.Tensor:
    """2*x that counts its executions; saves nothing for backward."""
    _note("cdouble", x)
    return x * 2


@cdouble.register_fake
def _(x):
    return torch.empty_like(x)


cdouble.register_autograd(lambda ctx, g: g * 2, setup_context=lambda ctx, inputs, output: None)


@torch.library.custom_op("ac_contract::cmm", mutates_args=())
def cmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mm that counts its executions; saves both inputs."""
    _note("cmm", a)
    return a @ b


@cmm.register_fake
def _(a, b):
    return a.new_empty(a.shape[0], b.shape[1])


def _cmm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _cmm_bw(ctx, g):
    a, b = ctx.saved_tensors
    return g @ b.t(), a.t() @ g


cmm.register_autograd(_cmm_bw, setup_context=_cmm_setup)

CSIN = torch.ops.ac_contract.csin.default
CDOUBLE = torch.ops.ac_contract.cdouble.default
CMM = torch.ops.ac_contract.cmm.default


def bw_count(op: str) -> int:
    return COUNTS[(op, "backward")]


def fw_count(op: str) -> int:
    return COUNTS[(op, "forward")]


# --------------------------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------------------------


class Variant(enum.StrEnum):
    """Where a clause's program runs: eagerly, or ``torch.compile(fullgraph=True)``d through the cell's runner
    (harness/core/runners.py ``contract``) with one backend and partitioner."""

    EAGER = "eager"
    AOT_EAGER_MIN_CUT = "aot_eager_min_cut"
    AOT_EAGER_DEFAULT = "aot_eager_default"
    INDUCTOR = "inductor"

    @property
    def axes(self) -> AxesSpec:
        """The one cell's axes (an eager cell is not compiled: its axes are the defaults and mean nothing)."""
        part, backend = {Variant.AOT_EAGER_DEFAULT: (Partitioner.DEFAULT, Backend.AOT_EAGER),
                         Variant.INDUCTOR: (Partitioner.MIN_CUT, Backend.INDUCTOR)}.get(
            self, (Partitioner.MIN_CUT, Backend.AOT_EAGER))
        return AxesSpec(partitioners=part, backends=backend, devices=("cpu", "cuda"))


VARIANTS = tuple(Variant)
COMPILED = VARIANTS[1:]


# --------------------------------------------------------------------------------------------------------------
# observations
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Obs:
    """What a clause's oracle sees and records: one (check, failure message or None) per check, in the order made."""

    clause: str
    variant: Variant
    reentrant: bool | None
    program: str
    # compile(fn, fullgraph=True): fn itself (eager), or the runner's fresh torch.compile of it
    compile: Callable[..., Callable] = lambda fn, fullgraph=True: fn
    observations: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)

    @property
    def compiled(self) -> bool:
        return self.variant is not Variant.EAGER

    def expect(self, check: str, ok: bool, expected, seen) -> None:
        where = f"{self.variant}, {MODES.get(self.reentrant, 'n/a')}" + (f", {self.program}" if self.program else "")
        self.observations.append((check, None if ok else f"expected {expected}; saw {seen} ({where})"))

    def equal(self, check: str, seen, expected) -> None:
        self.expect(check, seen == expected, expected, seen)

    def close(self, check: str, seen: torch.Tensor | None, expected: torch.Tensor | None, atol=1e-5, rtol=1e-4):
        if seen is None or expected is None:
            self.expect(check, seen is None and expected is None, f"gradient {_short(expected)}", f"{_short(seen)}")
            return
        ok = seen.shape == expected.shape and torch.allclose(seen.float(), expected.float(), atol=atol, rtol=rtol)
        err = (seen.float() - expected.float()).abs().max().item() if seen.shape == expected.shape else "shape"
        self.expect(check, ok, f"values within atol={atol}, rtol={rtol} of the reference",
                    f"max abs error {err}")

    def raises(self, check: str, thunk: Callable, exc_type, text: str) -> BaseException | None:
        """thunk() must raise exc_type whose message contains text."""
        try:
            thunk()
        except exc_type as e:
            self.expect(check, text in str(e), f"{exc_type.__name__} containing {text!r}",
                        f"{type(e).__name__}: {str(e)[:300]!r}")
            return e
        except Exception as e:  # noqa: BLE001 - reported as the observation
            self.expect(check, False, f"{exc_type.__name__} containing {text!r}", f"{type(e).__name__}: {str(e)[:300]!r}")
            return e
        self.expect(check, False, f"{exc_type.__name__} containing {text!r}", "no exception")
        return None

    def no_error(self, check: str, thunk: Callable):
        try:
            got = thunk()
        except Exception as e:  # noqa: BLE001
            self.expect(check, False, "no exception", f"{type(e).__name__}: {str(e)[:300]!r}")
            return None
        self.expect(check, True, "no exception", "none")
        return got


def _short(t):
    return "None" if t is None else f"tensor{tuple(t.shape)}"


# --------------------------------------------------------------------------------------------------------------
# clauses
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clause:
    id: str
    source: str  # the API whose docstring (or code) makes the promise
    quote: str  # verbatim from torch/utils/checkpoint.py (whitespace-normalized); " [...] " joins fragments
    oracle: Callable  # oracle(obs) -> None, records checks on obs
    modes: tuple = (True, False)  # use_reentrant values it applies to; (None,) when the clause has no such axis
    programs: tuple = ("",)
    compiled: str = "same"  # "same", or the documented difference the compiled oracle asserts
    from_code: bool = False  # quote comes from code/messages rather than a docstring
    requires_cuda: tuple = ()  # programs that need a CUDA device
    gates: tuple = ()  # Gate: cells that cannot run before a torch release
    # (program, mode) whose aot_eager_min_cut cell runs in make test besides the clause's representative compiled cell:
    # those where compiling departs from eager on the pinned torch (a known failure), so every change sees it
    fast: tuple = ()


@dataclasses.dataclass(frozen=True)
class Gate:
    """Some cells of a clause observe a behaviour that older torch releases do not have: a named difference of
    harness/core/torch_api.py (RELEASE_DIFFERENCES) with the release it exists from.  Before it, those cells are
    skipped as "cannot run on this release" (their cases require torch>=the release), not failed.  Empty
    ``programs``/``modes``: all of the clause's."""

    difference: torch_api.Difference
    variants: tuple = VARIANTS
    programs: tuple = ()
    modes: tuple = ()

    def covers(self, program: str, mode: bool | None, variant: Variant) -> bool:
        return (variant in self.variants and (not self.programs or program in self.programs)
                and (not self.modes or mode in self.modes))

    @property
    def requirement(self) -> Requirement:
        """What the covered cases require."""
        return Requires.release_of(self.difference)


CLAUSES: list[Clause] = []


def clause(id, source, quote, modes=(True, False), programs=("",), compiled="same", from_code=False,
           requires_cuda=(), gates=(), fast=()):
    def deco(fn):
        CLAUSES.append(Clause(id, source, " ".join(quote.split()), fn, modes, programs, compiled, from_code,
                              requires_cuda, tuple(gates), tuple(fast)))
        return fn

    return deco


def ckpt(fn, *args, reentrant, **kw):
    return cp.checkpoint(fn, *args, use_reentrant=reentrant, **kw)


def _leaf(*shape, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(requires_grad)


def _grads(fn, *inputs, cot=None):
    """Run fn, backprop sum (or cot), return (out, grads) and clear the grads."""
    for t in inputs:
        t.grad = None
    with phase("forward"):
        out = fn(*inputs)
    with phase("backward"):
        (out if cot is None else out * cot).sum().backward()
    gs = [t.grad for t in inputs]
    for t in inputs:
        t.grad = None
    return out, gs


# ---- RNG --------------------------------------------------------------------------------------------------------

_P = 0.5


def _dropout_body(x):
    return torch.nn.functional.dropout(x, _P, True).sin()  # sin saves the dropout output: it must be recomputed


def _mask_consistent_grad(x, out):
    """The gradient the forward's own mask implies: out = sin(m*x/(1-p)), dx = m/(1-p) * cos(m*x/(1-p))."""
    m = (out != 0).to(x.dtype)
    s = 1.0 / (1 - _P)
    return m * s * torch.cos(m * x * s)


def _rng_run(obs: Obs, preserve: bool):
    x = _leaf(256)

    def fn(x):
        return ckpt(_dropout_body, x, reentrant=obs.reentrant, preserve_rng_state=preserve)

    f = obs.compile(fn)
    torch.manual_seed(1234)
    out = f(x)
    # the training step draws on between forward and backward (another module's dropout): a recompute that ran
    # outside fork_rng would leave the state where the forward's own draws ended, not where the stream was
    torch.rand(3)
    before_backward = torch.get_rng_state()
    out.sum().backward()
    after_backward = torch.get_rng_state()
    return x, out.detach(), x.grad, torch.equal(before_backward, after_backward)


@clause("ckpt.rng.preserved", "checkpoint(preserve_rng_state=True)",
        "preserve_rng_state(bool, optional): Omit stashing and restoring the RNG state during each checkpoint. "
        "Note that under torch.compile, this flag doesn't take effect and we always preserve RNG state. "
        "Default: ``True``")
def _rng_preserved(obs: Obs):
    x, out, grad, untouched = _rng_run(obs, True)
    obs.close("recompute_replays_forward_rng", grad, _mask_consistent_grad(x.detach(), out))
    obs.expect("surrounding_rng_restored", untouched, "the global RNG state after backward equal to before it (the "
               "recompute runs under torch.random.fork_rng: stashing and restoring)",
               "backward moved the global RNG state")


@clause("ckpt.rng.not_preserved", "checkpoint(preserve_rng_state=False)",
        "preserve_rng_state(bool, optional): Omit stashing and restoring the RNG state during each checkpoint. "
        "Note that under torch.compile, this flag doesn't take effect and we always preserve RNG state.",
        compiled="the flag has no effect under compile (documented): the recompute replays the forward's RNG, "
                 "so the gradient follows the forward's dropout mask")
def _rng_not_preserved(obs: Obs):
    x, out, grad, untouched = _rng_run(obs, False)
    consistent = torch.allclose(grad, _mask_consistent_grad(x.detach(), out), atol=1e-5)
    if obs.compiled:
        obs.expect("compile_always_preserves_rng", consistent, "the gradient of the forward's mask (compile always "
                   "preserves RNG state)", "a gradient from a different mask")
    else:
        obs.expect("recompute_draws_fresh_rng", not consistent, "a recompute that draws a fresh dropout mask (state "
                   "not stashed), so the gradient differs from the forward mask's", "the forward mask replayed")


# ---- autocast ---------------------------------------------------------------------------------------------------

def _autocast_body(x, w):
    return csin(torch.mm(x, w)).float()  # mm runs in the autocast dtype; csin records its input dtype


def _autocast_body_inside(device):
    def body(x, w):
        with torch.autocast(device, dtype=torch.bfloat16):
            return _autocast_body(x, w)

    return body


@clause("ckpt.autocast", "checkpoint",
        "Instead, any passed tensors in :attr:`args` are kept alive, and the unsaved tensors are recomputed by "
        "re-invoking :attr:`function` in the backward pass as needed for gradient computation.",
        programs=("cpu-outside", "cpu-inside", "cuda-outside", "cuda-inside"),
        requires_cuda=("cuda-outside", "cuda-inside"),
        compiled="same (the compiled backward recomputes only the mm; csin is not re-executed, so the dtype "
                 "checks apply to every execution seen, and gradients are compared with no-AC autocast)")
def _autocast(obs: Obs):
    device, where = obs.program.split("-")
    x = _leaf(8, 8).to(device).detach().requires_grad_()
    w = _leaf(8, 8, seed=1).to(device).detach().requires_grad_()
    body = _autocast_body if where == "outside" else _autocast_body_inside(device)
    outer = torch.autocast(device, dtype=torch.bfloat16) if where == "outside" else contextlib.nullcontext()

    def run(fn):
        for t in (x, w):
            t.grad = None
        reset_counts()
        with phase("forward"), outer:  # a training loop: autocast around the forward, backward outside
            out = fn(x, w)
        with phase("backward"):
            out.sum().backward()
        return [x.grad.clone(), w.grad.clone()]

    ref = run(obs.compile(body))  # no-AC reference (same variant)
    f = obs.compile(lambda x, w: ckpt(body, x, w, reentrant=obs.reentrant))
    got = obs.no_error("recompute_succeeds", lambda: run(f))
    dtypes = [(p, d) for (op, p, d) in DTYPES if op == "csin"]
    obs.equal("forward_op_in_autocast_dtype", sorted({d for p, d in dtypes if p == "forward"}, key=str),
              [torch.bfloat16])
    obs.equal("recomputed_op_in_autocast_dtype", sorted({d for p, d in dtypes if p == "backward"}, key=str),
              [] if obs.compiled else [torch.bfloat16])
    if got is not None:
        for name, g, r in zip(("x", "w"), got, ref):
            obs.close(f"grad_{name}_equals_no_ac_autocast", g, r, atol=1e-2, rtol=1e-2)


# ---- determinism check -----------------------------------------------------------------------------------------

_DET = {"k": 1, "dtype": torch.float32}  # global state the bodies read; it changes between forward and backward
_DET_FORWARD, _DET_BACKWARD = {"k": 1, "dtype": torch.float32}, {"k": 2, "dtype": torch.float64}


def _det_body(x):
    t = x.expand(_DET["k"], x.shape[0])  # the saved tensor's shape depends on global state
    return t.sin().sum(0) / _DET["k"]  # the output does not


def _det_dtype_body(x):
    return x.to(_DET["dtype"]).sin().float()  # the saved tensor's dtype depends on global state; the output's not


def _det_run(obs: Obs, body=_det_body, **kw):
    x = _leaf(6)
    f = obs.compile(lambda x: ckpt(body, x, reentrant=obs.reentrant, **kw))
    _DET.update(_DET_FORWARD)
    out = f(x)
    _DET.update(_DET_BACKWARD)  # global state changes between forward and backward
    return lambda: out.sum().backward(), x


def _det_restore():
    _DET.update(_DET_FORWARD)


_NO_REPLAY = ("compiled recompute replays the traced graph, so Python-level non-determinism between forward and "
              "backward cannot arise: no error, and the gradient is the forward program's")


@clause("ckpt.determinism.default", "checkpoint(determinism_check=...)",
        "By default it is set to ``\"default\"`` which compares the shapes, dtypes, and devices of the recomputed "
        "tensors against those the saved tensors. To turn off this check, specify ``\"none\"``. Currently these "
        "are the only two supported values. Please open an issue if you would like to see more determinism "
        "checks. This argument is only supported if ``use_reentrant=False``, if ``use_reentrant=True``, the "
        "determinism check is always disabled.",
        programs=("default", "none", "dtype"), compiled=_NO_REPLAY)
def _determinism(obs: Obs):
    """Programs: ``default`` (the recomputed saved tensor's shape differs), ``none`` (the same with the check off),
    ``dtype`` (only its dtype differs: the default check compares dtypes too)."""
    kw = {"determinism_check": "none"} if obs.program == "none" else {}
    try:
        backward, x = _det_run(obs, _det_dtype_body if obs.program == "dtype" else _det_body, **kw)
        if obs.program != "none" and obs.reentrant is False and not obs.compiled:
            obs.raises("metadata_mismatch_raises", backward, cp.CheckpointError,
                       "Recomputed values for the following tensors have different metadata")
        else:
            obs.no_error("no_check_no_error", backward)
            # eager non-reentrant with the check off backpropagates through the changed recompute: the silently
            # wrong gradient the checkpoint warning describes, so only "no error" is promised there.
            if obs.reentrant or obs.compiled:
                obs.close("gradient_of_forward_program", x.grad, torch.cos(x.detach()))
    finally:
        _det_restore()


@clause("ckpt.determinism.invalid", "checkpoint(determinism_check=...)",
        "Currently these are the only two supported values.", modes=(False,),
        compiled="same: the ValueError surfaces through torch.compile",
        gates=(Gate(torch_api.COMPILED_AC_THROUGH_CHECKPOINT, variants=COMPILED),))
def _determinism_invalid(obs: Obs):
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(torch.sin, x, reentrant=False, determinism_check="bogus"))
    obs.raises("invalid_value_rejected", lambda: f(x), Exception, "determinism_check should be one of")


# ---- debug ------------------------------------------------------------------------------------------------------

_DEBUG_SECTIONS = ("Operations executed during the original forward", "Operations executed during recomputation",
                   "Detected non-determinism", "aten.sin")


@contextlib.contextmanager
def _detached_logging_tensor_logger():
    """debug=True logs every op to the "LoggingTensor" logger with %-style extra args.  Under pytest, log-capture
    handlers end up on that logger (and raise on those records); run with only checkpoint's own handlers."""
    import logging

    lg = logging.getLogger("LoggingTensor")
    parent, handlers = lg.parent, list(lg.handlers)
    lg.parent = logging.Logger("ac_contract_sink")
    lg.handlers = [h for h in handlers if type(h).__name__ == "LoggingTensorHandler"]
    try:
        yield
    finally:
        lg.parent, lg.handlers = parent, handlers


def _debug_observe(obs: Obs, ctx, **kw):
    with _detached_logging_tensor_logger():
        try:
            with ctx:
                got = obs.no_error("forward_runs", lambda: _det_run(obs, **kw))
            if got is None:
                return None
            backward, x = got
            if obs.compiled:
                obs.no_error("compiled_no_nondeterminism", backward)
                return None
            try:
                backward()
            except cp.CheckpointError as e:
                return str(e)
            obs.expect("nondeterminism_detected", False, "a CheckpointError", "no exception")
            return None
        finally:
            _det_restore()


@clause("ckpt.debug", "checkpoint(debug=True)",
        "debug(bool, optional): If ``True``, error messages will also include a trace of the operators ran during "
        "the original forward computation as well as the recomputation. This argument is only supported if "
        "``use_reentrant=False``.", modes=(False,), programs=("debug-true", "debug-false"), compiled=_NO_REPLAY,
        fast=(("debug-true", False),))
def _debug(obs: Obs):
    text = _debug_observe(obs, contextlib.nullcontext(), debug=obs.program == "debug-true")
    if text is None:
        return
    present = [s for s in _DEBUG_SECTIONS if s in text]
    if obs.program == "debug-true":
        obs.equal("error_has_operator_traces", present, list(_DEBUG_SECTIONS))
    else:
        obs.equal("plain_error_without_traces", present, [])


@clause("ckpt.debug.global", "set_checkpoint_debug_enabled",
        "Note that when set, this context manager overrides the value of ``debug`` passed to checkpoint. To defer "
        "to the local setting, pass ``None`` to this context.", modes=(False,),
        programs=("on-overrides-false", "off-overrides-true", "none-defers"), compiled=_NO_REPLAY,
        fast=(("on-overrides-false", False), ("none-defers", False)))
def _debug_global(obs: Obs):
    enabled, local, want = {"on-overrides-false": (True, False, True), "off-overrides-true": (False, True, False),
                            "none-defers": (None, True, True)}[obs.program]
    text = _debug_observe(obs, cp.set_checkpoint_debug_enabled(enabled), debug=local)
    if text is not None:
        obs.equal("traces_follow_global_setting", all(s in text for s in _DEBUG_SECTIONS), want)


# ---- early stop -------------------------------------------------------------------------------------------------

def _early_body(x):
    return cdouble(csin(x))  # csin saves x; cdouble runs after the last saved tensor and saves nothing


def _early_run(obs: Obs, ctx=contextlib.nullcontext(), **kw):
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(_early_body, x, reentrant=obs.reentrant, **kw))
    reset_counts()
    with ctx, phase("forward"):
        out = f(x)
    with phase("backward"):
        out.sum().backward()
    obs.close("gradient", x.grad, 2 * torch.cos(x.detach()))
    return bw_count("cdouble"), bw_count("csin")


@clause("ckpt.early_stop", "checkpoint(early_stop=True)",
        "Non-reentrant checkpoint stops recomputation as soon as all needed intermediate activations have been "
        "recomputed. This feature is enabled by default, but can be disabled with :func:`set_checkpoint_early_stop`. "
        "Reentrant checkpoint always recomputes :attr:`function` in its entirety during the backward pass.",
        compiled="the compiled backward recomputes only what the gradient needs (the partitioner decides), for "
                 "both variants: the trailing op is not re-executed even for use_reentrant=True")
def _early_stop(obs: Obs):
    trailing, saved = _early_run(obs)
    # eager: the recompute re-runs csin up to its save (early stop or not); compiled: csin's backward needs only
    # x, a graph input, so nothing is recomputed
    obs.equal("needed_op_recomputed", saved, 0 if obs.compiled else 1)
    want = 0 if (obs.compiled or obs.reentrant is False) else 1
    obs.equal("trailing_op_recomputations", trailing, want)


@clause("ckpt.early_stop.disabled", "checkpoint(early_stop=False), set_checkpoint_early_stop(False)",
        "early_stop(bool, optional): If ``True``, non-reentrant checkpoint stops recomputation as soon as it has "
        "computed all needed Tensors. This argument is ignored if ``use_reentrant=True``. Can be overridden "
        "globally using :func:`set_checkpoint_early_stop` context manager. Default: ``True``. [...] "
        "This context manager only needs to be active when forward is run. It does not need to be active during "
        "backward.",
        modes=(False,), programs=("kwarg", "context-forward-only", "context-overrides-kwarg"),
        compiled="the flag has no effect under compile: the partitioner recomputes only what backward needs, so "
                 "the trailing op is never re-executed (a documented difference, not an error)")
def _early_stop_disabled(obs: Obs):
    if obs.program == "kwarg":
        trailing, _ = _early_run(obs, early_stop=False)
    elif obs.program == "context-forward-only":
        trailing, _ = _early_run(obs, cp.set_checkpoint_early_stop(False))
    else:
        trailing, _ = _early_run(obs, cp.set_checkpoint_early_stop(False), early_stop=True)
    obs.equal("trailing_op_recomputations", trailing, 0 if obs.compiled else 1)


# ---- checkpoint_sequential ----------------------------------------------------------------------------------------

class _CSin(torch.nn.Module):
    def forward(self, x):
        return csin(x)


@clause("seq.segments", "checkpoint_sequential",
        "Therefore, we can divide such a model in various segments and checkpoint each segment. All segments "
        "except the last will not store the intermediate activations. The inputs of each checkpointed segment will "
        "be saved for re-running the segment in the backward pass.", programs=("segments", "bad-kwarg"),
        compiled="fullgraph=True: a clear error (Dynamo marks checkpoint_sequential as skipped); without fullgraph "
                 "a graph break runs it eagerly, with the same recompute counts and errors")
def _sequential(obs: Obs):
    model = torch.nn.Sequential(*[_CSin() for _ in range(6)])
    x = _leaf(4)
    if obs.compiled:  # Dynamo marks checkpoint_sequential as skipped: fullgraph is a clear error, else a graph break
        f = obs.compile(lambda x: cp.checkpoint_sequential(model, 3, x, use_reentrant=obs.reentrant))
        obs.raises("fullgraph_refuses_checkpoint_sequential", lambda: f(x), torch._dynamo.exc.Unsupported,
                   "checkpoint_sequential")
    if obs.program == "bad-kwarg":
        f = obs.compile(lambda x: cp.checkpoint_sequential(model, 3, x, use_reentrant=obs.reentrant, bogus=1),
                        fullgraph=False)
        obs.raises("unexpected_kwarg_rejected", lambda: f(x), Exception, "Unexpected keyword arguments: bogus")
        return
    f = obs.compile(lambda x: cp.checkpoint_sequential(model, 3, x, use_reentrant=obs.reentrant),
                    fullgraph=False)
    reset_counts()
    out, (g,) = _grads(f, x)
    expect = x.detach()
    for _ in range(6):
        expect = torch.sin(expect)
    obs.close("output", out.detach(), expect)
    # 6 layers in 3 segments: segments 1 and 2 (4 layers) are re-run in backward, the last (2 layers) is not.
    obs.equal("layers_rerun_in_backward", bw_count("csin"), 4)
    obs.equal("layers_run_in_forward", fw_count("csin"), 6)
    ref = x.detach().clone().requires_grad_()
    y = ref
    for _ in range(6):
        y = torch.sin(y)
    y.sum().backward()
    obs.close("gradient", g, ref.grad)


# ---- kwargs -----------------------------------------------------------------------------------------------------

def _kw_body(x, *, scale=1.0):
    return csin(x * scale)


@clause("ckpt.kwargs", "checkpoint(**kwargs)",
        "If ``use_reentrant=False``, ``checkpoint`` will use an implementation that does not require reentrant "
        "autograd. This allows ``checkpoint`` to support additional functionality, such as working as expected "
        "with ``torch.autograd.grad`` and support for keyword arguments input into the checkpointed function.",
        compiled="same (the reentrant ValueError surfaces through torch.compile)", fast=(("", True),))
def _kwargs(obs: Obs):
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(_kw_body, x, reentrant=obs.reentrant, scale=3.0))
    if obs.reentrant:
        obs.raises("reentrant_rejects_kwargs", lambda: f(x), Exception, "Unexpected keyword arguments: scale")
        return
    out, (g,) = _grads(f, x)
    obs.close("forward_used_kwarg", out.detach(), torch.sin(3 * x.detach()))
    obs.close("recompute_used_kwarg", g, 3 * torch.cos(3 * x.detach()))


# ---- inputs that do not require grad ----------------------------------------------------------------------------

@clause("ckpt.requires_grad_inputs", "checkpoint",
        "At least one input and output must have ``requires_grad=True`` for the reentrant variant. If this "
        "condition is unmet, the checkpointed part of the model will not have gradients. The non-reentrant "
        "version does not have this requirement.", fast=(("", True),))
def _requires_grad(obs: Obs):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)
    x = _leaf(2, 4, requires_grad=False)
    f = obs.compile(lambda x: ckpt(lin, x, reentrant=obs.reentrant))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = f(x)
    msgs = [str(w.message) for w in caught]
    if obs.reentrant:
        if not obs.compiled:
            obs.expect("reentrant_warns", any("None of the inputs have requires_grad=True" in m for m in msgs),
                       "a warning 'None of the inputs have requires_grad=True. Gradients will be None'", msgs)
        if out.requires_grad:
            out.sum().backward()
        obs.equal("reentrant_no_gradients", (out.requires_grad, lin.weight.grad is None), (False, True))
    else:
        obs.equal("nonreentrant_output_requires_grad", out.requires_grad, True)
        with phase("backward"):
            out.sum().backward()
        obs.close("nonreentrant_weight_grad", lin.weight.grad, torch.ones(4, 2) @ x)


# ---- nested -----------------------------------------------------------------------------------------------------

@clause("ckpt.nested", "checkpoint",
        "Activation checkpointing can be applied to any part of a model -- this is sometimes described as "
        "\"checkpointing\" that part of the model.",
        compiled="same gradients; recompute counts are the partitioner's (csin recomputed once per needed value)")
def _nested(obs: Obs):
    r = obs.reentrant

    def inner(x):
        return csin(x)

    def outer(x):
        return csin(ckpt(inner, x, reentrant=r))

    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(outer, x, reentrant=r))
    reset_counts()
    out, (g,) = _grads(f, x)
    xd = x.detach()
    obs.close("output", out.detach(), torch.sin(torch.sin(xd)))
    obs.close("gradient", g, torch.cos(torch.sin(xd)) * torch.cos(xd))
    obs.equal("forward_executions", fw_count("csin"), 2)
    # eager: the outer recompute re-runs inner (1) and the outer csin (1); the inner region's own recompute re-runs
    # inner once more (1).  Compiled: each needed value is recomputed once (the inner csin's output; its input x is
    # a graph input).
    obs.equal("backward_executions", bw_count("csin"), 1 if obs.compiled else 3)


# ---- saved-tensor hooks around checkpoint -----------------------------------------------------------------------

@clause("ckpt.saved_tensor_hooks", "checkpoint",
        "To reduce this memory usage, tensors produced in the passed :attr:`function` are not kept alive until the "
        "backward pass. Instead, any passed tensors in :attr:`args` are kept alive",
        programs=("save_on_cpu", "counting_hooks"),
        compiled="same: gradients, and the outer hooks never see the region's intermediates",
        gates=(Gate(torch_api.CHECKPOINT_SAVES_INPUTS_DIRECTLY, variants=("eager",), programs=("counting_hooks",),
                    modes=(False,)),))
def _saved_hooks(obs: Obs):
    x = _leaf(4)
    xd = x.detach()
    packed = []

    def pack(t):
        packed.append(t)
        return t

    def body(x):
        return csin(csin(x))  # the intermediate csin(x) is saved by the second csin

    f = obs.compile(lambda x: ckpt(body, x, reentrant=obs.reentrant))
    hooks = (torch.autograd.graph.save_on_cpu(pin_memory=False) if obs.program == "save_on_cpu"
             else torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))

    def run():
        with hooks:
            out = f(x)
        out.sum().backward()

    reset_counts()
    obs.no_error("backward_runs", run)
    obs.close("gradient", x.grad, torch.cos(torch.sin(xd)) * torch.cos(xd))
    if obs.program == "counting_hooks":
        inner_saved = [t for t in packed if t.shape == xd.shape and torch.equal(t, torch.sin(xd))]
        obs.equal("outer_hook_never_sees_intermediates", len(inner_saved), 0)
        obs.expect("outer_hook_sees_only_args", all(torch.equal(t, xd) for t in packed) and packed,
                   "the outer pack hook called only for the checkpoint's input x",
                   f"{len(packed)} packed tensors, values {[t.tolist() for t in packed]}")


# ---- backward twice ---------------------------------------------------------------------------------------------

@clause("ckpt.backward_twice", "checkpoint",
        "The non-reentrant version does record the autograd graph, allowing one to perform backward on the graph "
        "within checkpointed regions.", programs=("retain_graph", "no_retain"),
        compiled="same gradients; the compiled backward is replayed without re-running the counted op")
def _backward_twice(obs: Obs):
    x = _leaf(4)
    xd = x.detach()
    f = obs.compile(lambda x: ckpt(lambda t: csin(csin(t)), x, reentrant=obs.reentrant))
    reset_counts()
    out = f(x)
    want = torch.cos(torch.sin(xd)) * torch.cos(xd)
    if obs.program == "retain_graph":
        with phase("backward"):
            obs.no_error("first_backward", lambda: out.sum().backward(retain_graph=True))
            obs.no_error("second_backward", lambda: out.sum().backward())
        obs.close("gradients_accumulate", x.grad, 2 * want)
        # eager: each backward re-runs the region (2 csin calls needed each time, early stop after the second)
        obs.equal("recompute_per_backward", bw_count("csin"), 2 if obs.compiled else 4)
    else:
        out.sum().backward()
        obs.raises("second_backward_rejected", lambda: out.sum().backward(), RuntimeError,
                   "Trying to backward through the graph a second time")


# ---- reentrant vs .grad / context_fn / debug ---------------------------------------------------------------------

@clause("ckpt.grad_api", "checkpoint",
        "The reentrant checkpoint only supports the :func:`torch.autograd.backward` API for the backward pass "
        "without its `inputs` argument, while the non-reentrant version supports all ways of performing the "
        "backward pass.", programs=("autograd.grad", "backward-inputs"),
        compiled="same for use_reentrant=False; use_reentrant=True: known failure (compile ignores use_reentrant)",
        fast=(("autograd.grad", True), ("backward-inputs", True)))
def _grad_api(obs: Obs):
    x = _leaf(4)
    xd = x.detach()
    f = obs.compile(lambda x: ckpt(lambda t: csin(t).exp(), x, reentrant=obs.reentrant))
    out = f(x)
    want = torch.exp(torch.sin(xd)) * torch.cos(xd)
    if obs.program == "autograd.grad":
        thunk = lambda: torch.autograd.grad(out.sum(), x)[0]  # noqa: E731
    else:
        def thunk():
            out.sum().backward(inputs=[x])
            return x.grad
    if obs.reentrant:
        obs.raises("reentrant_rejects", thunk, RuntimeError, "torch.utils.checkpoint is incompatible with .grad()")
    else:
        obs.close("gradient", obs.no_error("supported", thunk), want)


@clause("ckpt.reentrant.rejects_context_fn_debug", "checkpoint(context_fn=..., debug=...)",
        "context_fn(Callable, optional): A callable returning a tuple of two context managers. The function and "
        "its recomputation will be run under the first and second context managers respectively. This argument "
        "is only supported if ``use_reentrant=False``.", modes=(True,), programs=("context_fn", "debug"),
        compiled="same: the ValueError surfaces through torch.compile", fast=(("context_fn", True), ("debug", True)))
def _reentrant_rejects(obs: Obs):
    x = _leaf(4)
    kw = ({"context_fn": functools.partial(cp.create_selective_checkpoint_contexts, [torch.ops.aten.sin.default])}
          if obs.program == "context_fn" else {"debug": True})
    f = obs.compile(lambda x: ckpt(torch.sin, x, reentrant=True, **kw))
    # torch 2.14 lists a third argument ("Passing `context_fn`, `debug`, or `respect_saved_tensors_hooks` is only
    # supported when use_reentrant=False."): the rule's words are what every release shares
    obs.raises("rejected", lambda: f(x), Exception, "is only supported when use_reentrant=False.")


@clause("ckpt.context_fn", "checkpoint(context_fn=...)",
        "context_fn(Callable, optional): A callable returning a tuple of two context managers. The function and "
        "its recomputation will be run under the first and second context managers respectively.",
        modes=(False,), programs=("sac-modes", "debug-conflict"),
        compiled="same for the debug conflict; the contexts are entered at trace time only (compile requires "
                 "TorchDispatchModes), checked through the SAC cells")
def _context_fn(obs: Obs):
    x = _leaf(4)
    if obs.program == "debug-conflict":
        ctx = functools.partial(cp.create_selective_checkpoint_contexts, [CSIN])
        f = obs.compile(lambda x: ckpt(csin, x, reentrant=False, context_fn=ctx, debug=True))
        obs.raises("debug_with_context_fn_rejected", lambda: f(x), Exception,
                   "debug=True is incompatible with non-default context_fn")
        return
    entered = []

    class Mode(torch.utils._python_dispatch.TorchDispatchMode):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            entered.append((self.name, func))
            return func(*args, **(kwargs or {}))

    def context_fn():  # defined outside the compiled function (Dynamo cannot take a context_fn created inside it)
        return Mode("fw"), Mode("re")

    f = obs.compile(lambda x: ckpt(csin, x, reentrant=False, context_fn=context_fn))
    out = f(x)
    seen_fw = [n for n, fn in entered if fn is CSIN]
    out.sum().backward()
    seen_all = [n for n, fn in entered if fn is CSIN]
    if obs.compiled:
        obs.expect("modes_only_at_trace_time", "re" not in seen_all and x.grad is not None,
                   "no recompute-context dispatch at runtime, and a gradient", seen_all)
        return
    obs.equal("forward_under_first", seen_fw, ["fw"])
    obs.equal("recompute_under_second", seen_all, ["fw", "re"])


# ---- SAC ----------------------------------------------------------------------------------------------------------

def _sac_context(policy, **kw):
    return functools.partial(cp.create_selective_checkpoint_contexts, policy, **kw)


def _sac_body(x):
    return csin(csin(x))  # both csin outputs... the first is saved by the second csin; the second is the output


def _sac_run(obs: Obs, policy, body=_sac_body, x=None, **kw):
    x = _leaf(4) if x is None else x
    f = obs.compile(lambda x: ckpt(body, x, reentrant=False, context_fn=_sac_context(policy, **kw)))
    reset_counts()
    out, (g,) = _grads(f, x)
    xd = x.detach()
    obs.close("gradient", g, torch.cos(torch.sin(xd)) * torch.cos(xd))
    return bw_count("csin")


def _policy_for(decision):
    def policy(ctx, func, *args, **kwargs):
        return decision if func is CSIN else cp.CheckpointPolicy.PREFER_RECOMPUTE

    return policy


_SAC_MODES = (False,)


@clause("sac.policy.save", "CheckpointPolicy.{MUST,PREFER}_SAVE",
        "``{MUST,PREFER}_SAVE``: The operation's output will be saved during the forward pass and will not be "
        "recomputed during the backward pass", modes=_SAC_MODES, programs=("MUST_SAVE", "PREFER_SAVE"))
def _sac_save(obs: Obs):
    n = _sac_run(obs, _policy_for(cp.CheckpointPolicy[obs.program]))
    obs.equal("not_recomputed", n, 0)


@clause("sac.policy.recompute", "CheckpointPolicy.{MUST,PREFER}_RECOMPUTE",
        "``{MUST,PREFER}_RECOMPUTE``: The operation's output will not be saved during the forward pass and will "
        "be recomputed during the backward pass", modes=_SAC_MODES, programs=("MUST_RECOMPUTE", "PREFER_RECOMPUTE"),
        compiled="same: recomputed in backward (only the needed csin: 1 execution, where eager's recompute also "
                 "re-runs the second csin up to its save)")
def _sac_recompute(obs: Obs):
    n = _sac_run(obs, _policy_for(cp.CheckpointPolicy[obs.program]))
    # the first csin's output is needed (saved by the second csin): recompute it; the second csin also saves its
    # input, and runs during eager recompute until that pack (early stop), so eager re-runs both.
    obs.equal("recomputed", n, 1 if obs.compiled else 2)


@clause("sac.policy.cpu_offload", "CheckpointPolicy.{MUST,PREFER}_CPU_OFFLOAD",
        "``{MUST,PREFER}_CPU_OFFLOAD``: The operation's output will be saved during the forward pass, offloaded to "
        "CPU, and reloaded to GPU during the backward pass", modes=_SAC_MODES,
        programs=("MUST_CPU_OFFLOAD", "PREFER_CPU_OFFLOAD"),
        compiled="same as the docstring: saved, not recomputed (eager is the known failure)")
def _sac_offload(obs: Obs):
    n = _sac_run(obs, _policy_for(cp.CheckpointPolicy[obs.program]))
    obs.equal("saved_not_recomputed", n, 0)


@clause("sac.policy.prefer_recompute_is_vanilla", "CheckpointPolicy",
        "A policy function that always returns ``PREFER_RECOMPUTE`` is equivalent to vanilla checkpointing.",
        modes=_SAC_MODES)
def _sac_vanilla(obs: Obs):
    n_sac = _sac_run(obs, lambda ctx, func, *a, **k: cp.CheckpointPolicy.PREFER_RECOMPUTE)
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(_sac_body, x, reentrant=False))
    reset_counts()
    _grads(f, x)
    obs.equal("same_recompute_as_vanilla", n_sac, bw_count("csin"))


class _Recorder:
    """A context_fn whose policy records, per context_fn call, each csin decision: (phase, is_recompute, shape)."""

    def __init__(self):
        self.contexts: list[list] = []

    def __call__(self):
        log: list = []
        self.contexts.append(log)

        def policy(ctx, func, *args, **kwargs):
            if func is CSIN:
                log.append((_PHASE[0], ctx.is_recompute, tuple(ctx.op_output.shape)))
            return cp.CheckpointPolicy.PREFER_RECOMPUTE

        return cp.create_selective_checkpoint_contexts(policy)


@clause("sac.policy.forward_only", "SelectiveCheckpointContext",
        "The policy function is only called during the forward pass. During recomputation, cached values are "
        "retrieved by index, so ``is_recompute`` is deprecated and always ``False``.", modes=_SAC_MODES,
        compiled="the policy runs while the first call traces the graph: once per op per context_fn call, and "
                 "AOTAutograd calls context_fn once per trace pass (2 on torch 2.13), never in backward and never "
                 "on later calls; is_recompute is always False",
        gates=(Gate(torch_api.SAC_POLICY_OP_OUTPUT), Gate(torch_api.SAC_POLICY_FORWARD_ONLY, variants=("eager",))))
def _sac_forward_only(obs: Obs):
    rec = _Recorder()
    x = _leaf(4)

    def context_fn():  # a plain function: Dynamo does not accept a callable object as context_fn
        return rec()

    f = obs.compile(lambda x: ckpt(_sac_body, x, reentrant=False, context_fn=context_fn))
    _grads(f, x)
    first = len(rec.contexts)
    _grads(f, x)
    entries = [e for log in rec.contexts for e in log]
    obs.equal("never_called_in_backward", [p for p, _, _ in entries if p != "forward"], [])
    obs.equal("is_recompute_always_false", sorted({r for _, r, _ in entries}), [False])
    obs.equal("op_output_is_the_output", sorted({s for _, _, s in entries}), [(4,)])
    obs.equal("called_once_per_op_per_context", [len(log) for log in rec.contexts], [2] * len(rec.contexts))
    if obs.compiled:
        obs.expect("contexts_only_while_tracing", first >= 1 and len(rec.contexts) == first,
                   "context_fn called while the first call compiles and never on the cached call",
                   f"{first} calls on the first call, {len(rec.contexts) - first} on the second")
    else:
        obs.equal("one_context_per_forward", (first, len(rec.contexts)), (1, 2))


def _titan_context_fn():
    """torchtitan's "save every other mm" policy: fresh per-mode counters keyed on ctx.is_recompute per context."""
    meta = collections.defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        mode = "recompute" if ctx.is_recompute else "forward"
        if func is CMM:
            key = f"{mode}_mm_count"
            save = meta[key] % 2 == 0
            meta[key] += 1
            return cp.CheckpointPolicy.MUST_SAVE if save else cp.CheckpointPolicy.PREFER_RECOMPUTE
        return cp.CheckpointPolicy.PREFER_RECOMPUTE

    return cp.create_selective_checkpoint_contexts(policy)


def _titan_body(x, w):
    for _ in range(3):
        x = cmm(x, w)
    return x.sin()


@clause("sac.policy.counting", "SelectiveCheckpointContext",
        "The policy function is only called during the forward pass. During recomputation, cached values are "
        "retrieved by index, so ``is_recompute`` is deprecated and always ``False``.", modes=_SAC_MODES,
        compiled="same: the counting policy sees each op once per context and saves mm 1 and 3; only mm 2 is "
                 "recomputed")
def _sac_counting(obs: Obs):
    x = _leaf(3, 3)
    w = (_leaf(3, 3, seed=1).detach() * 0.5).requires_grad_()
    f = obs.compile(lambda x, w: ckpt(_titan_body, x, w, reentrant=False, context_fn=_titan_context_fn))
    reset_counts()
    out, (gx, gw) = _grads(f, x, w)
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y = xr
    for _ in range(3):
        y = y @ wr
    y.sin().sum().backward()
    obs.close("grad_x", gx, xr.grad)
    obs.close("grad_w", gw, wr.grad)
    obs.equal("forward_mms", fw_count("cmm"), 3)
    obs.equal("every_other_mm_recomputed", bw_count("cmm"), 1)


class _Mutating:
    """y = csin(x) is cached (MUST_SAVE); z = y + 1 is recomputed from it; y is then mutated in place."""

    @staticmethod
    def policy(ctx, func, *args, **kwargs):
        return cp.CheckpointPolicy.MUST_SAVE if func is CSIN else cp.CheckpointPolicy.PREFER_RECOMPUTE

    @staticmethod
    def body(x):
        y = csin(x)
        z = y + 1
        y.mul_(2)
        return z.cos() + y


@clause("sac.mutation_error", "create_selective_checkpoint_contexts(allow_cache_entry_mutation=False)",
        "allow_cache_entry_mutation (bool, optional): By default, an error is raised if any tensors cached by "
        "selective activation checkpoint are mutated in order to ensure correctness.", modes=_SAC_MODES,
        compiled="no error: functionalization removes the mutation, and the compiled gradient equals no-AC's "
                 "(compile accepts what eager rejects; findings/sac_inplace_op_body_invalid.py)")
def _sac_mutation(obs: Obs):
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(_Mutating.body, x, reentrant=False, context_fn=_sac_context(_Mutating.policy)))
    out = f(x)
    if obs.compiled:
        obs.no_error("compiled_accepts", lambda: out.sum().backward())
        xr = x.detach().clone().requires_grad_()
        _Mutating.body(xr).sum().backward()
        obs.close("gradient_equals_no_ac", x.grad, xr.grad)
        return
    obs.raises("mutated_cache_rejected", lambda: out.sum().backward(), RuntimeError,
               "Tensor cached during selective activation checkpoint has been mutated")


@clause("sac.allow_cache_entry_mutation", "create_selective_checkpoint_contexts(allow_cache_entry_mutation=True)",
        "If set to `True`, this check is disabled.", modes=_SAC_MODES,
        compiled="no error; the compiled gradient equals no-AC's, while eager's recompute reads the mutated cache "
                 "entry (the hazard the flag opts into): a documented difference")
def _sac_allow_mutation(obs: Obs):
    x = _leaf(4)
    f = obs.compile(lambda x: ckpt(_Mutating.body, x, reentrant=False,
                                   context_fn=_sac_context(_Mutating.policy, allow_cache_entry_mutation=True)))
    out = f(x)
    obs.no_error("mutation_allowed", lambda: out.sum().backward())
    xd = x.detach()
    if obs.compiled:
        want = 2 * torch.cos(xd) - torch.sin(torch.sin(xd) + 1) * torch.cos(xd)
    else:  # the recompute of z = y + 1 reads the mutated y = 2 sin(x)
        want = 2 * torch.cos(xd) - torch.sin(2 * torch.sin(xd) + 1) * torch.cos(xd)
    obs.close("gradient", x.grad, want)


@clause("sac.bool_policy", "create_selective_checkpoint_contexts (policy returning bool)",
        "def _policy_from_bool(b): # For backward compatibility return CheckpointPolicy.MUST_SAVE if b else "
        "CheckpointPolicy.PREFER_RECOMPUTE", modes=_SAC_MODES, programs=("True", "False"), from_code=True)
def _sac_bool(obs: Obs):
    flag = obs.program == "True"
    n = _sac_run(obs, lambda ctx, func, *a, **k: flag if func is CSIN else False)
    obs.equal("bool_maps_to_policy", n, 0 if flag else (1 if obs.compiled else 2))


@clause("sac.op_list", "create_selective_checkpoint_contexts(list of ops)",
        "If a list of operations is provided, it is equivalent to a policy returning `CheckpointPolicy.MUST_SAVE` "
        "for the specified operations and `CheckpointPolicy.PREFER_RECOMPUTE` for all other operations.",
        modes=_SAC_MODES, programs=("op-list", "packet-rejected", "not-callable-rejected"),
        compiled="same (errors are raised by create_selective_checkpoint_contexts before or during tracing)")
def _sac_list(obs: Obs):
    if obs.program == "op-list":
        obs.equal("listed_op_saved", _sac_run(obs, [CSIN]), 0)
    elif obs.program == "packet-rejected":
        x = _leaf(4)
        f = obs.compile(lambda x: ckpt(_sac_body, x, reentrant=False,
                                       context_fn=_sac_context([torch.ops.ac_contract.csin])))
        obs.raises("packet_rejected", lambda: f(x), Exception, "Please update the OpOverloadPacket to a specific")
    else:
        obs.raises("not_callable_rejected", lambda: cp.create_selective_checkpoint_contexts(3), TypeError,
                   "policy_fn_or_list must be either a function or a list of ops.")


@contextlib.contextmanager
def _compile_caches(enabled: bool):
    """The FX graph and AOTAutograd caches on or off (contract cells run with them off: NO_COMPILE_CACHES)."""
    import torch._functorch.config as fconfig
    import torch._inductor.config as iconfig

    with fconfig.patch(enable_autograd_cache=enabled), iconfig.patch(fx_graph_cache=enabled):
        yield


@clause("sac.backward_twice", "create_selective_checkpoint_contexts",
        "raise RuntimeError( \"Trying to backward an extra time. You are only allowed to backward once \" \"on any "
        "region computed under selective activation checkpoint.\" )", modes=_SAC_MODES, from_code=True,
        compiled="no error: the compiled backward does not consume a SAC cache, so a retained graph can be "
                 "backpropagated twice, and the gradients must accumulate correctly (or the compiled backward must "
                 "refuse retain_graph with its donated-buffer error). The program is compiled twice with the compile "
                 "caches on, a backward without retain_graph in between, so the second compile is a cache hit, as in "
                 "a training job's second process")
def _sac_twice(obs: Obs):
    x = _leaf(4)
    xd = x.detach()
    want = torch.cos(torch.sin(xd)) * torch.cos(xd)

    def fn(x):
        return ckpt(_sac_body, x, reentrant=False, context_fn=_sac_context([CSIN]))

    if not obs.compiled:
        out = fn(x)
        out.sum().backward(retain_graph=True)
        obs.raises("second_backward_rejected", lambda: out.sum().backward(), RuntimeError,
                   "Trying to backward an extra time")
        return
    with _compile_caches(True):
        obs.compile(fn)(x).sum().backward()  # a first run: compiles, fills the caches
        x.grad = None
        out = obs.compile(fn)(x)  # recompiled after torch._dynamo.reset(): a cache hit where caches exist
        try:
            out.sum().backward(retain_graph=True)
        except RuntimeError as e:  # a compiled backward with donated buffers refuses retain_graph: a clear error
            obs.expect("retain_graph_refused_clearly", "donated buffers" in str(e), "the donated-buffer error",
                       str(e)[:200])
            return
        obs.close("first_backward", x.grad, want)
        obs.no_error("second_backward", lambda: out.sum().backward())
        obs.close("gradients_accumulate", x.grad, 2 * want)


# ---- a saved tensor unpacked twice (appended last: a clause's index alternates its representative compiled cell) ----

class _UnpackTwice(torch.autograd.Function):
    """sin whose backward reads ``ctx.saved_tensors`` twice."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        (x,) = ctx.saved_tensors  # the second unpack of the same saved tensor
        return g * torch.cos(x)


@clause("ckpt.unpack_once", "checkpoint (the non-reentrant unpack hook)",
        "\"torch.utils.checkpoint: Unpack is being triggered for a tensor that was already \" [...] "
        "If you are calling ctx.saved_tensors in backward, make sure \" \"to do so only once.",
        modes=(False,), from_code=True,
        compiled="no error: the compiled backward is a traced graph whose saved values do not go through "
                 "checkpoint's unpack hook; its gradient must equal no-AC's")
def _unpack_once(obs: Obs):
    x = _leaf(4)
    xd = x.detach()
    f = obs.compile(lambda x: ckpt(lambda t: _UnpackTwice.apply(t.exp()), x, reentrant=False))
    out = f(x)
    if obs.compiled:
        obs.no_error("compiled_backward_runs", lambda: out.sum().backward())
        obs.close("gradient_equals_no_ac", x.grad, torch.cos(torch.exp(xd)) * torch.exp(xd))
        return
    obs.raises("second_unpack_rejected", lambda: out.sum().backward(), cp.CheckpointError, "already unpacked once")


# --------------------------------------------------------------------------------------------------------------
# the rows: one case per clause x program x mode x variant
# --------------------------------------------------------------------------------------------------------------

# a cell's outcome must not depend on what an earlier cell (or run) left in the FX graph and AOTAutograd caches
# (sac.backward_twice turns them on itself, to pin a cache-hit defect)
NO_COMPILE_CACHES = CompileSpec(config={"functorch": {"enable_autograd_cache": False},
                                        "inductor": {"fx_graph_cache": False}})


def _eager(fn: Callable, fullgraph: bool = True) -> Callable:
    return fn


def _compiler(ctx: BuildContext) -> Callable[..., Callable]:
    """``compile(fn, fullgraph=True)``: a fresh compile of ``fn`` (Dynamo reset first, so no graph of an earlier call is
    reused) with the cell's backend, which the runner put in ``ctx``."""
    def compile(fn: Callable, fullgraph: bool = True) -> Callable:
        torch._dynamo.reset()
        return dataclasses.replace(ctx, fullgraph=fullgraph).compile(fn)

    return compile


@dataclasses.dataclass(frozen=True)
class Observe:
    """A contract case's program (its ``build``, run by ``Runner.CONTRACT``): the clause's oracle on one program, mode
    and variant, compiling through the runner's ``ctx.compile`` unless the variant is eager.  Returns the observations
    (check, failure message or None); an exception the oracle did not expect is the failed check ``runs``."""

    clause: Clause
    program: str
    reentrant: bool | None
    variant: Variant

    @property
    def name(self) -> str:
        """The cell's id: ``<clause>[-<program>]-<mode>-<variant>``."""
        return "-".join([self.clause.id] + ([self.program] if self.program else [])
                        + [MODES.get(self.reentrant, "na"), self.variant])

    def __call__(self, ctx: BuildContext) -> list[tuple[str, str | None]]:
        obs = Obs(self.clause.id, self.variant, self.reentrant, self.program,
                  compile=_eager if self.variant is Variant.EAGER else _compiler(ctx))
        reset_counts()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*context_fn is passed to torch.utils.checkpoint.*")
                self.clause.oracle(obs)
        except Exception as e:  # noqa: BLE001 - an unexpected exception is an observation of the clause
            obs.expect("runs", False, "the program to run", f"{type(e).__name__}: {str(e)[:500]}")
        return obs.observations

    @property
    def fast(self) -> bool:
        """In make test (kept to ~40 s serially on 2 cores): every eager cell; per clause one aot_eager cell (its first
        program, its non-reentrant mode where it has one; partitioners alternate by clause so both are exercised); and
        the aot_eager_min_cut cells the clause lists as ``fast``.  All other compiled cells, inductor included, are
        slow: each costs ~0.5 s (aot_eager) to seconds (inductor compiles C++ kernels, ~25 s cold)."""
        c = self.clause
        if self.variant is Variant.EAGER:
            return True
        if self.variant is Variant.AOT_EAGER_MIN_CUT and (self.program, self.reentrant) in c.fast:
            return True
        rep_mode = False if False in c.modes else c.modes[0]
        rep_variant = (Variant.AOT_EAGER_MIN_CUT, Variant.AOT_EAGER_DEFAULT)[CLAUSES.index(c) % 2]
        return self.program == c.programs[0] and self.reentrant == rep_mode and self.variant is rep_variant


def judge(run) -> NamedChecks:
    """A contract row's check: every named check its clause's oracle made is a verdict of its own (failed if any of
    its observations failed), so a known failure pins one of them and all the others must pass."""
    observations = run.info["observations"]
    if not observations:
        return NamedChecks(failed=(("no_checks", "expected the oracle to make at least one check; saw none"),))
    failed: dict[str, str] = {}
    for check, message in observations:
        if message is not None:
            failed.setdefault(check, message)
    return NamedChecks(tuple(dict.fromkeys(c for c, _ in observations if c not in failed)), tuple(failed.items()))


def _case(c: Clause, program: str, mode: bool | None, variant: Variant) -> Case:
    requires = tuple(g.requirement for g in c.gates if g.covers(program, mode, variant))
    if program in c.requires_cuda:
        requires += (Requires.cuda(f"the {program} autocast program needs a CUDA device"),)
    build = Observe(c, program, mode, variant)
    checkpoint = {True: Checkpoint.REENTRANT, False: Checkpoint.NON_REENTRANT}.get(mode, Checkpoint.NONE)
    return Case(build.name, build, checkpoint=checkpoint, runner=Runner.CONTRACT, axes=variant.axes,
                compile=NO_COMPILE_CACHES, expect=Expect(check=judge), goldens=(), requires=requires,
                selection=Selection(slow=not build.fast), notes=c.source, area="contract")


def cases() -> list[Case]:
    """The contract's rows, in the clauses' order: one case (one cell, named as the case) per clause x program x mode
    x variant.  harness/rows/cases/contract.py puts them in the case database; collect expands them like any case."""
    return [_case(c, program, mode, variant) for c in CLAUSES for program in c.programs for mode in c.modes
            for variant in VARIANTS]


QUOTE_GAP = " [...] "


def quote_fragments(c: Clause) -> list[str]:
    return c.quote.split(QUOTE_GAP)
